package viewcache

import (
	"sync"
	"sync/atomic"

	"github.com/tribune-mesh/tribune/catalog"
)

// Parked blocking queries.
//
// Get and Shared hold their caller's goroutine while they wait. Park is for
// callers that keep no goroutine at all while a query waits (the HTTP API
// hands the connection of a parked query over and answers it later): the
// cache calls them back once with the answer.

// ParkFunc receives the outcome of a parked query: the view's result and its
// Memo with err nil when the index passed (or, with an index not passed,
// when the wait ended), or err (ErrClosed when the cache closed or the view
// stopped; the read error when the view's reads fail, with the last good
// result if any). It is called exactly once. Callbacks of a change are
// called one after the other from the view's goroutine, so they must not
// block for long (writing a small answer to a socket is fine); the others
// run on goroutines of their own.
type ParkFunc func(resp *catalog.ReadResponse, memo *Memo, err error)

// parkedQuery is one parked query of a view.
type parkedQuery struct {
	minIndex uint64
	fn       ParkFunc
	timer    interface{ Stop() bool }
	fired    atomic.Bool
}

// parkLot holds a view's parked queries.
type parkLot struct {
	mu      sync.Mutex
	queries map[*parkedQuery]struct{}
}

// Park waits for req as a blocking query (see Get) without holding a
// goroutine of the caller's, and calls fn once with the outcome. The wait
// is req.Options.MaxQueryTime, capped at the cache's MaxQueryTime.
func (c *Cache) Park(req *catalog.ReadRequest, fn ParkFunc) {
	v, err := c.viewFor(req)
	if err != nil {
		fn(nil, nil, err)
		return
	}
	v.lastUsed.Store(c.cfg.Clock.Now().UnixNano())
	p := &parkedQuery{minIndex: req.Options.MinQueryIndex, fn: fn}
	wait := req.Options.MaxQueryTime
	if wait <= 0 || wait > c.cfg.MaxQueryTime {
		wait = c.cfg.MaxQueryTime
	}
	v.waiters.Add(1)
	v.lot.mu.Lock()
	// Under the lot's lock: a change stored before it is seen here, one
	// stored after it finds p in the lot.
	st := v.state.Load()
	if v.stopped {
		v.lot.mu.Unlock()
		c.deliver(v, p, nil, ErrClosed)
		return
	}
	select {
	case <-v.ready:
		if st.resp == nil || st.err != nil || st.resp.Meta.Index > p.minIndex {
			v.lot.mu.Unlock()
			c.deliver(v, p, st, st.err)
			return
		}
	default:
	}
	if v.lot.queries == nil {
		v.lot.queries = map[*parkedQuery]struct{}{}
	}
	v.lot.queries[p] = struct{}{}
	p.timer = c.cfg.Clock.AfterFunc(wait, func() {
		if v.unpark(p) {
			c.deliver(v, p, v.state.Load(), nil)
		}
	})
	v.lot.mu.Unlock()
}

// unpark removes p from v's lot and reports whether it was there.
func (v *view) unpark(p *parkedQuery) bool {
	v.lot.mu.Lock()
	defer v.lot.mu.Unlock()
	if _, ok := v.lot.queries[p]; !ok {
		return false
	}
	delete(v.lot.queries, p)
	return true
}

// deliver calls p's callback once with st (nil: no result) and err.
func (c *Cache) deliver(v *view, p *parkedQuery, st *viewState, err error) {
	if !p.fired.CompareAndSwap(false, true) {
		return
	}
	if p.timer != nil {
		p.timer.Stop()
	}
	v.lastUsed.Store(c.cfg.Clock.Now().UnixNano())
	v.waiters.Add(-1)
	if st == nil || st.resp == nil {
		if err == nil {
			err = ErrClosed
		}
		p.fn(nil, nil, err)
		return
	}
	if !st.errSince.IsZero() && c.cfg.Clock.Now().Sub(st.errSince) > c.cfg.StaleIfError && err == nil {
		err = ErrStale
	}
	p.fn(st.resp, st.memo, err)
}

// wakeParked answers the parked queries st answers: all of them when st
// holds an error (with it), else those whose index it passes. The change's
// callbacks run here, one after the other; failures' run on goroutines of
// their own, as each may read the servers.
func (c *Cache) wakeParked(v *view, st *viewState) {
	v.lot.mu.Lock()
	if len(v.lot.queries) == 0 {
		v.lot.mu.Unlock()
		return
	}
	var woken []*parkedQuery
	for p := range v.lot.queries {
		if st.err != nil || st.resp == nil || st.resp.Meta.Index > p.minIndex {
			woken = append(woken, p)
			delete(v.lot.queries, p)
		}
	}
	v.lot.mu.Unlock()
	if st.err == nil && st.resp != nil {
		for _, p := range woken {
			c.deliver(v, p, st, nil)
		}
		return
	}
	for _, p := range woken {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.deliver(v, p, st, st.err)
		}()
	}
}

// stopParked answers every query parked on v with ErrClosed: v's loop
// stopped (Close, or the janitor took v between a Park's lookup and its
// registration). Later Parks on v are answered at once.
func (c *Cache) stopParked(v *view) {
	v.lot.mu.Lock()
	v.stopped = true
	queries := v.lot.queries
	v.lot.queries = nil
	v.lot.mu.Unlock()
	for p := range queries {
		c.deliver(v, p, nil, ErrClosed)
	}
}
