package listen_test

import (
	"context"
	"errors"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tribune-mesh/tribune/clock"
	"github.com/tribune-mesh/tribune/listen"
)

// emfileListener fails its first n Accepts with EMFILE, as a process out of
// descriptors does, then accepts for real.
type emfileListener struct {
	net.Listener
	failures atomic.Int32
}

func (l *emfileListener) Accept() (net.Conn, error) {
	if l.failures.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

func newEMFILE(t *testing.T, n int32) *emfileListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &emfileListener{Listener: ln}
	l.failures.Store(n)
	return l
}

func TestRetryOutlivesEMFILE(t *testing.T) {
	inner := newEMFILE(t, 4)
	ln := listen.Retry(inner, nil, nil)
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Close()
		}
		done <- err
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Accept after EMFILE: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Accept never returned the connection")
	}
	if inner.failures.Load() >= 0 {
		t.Fatalf("the injected failures were not all seen")
	}
}

func TestRetryBacksOffAndCloseInterrupts(t *testing.T) {
	clk := clock.NewFake(time.Unix(0, 0))
	inner := newEMFILE(t, 1000)
	ln := listen.Retry(inner, clk, nil)
	done := make(chan error, 1)
	go func() {
		_, err := ln.Accept()
		done <- err
	}()
	// Each failure waits on a timer of the doubling delay: 5ms, 10ms, ...
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, d := range []time.Duration{5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000} {
		if err := clk.WaitForPending(ctx, 1); err != nil {
			t.Fatalf("no retry timer armed before the %v wait", d*time.Millisecond)
		}
		select {
		case err := <-done:
			t.Fatalf("Accept returned %v during a descriptor shortage", err)
		default:
		}
		// Not a moment early: the timer is still pending just before d.
		clk.Advance(d*time.Millisecond - time.Microsecond)
		if clk.Pending() != 1 {
			t.Fatalf("the retry fired before its %v delay", d*time.Millisecond)
		}
		clk.Advance(time.Microsecond)
	}
	if err := clk.WaitForPending(ctx, 1); err != nil {
		t.Fatal(err)
	}
	ln.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close = %v, want net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end the wait")
	}
}
