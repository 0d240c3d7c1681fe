package logthrottle_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tribune-mesh/tribune/clock"
	"github.com/tribune-mesh/tribune/logthrottle"
	"github.com/tribune-mesh/tribune/test/wait"
)

// sink collects the JSON lines an hclog logger writes.
type sink struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *sink) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(b)
}

// lines returns every line written so far, decoded.
func (s *sink) lines(t *testing.T) []map[string]interface{} {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]interface{}
	for _, l := range strings.Split(strings.TrimSpace(s.buf.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]interface{}
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

// count returns how many lines have message msg.
func (s *sink) count(t *testing.T, msg string) int {
	t.Helper()
	n := 0
	for _, l := range s.lines(t) {
		if l["@message"] == msg {
			n++
		}
	}
	return n
}

// summaries returns the summary lines, by source.
func (s *sink) summaries(t *testing.T) map[string]map[string]interface{} {
	t.Helper()
	out := map[string]map[string]interface{}{}
	for _, l := range s.lines(t) {
		if l["@message"] == logthrottle.SummaryMessage {
			out[fmt.Sprint(l["source"])] = l
		}
	}
	return out
}

const window = 10 * time.Second

// newLogger returns a throttling logger at TRACE over a sink, on a fake
// clock, closed when the test ends.
func newLogger(t *testing.T, cfg logthrottle.Config) (*logthrottle.Logger, *sink, *clock.Fake) {
	t.Helper()
	s := &sink{}
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	inner := hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Trace, Output: s, JSONFormat: true})
	cfg.Clock = clk
	if cfg.Window == 0 {
		cfg.Window = window
	}
	l := logthrottle.New(inner, cfg)
	t.Cleanup(l.Close)
	return l, s, clk
}

func TestRepeatsFromOneSourceAreSuppressed(t *testing.T) {
	l, s, clk := newLogger(t, logthrottle.Config{})
	for i := range 100 {
		// A new connection each time: the port changes, the host does not.
		l.Warn("unknown connection type on server port", "byte", 0x42, "remote", fmt.Sprintf("10.0.0.5:%d", 40000+i))
	}
	l.Warn("unknown connection type on server port", "byte", 0x42, "remote", "10.0.0.6:40000")
	if n := s.count(t, "unknown connection type on server port"); n != 2 {
		t.Fatalf("%d lines for 100 repeats from one source and 1 from another, want 2", n)
	}
	if len(s.summaries(t)) != 0 {
		t.Fatal("summary before the window ended")
	}

	clk.Advance(window)
	wait.For(t, 5*time.Second, func() error {
		sum, ok := s.summaries(t)["10.0.0.5"]
		if !ok {
			return fmt.Errorf("no summary for 10.0.0.5 in %v", s.lines(t))
		}
		if sum["suppressed"] != float64(99) || sum["message"] != "unknown connection type on server port" || sum["@level"] != "warn" {
			return fmt.Errorf("summary %v", sum)
		}
		// The fake clock runs each window's end on a goroutine of its
		// own: the other source's may not have ended yet.
		if n := l.Tracked(); n != 0 {
			return fmt.Errorf("%d pairs tracked after their windows ended", n)
		}
		return nil
	})
	if _, ok := s.summaries(t)["10.0.0.6"]; ok {
		t.Error("summary for a source that suppressed nothing")
	}
	// A new window: the next line passes again.
	l.Warn("unknown connection type on server port", "remote", "10.0.0.5:1")
	if n := s.count(t, "unknown connection type on server port"); n != 3 {
		t.Errorf("%d lines after the window, want 3", n)
	}
}

func TestBurstAndLevels(t *testing.T) {
	l, s, _ := newLogger(t, logthrottle.Config{Burst: 3})
	for range 10 {
		l.Error("bad packet", "from", "192.0.2.1:8301")
		l.Info("member joined", "from", "192.0.2.1:8301")
		l.Debug("probe", "from", "192.0.2.1:8301")
	}
	if n := s.count(t, "bad packet"); n != 3 {
		t.Errorf("%d error lines with burst 3, want 3", n)
	}
	if n := s.count(t, "member joined"); n != 10 {
		t.Errorf("%d info lines, want all 10: below MinLevel nothing is throttled", n)
	}
	if n := s.count(t, "probe"); n != 10 {
		t.Errorf("%d debug lines, want 10", n)
	}
}

