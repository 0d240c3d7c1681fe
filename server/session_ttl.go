package server

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-memdb"

	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/clock"
)

// Session TTLs, as Consul documents them: a TTL is a lower bound. A session
// is never invalidated before its TTL has passed since it was created, last
// renewed, or since the current leader took office, and it "may not be
// reaped for up to double this TTL". The slack covers requests in transit
// and clients whose clocks run at another rate than the leader's.
const (
	// SessionTTLMultiplier is how many TTLs without a renewal the leader
	// waits before it invalidates a session.
	SessionTTLMultiplier = 2
	// sessionExpireRetry is how long the leader waits before it tries
	// again to destroy an expired session whose destroy failed.
	sessionExpireRetry = time.Second
	// sessionListRetry is how long the leader waits after a failed read of
	// the sessions table.
	sessionListRetry = time.Second
	// sessionExpireWorkers bounds how many destroys of expired sessions
	// run at once, however many sessions expire together.
	sessionExpireWorkers = 4
)

// sessionTimers invalidates sessions whose TTL ran out without a renewal.
// Only the leader runs it: run is started by the leader loop and returns
// when leadership is lost. The deadlines live in memory only and are never
// written to Raft, so each new leader starts every TTL afresh, which the
// lower-bound contract allows.
//
// renew may be called from any goroutine; it fails with ErrNotLeader while
// run is not running.
type sessionTimers struct {
	clock  clock.Clock
	logger hclog.Logger
	// list returns every session and adds what it read to ws, so that run
	// wakes when a session is created or destroyed.
	list func(ws memdb.WatchSet) ([]*catalog.Session, error)
	// get returns one session, nil when there is none with that ID.
	get func(id string) (*catalog.Session, error)
	// destroy invalidates a session through Raft.
	destroy func(ctx context.Context, id string) error

	// wake tells run that a deadline changed (buffered, one pending).
	wake chan struct{}

	mu sync.Mutex
	// active is set while run runs.
	active bool
	// deadlines maps the ID of every tracked session to its expiry.
	deadlines map[string]time.Time
	// expiring holds the sessions being destroyed; they are not renewed
	// nor tracked again.
	expiring map[string]bool
	// queue holds the expired sessions no worker has taken yet; work
	// signals the workers that it grew (buffered, one pending).
	queue []string
	work  chan struct{}
	// armed is the deadline run's timer is set for (zero when none).
	armed time.Time
}

// newSessionTimers returns the session timers of s.
func newSessionTimers(s *Server) *sessionTimers {
	return &sessionTimers{
		clock:  s.clock,
		logger: s.logger.Named("session_ttl"),
		list: func(ws memdb.WatchSet) ([]*catalog.Session, error) {
			// A snapshot restore replaces the tables wholesale.
			ws.Add(s.store.AbandonCh())
			_, out, err := s.store.SessionList(ws, "")
			return out, err
		},
		get: func(id string) (*catalog.Session, error) {
			_, sess, err := s.store.SessionGet(nil, id)
			return sess, err
		},
		destroy: func(ctx context.Context, id string) error {
			res, err := s.Apply(ctx, catalog.CmdSession, &catalog.SessionRequest{
				Op: catalog.SessionDestroy, Session: catalog.Session{ID: id},
			})
			if err != nil {
				return err
			}
			if e, ok := res.(error); ok && e != nil {
				return e
			}
			return nil
		},
		wake: make(chan struct{}, 1),
		work: make(chan struct{}, 1),
	}
}

// sessionTTL parses a session's TTL; zero means none.
func sessionTTL(sess *catalog.Session) (time.Duration, error) {
	switch sess.TTL {
	case "", "0", "0s":
		return 0, nil
	}
	d, err := time.ParseDuration(sess.TTL)
	if err != nil {
		return 0, fmt.Errorf("session %s: invalid TTL %q: %w", sess.ID, sess.TTL, err)
	}
	return d, nil
}

