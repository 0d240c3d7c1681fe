//go:build unix

package httpapi

import (
	"errors"
	"syscall"
)

// writeNow writes as much of b to the socket raw as it takes without
// waiting: one write system call, no deadline to arm and disarm. n <
// len(b) with err nil means the socket's buffer is full.
func writeNow(raw syscall.RawConn, b []byte) (n int, err error) {
	rerr := raw.Write(func(fd uintptr) bool {
		for n < len(b) {
			m, e := syscall.Write(int(fd), b[n:])
			if errors.Is(e, syscall.EINTR) {
				continue
			}
			if e != nil {
				if !errors.Is(e, syscall.EAGAIN) {
					err = e
				}
				break
			}
			if m <= 0 {
				break
			}
			n += m
		}
		return true // never wait here: the caller does, with a deadline
	})
	if err == nil {
		err = rerr
	}
	return n, err
}
