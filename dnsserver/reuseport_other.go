//go:build !linux

package dnsserver

import "syscall"

// udpSockets is the number of UDP sockets per address: one where the
// system does not balance a port's packets over several sockets.
func udpSockets() int { return 1 }

// reusePort is never called with one socket per address.
func reusePort(_, _ string, _ syscall.RawConn) error { return nil }
