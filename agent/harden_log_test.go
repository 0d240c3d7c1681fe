package agent_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tribune-mesh/tribune/agent"
	"github.com/tribune-mesh/tribune/agent/agenttest"
	"github.com/tribune-mesh/tribune/test/wait"
)

// lockedBuffer is a log sink safe for concurrent writers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// linesWith returns the log lines containing every one of subs.
func linesWith(log string, subs ...string) []string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(l, s)
		}
		if ok {
			out = append(out, l)
		}
	}
	return out
}

// Issue 10 #12: peers cannot flood the log. 200 junk connections to the
// server port and 300 junk gossip packets from one host cost one line each
// per window, and a summary with the count of those suppressed.
func TestHarden_PeerJunkLogsThrottled(t *testing.T) {
	t.Parallel()
	cfg := agenttest.Config(t)
	logs := &lockedBuffer{}
	a, err := agent.New(cfg, hclog.New(&hclog.LoggerOptions{Name: cfg.NodeName, Level: hclog.Info, Output: logs}))
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := a.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	}
	t.Cleanup(stop)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.WaitForLeader(ctx); err != nil {
		t.Fatal(err)
	}

	// Server port: an unknown connection type, then the server closes.
	const conns = 200
	serverAddr := fmt.Sprintf("127.0.0.1:%d", cfg.Ports.Server)
	for i := 0; i < conns; i++ {
		c, err := net.DialTimeout("tcp", serverAddr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write([]byte("\x99junk"))
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.Copy(io.Discard, c) // until the server closes it
		c.Close()
	}

	// Gossip port: packets of an unknown message type.
	u, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", cfg.Ports.SerfLAN))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	for i := 0; i < 300; i++ {
		_, _ = u.Write([]byte{0x7f, byte(i), 'j', 'u', 'n', 'k'})
	}
	wait.For(t, 10*time.Second, func() error {
		if len(linesWith(logs.String(), "memberlist")) == 0 {
			return fmt.Errorf("no memberlist line yet")
		}
		return nil
	})
	stop() // writes the pending summaries

	out := logs.String()
	var port []string
	for _, l := range linesWith(out, "unknown connection type") {
		if !strings.Contains(l, "suppressed") {
			port = append(port, l)
		}
	}
	if len(port) != 1 {
		t.Errorf("%d lines for the server port's junk, want 1:\n%s", len(port), strings.Join(port[:min(len(port), 5)], "\n"))
	}
	if s := linesWith(out, "suppressed", "unknown connection type"); len(s) != 1 || !strings.Contains(s[0], fmt.Sprintf("suppressed=%d", conns-1)) {
		t.Errorf("server port summary = %q, want suppressed=%d", s, conns-1)
	}
	gossip := linesWith(out, "memberlist")
	var raw, summaries int
	for _, l := range gossip {
		if strings.Contains(l, "suppressed") {
			summaries++
		} else {
			raw++
		}
	}
	if raw > 2 || summaries < 1 {
		t.Errorf("gossip junk: %d lines and %d summaries, want at most 2 and at least 1:\n%s",
			raw, summaries, strings.Join(gossip[:min(len(gossip), 5)], "\n"))
	}
	t.Logf("server port: %d junk connections -> %d line(s); gossip: 300 junk packets -> %d line(s) + %d summary", conns, len(port), raw, summaries)
}
