package main

import (
	"fmt"
	"io"
)

// runLeave implements "leave": it asks the agent to leave the cluster
// gracefully and shut down.
func runLeave(args []string, stdout, stderr io.Writer) int {
	var hf httpFlags
	fs := newFlagSet("leave", "leave [options]",
		"Causes the agent to leave the cluster gracefully and shut down.", stderr, &hf)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "Error found unexpected args: %v\n", fs.Args())
		fs.Usage()
		return 1
	}
	client, err := hf.client()
	if err != nil {
		fmt.Fprintf(stderr, "Error connecting to agent: %v\n", err)
		return 1
	}
	if err := client.Agent().Leave(); err != nil {
		fmt.Fprintf(stderr, "Error leaving: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, "Graceful leave complete")
	return 0
}
