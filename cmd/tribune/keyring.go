package main

import (
	"fmt"
	"io"
	"sort"
)

// runKeyring implements "keyring -list|-install|-use|-remove".
func runKeyring(args []string, stdout, stderr io.Writer) int {
	var hf httpFlags
	fs := newFlagSet("keyring", "keyring [options]", "Manages gossip encryption keys across the cluster.", stderr, &hf)
	list := fs.Bool("list", false, "List the installed keys and how many members hold each.")
	install := fs.String("install", "", "Install a new key on every member.")
	use := fs.String("use", "", "Make an installed key the primary key on every member.")
	remove := fs.String("remove", "", "Remove a key from every member.")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	n := 0
	for _, set := range []bool{*list, *install != "", *use != "", *remove != ""} {
		if set {
			n++
		}
	}
	if n != 1 {
		fmt.Fprintln(stderr, "Exactly one of -list, -install, -use or -remove must be given.")
		return 1
	}
	client, err := hf.client()
	if err != nil {
		fmt.Fprintf(stderr, "Error connecting to agent: %v\n", err)
		return 1
	}
	op := client.Operator()
	switch {
	case *list:
		resp, err := op.KeyringList(nil)
		if err != nil {
			fmt.Fprintf(stderr, "Error: %v\n", err)
			return 1
		}
		fmt.Fprintln(stdout, "==> Gathering installed encryption keys...")
		for _, r := range resp {
			if r.WAN {
				fmt.Fprintln(stdout, "\nWAN:")
			} else {
				fmt.Fprintf(stdout, "\n%s (LAN):\n", r.Datacenter)
			}
			keys := make([]string, 0, len(r.Keys))
			for k := range r.Keys {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				fmt.Fprintf(stdout, "  %s [%d/%d]\n", k, r.Keys[k], r.NumNodes)
			}
		}
		return 0
	case *install != "":
		fmt.Fprintln(stdout, "==> Installing new gossip encryption key...")
		err = op.KeyringInstall(*install, nil)
	case *use != "":
		fmt.Fprintln(stdout, "==> Changing primary gossip encryption key...")
		err = op.KeyringUse(*use, nil)
	default:
		fmt.Fprintln(stdout, "==> Removing gossip encryption key...")
		err = op.KeyringRemove(*remove, nil)
	}
	if err != nil {
		fmt.Fprintf(stderr, "Error: %v\n", err)
		return 1
	}
	return 0
}
