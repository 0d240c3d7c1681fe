// Command tribune is Tribune's single binary: the agent and the CLI that
// talks to an agent's HTTP API, with Consul's verbs and flags.
package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// command is one CLI verb.
type command struct {
	synopsis string
	run      func(args []string, stdout, stderr io.Writer) int
}

func commands() map[string]command {
	return map[string]command{
		"agent":   {"Runs a Tribune agent", runAgent},
		"version": {"Prints the Tribune version", runVersion},

		"kv":        {"Interact with the key-value store", groupCommand("kv", "Reads and writes Tribune's key-value store.")},
		"kv get":    {"Retrieves or lists data from the key-value store", runKVGet},
		"kv put":    {"Sets or updates data in the key-value store", kvPutCommand(os.Stdin)},
		"kv delete": {"Removes data from the key-value store", runKVDelete},

		"catalog":             {"Interact with the catalog", groupCommand("catalog", "Queries the catalog of nodes and services.")},
		"catalog services":    {"Lists all registered services in a datacenter", runCatalogServices},
		"catalog nodes":       {"Lists all nodes in the given datacenter", runCatalogNodes},
		"catalog datacenters": {"Lists all known datacenters", runCatalogDatacenters},

		"members": {"Lists the members of a Tribune cluster", runMembers},
		"leave":   {"Gracefully leaves the cluster and shuts down the agent", runLeave},
	}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches to a command and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	cmds := commands()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(cmds, stderr)
		if len(args) == 0 {
			return 1
		}
		return 0
	}
	if args[0] == "-v" || args[0] == "--version" || args[0] == "-version" {
		return runVersion(nil, stdout, stderr)
	}
	name, rest := args[0], args[1:]
	// Multi-word verbs ("kv get") resolve to their longest match.
	if len(rest) > 0 {
		if c, ok := cmds[name+" "+rest[0]]; ok {
			return c.run(rest[1:], stdout, stderr)
		}
	}
	c, ok := cmds[name]
	if !ok {
		fmt.Fprintf(stderr, "tribune: unknown command %q\n\n", strings.Join(args[:1], " "))
		usage(cmds, stderr)
		return 1
	}
	return c.run(rest, stdout, stderr)
}

func usage(cmds map[string]command, w io.Writer) {
	fmt.Fprintln(w, "Usage: tribune [--version] [--help] <command> [<args>]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Available commands are:")
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "    %-22s %s\n", n, cmds[n].synopsis)
	}
}
