package main

import (
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/hashicorp/consul/api"
)

// kvKey normalises a key argument: KV keys never start with '/', but users
// type "/foo", so the slash is dropped as Consul's CLI does.
func kvKey(arg string) string {
	return strings.TrimPrefix(arg, "/")
}

// runKVGet implements "kv get": one value, a prefix's key:value lines
// (-recurse) or key names (-keys).
func runKVGet(args []string, stdout, stderr io.Writer) int {
	var hf httpFlags
	fs := newFlagSet("kv get", "kv get [options] [KEY_OR_PREFIX]",
		"Retrieves the value at KEY_OR_PREFIX from the key-value store. With -recurse every\n"+
			"key under the prefix is printed as key:value; with -keys only the key names.", stderr, &hf)
	b64 := fs.Bool("base64", false, "Base64-encode the value.")
	detailed := fs.Bool("detailed", false, "Print the entry's metadata (indexes, flags, session) as well as its value.")
	keys := fs.Bool("keys", false, "List the keys that start with the prefix, not their values.")
	recurse := fs.Bool("recurse", false, "Print every key under the prefix.")
	separator := fs.String("separator", "/", "With -keys, list keys only up to the first occurrence of this string after the prefix. Empty lists every key.")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	var key string
	switch fs.NArg() {
	case 0:
	case 1:
		key = kvKey(fs.Arg(0))
	default:
		fmt.Fprintf(stderr, "Too many arguments (expected 1, got %d)\n", fs.NArg())
		return 1
	}
	if key == "" && !*keys && !*recurse {
		fmt.Fprintln(stderr, "Error! Missing KEY argument")
		return 1
	}
	client, err := hf.client()
	if err != nil {
		fmt.Fprintf(stderr, "Error connecting to agent: %v\n", err)
		return 1
	}
	kv := client.KV()
	value := func(p *api.KVPair) string {
		if *b64 {
			return base64.StdEncoding.EncodeToString(p.Value)
		}
		return string(p.Value)
	}
	switch {
	case *keys:
		list, _, err := kv.Keys(key, *separator, hf.queryOptions())
		if err != nil {
			fmt.Fprintf(stderr, "Error querying agent: %v\n", err)
			return 1
		}
		for _, k := range list {
			fmt.Fprintln(stdout, k)
		}
	case *recurse:
		pairs, _, err := kv.List(key, hf.queryOptions())
		if err != nil {
			fmt.Fprintf(stderr, "Error querying agent: %v\n", err)
			return 1
		}
		for i, p := range pairs {
			if *detailed {
				if i > 0 {
					fmt.Fprintln(stdout)
				}
				writeKVDetailed(stdout, p, value(p))
				continue
			}
			fmt.Fprintf(stdout, "%s:%s\n", p.Key, value(p))
		}
	default:
		p, _, err := kv.Get(key, hf.queryOptions())
		if err != nil {
			fmt.Fprintf(stderr, "Error querying agent: %v\n", err)
			return 1
		}
		if p == nil {
			fmt.Fprintf(stderr, "Error! No key exists at: %s\n", key)
			return 1
		}
		if *detailed {
			writeKVDetailed(stdout, p, value(p))
			return 0
		}
		fmt.Fprintln(stdout, value(p))
	}
	return 0
}

// writeKVDetailed prints an entry as Consul's "kv get -detailed" does: one
// field a line, names aligned, "-" for no session.
func writeKVDetailed(w io.Writer, p *api.KVPair, value string) {
	session := p.Session
	if session == "" {
		session = "-"
	}
	tw := tabwriter.NewWriter(w, 0, 2, 6, ' ', 0)
	fmt.Fprintf(tw, "CreateIndex\t%d\n", p.CreateIndex)
	fmt.Fprintf(tw, "Flags\t%d\n", p.Flags)
	fmt.Fprintf(tw, "Key\t%s\n", p.Key)
	fmt.Fprintf(tw, "LockIndex\t%d\n", p.LockIndex)
	fmt.Fprintf(tw, "ModifyIndex\t%d\n", p.ModifyIndex)
	fmt.Fprintf(tw, "Session\t%s\n", session)
	fmt.Fprintf(tw, "Value\t%s\n", value)
	tw.Flush()
}