// run tracks the TTL of every session until ctx ends. It gives each session
// with a TTL a full SessionTTLMultiplier*TTL from the moment it is first
// seen, and destroys, through Raft, those that reach their deadline, with at
// most sessionExpireWorkers destroys at a time. It waits for the destroys it
// started before it returns.
func (t *sessionTimers) run(ctx context.Context) {
	t.mu.Lock()
	t.active = true
	t.deadlines = map[string]time.Time{}
	t.expiring = map[string]bool{}
	t.queue = nil
	t.mu.Unlock()

	var workers sync.WaitGroup
	for range sessionExpireWorkers {
		workers.Add(1)
		go func() {
			defer workers.Done()
			t.expireWorker(ctx)
		}()
	}
	defer func() {
		workers.Wait()
		t.mu.Lock()
		t.active = false
		t.deadlines, t.expiring, t.queue = nil, nil, nil
		t.armed = time.Time{}
		t.mu.Unlock()
	}()

	for {
		ws := memdb.NewWatchSet()
		sessions, err := t.list(ws)
		var timer clock.Timer
		var armed time.Time
		if err != nil {
			t.logger.Error("list sessions", "error", err)
			timer = t.clock.NewTimer(sessionListRetry)
		} else {
			expired, next := t.reconcile(sessions)
			if len(expired) > 0 {
				t.mu.Lock()
				t.queue = append(t.queue, expired...)
				t.mu.Unlock()
				select {
				case t.work <- struct{}{}:
				default:
				}
			}
			if !next.IsZero() {
				armed = next
				timer = t.clock.NewTimer(next.Sub(t.clock.Now()))
			}
		}
		var timerC <-chan time.Time
		if timer != nil {
			timerC = timer.C()
		}
		t.mu.Lock()
		t.armed = armed
		t.mu.Unlock()
		wctx, wcancel := context.WithCancel(ctx)
		watchCh := ws.WatchCh(wctx)
		watched := false
		select {
		case <-ctx.Done():
		case <-watchCh:
			watched = true
		case <-t.wake:
		case <-timerC:
		}
		if timer != nil {
			timer.Stop()
		}
		wcancel()
		if !watched {
			<-watchCh // WatchCh's goroutine has returned once it answers.
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// expireWorker destroys queued expired sessions, one at a time, until ctx
// ends.
func (t *sessionTimers) expireWorker(ctx context.Context) {
	for {
		t.mu.Lock()
		var id string
		if len(t.queue) > 0 {
			id = t.queue[0]
			t.queue = t.queue[1:]
		}
		more := len(t.queue) > 0
		t.mu.Unlock()
		if id == "" {
			select {
			case <-ctx.Done():
				return
			case <-t.work:
			}
			continue
		}
		if more {
			// Wake another worker for the rest.
			select {
			case t.work <- struct{}{}:
			default:
			}
		}
		t.expire(ctx, id)
	}
}

// armedAt returns the deadline run waits for; zero when none.
func (t *sessionTimers) armedAt() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.armed
}

// reconcile brings the deadlines in line with the sessions in the store:
// new sessions with a TTL get a full deadline, vanished ones are dropped. It
// returns the sessions whose deadline has passed, now marked expiring, and
// the earliest remaining deadline (zero when none).
func (t *sessionTimers) reconcile(sessions []*catalog.Session) (expired []string, next time.Time) {
	now := t.clock.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	present := make(map[string]bool, len(sessions))
	for _, sess := range sessions {
		ttl, err := sessionTTL(sess)
		if err != nil {
			// The HTTP API validates TTLs; a bad one in the store is
			// left alone rather than expired on a guess.
			t.logger.Warn("session not tracked", "error", err)
			continue
		}
		if ttl <= 0 {
			continue
		}
		present[sess.ID] = true
		if _, ok := t.deadlines[sess.ID]; !ok && !t.expiring[sess.ID] {
			t.deadlines[sess.ID] = now.Add(SessionTTLMultiplier * ttl)
		}
	}
	for id, d := range t.deadlines {
		switch {
		case !present[id]:
			delete(t.deadlines, id)
		case !d.After(now):
			delete(t.deadlines, id)
			t.expiring[id] = true
			expired = append(expired, id)
		case next.IsZero() || d.Before(next):
			next = d
		}
	}
	return expired, next
}

// expire destroys an expired session. On failure, while still leader, it
// schedules another attempt.
func (t *sessionTimers) expire(ctx context.Context, id string) {
	err := t.destroy(ctx, id)
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.active {
		return
	}
	delete(t.expiring, id)
	if err == nil {
		t.logger.Debug("session expired", "session", id)
		return
	}
	if ctx.Err() != nil {
		return
	}
	t.logger.Warn("invalidate expired session, will retry", "session", id, "error", err)
	t.deadlines[id] = t.clock.Now().Add(sessionExpireRetry)
	t.signalLocked()
}

// renew restarts the TTL of session id and returns the session, or nil
// when there is no such session (or it is being invalidated). It returns
// ErrNotLeader when the timers are not running on this server.
func (t *sessionTimers) renew(id string) (*catalog.Session, error) {
	t.mu.Lock()
	active := t.active
	t.mu.Unlock()
	if !active {
		return nil, ErrNotLeader
	}
	sess, err := t.get(id)
	if err != nil {
		return nil, fmt.Errorf("renew session %s: %w", id, err)
	}
	if sess == nil {
		return nil, nil
	}
	ttl, err := sessionTTL(sess)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.active {
		return nil, ErrNotLeader
	}
	if t.expiring[id] {
		return nil, nil
	}
	if ttl > 0 {
		t.deadlines[id] = t.clock.Now().Add(SessionTTLMultiplier * ttl)
		t.signalLocked()
	}
	return sess, nil
}

// tracked returns how many sessions have a running timer.
func (t *sessionTimers) tracked() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.deadlines)
}

