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
	cmds := map[string]command{
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

		"lock":    {"Execute a command holding a lock", lockCommand(os.Stdin)},
		"members": {"Lists the members of a Tribune cluster", runMembers},
		"leave":   {"Gracefully leaves the cluster and shuts down the agent", runLeave},

		"join":        {"Tells a running agent to join the cluster", runJoin},
		"force-leave": {"Forces a member of the cluster to enter the left state", runForceLeave},
		"keygen":      {"Generates a new encryption key", runKeygen},
		"keyring":     {"Manages gossip layer encryption keys", runKeyring},
		"reload":      {"Triggers the agent to reload configuration files", runReload},
		"maint":       {"Controls node or service maintenance mode", runMaint},

		"debug": {"Records a debugging archive for operators", runDebug},

		"migrate":        {"Copies data from another system into Tribune", groupCommand("migrate", "Migration tools.")},
		"migrate consul": {"Copies a Consul cluster's data into Tribune", runMigrateConsul},

		"event": {"Fires a new user event", runEvent},
		"watch": {"Watches for changes in a view of the data", runWatch},

		"operator":                  {"Provides cluster-level tools", groupCommand("operator", "Cluster-level operator tools.")},
		"operator raft":             {"Provides tools for the Raft subsystem", groupCommand("operator raft", "Raft peer tools.")},
		"operator raft list-peers":  {"Displays the current Raft peer configuration", runRaftListPeers},
		"operator raft remove-peer": {"Removes a server from the Raft configuration", runRaftRemovePeer},

		"tls":             {"Builds certificates for the agents' TLS", groupCommand("tls", "Creates a CA and agent certificates.")},
		"tls ca":          {"Manages the CA of the agents' certificates", groupCommand("tls ca", "CA tools.")},
		"tls ca create":   {"Creates a CA certificate and key", runTLSCACreate},
		"tls cert":        {"Manages agent certificates", groupCommand("tls cert", "Certificate tools.")},
		"tls cert create": {"Creates an agent certificate signed by the CA", runTLSCertCreate},

		"connect":       {"Interact with service mesh functionality", groupCommand("connect", "Service mesh tools.")},
		"connect envoy": {"Runs or configures Envoy as a sidecar proxy", runConnectEnvoy},
		"connect proxy": {"Runs the built-in mTLS proxy of a service", runConnectProxy},
		"connect redirect-traffic": {"Applies iptables rules that send traffic through a transparent proxy",
			runConnectRedirectTraffic},

		"snapshot":         {"Saves, restores and inspects snapshots of the servers' state", groupCommand("snapshot", "Snapshot tools.")},
		"snapshot save":    {"Saves a snapshot of the servers' state", runSnapshotSave},
		"snapshot restore": {"Restores a snapshot into the servers", runSnapshotRestore},
		"snapshot inspect": {"Displays information about a snapshot file", runSnapshotInspect},
	}
	for k, v := range aclCommands() {
		cmds[k] = v
	}
	for k, v := range configCommands() {
		cmds[k] = v
	}
	for k, v := range intentionCommands() {
		cmds[k] = v
	}
	return cmds
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
	// Multi-word verbs ("kv get", "operator raft list-peers") resolve to
	// their longest match.
	for n := min(3, len(args)); n > 1; n-- {
		if c, ok := cmds[strings.Join(args[:n], " ")]; ok {
			return c.run(args[n:], stdout, stderr)
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
