// Package servertest runs clusters of Tribune servers inside one test
// process, on an in-process Network that the test can partition, cut one
// way, slow down or reset between any pair of servers. It waits for
// conditions (a leader, replication) with deadlines, never by sleeping.
//
// The servers are the real ones (server.New) with the real Raft; only
// their network is replaced (server.Config.Listener and Dial), so a test
// exercises the code that runs in production. The package must not be
// imported outside tests.
package servertest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/gossip"
	"github.com/tribune-mesh/tribune/server"
	"github.com/tribune-mesh/tribune/test/wait"
)

// Options configure a Cluster. The zero value runs three servers with
// in-memory Raft stores.
type Options struct {
	// Servers is how many servers to run; 0 means 3.
	Servers int
	// Persistent keeps each server's Raft log in a data directory, so
	// Restart without wipe brings it back with its state.
	Persistent bool
	// Configure, when set, adjusts each server's configuration before it
	// starts (it is called again on every restart).
	Configure func(i int, cfg *server.Config)
	// NoForm leaves the servers unformed: nobody bootstraps. The test
	// forms the cluster itself.
	NoForm bool
	// Gossip gives every server a LAN gossip pool on the Network, joined
	// to the first server's: the leader then adds servers to Raft and
	// the catalog from their membership, as in production.
	Gossip bool
	// BootstrapExpect, when > 0, forms the cluster the production way:
	// nobody bootstraps alone, every server waits (through gossip) for
	// that many servers. It implies Gossip.
	BootstrapExpect int
}

// Cluster is a set of servers on one Network.
type Cluster struct {
	t       testing.TB
	opts    Options
	Net     *Network
	Servers []*Server
}

// Server is one server of a Cluster. Its embedded *server.Server is nil
// while it is stopped; use it only from the test goroutine that stops and
// restarts it.
type Server struct {
	*server.Server
	// Index is the server's position in Cluster.Servers.
	Index int
	// Name is its node name and Raft ID; Addr its server port address;
	// GossipAddr its gossip address (same host).
	Name, Addr, GossipAddr string
	// Gossip is its gossip pool (Options.Gossip), nil while stopped.
	Gossip  *gossip.Pool
	dataDir string
	mu      sync.Mutex
}

// DefaultTimeout bounds the harness's waits.
const DefaultTimeout = 10 * time.Second

// New starts a cluster and, unless opts.NoForm, forms it: the first server
// bootstraps, the others join as voters, and New returns once they all
// follow one leader and hold its log. Everything stops at the test's end.
func New(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Servers <= 0 {
		opts.Servers = 3
	}
	if opts.BootstrapExpect > 0 {
		opts.Gossip = true
	}
	c := &Cluster{t: t, opts: opts, Net: NewNetwork()}
	for i := range opts.Servers {
		s := &Server{Index: i, Name: fmt.Sprintf("s%d", i), Addr: fmt.Sprintf("10.0.0.%d:8300", i+1),
			GossipAddr: fmt.Sprintf("10.0.0.%d:8301", i+1)}
		if opts.Persistent {
			s.dataDir = t.TempDir()
		}
		c.Servers = append(c.Servers, s)
	}
	// After the data directories: cleanups run last first, and the
	// servers must stop before their directories go.
	t.Cleanup(c.close)
	for _, s := range c.Servers {
		c.start(s, !opts.NoForm && opts.BootstrapExpect == 0 && s.Index == 0)
	}
	if opts.NoForm {
		return c
	}
	if opts.Gossip {
		for _, s := range c.Servers[1:] {
			c.Join(s, c.Servers[0])
		}
		c.WaitForPeers(DefaultTimeout, len(c.Servers))
		c.WaitForReplication(DefaultTimeout)
		return c
	}
	leader := c.WaitForLeaderAmong(DefaultTimeout, c.Servers[:1])
	for _, s := range c.Servers[1:] {
		if err := leader.Raft().AddVoter(raft.ServerID(s.Name), raft.ServerAddress(s.Addr), 0, DefaultTimeout).Error(); err != nil {
			t.Fatalf("servertest: add voter %s: %v", s.Name, err)
		}
	}
	c.WaitForReplication(DefaultTimeout)
	return c
}

// Join joins s's gossip pool to the one of to.
func (c *Cluster) Join(s, to *Server) {
	c.t.Helper()
	if _, err := s.pool().Join([]string{to.GossipAddr}); err != nil {
		c.t.Fatalf("servertest: %s joins %s: %v", s.Name, to.Name, err)
	}
}