// kvPutCommand returns "kv put", reading a "-" value from stdin.
func kvPutCommand(stdin io.Reader) func(args []string, stdout, stderr io.Writer) int {
	return func(args []string, stdout, stderr io.Writer) int {
		return runKVPut(args, stdin, stdout, stderr)
	}
}

func runKVPut(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	var hf httpFlags
	fs := newFlagSet("kv put", "kv put [options] KEY [DATA]",
		"Writes DATA to KEY in the key-value store. DATA \"-\" reads the value from stdin,\n"+
			"\"@path\" from a file; no DATA writes an empty value.", stderr, &hf)
	acquire := fs.Bool("acquire", false, "Obtain a lock on the key with -session; the key is created if missing.")
	b64 := fs.Bool("base64", false, "Treat the data as base64-encoded and decode it before writing.")
	cas := fs.Bool("cas", false, "Check-and-set: write only if the key's ModifyIndex equals -modify-index (0: only if the key does not exist).")
	flags := fs.Uint64("flags", 0, "Unsigned integer to store with the key, opaque to Tribune.")
	modifyIndex := fs.Uint64("modify-index", 0, "The ModifyIndex to check with -cas.")
	release := fs.Bool("release", false, "Release the lock -session holds on the key.")
	session := fs.String("session", "", "Session `ID` for -acquire and -release.")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	var key, data string
	switch fs.NArg() {
	case 0:
		fmt.Fprintln(stderr, "Error! Missing KEY argument")
		return 1
	case 1:
		key = kvKey(fs.Arg(0))
	case 2:
		key, data = kvKey(fs.Arg(0)), fs.Arg(1)
	default:
		fmt.Fprintf(stderr, "Too many arguments (expected 1 or 2, got %d)\n", fs.NArg())
		return 1
	}
	if key == "" {
		fmt.Fprintln(stderr, "Error! Missing KEY argument")
		return 1
	}
	if (*acquire || *release) && *session == "" {
		fmt.Fprintln(stderr, "Error! Missing -session (required with -acquire and -release)")
		return 1
	}
	if *acquire && *release {
		fmt.Fprintln(stderr, "Error! Cannot specify both -acquire and -release")
		return 1
	}
	if *cas && !flagWasSet(fs, "modify-index") {
		fmt.Fprintln(stderr, "Must specify -modify-index with -cas!")
		return 1
	}
	value, err := kvValue(data, stdin)
	if err != nil {
		fmt.Fprintf(stderr, "Error! Failed to read data: %v\n", err)
		return 1
	}
	if *b64 {
		if value, err = base64.StdEncoding.DecodeString(string(value)); err != nil {
			fmt.Fprintf(stderr, "Error! Cannot base64 decode data: %v\n", err)
			return 1
		}
	}
	client, err := hf.client()
	if err != nil {
		fmt.Fprintf(stderr, "Error connecting to agent: %v\n", err)
		return 1
	}
	pair := &api.KVPair{Key: key, Value: value, Flags: *flags, ModifyIndex: *modifyIndex, Session: *session}
	kv := client.KV()
	switch {
	case *cas:
		ok, _, err := kv.CAS(pair, nil)
		if err != nil {
			fmt.Fprintf(stderr, "Error! Did not write to %s: %v\n", key, err)
			return 1
		}
		if !ok {
			fmt.Fprintf(stderr, "Error! Did not write to %s: CAS failed\n", key)
			return 1
		}
		fmt.Fprintf(stdout, "Success! Data written to: %s\n", key)
	case *acquire:
		ok, _, err := kv.Acquire(pair, nil)
		if err != nil {
			fmt.Fprintf(stderr, "Error! Failed writing data: %v\n", err)
			return 1
		}
		if !ok {
			fmt.Fprintln(stderr, "Error! Did not acquire lock")
			return 1
		}
		fmt.Fprintf(stdout, "Success! Lock acquired on: %s\n", key)
	case *release:
		ok, _, err := kv.Release(pair, nil)
		if err != nil {
			fmt.Fprintf(stderr, "Error! Failed writing data: %v\n", err)
			return 1
		}
		if !ok {
			fmt.Fprintln(stderr, "Error! Did not release lock")
			return 1
		}
		fmt.Fprintf(stdout, "Success! Lock released on: %s\n", key)
	default:
		if _, err := kv.Put(pair, nil); err != nil {
			fmt.Fprintf(stderr, "Error! Failed writing data: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "Success! Data written to: %s\n", key)
	}
	return 0
}

// kvValue resolves the DATA argument of "kv put": "-" is stdin, "@path" a
// file's contents, anything else the literal bytes.
func kvValue(data string, stdin io.Reader) ([]byte, error) {
	switch {
	case data == "-":
		b, err := io.ReadAll(stdin)
		if err != nil {
			return nil, fmt.Errorf("read stdin: %w", err)
		}
		return b, nil
	case strings.HasPrefix(data, "@"):
		b, err := os.ReadFile(data[1:])
		if err != nil {
			return nil, fmt.Errorf("read file: %w", err)
		}
		return b, nil
	}
	return []byte(data), nil
}

// runKVDelete implements "kv delete": one key, a key if its index matches
// (-cas), or every key under a prefix (-recurse).
func runKVDelete(args []string, stdout, stderr io.Writer) int {
	var hf httpFlags
	fs := newFlagSet("kv delete", "kv delete [options] KEY_OR_PREFIX",
		"Removes KEY_OR_PREFIX from the key-value store. Deleting a key that does not exist succeeds.", stderr, &hf)
	cas := fs.Bool("cas", false, "Check-and-set: delete only if the key's ModifyIndex equals -modify-index.")
	modifyIndex := fs.Uint64("modify-index", 0, "The ModifyIndex to check with -cas.")
	recurse := fs.Bool("recurse", false, "Delete every key under the prefix; with no prefix, every key.")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	var key string
	switch fs.NArg() {
	case 0:
	case 1:
		key = kvKey(fs.Arg(0))
	default:
		fmt.Fprintf(stderr, "Too many arguments (expected 1, got %d)\n", fs.NArg())
		return 1
	}
	if key == "" && !*recurse {
		fmt.Fprintln(stderr, "Error! Missing KEY argument")
		return 1
	}
	if *cas && *recurse {
		fmt.Fprintln(stderr, "Cannot specify both -cas and -recurse!")
		return 1
	}
	if *cas && !flagWasSet(fs, "modify-index") {
		fmt.Fprintln(stderr, "Must specify -modify-index with -cas!")
		return 1
	}
	client, err := hf.client()
	if err != nil {
		fmt.Fprintf(stderr, "Error connecting to agent: %v\n", err)
		return 1
	}
	kv := client.KV()
	switch {
	case *cas:
		ok, _, err := kv.DeleteCAS(&api.KVPair{Key: key, ModifyIndex: *modifyIndex}, nil)
		if err != nil {
			fmt.Fprintf(stderr, "Error! Did not delete key %s: %v\n", key, err)
			return 1
		}
		if !ok {
			fmt.Fprintf(stderr, "Error! Did not delete key %s: CAS failed\n", key)
			return 1
		}
		fmt.Fprintf(stdout, "Success! Deleted key: %s\n", key)
	case *recurse:
		if _, err := kv.DeleteTree(key, nil); err != nil {
			fmt.Fprintf(stderr, "Error! Did not delete prefix %s: %v\n", key, err)
			return 1
		}
		fmt.Fprintf(stdout, "Success! Deleted keys with prefix: %s\n", key)
	default:
		if _, err := kv.Delete(key, nil); err != nil {
			fmt.Fprintf(stderr, "Error deleting key %s: %v\n", key, err)
			return 1
		}
		fmt.Fprintf(stdout, "Success! Deleted key: %s\n", key)
	}
	return 0
}

// groupCommand returns the command run for a bare verb group such as "kv":
// it lists the group's subcommands and exits 1, as Consul's does.
func groupCommand(group, help string) func(args []string, stdout, stderr io.Writer) int {
	return func(args []string, stdout, stderr io.Writer) int {
		fmt.Fprintf(stderr, "Usage: tribune %s <subcommand> [options] [args]\n\n  %s\n\nSubcommands:\n", group, help)
		cmds := commands()
		var names []string
		for name := range cmds {
			if strings.HasPrefix(name, group+" ") {
				names = append(names, name)
			}
		}
		sort.Strings(names)
		for _, name := range names {
			fmt.Fprintf(stderr, "    %-14s %s\n", strings.TrimPrefix(name, group+" "), cmds[name].synopsis)
		}
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
			return 0
		}
		return 1
	}
}