func (t *sessionTimers) signalLocked() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// SessionRenew restarts the TTL timer of session id, which the leader
// keeps; a follower forwards the renewal to the leader, waiting up to the
// hold timeout for one. It returns the session, or nil when no session has
// that ID.
func (s *Server) SessionRenew(ctx context.Context, id string) (*catalog.Session, error) {
	if dc := datacenterOf(ctx); s.remoteDC(dc) {
		return s.sessionRenewDC(ctx, dc, id)
	}
	var out *catalog.Session
	err := holdRetry(ctx, s.clock, s.config.HoldTimeout, s.shutdownCh, retryable, func() error {
		if s.IsLeader() {
			var err error
			out, err = s.sessionTTL.renew(id)
			return err
		}
		leader := s.Leader()
		if leader == "" {
			return ErrNoLeader
		}
		var resp SessionRenewResponse
		if err := s.pool.call(ctx, leader, "SessionRenew", &SessionRenewRequest{ID: id}, &resp); err != nil {
			return err
		}
		if err := fromWire(resp.Error); err != nil {
			return err
		}
		out = resp.Session
		return nil
	})
	if err != nil {
		return nil, noLeaderOnExpiry(err)
	}
	return out, nil
}

func (s *Server) rpcSessionRenew(ctx context.Context, req *SessionRenewRequest) (*SessionRenewResponse, error) {
	ctx = incomingDC(ctx)
	if err := s.authorizeWith(ctx, func(c checker) error {
		if node := s.sessionNode(req.ID); node != "" {
			return c.need(c.authz.SessionWrite(node), "session:write", node)
		}
		return nil
	}); err != nil {
		return &SessionRenewResponse{Error: toWire(err)}, nil
	}
	sess, err := s.SessionRenew(ctx, req.ID)
	if err != nil {
		return &SessionRenewResponse{Error: toWire(err)}, nil
	}
	return &SessionRenewResponse{Session: sess}, nil
}
