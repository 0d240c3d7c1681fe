package checks

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tribune-mesh/tribune/clock"
	"github.com/tribune-mesh/tribune/test/wait"
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

// testOptions lets checks run every few milliseconds with no stagger, on a
// fake clock of their own: the first probe runs at once, later ones when
// the test advances the clock (see advanceUntil).
func testOptions() Options {
	return Options{
		Clock:       newClock(),
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
		err := wait.Until(context.Background(), waitTimeout, func() error {
			if leaked := packageGoroutines(); len(leaked) > 0 {
				return fmt.Errorf("%d goroutine(s) of package checks still running:\n%s", len(leaked), strings.Join(leaked, "\n\n"))
			}
			return nil
		})
		if err != nil {
			t.Error(err)
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

// newClock returns a fake clock; a check on it probes only when the test
// advances it past the check's timer.
func newClock() *clock.Fake { return clock.NewFake(time.Unix(1_700_000_000, 0)) }

// fakeClock returns the fake clock of opts (made by testOptions).
func fakeClock(t *testing.T, opts Options) *clock.Fake {
	t.Helper()
	clk, ok := opts.Clock.(*clock.Fake)
	if !ok {
		t.Fatalf("options without a fake clock: %T", opts.Clock)
	}
	return clk
}

// waitArmed waits until clk has at least n timers pending: the checks on it
// are waiting for their next probe.
func waitArmed(t *testing.T, clk *clock.Fake, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := clk.WaitForPending(ctx, n); err != nil {
		t.Fatalf("%d timer(s) not armed within %v (pending %d): %v", n, waitTimeout, clk.Pending(), err)
	}
}

// advanceUntil moves clk forward by step at every poll until cond holds:
// each step fires the pending timer of the check, so the check probes as
// often as the test polls instead of waiting for real time to pass.
func advanceUntil(t *testing.T, clk *clock.Fake, step time.Duration, what string, cond func() bool) {
	t.Helper()
	wait.For(t, waitTimeout, func() error {
		if cond() {
			return nil
		}
		clk.Advance(step)
		return fmt.Errorf("waiting for %s", what)
	})
}

// advanceToStatus is advanceUntil the latest update has status; it returns
// that update.
func (r *recorder) advanceToStatus(t *testing.T, clk *clock.Fake, step time.Duration, status string) update {
	t.Helper()
	var last update
	advanceUntil(t, clk, step, "status "+status, func() bool {
		all := r.all()
		if len(all) == 0 {
			return false
		}
		last = all[len(all)-1]
		return last.Status == status
	})
	return last
}

func (u update) String() string { return fmt.Sprintf("%s=%s %q", u.ID, u.Status, u.Output) }
