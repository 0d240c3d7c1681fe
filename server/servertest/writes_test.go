package servertest_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/server"
	"github.com/tribune-mesh/tribune/server/servertest"
	"github.com/tribune-mesh/tribune/test/wait"
)

// casCreate writes key only if it does not exist (check-and-set at index
// 0): a write that is sent twice answers false the second time.
func casCreate(ctx context.Context, s *servertest.Server, key, value string) (any, error) {
	return s.Apply(ctx, catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVCAS, Entry: catalog.KVEntry{Key: key, Value: []byte(value)}})
}

func waitValue(t *testing.T, c *servertest.Cluster, key, value string) {
	t.Helper()
	wait.For(t, servertest.DefaultTimeout, func() error {
		for _, s := range c.Running() {
			_, e, err := s.Store().KVGet(nil, key)
			if err != nil {
				return err
			}
			if e == nil || string(e.Value) != value {
				return fmt.Errorf("%s: %s = %+v", s.Name, key, e)
			}
		}
		return nil
	})
}

// A forwarded write whose answer is lost may have been applied: the
// follower must report the outcome as unknown, never send it again (a
// resent CAS would answer false for a write that happened).
func TestForwardedWriteWithLostAnswerIsNotResent(t *testing.T) {
	c := servertest.New(t, servertest.Options{Configure: func(_ int, cfg *server.Config) {
		cfg.HoldTimeout = time.Second
		// Leadership outlasts the hold: the follower, which stops
		// hearing the leader, must not see a new one meanwhile.
		cfg.RaftMultiplier = 5
	}})
	leader := c.WaitForLeader(servertest.DefaultTimeout)
	f := c.Followers()[0]
	put(t, f, "warm", "up") // the follower's connection to the leader is open
	// The request reaches the leader; its answer never comes back.
	c.Net.CutOneWay(leader.Addr, f.Addr)
	res, err := casCreate(context.Background(), f, "once", "1")
	if err == nil {
		t.Fatalf("write with a lost answer = %+v, want an error (outcome unknown)", res)
	}
	if errors.Is(err, server.ErrNoLeader) {
		t.Fatalf("write with a lost answer = %v: retried until the hold timeout", err)
	}
	c.Heal()
	c.WaitForReplication(servertest.DefaultTimeout)
	// It was applied, once: the leader holds it at the index of its one
	// creation.
	waitValue(t, c, "once", "1")
	_, e, _ := leader.Store().KVGet(nil, "once")
	if e.CreateIndex != e.ModifyIndex {
		t.Fatalf("once was written twice: %+v", e.RaftIndex)
	}
}

// A forwarded write that could not leave (no connection to the leader) is
// safe to retry, and is retried within the hold timeout.
func TestForwardedWriteNotSentIsRetried(t *testing.T) {
	c := servertest.New(t, servertest.Options{Configure: func(_ int, cfg *server.Config) {
		cfg.HoldTimeout = 10 * time.Second
	}})
	leader := c.WaitForLeader(servertest.DefaultTimeout)
	f := c.Followers()[0]
	// The follower has never sent an RPC to the leader: no connection
	// exists, and none can be made while the link is cut.
	c.Net.Cut(leader.Addr, f.Addr)
	done := make(chan error, 1)
	go func() {
		res, err := casCreate(context.Background(), f, "retried", "1")
		if err == nil {
			if r, ok := res.(catalog.KVResult); !ok || !r.OK {
				err = fmt.Errorf("result %+v", res)
			}
		}
		done <- err
	}()
	// Let the follower's dials be refused a few times, then heal.
	wait.For(t, 5*time.Second, func() error {
		select {
		case err := <-done:
			t.Fatalf("write returned while the link was cut: %v", err)
		default:
		}
		if n := c.Net.Refused(f.Addr, leader.Addr); n < 3 {
			return fmt.Errorf("%d dials refused", n)
		}
		return nil
	})
	if _, e, _ := leader.Store().KVGet(nil, "retried"); e != nil {
		t.Fatal("the write crossed a cut link")
	}
	c.Heal()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("write retried after the heal: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("write not retried after the heal")
	}
	waitValue(t, c, "retried", "1")
}
