package main

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"

	"github.com/hashicorp/consul/api"
)

// runJoin implements "join <address>...".
func runJoin(args []string, stdout, stderr io.Writer) int {
	var hf httpFlags
	fs := newFlagSet("join", "join [options] ADDRESS...", "Tells a running agent to join the cluster through the given addresses.", stderr, &hf)
	wan := fs.Bool("wan", false, "Join the WAN pool of another datacenter's servers (the agent must be a server).")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "At least one address to join must be specified.")
		fs.Usage()
		return 1
	}
	client, err := hf.client()
	if err != nil {
		fmt.Fprintf(stderr, "Error connecting to agent: %v\n", err)
		return 1
	}
	joined := 0
	for _, addr := range fs.Args() {
		if err := client.Agent().Join(addr, *wan); err != nil {
			fmt.Fprintf(stderr, "Error joining address '%s': %v\n", addr, err)
			continue
		}
		joined++
	}
	if joined == 0 {
		fmt.Fprintln(stderr, "Failed to join any nodes.")
		return 1
	}
	fmt.Fprintf(stdout, "Successfully joined cluster by contacting %d nodes.\n", joined)
	return 0
}

// runForceLeave implements "force-leave <node>".
func runForceLeave(args []string, stdout, stderr io.Writer) int {
	var hf httpFlags
	fs := newFlagSet("force-leave", "force-leave [options] NODE", "Forces a failed member into the left state.", stderr, &hf)
	wan := fs.Bool("wan", false, "The member is one of the WAN pool (named <node>.<datacenter>).")
	prune := fs.Bool("prune", false, "Remove the member from the member list entirely.")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "A single node name must be specified to force leave.")
		fs.Usage()
		return 1
	}
	client, err := hf.client()
	if err != nil {
		fmt.Fprintf(stderr, "Error connecting to agent: %v\n", err)
		return 1
	}
	if err := client.Agent().ForceLeaveOpts(fs.Arg(0), api.ForceLeaveOpts{Prune: *prune, WAN: *wan}); err != nil {
		fmt.Fprintf(stderr, "Error force leaving: %v\n", err)
		return 1
	}
	return 0
}

// runKeygen implements "keygen": a random 32-byte gossip key, base64.
func runKeygen(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("keygen", "keygen", "Generates a new gossip encryption key.", stderr, nil)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		fmt.Fprintf(stderr, "Error reading random data: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, base64.StdEncoding.EncodeToString(key[:]))
	return 0
}

// runRaftListPeers implements "operator raft list-peers".
func runRaftListPeers(args []string, stdout, stderr io.Writer) int {
	var hf httpFlags
	fs := newFlagSet("operator raft list-peers", "operator raft list-peers [options]", "Displays the current Raft peer configuration.", stderr, &hf)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	client, err := hf.client()
	if err != nil {
		fmt.Fprintf(stderr, "Error connecting to agent: %v\n", err)
		return 1
	}
	cfg, err := client.Operator().RaftGetConfiguration(hf.queryOptions())
	if err != nil {
		fmt.Fprintf(stderr, "Error getting peers: %v\n", err)
		return 1
	}
	rows := [][]string{{"Node", "ID", "Address", "State", "Voter", "RaftProtocol"}}
	for _, s := range cfg.Servers {
		state := "follower"
		if s.Leader {
			state = "leader"
		}
		rows = append(rows, []string{s.Node, s.ID, s.Address, state, fmt.Sprint(s.Voter), s.ProtocolVersion})
	}
	writeTable(stdout, rows)
	return 0
}

// runRaftRemovePeer implements "operator raft remove-peer -address|-id".
func runRaftRemovePeer(args []string, stdout, stderr io.Writer) int {
	var hf httpFlags
	fs := newFlagSet("operator raft remove-peer", "operator raft remove-peer [options]", "Removes a server from the Raft configuration.", stderr, &hf)
	address := fs.String("address", "", "The address (IP:port) of the peer to remove.")
	id := fs.String("id", "", "The ID of the peer to remove.")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if (*address == "") == (*id == "") {
		fmt.Fprintln(stderr, "Exactly one of -address or -id must be given.")
		return 1
	}
	client, err := hf.client()
	if err != nil {
		fmt.Fprintf(stderr, "Error connecting to agent: %v\n", err)
		return 1
	}
	if *id != "" {
		err = client.Operator().RaftRemovePeerByID(*id, nil)
	} else {
		err = client.Operator().RaftRemovePeerByAddress(*address, nil)
	}
	if err != nil {
		fmt.Fprintf(stderr, "Error removing peer: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "Removed peer with %s %q\n", map[bool]string{true: "id", false: "address"}[*id != ""], *id+*address)
	return 0
}
