package servertest_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/server"
	"github.com/tribune-mesh/tribune/server/servertest"
	"github.com/tribune-mesh/tribune/test/wait"
)

func get(ctx context.Context, s *servertest.Server, key string, opts catalog.QueryOptions) (*catalog.ReadResponse, error) {
	return s.Read(ctx, &catalog.ReadRequest{Op: catalog.ReadKVGet, Key: key, Options: opts})
}

// ReadIndex: concurrent consistent reads share one leadership round.
func TestConsistentReadsShareOneLeadershipRound(t *testing.T) {
	c := servertest.New(t, servertest.Options{Configure: func(_ int, cfg *server.Config) {
		cfg.RaftMultiplier = 5 // a lease long enough to hold a round
	}})
	leader := c.WaitForLeader(servertest.DefaultTimeout)
	put(t, leader, "k", "v")
	// Hold the leader's heartbeats: the first read starts a round that
	// cannot finish, and every other read queues behind it.
	for _, f := range c.Followers() {
		c.Net.CutOneWay(leader.Addr, f.Addr)
	}
	const reads = 100
	before, beforeReads := leader.ReadIndexStats()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, reads)
	for range reads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := get(ctx, leader, "k", catalog.QueryOptions{RequireConsistent: true})
			if err == nil && (resp.KV == nil || string(resp.KV.Value) != "v") {
				err = fmt.Errorf("read %+v", resp.KV)
			}
			errs <- err
		}()
	}
	// Wait until every read is queued or taken by a round. A round may
	// end early on the answer of a heartbeat already in flight; each
	// round takes the reads waiting when it starts.
	var early uint64
	wait.For(t, 5*time.Second, func() error {
		rounds, taken := leader.ReadIndexStats()
		early = rounds - before
		n := uint64(leader.PendingConsistentReads())
		if n+taken-beforeReads != reads {
			return fmt.Errorf("%d reads queued, %d taken by %d rounds", n, taken-beforeReads, early)
		}
		return nil
	})
	c.Heal()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if rounds, _ := leader.ReadIndexStats(); rounds-before > early+1 || rounds-before > 3 {
		t.Fatalf("%d consistent reads cost %d leadership rounds (%d before the queue formed), want one for all the queued", reads, rounds-before, early)
	}
}

// A follower cut from its leader reports its growing staleness, and
// max_stale refuses its data once it is older than allowed.
func TestStaleReadsOnAnIsolatedFollower(t *testing.T) {
	c := servertest.New(t, servertest.Options{Configure: func(_ int, cfg *server.Config) {
		cfg.HoldTimeout = 500 * time.Millisecond
	}})
	leader := c.WaitForLeader(servertest.DefaultTimeout)
	put(t, leader, "k", "v")
	c.WaitForReplication(servertest.DefaultTimeout)
	f := c.Followers()[0]
	ctx := context.Background()
	resp, err := get(ctx, f, "k", catalog.QueryOptions{AllowStale: true, MaxStaleDuration: time.Second})
	if err != nil || resp.KV == nil || !resp.Meta.KnownLeader || resp.Meta.LastContact > time.Second {
		t.Fatalf("stale read on a healthy follower: %+v, %v", resp, err)
	}

	c.Net.Isolate(f.Addr)
	isolated := time.Now()
	wait.For(t, 10*time.Second, func() error {
		resp, err := get(ctx, f, "k", catalog.QueryOptions{AllowStale: true})
		if err != nil {
			return err
		}
		if resp.Meta.LastContact < time.Second {
			return fmt.Errorf("LastContact %v", resp.Meta.LastContact)
		}
		if lower := time.Since(isolated) - 500*time.Millisecond; resp.Meta.LastContact < lower {
			return fmt.Errorf("LastContact %v, but isolated %v ago", resp.Meta.LastContact, time.Since(isolated))
		}
		return nil
	})
	// Too stale for max_stale=1s: the follower asks a leader it cannot
	// reach, and gives up after the hold timeout.
	if resp, err := get(ctx, f, "k", catalog.QueryOptions{AllowStale: true, MaxStaleDuration: time.Second}); !errors.Is(err, server.ErrNoLeader) {
		t.Fatalf("max_stale read on an isolated follower: %+v, %v; want ErrNoLeader", resp, err)
	}
	c.Heal()
	wait.For(t, 10*time.Second, func() error {
		resp, err := get(ctx, f, "k", catalog.QueryOptions{AllowStale: true, MaxStaleDuration: time.Second})
		if err != nil {
			return err
		}
		if resp.Meta.LastContact > time.Second {
			return fmt.Errorf("LastContact %v after healing", resp.Meta.LastContact)
		}
		return nil
	})
}

// The only voter of a cluster answers consistent reads without leadership
// rounds, and each still sees every write made before it.
func TestConsistentReadsOnTheOnlyVoter(t *testing.T) {
	c := servertest.New(t, servertest.Options{Servers: 1})
	leader := c.WaitForLeader(servertest.DefaultTimeout)
	rounds, reads := leader.ReadIndexStats()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 20 {
		v := fmt.Sprint(i)
		put(t, leader, "k", v)
		resp, err := get(ctx, leader, "k", catalog.QueryOptions{RequireConsistent: true})
		if err != nil {
			t.Fatal(err)
		}
		if resp.KV == nil || string(resp.KV.Value) != v {
			t.Fatalf("consistent read after writing %q: %+v", v, resp.KV)
		}
	}
	r, n := leader.ReadIndexStats()
	if r != rounds || n-reads != 20 {
		t.Fatalf("20 consistent reads on the only voter: %d rounds, %d reads confirmed; want 0 and 20", r-rounds, n-reads)
	}
}
