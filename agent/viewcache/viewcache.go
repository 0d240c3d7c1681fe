// Package viewcache keeps materialised views of catalog reads in the agent's
// memory. Each view is one catalog read (say, the health of service "web")
// kept fresh by a loop of blocking queries against the servers, so that DNS,
// and later xDS and cached HTTP reads, answer from memory instead of costing
// a server round trip per request.
//
// The package owns a goroutine per view and a janitor goroutine that stops
// views nobody asked for within the idle TTL; Close stops all of them and
// waits. It reads only through the Reader it is given: it must not import
// agent or server.
package viewcache

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/clock"
)

// Errors callers branch on.
var (
	// ErrClosed is returned by Get after Close, and to Gets waiting for
	// the first result of a view that was stopped before it had one.
	ErrClosed = errors.New("view cache closed")
	// ErrStale is returned (wrapping the last read error) when a view's
	// reads have been failing for longer than the stale-if-error window,
	// so its last good result is no longer served.
	ErrStale = errors.New("view stale past its stale-if-error window")
	// ErrViewStopped is returned by Notify for a view whose loop ended
	// (its first read failed) as it was asked for: read it again.
	ErrViewStopped = errors.New("view stopped")
)

// Reader runs catalog reads. With Options.MinQueryIndex set it must block
// until the result's index passes it or Options.MaxQueryTime ends, and then
// answer with the current result (a blocking query). It must be safe for
// concurrent use and return promptly when ctx ends. The agent's backend and
// *server.Server implement it.
type Reader interface {
	Read(ctx context.Context, req *catalog.ReadRequest) (*catalog.ReadResponse, error)
}

// Config is the configuration of a Cache. Start from DefaultConfig.
type Config struct {
	// IdleTTL is how long a view lives without a Get before its loop is
	// stopped and its result dropped.
	IdleTTL time.Duration
	// MaxQueryTime is the wait of each blocking query of a view loop, and
	// the longest a blocking Get waits.
	MaxQueryTime time.Duration
	// StaleIfError is how long a view whose reads fail keeps serving its
	// last good result, counted from the first failure after a success.
	// After that, Get returns ErrStale until a read succeeds again.
	StaleIfError time.Duration
	// MinBackoff and MaxBackoff bound the wait between failed reads of a
	// view: MinBackoff doubled per consecutive failure, capped.
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// Clock is the time source: when a view was last used, how long it has
	// been failing, and the timers of backoff, idle expiry and blocking
	// Gets. Nil means the real clock.
	Clock clock.Clock
	// Logger receives view failures; nil discards.
	Logger hclog.Logger
}

// DefaultConfig returns the defaults: views idle for 3 minutes are
// dropped, blocking queries wait up to 5 minutes, and a view serves its last
// good result for up to 10 minutes of failed reads.
func DefaultConfig() Config {
	return Config{
		IdleTTL:      3 * time.Minute,
		MaxQueryTime: 5 * time.Minute,
		StaleIfError: 10 * time.Minute,
		MinBackoff:   250 * time.Millisecond,
		MaxBackoff:   30 * time.Second,
		Clock:        clock.New(),
	}
}

// withDefaults fills in zero fields from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.IdleTTL <= 0 {
		c.IdleTTL = d.IdleTTL
	}
	if c.MaxQueryTime <= 0 {
		c.MaxQueryTime = d.MaxQueryTime
	}
	if c.StaleIfError < 0 {
		c.StaleIfError = 0
	} else if c.StaleIfError == 0 {
		c.StaleIfError = d.StaleIfError
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = d.MinBackoff
	}
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = max(d.MaxBackoff, c.MinBackoff)
	}
	if c.Clock == nil {
		c.Clock = d.Clock
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	return c
}

// Cache holds the views. It is safe for concurrent use.
type Cache struct {
	reader Reader
	cfg    Config
	logger hclog.Logger

	// ctx is the parent of every view loop; cancelled by Close.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// mu guards views and closed. Gets of existing views only read-lock
	// it, so that concurrent Gets do not serialise on it.
	mu     sync.RWMutex
	views  map[viewKey]*view
	closed bool
}

