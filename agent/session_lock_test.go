package agent_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/test/wait"
)

// TestSessionLock_ContentionNeverDoubleHolds runs contenders on two client
// agents (one server) for the same api.Lock, round after round. No two may
// ever be inside the critical section together, and every holder must find
// the key held by its own session with a LockIndex that only grows, and be
// able to write through a check-session fence.
func TestSessionLock_ContentionNeverDoubleHolds(t *testing.T) {
	t.Parallel()
	_, cls := startCluster(t, 1, 2)
	const (
		key         = "contended/leader"
		perClient   = 2
		rounds      = 15
		contenders  = 2 * perClient
		sessionTTL  = "10s"
		holdForLong = 2 * time.Millisecond
	)
	var (
		inside atomic.Int32
		// released counts the rounds done (lock released): the test
		// stops, which destroys the sessions (RenewPeriodic), only once
		// every holder is out.
		released atomic.Int32
		mu       sync.Mutex
		fences   []uint64 // LockIndex of each acquisition, in critical-section order
		failures []string
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		failures = append(failures, fmt.Sprintf(format, args...))
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < contenders; i++ {
		c := cls[i%2].api
		name := fmt.Sprintf("contender-%d@%s", i, cls[i%2].cfg.NodeName)
		sid, _, err := c.Session().Create(&api.SessionEntry{Name: name, TTL: sessionTTL, LockDelay: time.Millisecond}, nil)
		if err != nil {
			t.Fatalf("%s: create session: %v", name, err)
		}
		// Renewal through a client agent reaches the leader over RPC.
		if e, _, err := c.Session().Renew(sid, nil); err != nil || e == nil || e.ID != sid {
			t.Fatalf("%s: renew through client: %+v, %v", name, e, err)
		}
		wg.Add(2)
		go func() {
			defer wg.Done()
			_ = c.Session().RenewPeriodic(sessionTTL, sid, nil, stop)
		}()
		go func() {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				lock, err := c.LockOpts(&api.LockOptions{Key: key, Session: sid, Value: []byte(name)})
				if err != nil {
					fail("%s: lock opts: %v", name, err)
					return
				}
				lost, err := lock.Lock(stop)
				if err != nil || lost == nil {
					fail("%s round %d: lock: %v", name, r, err)
					return
				}
				if n := inside.Add(1); n != 1 {
					fail("%s round %d: %d holders at once", name, r, n)
				}
				p, _, err := c.KV().Get(key, &api.QueryOptions{RequireConsistent: true})
				switch {
				case err != nil:
					fail("%s round %d: read lock: %v", name, r, err)
				case p == nil || p.Session != sid:
					fail("%s round %d: holder found the key as %+v, want held by %s", name, r, p, sid)
				default:
					mu.Lock()
					fences = append(fences, p.LockIndex)
					mu.Unlock()
				}
				// A write fenced by the holder's session must succeed.
				ok, resp, _, err := c.Txn().Txn(api.TxnOps{
					{KV: &api.KVTxnOp{Verb: api.KVCheckSession, Key: key, Session: sid}},
					{KV: &api.KVTxnOp{Verb: api.KVSet, Key: "contended/owner", Value: []byte(name)}},
				}, nil)
				if err != nil || !ok {
					fail("%s round %d: fenced write: %v %v", name, r, err, resp)
				}
				time.Sleep(holdForLong)
				select {
				case <-lost:
					fail("%s round %d: lock lost while held", name, r)
				default:
				}
				inside.Add(-1)
				if err := lock.Unlock(); err != nil {
					fail("%s round %d: unlock: %v", name, r, err)
					return
				}
				released.Add(1)
			}
		}()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			mu.Lock()
			bad := len(failures)
			mu.Unlock()
			if released.Load() == contenders*rounds || bad > 0 {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	select {
	case <-done:
	case <-time.After(90 * time.Second):
		fail("timed out with %d of %d acquisitions", len(fences), contenders*rounds)
	}
	close(stop)
	wg.Wait()
	for _, f := range failures {
		t.Error(f)
	}
	if len(fences) != contenders*rounds {
		t.Fatalf("%d acquisitions, want %d", len(fences), contenders*rounds)
	}
	for i := 1; i < len(fences); i++ {
		if fences[i] <= fences[i-1] {
			t.Fatalf("LockIndex went from %d to %d at acquisition %d: fencing tokens must grow", fences[i-1], fences[i], i)
		}
	}
}

// TestSessionSemaphore_LimitHolds runs four contenders on two client agents
// for a semaphore of limit 2: never more than two hold it, and two do hold
// it together at some point.
func TestSessionSemaphore_LimitHolds(t *testing.T) {
	t.Parallel()
	_, cls := startCluster(t, 1, 2)
	const (
		prefix     = "workers/pool"
		limit      = 2
		contenders = 4
		rounds     = 6
	)
	var (
		inside, peak atomic.Int32
		mu           sync.Mutex
		failures     []string
		acquired     atomic.Int32
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		failures = append(failures, fmt.Sprintf(format, args...))
	}
	var wg sync.WaitGroup
	for i := 0; i < contenders; i++ {
		c := cls[i%2].api
		name := fmt.Sprintf("worker-%d", i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				sem, err := c.SemaphoreOpts(&api.SemaphoreOptions{Prefix: prefix, Limit: limit, SessionName: name, SessionTTL: "10s"})
				if err != nil {
					fail("%s: semaphore opts: %v", name, err)
					return
				}
				lost, err := sem.Acquire(nil)
				if err != nil || lost == nil {
					fail("%s round %d: acquire: %v", name, r, err)
					return
				}
				acquired.Add(1)
				n := inside.Add(1)
				if n > limit {
					fail("%s round %d: %d holders, limit %d", name, r, n, limit)
				}
				for {
					p := peak.Load()
					if n <= p || peak.CompareAndSwap(p, n) {
						break
					}
				}
				// The semaphore's own record never lists more holders.
				p, _, err := c.KV().Get(prefix+"/.lock", &api.QueryOptions{RequireConsistent: true})
				if err != nil || p == nil {
					fail("%s round %d: read .lock: %v %v", name, r, p, err)
				} else {
					var rec struct {
						Limit   int
						Holders map[string]bool
					}
					if err := json.Unmarshal(p.Value, &rec); err != nil || rec.Limit != limit || len(rec.Holders) > limit {
						fail("%s round %d: .lock = %s (%v)", name, r, p.Value, err)
					}
				}
				time.Sleep(30 * time.Millisecond)
				select {
				case <-lost:
					fail("%s round %d: semaphore lost while held", name, r)
				default:
				}
				inside.Add(-1)
				if err := sem.Release(); err != nil {
					fail("%s round %d: release: %v", name, r, err)
					return
				}
			}
		}()
	}
	finished := make(chan struct{})
	go func() {
		wg.Wait()
		close(finished)
	}()
	select {
	case <-finished:
	case <-time.After(120 * time.Second):
		t.Fatalf("semaphore rounds did not finish: %d of %d acquisitions", acquired.Load(), contenders*rounds)
	}
	for _, f := range failures {
		t.Error(f)
	}
	if got := acquired.Load(); got != contenders*rounds {
		t.Fatalf("%d acquisitions, want %d", got, contenders*rounds)
	}
	if peak.Load() != limit {
		t.Fatalf("at most %d holders at once, want the limit %d to be reached", peak.Load(), limit)
	}
}

// TestSessionTTL_SurvivesLeaderChange: after the leader dies, the new
// leader tracks the session's TTL afresh: a renewal through a follower
// reaches it, and without renewals the session expires between one and two
// TTLs after the last one.
func TestSessionTTL_SurvivesLeaderChange(t *testing.T) {
	t.Parallel()
	srvs, _ := startCluster(t, 3, 0)
	const ttl = 10 * time.Second
	leader := leaderOf(t, srvs)
	var rest []*node
	for _, s := range srvs {
		if s != leader {
			rest = append(rest, s)
		}
	}
	id, _, err := rest[0].api.Session().Create(&api.SessionEntry{TTL: ttl.String(), Node: rest[0].cfg.NodeName}, nil)
	if err != nil {
		t.Fatal(err)
	}
	leader.stop(t)
	// Followers report the dead leader until they notice; wait for one of
	// the survivors to lead.
	var next, follower *node
	wait.For(t, 30*time.Second, func() error {
		for _, s := range rest {
			l, err := s.api.Status().Leader()
			if err != nil {
				return err
			}
			for i, cand := range rest {
				if strings.HasSuffix(l, fmt.Sprintf(":%d", cand.cfg.Ports.Server)) {
					next, follower = cand, rest[1-i]
					return nil
				}
			}
		}
		return fmt.Errorf("no survivor leads yet")
	})
	// Renew through the follower: it forwards to the new leader.
	var renewed time.Time
	wait.For(t, 20*time.Second, func() error {
		e, _, err := follower.api.Session().Renew(id, nil)
		if err != nil {
			return err
		}
		if e == nil || e.ID != id {
			return fmt.Errorf("renew = %+v", e)
		}
		renewed = time.Now()
		return nil
	})
	// No more renewals: the new leader's timer must fire.
	_, meta, err := next.api.Session().Info(id, nil)
	if err != nil {
		t.Fatal(err)
	}
	index := meta.LastIndex
	for {
		e, m, err := next.api.Session().Info(id, &api.QueryOptions{WaitIndex: index, WaitTime: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if e == nil {
			break
		}
		if time.Since(renewed) > 2*ttl+30*time.Second { // a further election under load restarts the timer
			t.Fatalf("session still alive %v after its last renewal", time.Since(renewed))
		}
		index = m.LastIndex
	}
	gone := time.Since(renewed)
	if gone < ttl {
		t.Fatalf("session expired %v after its last renewal, before its TTL %v", gone, ttl)
	}
	t.Logf("session expired %v after its last renewal on the new leader", gone)
}