// WaitForPeers waits until every running server follows one leader and
// has n voters in its configuration.
func (c *Cluster) WaitForPeers(timeout time.Duration, n int) {
	c.t.Helper()
	c.WaitForLeader(timeout)
	wait.For(c.t, timeout, func() error {
		for _, s := range c.Running() {
			peers, err := s.running().Peers()
			if err != nil {
				return err
			}
			if len(peers) != n {
				return fmt.Errorf("%s has peers %v, want %d", s.Name, peers, n)
			}
		}
		return nil
	})
	c.WaitForLeader(timeout)
}

// tags are the gossip tags of a server, as the agent sets them.
func (c *Cluster) tags(s *Server) map[string]string {
	t := map[string]string{"dc": "dc1", "id": s.Name, "role": "consul", "port": "8300", "vsn": "2", "vsn_min": "2", "vsn_max": "3"}
	if c.opts.BootstrapExpect > 1 {
		t["expect"] = fmt.Sprint(c.opts.BootstrapExpect)
	}
	return t
}

// Config returns the configuration server i starts with.
func (c *Cluster) Config(s *Server, bootstrap bool) *server.Config {
	cfg := server.DefaultConfig()
	cfg.NodeName, cfg.NodeID = s.Name, s.Name
	cfg.AdvertiseAddr, cfg.RPCAddr = s.Addr, s.Addr
	cfg.Bootstrap = bootstrap
	cfg.RaftMultiplier = 1
	cfg.HoldTimeout = 5 * time.Second
	cfg.Dial = c.Net.Dialer(s.Addr)
	if s.dataDir != "" {
		cfg.DataDir = s.dataDir
	} else {
		cfg.InMemory = true
	}
	if lvl := os.Getenv("TRIBUNE_TEST_LOG"); lvl != "" {
		cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: s.Name, Level: hclog.LevelFromString(lvl), Output: os.Stderr})
	}
	if c.opts.BootstrapExpect > 0 {
		cfg.BootstrapExpect = c.opts.BootstrapExpect
	}
	if c.opts.Configure != nil {
		c.opts.Configure(s.Index, cfg)
	}
	return cfg
}

func (c *Cluster) start(s *Server, bootstrap bool) {
	c.t.Helper()
	cfg := c.Config(s, bootstrap)
	ln, err := c.Net.Listen(s.Addr)
	if err != nil {
		c.t.Fatalf("servertest: %v", err)
	}
	cfg.Listener = ln
	var pool *gossip.Pool
	if c.opts.Gossip {
		tr, err := c.Net.NewGossipTransport(s.GossipAddr)
		if err != nil {
			ln.Close()
			c.t.Fatalf("servertest: %v", err)
		}
		pool, err = gossip.New(&gossip.Config{NodeName: s.Name, Tags: c.tags(s), Fast: true,
			Transport: tr, Logger: cfg.Logger, Clock: cfg.Clock, ReconnectTimeout: cfg.ReconnectTimeout})
		if err != nil {
			ln.Close()
			_ = tr.Shutdown()
			c.t.Fatalf("servertest: gossip of %s: %v", s.Name, err)
		}
		cfg.Gossip = pool
	}
	srv, err := server.New(cfg)
	if err != nil {
		ln.Close()
		if pool != nil {
			_ = pool.Shutdown()
		}
		c.t.Fatalf("servertest: start %s: %v", s.Name, err)
	}
	s.mu.Lock()
	s.Server, s.Gossip = srv, pool
	s.mu.Unlock()
}

func (s *Server) pool() *gossip.Pool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.Gossip
}

// Leave makes s leave gossip gracefully, then stops it.
func (c *Cluster) Leave(s *Server) {
	c.t.Helper()
	if p := s.pool(); p != nil {
		if err := p.Leave(2 * time.Second); err != nil {
			c.t.Logf("servertest: %s leaves: %v", s.Name, err)
		}
	}
	c.Stop(s)
}

// Stop shuts s down, as a crash would: its connections reset.
func (c *Cluster) Stop(s *Server) {
	c.t.Helper()
	s.mu.Lock()
	srv, pool := s.Server, s.Gossip
	s.Server, s.Gossip = nil, nil
	s.mu.Unlock()
	if srv == nil {
		return
	}
	c.Net.Disconnect(s.Addr)
	if err := srv.Shutdown(); err != nil {
		c.t.Logf("servertest: shutdown %s: %v", s.Name, err)
	}
	if pool != nil {
		if err := pool.Shutdown(); err != nil {
			c.t.Logf("servertest: gossip shutdown %s: %v", s.Name, err)
		}
	}
}

