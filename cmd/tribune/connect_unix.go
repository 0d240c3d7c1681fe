//go:build unix

package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
)

// execEnvoy replaces the process with envoy running the bootstrap, kept in
// a private temporary file, as Consul does.
func execEnvoy(bin string, bootstrap []byte, extra []string, stderr io.Writer) int {
	if bin == "" {
		p, err := exec.LookPath("envoy")
		if err != nil {
			fmt.Fprintf(stderr, "Error: envoy not found on PATH: %v\n", err)
			return 1
		}
		bin = p
	}
	f, err := os.CreateTemp("", "tribune-envoy-bootstrap-*.json")
	if err != nil {
		fmt.Fprintf(stderr, "Error writing the bootstrap: %v\n", err)
		return 1
	}
	if _, err := f.Write(bootstrap); err != nil {
		f.Close()
		fmt.Fprintf(stderr, "Error writing the bootstrap: %v\n", err)
		return 1
	}
	if err := f.Close(); err != nil {
		fmt.Fprintf(stderr, "Error writing the bootstrap: %v\n", err)
		return 1
	}
	argv := append([]string{bin, "--config-path", f.Name()}, extra...)
	if err := syscall.Exec(bin, argv, os.Environ()); err != nil {
		fmt.Fprintf(stderr, "Error running envoy: %v\n", err)
		return 1
	}
	return 0
}
