package checks

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// waitTimeout bounds every wait for a condition; conditions normally hold
// within milliseconds.
const waitTimeout = 10 * time.Second

// update is one Notifier call.
type update struct {
	ID, Status, Output string
	// Seen is the recorder's hook value at the time of the call (e.g. how
	// many requests a test server had served).
	Seen int64
}

// recorder is a Notifier that keeps every update and lets a test wait for
// one.
type recorder struct {
	hook func() int64 // optional, read on each update

	mu      sync.Mutex
	updates []update
	wake    chan struct{} // closed and replaced on every update
}

func newRecorder() *recorder { return &recorder{wake: make(chan struct{})} }

func (r *recorder) UpdateCheck(id, status, output string) {
	u := update{ID: id, Status: status, Output: output}
	if r.hook != nil {
		u.Seen = r.hook()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.updates = append(r.updates, u)
	close(r.wake)
	r.wake = make(chan struct{})
}

func (r *recorder) all() []update {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]update(nil), r.updates...)
}

// wait returns the latest update once it satisfies ok, failing the test
// after waitTimeout.
func (r *recorder) wait(t *testing.T, what string, ok func(update) bool) update {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		wake := r.wake
		n := len(r.updates)
		var last update
		if n > 0 {
			last = r.updates[n-1]
		}
		r.mu.Unlock()
		if n > 0 && ok(last) {
			return last
		}
		select {
		case <-wake:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s; updates so far: %+v", what, r.all())
		}
	}
}

func (r *recorder) waitStatus(t *testing.T, status string) update {
	t.Helper()
	return r.wait(t, "status "+status, func(u update) bool { return u.Status == status })
}

// eventually polls cond until it holds, failing the test after waitTimeout.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testOptions lets checks run every few milliseconds with no stagger.
func testOptions() Options {
	return Options{
		MinInterval: time.Millisecond,
		Stagger:     func(time.Duration) time.Duration { return 0 },
	}
}

// startCheck creates and starts a check that the test stops on cleanup.
func startCheck(t *testing.T, def Definition, opts Options) (*Check, *recorder) {
	t.Helper()
	rec := newRecorder()
	c, err := New(def, rec, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	c.Start()
	t.Cleanup(c.Stop)
	return c, rec
}

// leakCheck fails the test if, after its other cleanups ran, a goroutine
// is still running code of this package (outside the tests themselves).
// Call it first in a test so its cleanup runs last.
func leakCheck(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		deadline := time.Now().Add(waitTimeout)
		for {
			leaked := packageGoroutines()
			if len(leaked) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("%d goroutine(s) of package checks still running:\n%s", len(leaked), strings.Join(leaked, "\n\n"))
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

// packageGoroutines returns the stacks of goroutines, other than the
// caller's, that have a frame in a non-test file of this package.
func packageGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	stacks := strings.Split(string(buf), "\n\n")
	var ours []string
	for _, s := range stacks[1:] { // stacks[0] is the calling goroutine
		for _, line := range strings.Split(s, "\n") {
			line = strings.TrimSpace(line)
			if strings.Contains(line, "/agent/checks/") && !strings.Contains(line, "_test.go:") && strings.Contains(line, ".go:") {
				ours = append(ours, s)
				break
			}
		}
	}
	return ours
}

// fakeClock is a Clock that only moves when the test advances it.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	pending []*fakeTimer
	made    []time.Duration // the duration of every timer made, in order
	wake    chan struct{}   // closed and replaced when a timer is made
}

type fakeTimer struct {
	clock *fakeClock
	at    time.Time
	c     chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Unix(1_700_000_000, 0), wake: make(chan struct{})}
}

func (c *fakeClock) NewTimer(d time.Duration) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{clock: c, at: c.now.Add(d), c: make(chan time.Time, 1)}
	c.made = append(c.made, d)
	if d <= 0 {
		t.c <- c.now
	} else {
		c.pending = append(c.pending, t)
	}
	close(c.wake)
	c.wake = make(chan struct{})
	return t
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

func (t *fakeTimer) Stop() bool {
	c := t.clock
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, p := range c.pending {
		if p == t {
			c.pending = append(c.pending[:i], c.pending[i+1:]...)
			return true
		}
	}
	return false
}

// Advance moves the clock and fires the timers that are due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.pending[:0]
	for _, t := range c.pending {
		if !t.at.After(c.now) {
			t.c <- c.now
		} else {
			kept = append(kept, t)
		}
	}
	c.pending = kept
}

func (c *fakeClock) numPending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

// waitTimers waits until n timers have been made in all and returns the
// duration of the nth.
func (c *fakeClock) waitTimers(t *testing.T, n int) time.Duration {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		wake := c.wake
		made := append([]time.Duration(nil), c.made...)
		c.mu.Unlock()
		if len(made) >= n {
			return made[n-1]
		}
		select {
		case <-wake:
		case <-deadline.C:
			t.Fatalf("timed out waiting for timer %d; made %v", n, made)
		}
	}
}

func (u update) String() string { return fmt.Sprintf("%s=%s %q", u.ID, u.Status, u.Output) }