// Restart stops s if it runs and starts it again: with its data, or, with
// wipe, as a server that lost its data directory (it rejoins the
// configuration it is in and gets the leader's log or snapshot).
func (c *Cluster) Restart(s *Server, wipe bool) {
	c.t.Helper()
	c.Stop(s)
	if wipe && s.dataDir != "" {
		if err := os.RemoveAll(s.dataDir); err != nil {
			c.t.Fatalf("servertest: wipe %s: %v", s.Name, err)
		}
		if err := os.MkdirAll(s.dataDir, 0o700); err != nil {
			c.t.Fatalf("servertest: wipe %s: %v", s.Name, err)
		}
	}
	c.start(s, false)
	if c.opts.Gossip {
		for _, o := range c.Running() {
			if o != s {
				c.Join(s, o)
				break
			}
		}
	}
}

// Running returns the servers that run.
func (c *Cluster) Running() []*Server {
	var out []*Server
	for _, s := range c.Servers {
		if s.running() != nil {
			out = append(out, s)
		}
	}
	return out
}

func (s *Server) running() *server.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.Server
}

// Leader returns the running server that leads, nil when none does.
func (c *Cluster) Leader() *Server {
	for _, s := range c.Running() {
		if srv := s.running(); srv != nil && srv.IsLeader() {
			return s
		}
	}
	return nil
}

// Followers returns the running servers that do not lead.
func (c *Cluster) Followers() []*Server {
	var out []*Server
	for _, s := range c.Running() {
		if srv := s.running(); srv != nil && !srv.IsLeader() {
			out = append(out, s)
		}
	}
	return out
}

// WaitForLeader waits until exactly one running server leads, every running
// server knows it, and it serves reads; it returns the leader.
func (c *Cluster) WaitForLeader(timeout time.Duration) *Server {
	c.t.Helper()
	return c.WaitForLeaderAmong(timeout, nil)
}

// WaitForLeaderAmong is WaitForLeader among servers only (nil: every
// running one), e.g. the majority side of a partition.
func (c *Cluster) WaitForLeaderAmong(timeout time.Duration, servers []*Server) *Server {
	c.t.Helper()
	var leader *Server
	wait.For(c.t, timeout, func() error {
		leader = nil
		among := servers
		if among == nil {
			among = c.Running()
		}
		for _, s := range among {
			if s.running().IsLeader() {
				if leader != nil {
					return fmt.Errorf("two leaders: %s and %s", leader.Name, s.Name)
				}
				leader = s
			}
		}
		if leader == nil {
			return errors.New("no leader")
		}
		for _, s := range among {
			if got := s.running().Leader(); got != leader.Addr {
				return fmt.Errorf("%s follows %q, not %s", s.Name, got, leader.Addr)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := leader.running().Read(ctx, &catalog.ReadRequest{Op: catalog.ReadNodes})
		return err
	})
	return leader
}

// WaitForReplication waits until every running server's FSM has applied
// what the leader's had applied when it was called.
func (c *Cluster) WaitForReplication(timeout time.Duration) {
	c.t.Helper()
	leader := c.WaitForLeader(timeout)
	want := leader.running().AppliedIndex()
	wait.For(c.t, timeout, func() error {
		for _, s := range c.Running() {
			if got := s.running().AppliedIndex(); got < want {
				return fmt.Errorf("%s has applied %d, the leader %d", s.Name, got, want)
			}
		}
		return nil
	})
}

// Partition cuts every link between servers of different groups; servers
// in no group are cut from everyone.
func (c *Cluster) Partition(groups ...[]*Server) {
	group := map[*Server]int{}
	for i, g := range groups {
		for _, s := range g {
			group[s] = i + 1
		}
	}
	for _, a := range c.Servers {
		for _, b := range c.Servers {
			if a.Index < b.Index && (group[a] == 0 || group[a] != group[b]) {
				c.Net.Cut(a.Addr, b.Addr)
			}
		}
	}
}

// Heal restores every link.
func (c *Cluster) Heal() { c.Net.HealAll() }

func (c *Cluster) close() {
	for _, s := range c.Servers {
		c.Stop(s)
	}
	c.Net.Close()
	if err := wait.Until(context.Background(), 5*time.Second, leakedGoroutines); err != nil {
		c.t.Errorf("servertest: goroutines left after the cluster stopped: %v", err)
	}
}

// leakedGoroutines returns an error listing the goroutines running
// Tribune code other than the caller's; every server, pool and network
// must have stopped its own.
func leakedGoroutines() error {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var leaked []string
	for i, g := range strings.Split(string(buf), "\n\n") {
		if i == 0 || !strings.Contains(g, "github.com/tribune-mesh/tribune/") {
			continue // the first is the caller's
		}
		if strings.Contains(g, "testing.tRunner") {
			continue // a test's own goroutine
		}
		leaked = append(leaked, g)
	}
	if len(leaked) > 0 {
		return fmt.Errorf("%d goroutines, the first:\n%s", len(leaked), leaked[0])
	}
	return nil
}
