package server

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-memdb"

	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/clock"
	"github.com/tribune-mesh/tribune/test/wait"
)

// ttlHarness runs sessionTimers over a real state store with a manual
// clock; destroys are applied to the store directly, as the FSM would.
type ttlHarness struct {
	t      *testing.T
	clock  *clock.Fake
	store  *catalog.Store
	timers *sessionTimers
	idx    atomic.Uint64
	// failDestroys makes that many destroys fail before they work.
	failDestroys atomic.Int32

	cancel context.CancelFunc
	done   chan struct{}
}

func newTTLHarness(t *testing.T) *ttlHarness {
	t.Helper()
	h := &ttlHarness{t: t, clock: clock.NewFake(time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC))}
	h.store = catalog.NewStore(h.clock)
	h.idx.Store(1)
	if err := h.store.EnsureRegistration(h.idx.Add(1), &catalog.RegisterRequest{Node: "n1", Address: "10.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	h.timers = &sessionTimers{
		clock:  h.clock,
		logger: hclog.NewNullLogger(),
		list: func(ws memdb.WatchSet) ([]*catalog.Session, error) {
			ws.Add(h.store.AbandonCh())
			_, out, err := h.store.SessionList(ws, "")
			return out, err
		},
		get: func(id string) (*catalog.Session, error) {
			_, s, err := h.store.SessionGet(nil, id)
			return s, err
		},
		destroy: func(ctx context.Context, id string) error {
			if h.failDestroys.Add(-1) >= 0 {
				return errors.New("injected destroy failure")
			}
			return h.store.SessionApply(h.idx.Add(1), &catalog.SessionRequest{Op: catalog.SessionDestroy, Session: catalog.Session{ID: id}})
		},
		wake: make(chan struct{}, 1),
		work: make(chan struct{}, 1),
	}
	t.Cleanup(h.stop)
	return h
}

// start runs the timers as a newly elected leader would.
func (h *ttlHarness) start() {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan struct{})
	go func() {
		defer close(h.done)
		h.timers.run(ctx)
	}()
	wait.For(h.t, 5*time.Second, func() error {
		h.timers.mu.Lock()
		defer h.timers.mu.Unlock()
		if !h.timers.active {
			return errors.New("timers not active")
		}
		return nil
	})
}

// stop ends the run, as a lost leadership does, and waits for it.
func (h *ttlHarness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	<-h.done
	h.cancel = nil
}

func (h *ttlHarness) create(id, ttl string) time.Time {
	h.t.Helper()
	err := h.store.SessionApply(h.idx.Add(1), &catalog.SessionRequest{Op: catalog.SessionCreate,
		Session: catalog.Session{ID: id, Node: "n1", TTL: ttl}})
	if err != nil {
		h.t.Fatalf("create session %s: %v", id, err)
	}
	return h.clock.Now()
}

func (h *ttlHarness) exists(id string) bool {
	h.t.Helper()
	_, s, err := h.store.SessionGet(nil, id)
	if err != nil {
		h.t.Fatal(err)
	}
	return s != nil
}

// waitArmed waits until the timers have a live timer at t: by then the run
// has seen the current state and holds the session until t.
func (h *ttlHarness) waitArmed(t time.Time) {
	h.t.Helper()
	wait.For(h.t, 5*time.Second, func() error {
		if at := h.timers.armedAt(); !at.Equal(t) {
			return fmt.Errorf("timer armed at %v, want %v (now %v)", at, t, h.clock.Now())
		}
		return nil
	})
}

func (h *ttlHarness) waitGone(id string) {
	h.t.Helper()
	wait.For(h.t, 5*time.Second, func() error {
		if h.exists(id) {
			return fmt.Errorf("session %s still exists at %v", id, h.clock.Now())
		}
		return nil
	})
}

func TestSessionTTLExpiresAfterTwiceTheTTL(t *testing.T) {
	h := newTTLHarness(t)
	h.start()
	created := h.create("s1", "10s")
	h.create("forever", "") // no TTL: never tracked
	deadline := created.Add(20 * time.Second)
	h.waitArmed(deadline)
	if n := h.timers.tracked(); n != 1 {
		t.Fatalf("tracked %d sessions, want 1 (the one with a TTL)", n)
	}

	// The TTL is a lower bound, and Consul allows up to twice it.
	h.clock.Advance(19*time.Second + 900*time.Millisecond)
	h.waitArmed(deadline)
	if !h.exists("s1") {
		t.Fatal("session destroyed before 2x its TTL")
	}
	h.clock.Advance(100 * time.Millisecond)
	h.waitGone("s1")
	if !h.exists("forever") {
		t.Fatal("a session without TTL was destroyed")
	}
	wait.For(t, 5*time.Second, func() error {
		if n := h.timers.tracked(); n != 0 {
			return fmt.Errorf("%d sessions still tracked", n)
		}
		return nil
	})
}

func TestSessionTTLRenewResetsTheTimer(t *testing.T) {
	h := newTTLHarness(t)
	if _, err := h.timers.renew("s1"); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("renew while not leader: %v, want ErrNotLeader", err)
	}
	h.start()
	created := h.create("s1", "10s")
	h.waitArmed(created.Add(20 * time.Second))

	h.clock.Advance(15 * time.Second)
	sess, err := h.timers.renew("s1")
	if err != nil || sess == nil || sess.ID != "s1" {
		t.Fatalf("renew = %+v, %v", sess, err)
	}
	renewed := h.clock.Now().Add(20 * time.Second)
	h.waitArmed(renewed)
	h.clock.Advance(19 * time.Second) // 34s after creation: past the first deadline
	h.waitArmed(renewed)
	if !h.exists("s1") {
		t.Fatal("renewed session destroyed at its old deadline")
	}
	h.clock.Advance(time.Second)
	h.waitGone("s1")

	if sess, err := h.timers.renew("ghost"); err != nil || sess != nil {
		t.Fatalf("renew of an unknown session = %+v, %v; want nil, nil", sess, err)
	}
}

