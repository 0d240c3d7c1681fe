package dnsserver

import (
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// udpSockets is the number of UDP sockets per address: one per CPU the Go
// runtime uses, so that reading queries is not serialised on one socket.
// The kernel spreads packets over them by the client's address and port.
func udpSockets() int { return runtime.GOMAXPROCS(0) }

// reusePort sets SO_REUSEPORT on a socket about to be bound, so that
// several sockets share its port.
func reusePort(_, _ string, c syscall.RawConn) error {
	var sockErr error
	err := c.Control(func(fd uintptr) {
		sockErr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	if err != nil {
		return err
	}
	return sockErr
}
