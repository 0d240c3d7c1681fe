package servertest_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/server"
	"github.com/tribune-mesh/tribune/server/servertest"
	"github.com/tribune-mesh/tribune/test/wait"
)

// ackLog remembers when each value of a counter key was acknowledged.
type ackLog struct {
	mu  sync.Mutex
	ack []time.Time // ack[v] is when value v was acknowledged
}

func (a *ackLog) add(at time.Time) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ack = append(a.ack, at)
	return len(a.ack) - 1
}

// age returns how old an answer holding value v (-1: no value) was at
// when: the time since a newer value was acknowledged, 0 if none was.
func (a *ackLog) age(v int, when time.Time) time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	next := v + 1
	if next >= len(a.ack) || a.ack[next].After(when) {
		return 0
	}
	return when.Sub(a.ack[next])
}

// §7: a wiped follower catching up never presents data older than
// max_stale as fresh, and its answers report its real lag.
func TestWipedFollowerDoesNotLieAboutStaleness(t *testing.T) {
	for _, tc := range []struct {
		name      string
		snapshots bool
	}{{"log replay", false}, {"snapshot install", true}} {
		t.Run(tc.name, func(t *testing.T) {
			// raft's in-memory snapshot store races when a snapshot is
			// sent while the next is written: snapshots go to disk.
			c := servertest.New(t, servertest.Options{Persistent: tc.snapshots, Configure: func(_ int, cfg *server.Config) {
				cfg.HoldTimeout = 2 * time.Second
				cfg.RaftMultiplier = 2 // no elections from a slow test machine
				if tc.snapshots {
					cfg.SnapshotThreshold, cfg.SnapshotInterval, cfg.TrailingLogs = 256, 200*time.Millisecond, 256
				}
			}})
			leader := c.WaitForLeader(servertest.DefaultTimeout)
			f := c.Followers()[0]
			testWipedFollower(t, c, leader, f)
		})
	}
}

func testWipedFollower(t *testing.T, c *servertest.Cluster, leader, f *servertest.Server) {
	ctx := context.Background()
	var acks ackLog
	write := func(v int) {
		t.Helper()
		wait.For(t, servertest.DefaultTimeout, func() error {
			res, err := c.WaitForLeader(servertest.DefaultTimeout).Apply(ctx, catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVSet,
				Entry: catalog.KVEntry{Key: "counter", Value: []byte(strconv.Itoa(v))}})
			if r, ok := res.(catalog.KVResult); err != nil || !ok || !r.OK {
				return fmt.Errorf("write %d: %+v, %v", v, res, err)
			}
			return nil
		})
	}
	// A log long enough that replaying it takes a while over a slow link.
	big := make([]byte, 2048)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				// A write lost to a leader change on a slow machine
				// only makes the log shorter.
				_, _ = leader.Apply(ctx, catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVSet,
					Entry: catalog.KVEntry{Key: fmt.Sprintf("fill/%d/%d", w, i), Value: big}})
			}
		}()
	}
	wg.Wait()
	write(0)
	acks.add(time.Now())
	c.WaitForReplication(servertest.DefaultTimeout)

	c.Net.Delay(leader.Addr, f.Addr, 20*time.Millisecond)
	c.Restart(f, true)
	target := leader.AppliedIndex()

	// The counter moves on while the follower catches up.
	stop := make(chan struct{})
	var writer sync.WaitGroup
	stopWriter := sync.OnceFunc(func() { close(stop); writer.Wait() })
	defer stopWriter()
	writer.Add(1)
	go func() {
		defer writer.Done()
		// A bounded workload: on a slow machine an endless one could
		// keep a follower behind forever.
		for range 400 {
			select {
			case <-stop:
				return
			default:
			}
			acks.mu.Lock()
			v := len(acks.ack)
			acks.mu.Unlock()
			res, err := leader.Apply(ctx, catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVSet,
				Entry: catalog.KVEntry{Key: "counter", Value: []byte(strconv.Itoa(v))}})
			if r, ok := res.(catalog.KVResult); err != nil || !ok || !r.OK {
				// A write that failed (a leader change on a slow
				// machine) may still apply: its value stays the next
				// one, so an answer holding it counts as fresh.
				t.Logf("write %d: %+v, %v", v, res, err)
			} else {
				acks.add(time.Now())
			}
			time.Sleep(5 * time.Millisecond) // pacing of the workload, not a wait
		}
	}()
	const slack = 300 * time.Millisecond
	var served, refused, reads int
	deadline := time.Now().Add(60 * time.Second)
	caughtUp := func() bool { return f.AppliedIndex() >= target }
	for !caughtUp() || reads < 20 {
		if time.Now().After(deadline) {
			t.Fatalf("follower not caught up after 60s (applied %d, leader %d)", f.AppliedIndex(), leader.AppliedIndex())
		}
		reads++
		start := time.Now()
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		strict, err := f.Read(rctx, &catalog.ReadRequest{Op: catalog.ReadKVGet, Key: "counter",
			Options: catalog.QueryOptions{AllowStale: true, MaxStaleDuration: time.Second}})
		loose, lerr := f.Read(rctx, &catalog.ReadRequest{Op: catalog.ReadKVGet, Key: "counter",
			Options: catalog.QueryOptions{AllowStale: true}})
		cancel()
		value := func(r *catalog.ReadResponse) int {
			if r.KV == nil {
				return -1
			}
			v, _ := strconv.Atoi(string(r.KV.Value))
			return v
		}
		if err != nil {
			refused++
		} else {
			served++
			if age := acks.age(value(strict), start); age > time.Second+slack {
				t.Fatalf("max_stale=1s read answered value %d, %v old, as fresh (LastContact %v)", value(strict), age, strict.Meta.LastContact)
			}
		}
		if lerr == nil {
			if age := acks.age(value(loose), start); loose.Meta.LastContact < age-slack {
				t.Fatalf("stale read answered value %d, %v old, with LastContact %v", value(loose), age, loose.Meta.LastContact)
			}
		}
	}
	stopWriter()
	t.Logf("%d reads while catching up: %d served, %d refused", reads, served, refused)
	wait.For(t, 5*time.Second, func() error {
		r, err := f.Read(ctx, &catalog.ReadRequest{Op: catalog.ReadKVGet, Key: "counter",
			Options: catalog.QueryOptions{AllowStale: true, MaxStaleDuration: time.Second}})
		if err != nil {
			return err
		}
		if r.Meta.LastContact > time.Second {
			return fmt.Errorf("caught-up follower reports LastContact %v", r.Meta.LastContact)
		}
		return nil
	})
}
