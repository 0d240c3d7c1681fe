// Package wait is the repository's one "until a condition holds or a deadline
// passes" helper for tests. Tests wait on conditions with it instead of
// sleeping and hoping.
package wait

import (
	"context"
	"time"
)

// TB is the part of testing.TB that For needs.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// For calls cond until it returns nil, backing off from 1 ms to 50 ms
// between calls, and fails the test with the last error once timeout has
// passed.
func For(t TB, timeout time.Duration, cond func() error) {
	t.Helper()
	if err := Until(context.Background(), timeout, cond); err != nil {
		t.Fatalf("condition not met within %v: %v", timeout, err)
	}
}

// Until calls cond until it returns nil, ctx ends or timeout passes, and
// returns nil or the last error of cond. Use it outside tests (harnesses,
// benchmarks) where failing a test is not the caller's wish.
func Until(ctx context.Context, timeout time.Duration, cond func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	pause := time.Millisecond
	for {
		err := cond()
		if err == nil {
			return nil
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		if pause < 50*time.Millisecond {
			pause *= 2
		}
	}
}
