package checks

import "time"

// Clock schedules the probes of a Check: the first-run stagger, the wait
// between probes, and the alias watch retry. The deadline of a single probe
// is not taken from the Clock: it bounds real network and process I/O, so it
// always uses real time.
//
// Implementations must be safe for concurrent use by many Checks.
type Clock interface {
	// NewTimer returns a one-shot Timer that fires once d has elapsed.
	NewTimer(d time.Duration) Timer
}

// Timer is a one-shot timer made by a Clock.
type Timer interface {
	// C returns the channel that receives the time when the Timer fires.
	C() <-chan time.Time
	// Stop prevents the Timer from firing. It reports whether it stopped a
	// Timer that had not yet fired.
	Stop() bool
}

// RealClock is the Clock of the running agent, backed by package time.
type RealClock struct{}

// NewTimer implements Clock with time.NewTimer.
func (RealClock) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time { return r.t.C }
func (r realTimer) Stop() bool          { return r.t.Stop() }
