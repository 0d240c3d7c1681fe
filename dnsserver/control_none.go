//go:build windows || darwin

package dnsserver

import "net"

// On Windows and macOS dns.Server answers from the socket's address
// without control messages (see miekg/dns udp_no_control.go); so do we.

func enableDestination(*net.UDPConn) error { return nil }

func controlSize() int { return 0 }

func sourceControl([]byte) []byte { return nil }