func TestMessagesDifferingInNumbersAreOne(t *testing.T) {
	l, s, clk := newLogger(t, logthrottle.Config{})
	// memberlist logs through a standard logger, the source in its text.
	std := l.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true})
	std.Printf("[ERR] memberlist: UDP packet too short (3 bytes) from=10.1.2.3:7946")
	std.Printf("[ERR] memberlist: UDP packet too short (9 bytes) from=10.1.2.3:41000")
	std.Printf("[ERR] memberlist: UDP packet too short (12 bytes) from=10.1.2.4:7946")
	std.Printf("[WARN] memberlist: Got invalid checksum for UDP packet: 17, 99 from=10.1.2.3:7946")
	var got []string
	for _, line := range s.lines(t) {
		got = append(got, fmt.Sprint(line["@level"], " ", line["@message"]))
	}
	want := []string{
		"error memberlist: UDP packet too short (3 bytes) from=10.1.2.3:7946",
		"error memberlist: UDP packet too short (12 bytes) from=10.1.2.4:7946",
		"warn memberlist: Got invalid checksum for UDP packet: 17, 99 from=10.1.2.3:7946",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	clk.Advance(window)
	wait.For(t, 5*time.Second, func() error {
		if sum := s.summaries(t)["10.1.2.3"]; sum == nil || sum["suppressed"] != float64(1) {
			return fmt.Errorf("summary %v", sum)
		}
		return nil
	})
}

func TestDerivedLoggersShareCounts(t *testing.T) {
	l, s, _ := newLogger(t, logthrottle.Config{})
	conn := l.With("remote", "203.0.113.9:5000")
	conn.Warn("handshake timeout")
	l.With("remote", "203.0.113.9:5001").Warn("handshake timeout")
	conn.Named("rpc").Warn("handshake timeout") // another subsystem: its own count
	conn.Named("rpc").Warn("handshake timeout")
	if n := s.count(t, "handshake timeout"); n != 2 {
		t.Errorf("%d lines, want 2 (one per logger name)", n)
	}
}

func TestTrackedPairsAreBounded(t *testing.T) {
	l, s, clk := newLogger(t, logthrottle.Config{MaxKeys: 16})
	for i := range 5000 {
		l.Warn("junk packet", "from", fmt.Sprintf("10.%d.%d.%d:1", i>>16&255, i>>8&255, i&255))
	}
	if n := l.Tracked(); n > 17 {
		t.Fatalf("%d pairs tracked with MaxKeys 16", n)
	}
	// 16 sources pass, the rest share one overflow pair: one more line.
	if n := s.count(t, "junk packet"); n != 17 {
		t.Errorf("%d lines for 5000 sources with MaxKeys 16, want 17", n)
	}
	clk.Advance(window)
	wait.For(t, 5*time.Second, func() error {
		if n := l.Tracked(); n != 0 {
			return fmt.Errorf("%d pairs still tracked after the window", n)
		}
		if sum := s.summaries(t)["(other sources)"]; sum == nil || sum["suppressed"] != float64(5000-17) {
			return fmt.Errorf("overflow summary %v", sum)
		}
		return nil
	})
	if n := clk.Pending(); n != 0 {
		t.Errorf("%d timers pending after every window ended", n)
	}
}

func TestCloseWritesPendingSummaries(t *testing.T) {
	l, s, clk := newLogger(t, logthrottle.Config{})
	for range 5 {
		l.Warn("bad gossip message", "peer", "198.51.100.7")
	}
	l.Close()
	sum := s.summaries(t)["198.51.100.7"]
	if sum == nil || sum["suppressed"] != float64(4) {
		t.Fatalf("summary after Close: %v", sum)
	}
	if n := clk.Pending(); n != 0 {
		t.Errorf("%d timers pending after Close", n)
	}
	l.Warn("bad gossip message", "peer", "198.51.100.7")
	l.Warn("bad gossip message", "peer", "198.51.100.7")
	if n := s.count(t, "bad gossip message"); n != 3 {
		t.Errorf("%d lines: after Close every line passes", n)
	}
}
