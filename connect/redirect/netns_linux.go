package redirect

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// InNetNS runs f on an OS thread that has joined the network namespace at
// path, and returns f's error: the sockets f opens and the programs it
// starts belong to that namespace (goroutines f starts do not). The thread
// is never handed back to the Go scheduler: it ends with f, so no other
// goroutine ever runs in the namespace. Linux only.
func InNetNS(path string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: see above.
		ns, err := os.Open(path)
		if err != nil {
			errc <- fmt.Errorf("network namespace: %w", err)
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter network namespace %s: %w", path, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}
