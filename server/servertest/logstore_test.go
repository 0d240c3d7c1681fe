package servertest_test

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tribune-mesh/tribune/server"
	"github.com/tribune-mesh/tribune/server/servertest"
	"github.com/tribune-mesh/tribune/test/wait"
)

// compactOften makes a server snapshot and truncate its log every 64
// entries, keeping 16: a few hundred writes go through several
// truncations of the log store.
func compactOften(cfg *server.Config) {
	cfg.SnapshotThreshold = 64
	cfg.SnapshotInterval = time.Hour
	cfg.TrailingLogs = 16
}

// waitKeys waits until s's state holds every key of want with its value.
func waitKeys(t *testing.T, s *servertest.Server, want map[string]string) {
	t.Helper()
	wait.For(t, 10*time.Second, func() error {
		for k, v := range want {
			_, e, err := s.Store().KVGet(nil, k)
			if err != nil {
				return err
			}
			if e == nil || string(e.Value) != v {
				return fmt.Errorf("%s on %s = %+v, want %q", k, s.Name, e, v)
			}
		}
		return nil
	})
}

// writeKeys puts n keys prefix<i mod 10> through s and returns the last
// value of each.
func writeKeys(t *testing.T, s *servertest.Server, prefix string, n int, want map[string]string) {
	t.Helper()
	for i := 0; i < n; i++ {
		k, v := fmt.Sprintf("%s%d", prefix, i%10), strconv.Itoa(i)
		put(t, s, k, v)
		want[k] = v
	}
}

// TestLogStoreBackends: each backend of raft_logstore keeps a server's log
// across snapshots, truncations and a restart.
func TestLogStoreBackends(t *testing.T) {
	for _, backend := range []string{server.LogStoreBoltDB, server.LogStoreWAL} {
		t.Run(backend, func(t *testing.T) {
			c := servertest.New(t, servertest.Options{Servers: 1, Persistent: true, Configure: func(_ int, cfg *server.Config) {
				compactOften(cfg)
				cfg.LogStore = backend
			}})
			s := c.WaitForLeader(servertest.DefaultTimeout)
			if got := s.LogStoreBackend(); got != backend {
				t.Fatalf("backend = %q, want %q", got, backend)
			}
			want := map[string]string{}
			writeKeys(t, s, "k", 300, want)
			wait.For(t, 10*time.Second, func() error {
				if st := s.Raft().Stats(); st["last_snapshot_index"] == "0" {
					return fmt.Errorf("no snapshot yet: %v", st)
				}
				return nil
			})
			// The entries after the last snapshot come back from the log.
			writeKeys(t, s, "after", 5, want)
			c.Restart(s, false)
			c.WaitForLeader(servertest.DefaultTimeout)
			waitKeys(t, s, want)
			if got := s.LogStoreBackend(); got != backend {
				t.Fatalf("backend after restart = %q, want %q", got, backend)
			}
			writeKeys(t, s, "k", 20, want)
			waitKeys(t, s, want)
		})
	}
}

// TestLogStoreKeepsTheExistingBackend: a server restarted with the other
// backend configured keeps the log its data directory holds (and its
// state), never starting on an empty log beside it.
func TestLogStoreKeepsTheExistingBackend(t *testing.T) {
	for _, tc := range []struct{ first, then string }{
		{server.LogStoreBoltDB, server.LogStoreWAL},
		{server.LogStoreWAL, server.LogStoreBoltDB},
		{server.LogStoreBoltDB, ""},
		{"", server.LogStoreBoltDB}, // a new data directory gets DefaultLogStore
	} {
		t.Run(fmt.Sprintf("%q-then-%q", tc.first, tc.then), func(t *testing.T) {
			var configured atomic.Value
			configured.Store(tc.first)
			c := servertest.New(t, servertest.Options{Servers: 1, Persistent: true, Configure: func(_ int, cfg *server.Config) {
				cfg.LogStore = configured.Load().(string)
			}})
			s := c.WaitForLeader(servertest.DefaultTimeout)
			want := map[string]string{}
			writeKeys(t, s, "k", 10, want)
			configured.Store(tc.then)
			c.Restart(s, false)
			c.WaitForLeader(servertest.DefaultTimeout)
			first := tc.first
			if first == "" {
				first = server.DefaultLogStore
			}
			if got := s.LogStoreBackend(); got != first {
				t.Fatalf("configured %q on a %s log: backend %q", tc.then, first, got)
			}
			waitKeys(t, s, want)
		})
	}
}

// TestWALFollowerCatchesUpAndRestores: on raft-wal (which accepts no gap in
// its indexes), a follower that missed entries the leader has compacted
// away gets the leader's snapshot on top of its old log, and a snapshot
// restore on the leader replaces every server's log; writes go on after
// both.
func TestWALFollowerCatchesUpAndRestores(t *testing.T) {
	c := servertest.New(t, servertest.Options{Persistent: true, Configure: func(_ int, cfg *server.Config) {
		compactOften(cfg)
		cfg.LogStore = server.LogStoreWAL
	}})
	leader := c.WaitForLeader(servertest.DefaultTimeout)
	want := map[string]string{}
	writeKeys(t, leader, "k", 20, want)
	c.WaitForReplication(servertest.DefaultTimeout)

	lagging := c.Followers()[0]
	c.Stop(lagging)
	writeKeys(t, leader, "k", 300, want)
	c.Restart(lagging, false)
	waitKeys(t, lagging, want)
	writeKeys(t, leader, "more", 10, want)
	c.WaitForReplication(servertest.DefaultTimeout)
	waitKeys(t, lagging, want)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	archive, err := leader.SaveSnapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	writeKeys(t, leader, "lost", 3, map[string]string{})
	if err := leader.RestoreSnapshot(ctx, archive); err != nil {
		t.Fatalf("restore: %v", err)
	}
	writeKeys(t, leader, "restored", 3, want)
	c.WaitForReplication(servertest.DefaultTimeout)
	for _, s := range c.Running() {
		waitKeys(t, s, want)
		if _, e, _ := s.Store().KVGet(nil, "lost0"); e != nil {
			t.Fatalf("%s still has lost0 after the restore", s.Name)
		}
	}
}