// New returns a cache reading through r and starts its janitor. Close it to
// stop every goroutine it started.
func New(r Reader, cfg Config) *Cache {
	cfg = cfg.withDefaults()
	c := &Cache{
		reader: r,
		cfg:    cfg,
		logger: cfg.Logger,
		views:  map[viewKey]*view{},
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.wg.Add(1)
	go c.janitor()
	return c
}

// viewKey identifies a view: every field of a read except the blocking
// parameters, which the view loop sets itself.
type viewKey struct {
	op         catalog.ReadOp
	key        string
	sep        string
	name       string
	tags       string
	dc         string
	token      string
	stale      bool
	consistent bool
	maxStale   time.Duration
	filter     string
	query      string // PreparedQueryID
}

func keyOf(req *catalog.ReadRequest) viewKey {
	o := &req.Options
	return viewKey{
		op: req.Op, key: req.Key, sep: req.Separator, name: req.Name,
		tags: strings.Join(req.Tags, "\x00"), dc: o.Datacenter, token: o.Token,
		stale: o.AllowStale, consistent: o.RequireConsistent, maxStale: o.MaxStaleDuration,
		filter: o.Filter, query: req.PreparedQueryID,
	}
}

// view is one materialised read and the loop that keeps it fresh.
type view struct {
	req    catalog.ReadRequest
	cancel context.CancelFunc
	// done is closed when the view's loop is stopped: Gets blocked on it
	// move to its successor.
	done <-chan struct{}
	// lastUsed is the Clock time (UnixNano) of the last Get, or of the
	// end of the last blocking Get.
	lastUsed atomic.Int64
	// waiters counts the Gets blocked on the view and its parked
	// queries; the janitor never stops a view somebody waits on.
	waiters atomic.Int64
	// lot holds the parked queries (park.go); stopped, guarded by
	// lot.mu, is set once the loop stopped.
	lot     parkLot
	stopped bool
	// ready is closed once the first read has an outcome.
	ready chan struct{}
	// state is what Gets read; only the view's loop replaces it (set,
	// setError, fail), so a Get costs an atomic load and no lock.
	state atomic.Pointer[viewState]

	// notified counts the subscriptions of Notify: a view with any is
	// not dropped for being idle.
	notified atomic.Int32
	// lmu guards listeners, the callbacks of Notify, and lstopped, set
	// when the view's loop ended.
	lmu       sync.Mutex
	listeners map[*listener]struct{}
	lstopped  bool
}

// listener is one Notify subscription.
type listener struct{ fn func(*catalog.ReadResponse) }

// viewState is one immutable state of a view.
type viewState struct {
	// resp is the last good result; nil until the first succeeds.
	resp *catalog.ReadResponse
	// err is the last read error; errSince when the current run of
	// failures began (zero while reads succeed).
	err      error
	errSince time.Time
	// changed is closed when the state is replaced (a new result or a
	// failed read).
	changed chan struct{}
	// memo holds what callers derive from resp; shared by the states
	// that hold the same resp.
	memo *Memo
}

// Memo holds values callers derive from one result of a view (its encoded
// HTTP answer, say), computed once and shared by every caller that got that
// result: the thousands of identical blocking queries a write wakes encode
// it once. Safe for concurrent use; a nil Memo computes every time. The
// values are shared: callers must not modify them.
type Memo struct {
	m sync.Map // key -> *memoEntry
}

type memoEntry struct {
	once sync.Once
	v    any
}

// Do returns the value of key, calling fn to compute it the first time.
// Keys must be comparable and few (one per kind of answer): a Memo lives as
// long as its result.
func (m *Memo) Do(key any, fn func() any) any {
	if m == nil {
		return fn()
	}
	e, ok := m.m.Load(key)
	if !ok {
		e, _ = m.m.LoadOrStore(key, &memoEntry{})
	}
	me := e.(*memoEntry)
	me.once.Do(func() { me.v = fn() })
	return me.v
}

// Get returns the current result of req from memory. The first Get of a
// read starts its view and waits (within ctx) for the first result;
// identical concurrent Gets share that one read. With
// req.Options.MinQueryIndex set, Get blocks until the view's index passes it,
// req.Options.MaxQueryTime (or the cache's MaxQueryTime) ends, or ctx ends,
// and then answers with what it has, like a blocking query.
//
// The result is shared by every caller of the view: it must not be modified.
// Errors: ErrClosed after Close; the read error when the view never had a
// result; ErrStale (wrapping the last error) when reads have failed for
// longer than StaleIfError; ctx's error when it ends first. A view that
// has its first result answers even when ctx is already done, so a Get
// with a done ctx reads only what is in memory and never waits. A Get of
// an existing view takes no exclusive lock.
func (c *Cache) Get(ctx context.Context, req *catalog.ReadRequest) (*catalog.ReadResponse, error) {
	st, err := c.get(ctx, req, false)
	if err != nil {
		return nil, err
	}
	return st.resp, nil
}

// Shared is Get for callers that answer many identical blocking queries
// from one view (the HTTP API's parked watchers): it blocks as Get does
// and also returns the result's Memo, in which they keep what they derive
// from it. Unlike Get it does not serve a view whose reads fail: as soon as
// a read of the view fails it returns that error (with the last good
// result, nil when none), so that the caller can ask the servers itself.
func (c *Cache) Shared(ctx context.Context, req *catalog.ReadRequest) (*catalog.ReadResponse, *Memo, error) {
	st, err := c.get(ctx, req, true)
	if st == nil {
		return nil, nil, err
	}
	return st.resp, st.memo, err
}

// get is Get and Shared (failFast): the state answered, and the error.
func (c *Cache) get(ctx context.Context, req *catalog.ReadRequest, failFast bool) (*viewState, error) {
	var (
		timeout <-chan time.Time
		timer   clock.Timer
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	armTimer := func() <-chan time.Time {
		if timeout == nil {
			wait := req.Options.MaxQueryTime
			if wait <= 0 || wait > c.cfg.MaxQueryTime {
				wait = c.cfg.MaxQueryTime
			}
			timer = c.cfg.Clock.NewTimer(wait)
			timeout = timer.C()
		}
		return timeout
	}
	for {
		v, err := c.viewFor(req)
		if err != nil {
			return nil, err
		}
		v.lastUsed.Store(c.cfg.Clock.Now().UnixNano())
		// A view that has its result answers even when ctx is already
		// done: callers pass a done ctx to read only what is in memory.
		select {
		case <-v.ready:
		default:
			select {
			case <-v.ready:
			case <-ctx.Done():
				return nil, fmt.Errorf("wait for first result of %s %q: %w", req.Op, req.Name, ctx.Err())
			}
		}
		st, stopped, err := c.wait(ctx, v, req, failFast, armTimer)
		if !stopped {
			return st, err
		}
		// The view was stopped while we waited on it (the janitor
		// took it between our lookup and our wait, or Close): wait on
		// its successor, with the same deadline.
	}
}

// wait blocks on v until its index passes req's MinQueryIndex, the timer
// armTimer starts fires, or ctx ends. It returns the state answered, or
// true when v's loop was stopped first.
func (c *Cache) wait(ctx context.Context, v *view, req *catalog.ReadRequest, failFast bool, armTimer func() <-chan time.Time) (*viewState, bool, error) {
	blocked := false
	defer func() {
		if blocked {
			v.lastUsed.Store(c.cfg.Clock.Now().UnixNano())
			v.waiters.Add(-1)
		}
	}()
	for {
		st := v.state.Load()
		if st.resp == nil {
			return st, false, st.err
		}
		if failFast && st.err != nil {
			return st, false, st.err
		}
		if !st.errSince.IsZero() && c.cfg.Clock.Now().Sub(st.errSince) > c.cfg.StaleIfError {
			return nil, false, fmt.Errorf("%w: %w", ErrStale, st.err)
		}
		minIndex := req.Options.MinQueryIndex
		if minIndex == 0 || st.resp.Meta.Index > minIndex {
			return st, false, nil
		}
		if !blocked {
			blocked = true
			v.waiters.Add(1)
		}
		timeout := armTimer()
		select {
		case <-st.changed:
		case <-v.done:
			return nil, true, nil
		case <-timeout:
			return st, false, nil
		case <-ctx.Done():
			return st, false, nil
		}
	}
}

// Has reports whether the view of req already holds a result, so that a Get
// of it answers from memory (an HTTP ?cached read reports a HIT).
func (c *Cache) Has(req *catalog.ReadRequest) bool {
	c.mu.RLock()
	v := c.views[keyOf(req)]
	c.mu.RUnlock()
	return v != nil && v.state.Load().resp != nil
}

// Age returns how old the result a Get of req would answer is: zero while
// its view's blocking queries succeed (the result is as fresh as the
// servers'), else the time since they began to fail. ok is false when req
// has no view with a result.
func (c *Cache) Age(req *catalog.ReadRequest) (age time.Duration, ok bool) {
	c.mu.RLock()
	v := c.views[keyOf(req)]
	c.mu.RUnlock()
	if v == nil {
		return 0, false
	}
	st := v.state.Load()
	if st.resp == nil {
		return 0, false
	}
	if st.errSince.IsZero() {
		return 0, true
	}
	return max(c.cfg.Clock.Now().Sub(st.errSince), 0), true
}

// viewFor returns the view of req, starting it when there is none.
func (c *Cache) viewFor(req *catalog.ReadRequest) (*view, error) {
	k := keyOf(req)
	c.mu.RLock()
	v, closed := c.views[k], c.closed
	c.mu.RUnlock()
	if v != nil || closed {
		if closed {
			return nil, ErrClosed
		}
		return v, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if v := c.views[k]; v != nil {
		return v, nil
	}
	ctx, cancel := context.WithCancel(c.ctx)
	v = &view{req: *req, cancel: cancel, done: ctx.Done(), ready: make(chan struct{})}
	v.state.Store(&viewState{changed: make(chan struct{})})
	v.req.Tags = append([]string(nil), req.Tags...)
	v.lastUsed.Store(c.cfg.Clock.Now().UnixNano())
	c.views[k] = v
	c.wg.Add(1)
	go c.run(ctx, k, v)
	return v, nil
}

// run keeps v fresh with blocking queries until ctx ends. When the first
// read fails the view is dropped, so that a later Get tries afresh instead of
// a loop retrying for a read nobody may ask for again.
func (c *Cache) run(ctx context.Context, k viewKey, v *view) {
	defer c.wg.Done()
	defer c.stopParked(v)
	defer v.cancel()
	defer v.stop()
	var (
		index    uint64
		failures int
		first    = true
	)
	for {
		req := v.req
		req.Options.MinQueryIndex = index
		req.Options.MaxQueryTime = c.cfg.MaxQueryTime
		resp, err := c.reader.Read(ctx, &req)
		if ctx.Err() != nil {
			if first {
				v.fail(ErrClosed)
			}
			return
		}
		if err == nil && resp == nil {
			err = errors.New("reader returned no result")
		}
		if err != nil {
			err = fmt.Errorf("read %s %q: %w", req.Op, req.Name, err)
			if first {
				c.drop(k, v)
				v.fail(err)
				c.wakeParked(v, v.state.Load())
				return
			}
			failures++
			v.setError(err, c.cfg.Clock.Now())
			c.wakeParked(v, v.state.Load())
			if failures == 1 {
				c.logger.Warn("view read failed, serving last result", "op", req.Op, "name", req.Name, "error", err)
			} else {
				c.logger.Debug("view read failed again", "op", req.Op, "name", req.Name, "failures", failures, "error", err)
			}
			if !c.sleep(ctx, c.backoff(failures)) {
				return
			}
			continue
		}
		if failures > 0 {
			c.logger.Info("view read recovered", "op", req.Op, "name", req.Name, "failures", failures)
		}
		failures = 0
		switch idx := resp.Meta.Index; {
		case idx == 0:
			// A Reader must never answer 0; blocking on it would spin.
			index = 1
		case idx < index:
			// The index went backwards (a snapshot restore or a new
			// leader with less data): start over without blocking.
			index = 0
		default:
			index = idx
		}
		v.set(resp)
		if first {
			first = false
			close(v.ready)
		}
		c.wakeParked(v, v.state.Load())
	}
}

// backoff returns the wait after the n-th consecutive failure, with up to
// 25% jitter so that views failing together do not retry together.
func (c *Cache) backoff(n int) time.Duration {
	d := c.cfg.MinBackoff
	for i := 1; i < n && d < c.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, c.cfg.MaxBackoff)
	return d + time.Duration(rand.Int64N(int64(d)/4+1))
}

// drop removes v from the map if it is still the view of k.
func (c *Cache) drop(k viewKey, v *view) {
	c.mu.Lock()
	if c.views[k] == v {
		delete(c.views, k)
	}
	c.mu.Unlock()
}

// set, setError and fail are called only by the view's loop, so each
// replaces the state it loaded without racing another writer.

func (v *view) set(resp *catalog.ReadResponse) {
	old := v.state.Load()
	v.state.Store(&viewState{resp: resp, changed: make(chan struct{}), memo: &Memo{}})
	close(old.changed)
	v.notify(resp)
}

// stop tells the view's listeners that it stopped and refuses new ones.
func (v *view) stop() {
	v.lmu.Lock()
	v.lstopped = true
	v.lmu.Unlock()
	v.notify(nil)
}

// notify calls the view's listeners with resp (nil: the view stopped).
func (v *view) notify(resp *catalog.ReadResponse) {
	if v.notified.Load() == 0 {
		return
	}
	v.lmu.Lock()
	fns := make([]func(*catalog.ReadResponse), 0, len(v.listeners))
	for l := range v.listeners {
		fns = append(fns, l.fn)
	}
	v.lmu.Unlock()
	for _, fn := range fns {
		fn(resp)
	}
}

// Notify calls fn with every result the view of req gets from now on (also
// when its index did not move: a blocking query that timed out), and with
// nil once when the view stops (its first read failed, or the cache
// closed), after which fn is not called again and a new Notify is needed.
// It starts the view when there is none, and a view with subscriptions is
// not dropped for being idle. fn runs on the view's goroutine: it must not
// block or call back into the cache. Cancel ends the subscription.
//
// cur is the view's result when the subscription began (nil: none yet):
// every later result is passed to fn, so a reader that compares cur with
// what it read misses no change.
//
// Notify is how many readers follow views without a goroutine each waiting
// in a blocking Get.
func (c *Cache) Notify(req *catalog.ReadRequest, fn func(*catalog.ReadResponse)) (cur *catalog.ReadResponse, cancel func(), err error) {
	v, err := c.viewFor(req)
	if err != nil {
		return nil, nil, err
	}
	l := &listener{fn: fn}
	v.lmu.Lock()
	if v.lstopped {
		v.lmu.Unlock()
		return nil, nil, ErrViewStopped
	}
	if v.listeners == nil {
		v.listeners = map[*listener]struct{}{}
	}
	v.listeners[l] = struct{}{}
	v.notified.Add(1)
	// After the count: set stores a state before it reads the count, so
	// a result this load misses is passed to fn.
	cur = v.state.Load().resp
	v.lmu.Unlock()
	var once sync.Once
	return cur, func() {
		once.Do(func() {
			v.lmu.Lock()
			delete(v.listeners, l)
			v.notified.Add(-1)
			v.lmu.Unlock()
			// Idle from now on, not from its last Get.
			v.lastUsed.Store(c.cfg.Clock.Now().UnixNano())
		})
	}, nil
}

// setError keeps the result and records err. It wakes the blocked Gets:
// Shared callers stop waiting on a failing view.
func (v *view) setError(err error, now time.Time) {
	old := v.state.Load()
	st := *old
	st.err = err
	if st.errSince.IsZero() {
		st.errSince = now
	}
	st.changed = make(chan struct{})
	v.state.Store(&st)
	close(old.changed)
}

// fail records the outcome of a first read that produced no result.
func (v *view) fail(err error) {
	st := *v.state.Load()
	st.err = err
	v.state.Store(&st)
	close(v.ready)
}

// janitor stops views that were not used within the idle TTL and that no
// Get is blocked on.
func (c *Cache) janitor() {
	defer c.wg.Done()
	interval := min(max(c.cfg.IdleTTL/4, 10*time.Millisecond), time.Minute)
	for c.sleep(c.ctx, interval) {
		c.sweep()
	}
}

// sleep waits d on the cache's clock and reports false if ctx ended first.
func (c *Cache) sleep(ctx context.Context, d time.Duration) bool {
	t := c.cfg.Clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C():
		return true
	}
}

// sweep stops and forgets every view idle for longer than the idle TTL.
func (c *Cache) sweep() {
	cutoff := c.cfg.Clock.Now().Add(-c.cfg.IdleTTL).UnixNano()
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, v := range c.views {
		if v.waiters.Load() == 0 && v.notified.Load() == 0 && v.lastUsed.Load() < cutoff {
			delete(c.views, k)
			v.cancel()
		}
	}
}

// Waiting returns the number of blocking Gets and parked queries waiting on
// the views.
func (c *Cache) Waiting() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	n := int64(0)
	for _, v := range c.views {
		n += v.waiters.Load()
	}
	return int(n)
}

// Len returns the number of live views.
func (c *Cache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.views)
}

// Close stops every view loop and the janitor and waits for them. Gets
// after Close return ErrClosed. It is safe to call more than once.
func (c *Cache) Close() {
	c.mu.Lock()
	c.closed = true
	c.views = map[viewKey]*view{}
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
}
