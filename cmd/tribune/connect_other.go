//go:build !unix

package main

import (
	"fmt"
	"io"
)

// execEnvoy refuses: Envoy runs on Linux and macOS only, as Consul says;
// -bootstrap works everywhere.
func execEnvoy(_ string, _ []byte, _ []string, stderr io.Writer) int {
	fmt.Fprintln(stderr, "Directly running Envoy is only supported on linux and macOS since envoy itself doesn't build on other platforms; use -bootstrap")
	return 1
}
