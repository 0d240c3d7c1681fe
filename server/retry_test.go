package server

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"

	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/clock"
)

func TestHoldRetryGivesUpAtTheHoldTimeout(t *testing.T) {
	fc := clock.NewFake(time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC))
	var attempts atomic.Int32
	done := make(chan error, 1)
	go func() {
		done <- holdRetry(context.Background(), fc, time.Second, nil, retryable, func() error {
			attempts.Add(1)
			return ErrNoLeader
		})
	}()
	for {
		select {
		case err := <-done:
			if !errors.Is(noLeaderOnExpiry(err), ErrNoLeader) {
				t.Fatalf("holdRetry = %v, want the hold timeout with ErrNoLeader", err)
			}
			// 10+20+40+80 ms, then every 100 ms: about 14 attempts.
			if n := attempts.Load(); n < 10 || n > 16 {
				t.Fatalf("%d attempts in a 1s hold, want about 14", n)
			}
			return
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		_ = fc.WaitForPending(ctx, 1)
		cancel()
		fc.Advance(10 * time.Millisecond)
	}
}

func TestHoldRetryStopsOnAnAnswerItMustNotRetry(t *testing.T) {
	fc := clock.NewFake(time.Now())
	var attempts int
	boom := errors.New("boom")
	err := holdRetry(context.Background(), fc, time.Minute, nil, retryable, func() error {
		attempts++
		return boom
	})
	if !errors.Is(err, boom) || attempts != 1 {
		t.Fatalf("holdRetry = %v after %d attempts, want boom after 1", err, attempts)
	}
	stop := make(chan struct{})
	close(stop)
	err = holdRetry(context.Background(), fc, time.Minute, stop, retryable, func() error { return ErrNoLeader })
	if !errors.Is(err, ErrShutdown) {
		t.Fatalf("holdRetry after stop = %v, want ErrShutdown", err)
	}
}

// A request that could not be sent is marked so: a write may be resent.
func TestRPCNotSentWhenTheServerCannotBeReached(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	p := newConnPool(nil)
	defer p.close()
	err = p.call(context.Background(), addr, "Apply", &ApplyRequest{Data: []byte{1}}, &ApplyResponse{})
	if err == nil || !errors.Is(err, errNotSent) || !retryableWrite(err) {
		t.Fatalf("call to a closed port = %v; want errNotSent, retryable for writes", err)
	}
}

// A request that reached a server whose connection then broke may have
// been applied: a write must not be resent, a read may.
func TestRPCSentWhenTheConnectionBreaksAfterwards(t *testing.T) {
	arrived := make(chan struct{})
	release := make(chan struct{})
	ln, gs := rawRPCServer(t, func(grpc.ServerStream) error {
		close(arrived)
		<-release
		return nil
	})
	defer close(release)

	p := newConnPool(nil)
	defer p.close()
	errc := make(chan error, 1)
	var err error
	go func() {
		errc <- p.call(context.Background(), ln.Addr().String(), "Apply", &ApplyRequest{Data: []byte{byte(catalog.CmdKV)}}, &ApplyResponse{})
	}()
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the request never reached the server")
	}
	// The server goes away with the request in hand.
	go gs.Stop()
	select {
	case err = <-errc:
	case <-time.After(10 * time.Second):
		t.Fatal("the call did not end when the server stopped")
	}
	if err == nil || errors.Is(err, errNotSent) || retryableWrite(err) {
		t.Fatalf("call broken after sending = %v; want an error that is not errNotSent nor retryable for writes", err)
	}
	if status.Code(err) != codes.Unavailable || !retryable(err) {
		t.Fatalf("call broken after sending = %v (code %v); want Unavailable, retryable for reads", err, status.Code(err))
	}
}

// rawRPCServer serves the RPC port on loopback, answering every method
// with handle; it stops when the test ends.
func rawRPCServer(t *testing.T, handle func(grpc.ServerStream) error) (net.Listener, *grpc.Server) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rpcL := newChanListener(ln.Addr())
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			var b [1]byte
			if _, err := c.Read(b[:]); err != nil || b[0] != connRPC {
				c.Close()
				continue
			}
			rpcL.push(c)
		}
	}()
	gs := grpc.NewServer(grpc.ForceServerCodec(jsonCodec{}), grpc.UnknownServiceHandler(func(_ any, st grpc.ServerStream) error {
		return handle(st)
	}))
	go func() { _ = gs.Serve(rpcL) }()
	// Cleanups run last-in first-out: the test's deferred calls (which
	// release blocked handlers) have run by then.
	t.Cleanup(func() { gs.Stop(); ln.Close(); rpcL.Close() })
	return ln, gs
}

// Renewing the pool's connections (a client agent that just got its
// auto_encrypt certificate) lets a request in flight finish on its old
// connection, sends the next ones on a new connection, and closes the
// old one after its last request: closing at once failed the write of a
// client that got its certificate while the write was on the way.
func TestRenewLetsRequestsInFlightFinish(t *testing.T) {
	var calls atomic.Int32
	arrived := make(chan struct{})
	release := make(chan struct{})
	ln, _ := rawRPCServer(t, func(st grpc.ServerStream) error {
		var req ApplyRequest
		if err := st.RecvMsg(&req); err != nil {
			return err
		}
		if calls.Add(1) == 1 {
			close(arrived)
			<-release
		}
		return st.SendMsg(&ApplyResponse{Applied: true})
	})
	addr := ln.Addr().String()
	p := newConnPool(nil)
	defer p.close()
	errc := make(chan error, 1)
	go func() {
		errc <- p.call(context.Background(), addr, "Apply", &ApplyRequest{Data: []byte{byte(catalog.CmdKV)}}, &ApplyResponse{})
	}()
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the first request never reached the server")
	}
	p.mu.Lock()
	old := p.conns[addr]
	p.mu.Unlock()
	if old == nil {
		t.Fatal("no pooled connection for the request in flight")
	}

	p.renew()
	if err := p.call(context.Background(), addr, "Apply", &ApplyRequest{Data: []byte{byte(catalog.CmdKV)}}, &ApplyResponse{}); err != nil {
		t.Fatalf("request after renew: %v", err)
	}
	p.mu.Lock()
	cur := p.conns[addr]
	p.mu.Unlock()
	if cur == nil || cur == old {
		t.Fatal("the request after renew did not use a new connection")
	}
	if st := old.cc.GetState(); st == connectivity.Shutdown {
		t.Fatal("renew closed the connection of a request in flight")
	}

	close(release)
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("request in flight across renew = %v, want success", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the request in flight never ended")
	}
	if st := old.cc.GetState(); st != connectivity.Shutdown {
		t.Fatalf("old connection in state %v after its last request, want closed", st)
	}
	p.mu.Lock()
	idle := p.conns[addr]
	p.mu.Unlock()
	p.renew()
	if st := idle.cc.GetState(); st != connectivity.Shutdown {
		t.Fatalf("idle connection in state %v after renew, want closed at once", st)
	}
}
