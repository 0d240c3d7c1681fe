package clock

import (
	"context"
	"sort"
	"sync"
	"time"
)

// Fake is a Clock whose time moves only when a test calls Advance or Set.
// Timers, tickers and AfterFunc callbacks due at or before the new time fire
// in order of their due time during the call. Channels of timers and tickers
// hold one value, as the real ones do; AfterFunc callbacks run in their own
// goroutines.
type Fake struct {
	mu      sync.Mutex
	now     time.Time
	waiters []*fakeWaiter
	changed chan struct{} // closed and replaced whenever waiters change
}

// NewFake returns a Fake clock that reads start.
func NewFake(start time.Time) *Fake {
	return &Fake{now: start, changed: make(chan struct{})}
}

type fakeWaiter struct {
	clock  *Fake
	due    time.Time
	period time.Duration // > 0 for tickers
	ch     chan time.Time
	fn     func()
	active bool
}

// Now implements Clock.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// Since implements Clock.
func (f *Fake) Since(t time.Time) time.Duration { return f.Now().Sub(t) }

// After implements Clock.
func (f *Fake) After(d time.Duration) <-chan time.Time { return f.NewTimer(d).C() }

// NewTimer implements Clock.
func (f *Fake) NewTimer(d time.Duration) Timer {
	w := &fakeWaiter{clock: f, ch: make(chan time.Time, 1)}
	f.add(w, d)
	return fakeTimer{w}
}

// NewTicker implements Clock.
func (f *Fake) NewTicker(d time.Duration) Ticker {
	if d <= 0 {
		panic("clock: non-positive interval for NewTicker")
	}
	w := &fakeWaiter{clock: f, ch: make(chan time.Time, 1), period: d}
	f.add(w, d)
	return fakeTicker{w}
}

// AfterFunc implements Clock.
func (f *Fake) AfterFunc(d time.Duration, fn func()) Timer {
	w := &fakeWaiter{clock: f, fn: fn}
	f.add(w, d)
	return fakeTimer{w}
}

func (f *Fake) add(w *fakeWaiter, d time.Duration) {
	f.mu.Lock()
	w.due = f.now.Add(d)
	w.active = true
	f.waiters = append(f.waiters, w)
	f.notifyLocked()
	f.mu.Unlock()
	if d <= 0 {
		f.Advance(0)
	}
}

// removeLocked drops w from the pending set and reports whether it was there.
func (f *Fake) removeLocked(w *fakeWaiter) bool {
	was := w.active
	w.active = false
	for i, x := range f.waiters {
		if x == w {
			f.waiters = append(f.waiters[:i], f.waiters[i+1:]...)
			break
		}
	}
	f.notifyLocked()
	return was
}

func (f *Fake) notifyLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// Advance moves the clock forward by d and fires everything that falls due.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	target := f.now.Add(d)
	f.mu.Unlock()
	f.Set(target)
}

// Set moves the clock to t (never backwards) and fires everything that falls
// due, in order of due time; the clock reads each waiter's due time while it
// fires.
func (f *Fake) Set(t time.Time) {
	for {
		f.mu.Lock()
		if t.Before(f.now) {
			t = f.now
		}
		sort.SliceStable(f.waiters, func(i, j int) bool { return f.waiters[i].due.Before(f.waiters[j].due) })
		if len(f.waiters) == 0 || f.waiters[0].due.After(t) {
			f.now = t
			f.mu.Unlock()
			return
		}
		w := f.waiters[0]
		if w.due.After(f.now) {
			f.now = w.due
		}
		now := f.now
		if w.period > 0 {
			w.due = w.due.Add(w.period)
		} else {
			f.removeLocked(w)
		}
		fn := w.fn
		ch := w.ch
		f.mu.Unlock()
		if fn != nil {
			go fn()
		} else {
			select {
			case ch <- now:
			default: // a slow reader misses the tick, as with time.Ticker
			}
		}
	}
}

// Pending returns the number of active timers, tickers and callbacks.
func (f *Fake) Pending() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.waiters)
}

// WaitForPending blocks until at least n timers, tickers or callbacks are
// active, or ctx ends. Tests use it to know that the code under test has
// armed its timer before they Advance past it, instead of sleeping.
func (f *Fake) WaitForPending(ctx context.Context, n int) error {
	for {
		f.mu.Lock()
		if len(f.waiters) >= n {
			f.mu.Unlock()
			return nil
		}
		ch := f.changed
		f.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

type fakeTimer struct{ w *fakeWaiter }

func (t fakeTimer) C() <-chan time.Time { return t.w.ch }

func (t fakeTimer) Stop() bool {
	f := t.w.clock
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.removeLocked(t.w)
}

func (t fakeTimer) Reset(d time.Duration) bool {
	f := t.w.clock
	f.mu.Lock()
	was := f.removeLocked(t.w)
	f.mu.Unlock()
	f.add(t.w, d)
	return was
}

type fakeTicker struct{ w *fakeWaiter }

func (t fakeTicker) C() <-chan time.Time { return t.w.ch }

func (t fakeTicker) Stop() {
	f := t.w.clock
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removeLocked(t.w)
}

func (t fakeTicker) Reset(d time.Duration) {
	if d <= 0 {
		panic("clock: non-positive interval for Ticker.Reset")
	}
	f := t.w.clock
	f.mu.Lock()
	f.removeLocked(t.w)
	t.w.period = d
	f.mu.Unlock()
	f.add(t.w, d)
}