func TestSessionTTLFreshTimerOnLeaderChange(t *testing.T) {
	h := newTTLHarness(t)
	h.start()
	h.create("s1", "10s")
	h.clock.Advance(15 * time.Second)
	// Leadership moves: the old leader's timers stop, the new leader
	// starts every TTL afresh.
	h.stop()
	if _, err := h.timers.renew("s1"); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("renew after losing leadership: %v, want ErrNotLeader", err)
	}
	h.start()
	fresh := h.clock.Now().Add(20 * time.Second)
	h.waitArmed(fresh)
	h.clock.Advance(19 * time.Second)
	h.waitArmed(fresh)
	if !h.exists("s1") {
		t.Fatal("session destroyed before a full fresh timer after the leader change")
	}
	h.clock.Advance(time.Second)
	h.waitGone("s1")
}

func TestSessionTTLDestroyRetried(t *testing.T) {
	h := newTTLHarness(t)
	h.failDestroys.Store(1)
	h.start()
	created := h.create("s1", "10s")
	h.waitArmed(created.Add(20 * time.Second))
	h.clock.Advance(20 * time.Second)
	retry := h.clock.Now().Add(sessionExpireRetry)
	h.waitArmed(retry)
	if !h.exists("s1") {
		t.Fatal("session gone although its destroy failed")
	}
	h.clock.Advance(sessionExpireRetry)
	h.waitGone("s1")
}

func TestSessionTTLForgetsDestroyedSessions(t *testing.T) {
	h := newTTLHarness(t)
	h.start()
	created := h.create("s1", "30s")
	h.create("s2", "10s")
	h.waitArmed(created.Add(20 * time.Second))
	if err := h.store.SessionApply(h.idx.Add(1), &catalog.SessionRequest{Op: catalog.SessionDestroy, Session: catalog.Session{ID: "s2"}}); err != nil {
		t.Fatal(err)
	}
	// s1's deadline (60s) becomes the next one once s2 is forgotten.
	h.waitArmed(created.Add(60 * time.Second))
	if n := h.timers.tracked(); n != 1 {
		t.Fatalf("tracked %d, want 1", n)
	}
}

func TestSessionTTLExpiryChurnIsBounded(t *testing.T) {
	h := newTTLHarness(t)
	var running, peak atomic.Int32
	destroy := h.timers.destroy
	h.timers.destroy = func(ctx context.Context, id string) error {
		n := running.Add(1)
		defer running.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		return destroy(ctx, id)
	}
	h.start()
	const n = 300
	var created time.Time
	for i := range n {
		created = h.create(fmt.Sprintf("s%d", i), "10s")
	}
	wait.For(t, 5*time.Second, func() error {
		if got := h.timers.tracked(); got != n {
			return fmt.Errorf("%d sessions tracked, want %d", got, n)
		}
		return nil
	})
	h.waitArmed(created.Add(20 * time.Second))
	h.clock.Advance(20 * time.Second)
	wait.For(t, 10*time.Second, func() error {
		_, left, err := h.store.SessionList(nil, "")
		if err != nil {
			return err
		}
		if len(left) != 0 {
			return fmt.Errorf("%d sessions left (timer armed at %v, now %v)", len(left), h.timers.armedAt(), h.clock.Now())
		}
		return nil
	})
	wait.For(t, 5*time.Second, func() error {
		h.timers.mu.Lock()
		defer h.timers.mu.Unlock()
		if d, e, q := len(h.timers.deadlines), len(h.timers.expiring), len(h.timers.queue); d+e+q != 0 {
			return fmt.Errorf("deadlines %d, expiring %d, queued %d after every session expired", d, e, q)
		}
		return nil
	})
	if p := peak.Load(); p > sessionExpireWorkers {
		t.Fatalf("%d destroys ran at once, want at most %d", p, sessionExpireWorkers)
	}
}

func TestFailedMembersPrunedUnderChurn(t *testing.T) {
	c := clock.NewFake(time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC))
	f := newFailedMembers(c)
	known := map[string]bool{}
	for round := range 50 {
		for i := range 20 {
			name := fmt.Sprintf("n%d-%d", round, i)
			known[name] = true
			f.observe(name, true)
		}
		c.Advance(time.Minute)
		// Half recover, a quarter are reaped, the rest gossip forgets.
		for i := range 20 {
			name := fmt.Sprintf("n%d-%d", round, i)
			switch {
			case i%2 == 0:
				f.observe(name, false)
			case i%4 == 1:
				f.forget(name)
			default:
				delete(known, name)
			}
		}
		f.retain(func(name string) bool { return known[name] })
		if n := f.len(); n != 0 {
			t.Fatalf("round %d: %d failed members remembered, want 0", round, n)
		}
	}
	f.observe("x", true)
	first := f.since("x")
	c.Advance(time.Hour)
	f.observe("x", true)
	if got := f.since("x"); !got.Equal(first) || c.Since(got) != time.Hour {
		t.Fatalf("failed since %v, want the first observation %v", got, first)
	}
}
