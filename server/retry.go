package server

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tribune-mesh/tribune/clock"
)

// Pacing of the retries of a request that waits for a leader, defined here
// only: the pause starts at retryMinInterval and doubles up to
// retryMaxInterval.
const (
	retryMinInterval = 10 * time.Millisecond
	retryMaxInterval = 100 * time.Millisecond
)

// holdExpiredError is holdRetry's error when the hold timeout passed; it
// wraps the last attempt's error.
type holdExpiredError struct{ last error }

func (e *holdExpiredError) Error() string { return "hold timeout expired: " + e.last.Error() }
func (e *holdExpiredError) Unwrap() error { return e.last }

// holdRetry is the one retry loop of requests that wait for a leader
// (rpc_hold_timeout). It calls attempt until attempt returns nil or an
// error that retry rejects (returned as is), ctx ends or stop closes
// (ErrShutdown), or hold has passed since the first attempt (*holdExpiredError
// wrapping the last error).
func holdRetry(ctx context.Context, c clock.Clock, hold time.Duration, stop <-chan struct{}, retry func(error) bool, attempt func() error) error {
	deadline := c.Now().Add(hold)
	pause := retryMinInterval
	for {
		err := attempt()
		if err == nil || !retry(err) {
			return err
		}
		if !c.Now().Before(deadline) {
			return &holdExpiredError{last: err}
		}
		t := c.NewTimer(min(pause, deadline.Sub(c.Now())))
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(ctx.Err(), err)
		case <-stop:
			t.Stop()
			return ErrShutdown
		case <-t.C():
		}
		pause = min(2*pause, retryMaxInterval)
	}
}

// leaderErr reports whether err says there is no leader to serve the
// request (yet, or any more).
func leaderErr(err error) bool {
	return errors.Is(err, ErrNoLeader) || errors.Is(err, ErrNotLeader)
}

// retryable reports whether a read, or another request that is safe to
// repeat, should be tried again, maybe elsewhere: no leader yet, a leader
// that just stepped down, or a server that could not be reached.
func retryable(err error) bool {
	return leaderErr(err) || status.Code(err) == codes.Unavailable
}

// retryableWrite is retryable for writes, which must never be sent twice:
// a connection that broke after the request went out may have carried it to
// a leader that applied it (a retried CAS would then report false for a
// write that happened). Only a request that never left (errNotSent), or a
// server's answer that it has no leader, is safe to send again.
func retryableWrite(err error) bool {
	return leaderErr(err) || errors.Is(err, errNotSent)
}

// noLeaderOnExpiry turns a hold timeout that ran out into ErrNoLeader, as
// Consul answers, and leaves other errors alone.
func noLeaderOnExpiry(err error) error {
	var he *holdExpiredError
	if errors.As(err, &he) {
		return ErrNoLeader
	}
	return err
}
