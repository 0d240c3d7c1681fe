package server

import (
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tribune-mesh/tribune/listen"
	"github.com/tribune-mesh/tribune/test/wait"
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

// muxHarness runs serveMux over a loopback listener the way setupRaft
// wires it, without Raft or gRPC behind the two channel listeners.
type muxHarness struct {
	s           *Server
	addr        string
	raftL, rpcL *chanListener
}

func newMuxHarness(t *testing.T, failures int32, handshake time.Duration, maxConns int) *muxHarness {
	t.Helper()
	return newMuxHarnessConfig(t, failures, &Config{RPCHandshakeTimeout: handshake}, maxConns, hclog.NewNullLogger())
}

// newMuxHarnessConfig is newMuxHarness with a server configuration and a
// logger of the test's choice.
func newMuxHarnessConfig(t *testing.T, failures int32, cfg *Config, maxConns int, logger hclog.Logger) *muxHarness {
	t.Helper()
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	inner := &emfileListener{Listener: tcp}
	inner.failures.Store(failures)
	s := &Server{config: cfg, logger: logger,
		shutdownCh: make(chan struct{}), rpcConns: newConnLimiter(maxConns)}
	ln := listen.Retry(inner, nil, nil)
	h := &muxHarness{s: s, addr: tcp.Addr().String(), raftL: newChanListener(tcp.Addr()), rpcL: newChanListener(tcp.Addr())}
	s.wg.Add(1)
	go s.serveMux(ln, h.raftL, h.rpcL)
	t.Cleanup(func() {
		close(s.shutdownCh)
		ln.Close()
		h.raftL.Close()
		h.rpcL.Close()
		s.wg.Wait()
	})
	return h
}

// dial connects from the local address ip (any port) and sends data.
func dialFrom(t *testing.T, ip, addr string, data []byte) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", ip, err)
	}
	t.Cleanup(func() { c.Close() })
	if len(data) > 0 {
		if _, err := c.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// accept returns the next connection routed to l, failing after 10s.
func accept(t *testing.T, l *chanListener) net.Conn {
	t.Helper()
	select {
	case c := <-l.ch:
		t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no connection was routed")
		return nil
	}
}

// closedByPeer reports whether the server closed c within d.
func closedByPeer(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	var b [1]byte
	_, err := c.Read(b[:])
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
}

func TestServerPortSurvivesEMFILE(t *testing.T) {
	h := newMuxHarness(t, 5, 5*time.Second, 100)
	dialFrom(t, "127.0.0.1", h.addr, []byte{connRPC, 'P', 'R', 'I'})
	c := accept(t, h.rpcL)
	// The bytes read while routing are handed on, in order.
	buf := make([]byte, 3)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "PRI" {
		t.Fatalf("routed connection reads %q, %v; want %q", buf, err, "PRI")
	}
	dialFrom(t, "127.0.0.1", h.addr, []byte{connRaft, 0})
	accept(t, h.raftL)
}

func TestServerPortHandshakeTimeout(t *testing.T) {
	h := newMuxHarness(t, 0, 200*time.Millisecond, 100)
	silent := dialFrom(t, "127.0.0.1", h.addr, nil)
	typeOnly := dialFrom(t, "127.0.0.1", h.addr, []byte{connRaft})
	for name, c := range map[string]net.Conn{"silent": silent, "type byte only": typeOnly} {
		if !closedByPeer(c, 5*time.Second) {
			t.Fatalf("%s connection was not closed after the handshake timeout", name)
		}
	}
	wait.For(t, 5*time.Second, func() error {
		if n := h.s.rpcConns.open("127.0.0.1"); n != 0 {
			return errors.New("closed connections still hold their slots")
		}
		return nil
	})
	// A connection that speaks in time is routed and stays open.
	client := dialFrom(t, "127.0.0.1", h.addr, []byte{connRPC, 'x'})
	c := accept(t, h.rpcL)
	// Let the handshake timeout pass (a duration, not a condition, is
	// what is under test): the routed connection has no deadline left.
	time.Sleep(400 * time.Millisecond)
	if _, err := client.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "xy" {
		t.Fatalf("routed connection reads %q, %v after the handshake timeout", buf, err)
	}
}

func TestServerPortMaxConnsPerClient(t *testing.T) {
	const limit = 100
	h := newMuxHarness(t, 0, 5*time.Second, limit)
	var held []net.Conn
	for i := 0; i < limit; i++ {
		dialFrom(t, "127.0.0.1", h.addr, []byte{connRPC, 'x'})
		held = append(held, accept(t, h.rpcL))
	}
	extra := dialFrom(t, "127.0.0.1", h.addr, []byte{connRPC, 'x'})
	if !closedByPeer(extra, 5*time.Second) {
		t.Fatalf("connection %d from one IP was not refused", limit+1)
	}
	// Another source IP is not affected.
	dialFrom(t, "127.0.0.2", h.addr, []byte{connRPC, 'x'})
	accept(t, h.rpcL)
	// A closed connection gives its slot back.
	held[0].Close()
	wait.For(t, 5*time.Second, func() error {
		if n := h.s.rpcConns.open("127.0.0.1"); n != limit-1 {
			return errors.New("slot not released")
		}
		return nil
	})
	dialFrom(t, "127.0.0.1", h.addr, []byte{connRPC, 'x'})
	accept(t, h.rpcL)
}
