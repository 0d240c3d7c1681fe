// Package agenttest starts real Tribune agents inside a test process, each on
// its own free loopback ports, and stops them when the test ends.
package agenttest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tribune-mesh/tribune/agent"
	"github.com/tribune-mesh/tribune/agent/config"
	"github.com/tribune-mesh/tribune/test/freeport"
)

// FreePorts returns n distinct free ports of 127.0.0.1 (freeport.Take).
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	return freeport.Take(t, n)
}

// Config returns a -dev configuration on free ports, in memory. Callers may
// change it before Start.
func Config(t testing.TB) *config.Config {
	t.Helper()
	p := FreePorts(t, 6)
	c := config.DevDefault()
	c.NodeName = fmt.Sprintf("test-%d", p[0])
	c.BindAddr = "127.0.0.1"
	c.ClientAddrs = []string{"127.0.0.1"}
	c.Ports.HTTP, c.Ports.DNS, c.Ports.Server, c.Ports.SerfLAN, c.Ports.SerfWAN, c.Ports.GRPC = p[0], p[1], p[2], p[3], p[4], p[5]
	c.DataDir = ""
	return c
}

// Start starts an agent from cfg (a fresh dev configuration when nil), waits
// until it has a leader and its node is registered, and stops it when the
// test ends.
func Start(t testing.TB, cfg *config.Config) *agent.Agent {
	t.Helper()
	if cfg == nil {
		cfg = Config(t)
	}
	tw := &testWriter{t: t}
	logger := hclog.NewInterceptLogger(&hclog.LoggerOptions{Name: cfg.NodeName, Level: testLogLevel(), Output: tw})
	a, err := agent.New(cfg, logger)
	if err != nil {
		t.Fatalf("start agent: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := a.Shutdown(ctx); err != nil {
			t.Errorf("shutdown agent: %v", err)
		}
		tw.done.Store(true)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.WaitForLeader(ctx); err != nil {
		t.Fatalf("agent %s: %v", cfg.NodeName, err)
	}
	// The leader registers the node with its serfHealth check shortly
	// after it is elected; wait, so the registration cannot land in the
	// middle of a test and wake its blocking queries.
	if srv := a.Server(); srv != nil {
		for {
			if c, err := srv.Store().CheckOf(cfg.NodeName, "serfHealth"); err == nil && c != nil {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("agent %s: node not registered", cfg.NodeName)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return a
}

// testWriter sends log lines to the test log until the agent is stopped;
// a late line from a stopping goroutine is dropped rather than logged after
// the test ended.
type testWriter struct {
	t    testing.TB
	done atomic.Bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	if !w.done.Load() {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// ClusterConfig returns the configuration of a server (server true) or client
// of a cluster that joins through joinAddr ("127.0.0.1:<serf port>", empty
// for the first member), with fast Raft and gossip timings.
func ClusterConfig(t testing.TB, name string, server bool, expect int, joinAddr string) *config.Config {
	t.Helper()
	p := FreePorts(t, 6)
	c := config.Default()
	c.NodeName = name
	c.Server = server
	c.BootstrapExpect = 0
	if server {
		c.BootstrapExpect = expect
	}
	c.BindAddr = "127.0.0.1"
	c.ClientAddrs = []string{"127.0.0.1"}
	c.Ports.HTTP, c.Ports.DNS, c.Ports.Server, c.Ports.SerfLAN, c.Ports.SerfWAN, c.Ports.GRPC = p[0], p[1], p[2], p[3], p[4], p[5]
	c.Performance.RaftMultiplier = 1
	c.RetryInterval = 200 * time.Millisecond
	if joinAddr != "" {
		c.RetryJoin = []string{joinAddr}
	}
	c.DataDir = t.TempDir()
	return c
}

// StartNoWait starts an agent without waiting for a leader; it is stopped
// when the test ends unless the test stops it first.
func StartNoWait(t testing.TB, cfg *config.Config) *agent.Agent {
	t.Helper()
	tw := &testWriter{t: t}
	logger := hclog.NewInterceptLogger(&hclog.LoggerOptions{Name: cfg.NodeName, Level: testLogLevel(), Output: tw})
	a, err := agent.New(cfg, logger)
	if err != nil {
		t.Fatalf("start agent %s: %v", cfg.NodeName, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = a.Shutdown(ctx)
		tw.done.Store(true)
	})
	return a
}

// SerfAddr returns the gossip address of a configuration.
func SerfAddr(c *config.Config) string {
	return fmt.Sprintf("127.0.0.1:%d", c.Ports.SerfLAN)
}

// testLogLevel is Warn unless TRIBUNE_TEST_LOG names another level.
func testLogLevel() hclog.Level {
	if l := hclog.LevelFromString(os.Getenv("TRIBUNE_TEST_LOG")); l != hclog.NoLevel {
		return l
	}
	return hclog.Warn
}
