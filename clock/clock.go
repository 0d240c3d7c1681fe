// Package clock is Tribune's one source of time. Every timer that decides
// behaviour (session TTLs, anti-entropy, check intervals, reaping, staleness)
// comes from a Clock passed in through a constructor, so a test can replace
// the real one with a Fake that it advances by hand.
//
// The package owns nothing else: no goroutines of its own except the ones
// that time.AfterFunc starts for the real clock.
package clock

import (
	"context"
	"time"
)

// Clock tells the time and makes timers. Implementations are safe for
// concurrent use.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// Since returns the time elapsed since t.
	Since(t time.Time) time.Duration
	// After returns a channel that receives the time once d has elapsed.
	After(d time.Duration) <-chan time.Time
	// NewTimer returns a one-shot Timer that fires once d has elapsed.
	NewTimer(d time.Duration) Timer
	// NewTicker returns a Ticker that fires every d (d must be > 0).
	NewTicker(d time.Duration) Ticker
	// AfterFunc calls f in its own goroutine once d has elapsed and returns a
	// Timer whose Stop cancels the call. Its C is nil.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a one-shot timer made by a Clock, with time.Timer's semantics.
type Timer interface {
	// C returns the channel that receives the time when the Timer fires.
	C() <-chan time.Time
	// Stop prevents the Timer from firing; it reports whether it was active.
	Stop() bool
	// Reset makes the Timer fire after d; it reports whether it was active.
	Reset(d time.Duration) bool
}

// Ticker delivers ticks at intervals, with time.Ticker's semantics: a slow
// reader misses ticks rather than queueing them.
type Ticker interface {
	// C returns the channel on which the ticks are delivered.
	C() <-chan time.Time
	// Stop turns the Ticker off.
	Stop()
	// Reset stops the Ticker and restarts it with period d.
	Reset(d time.Duration)
}

// Real is the Clock of a running process: the time package.
type Real struct{}

// New returns the real clock.
func New() Clock { return Real{} }

// Now implements Clock.
func (Real) Now() time.Time { return time.Now() }

// Since implements Clock.
func (Real) Since(t time.Time) time.Duration { return time.Since(t) }

// After implements Clock.
func (Real) After(d time.Duration) <-chan time.Time { return time.After(d) }

// NewTimer implements Clock.
func (Real) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

// NewTicker implements Clock.
func (Real) NewTicker(d time.Duration) Ticker { return realTicker{time.NewTicker(d)} }

// AfterFunc implements Clock.
func (Real) AfterFunc(d time.Duration, f func()) Timer { return realTimer{time.AfterFunc(d, f)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time        { return r.t.C }
func (r realTimer) Stop() bool                 { return r.t.Stop() }
func (r realTimer) Reset(d time.Duration) bool { return r.t.Reset(d) }

type realTicker struct{ t *time.Ticker }

func (r realTicker) C() <-chan time.Time   { return r.t.C }
func (r realTicker) Stop()                 { r.t.Stop() }
func (r realTicker) Reset(d time.Duration) { r.t.Reset(d) }

// Sleep waits d of real time, or until ctx ends, whichever comes first.
// It is for retry backoffs and pauses that decide nothing a test needs to
// control; a timer that does takes a Clock.
func Sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
