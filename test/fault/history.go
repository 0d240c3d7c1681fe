package fault

import (
	"errors"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
)

// Result is an operation's outcome, as Jepsen names them.
type Result string

// Outcomes.
const (
	// OK: completed; its effect (or its answer) is known.
	OK Result = "ok"
	// Fail: definitely had no effect (refused connection, 4xx, CAS false).
	Fail Result = "fail"
	// Info: the outcome is unknown (timeout, 5xx, connection lost): it may
	// take effect at any time until the end of the history.
	Info Result = "info"
)

// Clock stamps operations with monotonic nanoseconds since a run started.
type Clock struct{ start time.Time }

// NewClock starts a clock.
func NewClock() *Clock { return &Clock{start: time.Now()} }

// Now is the time since the clock started, in nanoseconds.
func (c *Clock) Now() int64 { return int64(time.Since(c.start)) }

// Log is an append-only, concurrency-safe list of records.
type Log[T any] struct {
	mu    sync.Mutex
	items []T
}

// Add appends a record.
func (l *Log[T]) Add(v T) {
	l.mu.Lock()
	l.items = append(l.items, v)
	l.mu.Unlock()
}

// Items returns a copy of the records so far.
func (l *Log[T]) Items() []T {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]T(nil), l.items...)
}

// classify maps a request error to an outcome. Only errors that prove the
// request had no effect are Fail: the connection was refused (nothing was
// sent) or the agent answered 4xx (it refused the request before applying
// it). Anything else (timeouts, 5xx such as "No cluster leader", a lost
// connection) may hide an applied write, so it is Info.
func classify(err error) Result {
	if err == nil {
		return OK
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return Fail
	}
	var se api.StatusError
	if errors.As(err, &se) && se.Code >= 400 && se.Code < 500 {
		return Fail
	}
	return Info
}
