//go:build !unix

package main

import (
	"os"
	"syscall"
)

// childSysProcAttr: without POSIX process groups the child runs as is.
func childSysProcAttr() *syscall.SysProcAttr { return nil }

// signalChild kills the child: there is no SIGTERM to send on this
// platform, as Consul documents for Windows.
func signalChild(p *os.Process, _ syscall.Signal, _ bool) error { return p.Kill() }
