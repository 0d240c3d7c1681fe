package viewcache

import (
	"runtime"
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
// result if any). It is called exactly once. The callbacks of a change run
// on the view's goroutine and, when they are many, on up to one more
// goroutine per CPU at the same time; the view's next read waits for them,
// so they must not block for long (writing a small answer to a socket is
// fine). The others run on goroutines of their own.
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
	if v.stopped {
		v.lot.mu.Unlock()
		c.deliver(v, p, nil, ErrClosed)
		return
	}
	select {
	case <-v.ready:
		// Under the lot's lock: a change stored before it is seen here,
		// one stored after it finds p in the lot. The state is read after
		// ready: read before, it could be the empty one the first result
		// replaced just before ready was closed (p then got ErrClosed).
		st := v.state.Load()
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

// claim reports whether p's callback is still to be called, and makes sure
// that nothing else calls it.
func (p *parkedQuery) claim() bool {
	if !p.fired.CompareAndSwap(false, true) {
		return false
	}
	if p.timer != nil {
		p.timer.Stop()
	}
	return true
}

// deliver calls p's callback once with st (nil: no result) and err.
func (c *Cache) deliver(v *view, p *parkedQuery, st *viewState, err error) {
	if !p.claim() {
		return
	}
	v.lastUsed.Store(c.cfg.Clock.Now().UnixNano())
	v.waiters.Add(-1)
	c.call(p, st, err)
}

// call calls p's callback, which p.claim gave to its caller, with st and
// err.
func (c *Cache) call(p *parkedQuery, st *viewState, err error) {
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
// callbacks run here, and on up to GOMAXPROCS-1 more goroutines when they
// are many (answerParked); failures' run on goroutines of their own, as
// each may read the servers.
func (c *Cache) wakeParked(v *view, st *viewState) {
	v.lot.mu.Lock()
	if len(v.lot.queries) == 0 {
		v.lot.mu.Unlock()
		return
	}
	woken := make([]*parkedQuery, 0, len(v.lot.queries))
	for p := range v.lot.queries {
		if st.err != nil || st.resp == nil || st.resp.Meta.Index > p.minIndex {
			woken = append(woken, p)
		}
	}
	if len(woken) == len(v.lot.queries) {
		clear(v.lot.queries)
	} else {
		for _, p := range woken {
			delete(v.lot.queries, p)
		}
	}
	v.lot.mu.Unlock()
	if st.err == nil && st.resp != nil {
		c.answerParked(v, st, woken)
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

// parkedBatch is how many woken queries a goroutine of answerParked takes
// at a time: large enough that they rarely contend on the shared counter,
// small enough that a goroutine descheduled for a while holds few back.
const parkedBatch = 64

// answerParked calls the callbacks of woken with st, a new result. Each
// callback writes an answer to a socket: with thousands of them (a key
// thousands of clients watch), one goroutine doing them one after the other
// leaves the other CPUs idle, so up to one goroutine per CPU takes batches
// of them from a shared counter; it returns when every callback has
// returned. The view's accounting is updated once for all of them.
func (c *Cache) answerParked(v *view, st *viewState, woken []*parkedQuery) {
	var next atomic.Int64
	work := func() (answered int64) {
		for {
			end := next.Add(parkedBatch)
			start := end - parkedBatch
			if start >= int64(len(woken)) {
				return answered
			}
			for _, p := range woken[start:min(end, int64(len(woken)))] {
				if p.claim() {
					c.call(p, st, nil)
					answered++
				}
			}
		}
	}
	var (
		wg       sync.WaitGroup
		answered atomic.Int64
	)
	for range min(runtime.GOMAXPROCS(0), (len(woken)+parkedBatch-1)/parkedBatch) - 1 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answered.Add(work())
		}()
	}
	answered.Add(work())
	wg.Wait()
	v.lastUsed.Store(c.cfg.Clock.Now().UnixNano())
	v.waiters.Add(-answered.Load())
}
