package viewcache_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/agent/viewcache"
	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/test/wait"
)

func (e *env) put(t *testing.T, key, value string) uint64 {
	t.Helper()
	if _, err := e.client.KV().Put(&api.KVPair{Key: key, Value: []byte(value)}, nil); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	_, m, err := e.client.KV().Get(key, nil)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	return m.LastIndex
}

func kvReq(key string, minIndex uint64, wait time.Duration) *catalog.ReadRequest {
	return &catalog.ReadRequest{Op: catalog.ReadKVGet, Key: key,
		Options: catalog.QueryOptions{MinQueryIndex: minIndex, MaxQueryTime: wait}}
}

// TestSharedWaitersGetOneResultAndOneMemo parks many blocking Shared calls
// on one key: a write wakes them all with the new value through one view,
// and what they derive from it through the Memo is computed once.
func TestSharedWaitersGetOneResultAndOneMemo(t *testing.T) {
	e := startEnv(t)
	idx := e.put(t, "watched", "one")
	c := viewcache.New(e.reader, viewcache.Config{})
	defer c.Close()

	const n = 50
	var (
		computed atomic.Int64
		wg       sync.WaitGroup
		mu       sync.Mutex
		memos    = map[*viewcache.Memo]bool{}
		errs     = make(chan error, n)
	)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, memo, err := c.Shared(context.Background(), kvReq("watched", idx, 30*time.Second))
			if err == nil && (resp.KV == nil || string(resp.KV.Value) != "two" || resp.Meta.Index <= idx) {
				err = fmt.Errorf("woken with %+v at %d, want two after %d", resp.KV, resp.Meta.Index, idx)
			}
			if err == nil && memo == nil {
				err = errors.New("no memo")
			}
			if err != nil {
				errs <- err
				return
			}
			got := memo.Do("answer", func() any { computed.Add(1); return string(resp.KV.Value) })
			if got != "two" {
				errs <- fmt.Errorf("memo = %v", got)
			}
			mu.Lock()
			memos[memo] = true
			mu.Unlock()
		}()
	}
	// Every waiter is parked before the write (the view loop's blocking
	// read is the only read in flight).
	wait.For(t, 10*time.Second, func() error {
		if e.reader.inFlight.Load() != 1 || e.reader.calls.Load() < 2 {
			return errors.New("view loop not blocked yet")
		}
		return nil
	})
	e.put(t, "watched", "two")
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(memos) != 1 || computed.Load() != 1 {
		t.Fatalf("%d memos, %d computations for one result, want 1 and 1", len(memos), computed.Load())
	}
	if fresh := e.reader.fresh.Load(); fresh != 1 {
		t.Fatalf("%d non-blocking reads for %d waiters, want 1", fresh, n)
	}
}

// TestSharedReturnsWhenTheViewFails checks that a parked Shared call does not
// wait out a failing view: it returns the read error with the last result.
func TestSharedReturnsWhenTheViewFails(t *testing.T) {
	e := startEnv(t)
	idx := e.put(t, "flaky", "one")
	c := viewcache.New(e.reader, viewcache.Config{MinBackoff: time.Hour, MaxBackoff: time.Hour})
	defer c.Close()
	type result struct {
		resp *catalog.ReadResponse
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, _, err := c.Shared(context.Background(), kvReq("flaky", idx, 30*time.Second))
		done <- result{resp, err}
	}()
	wait.For(t, 10*time.Second, func() error {
		if e.reader.inFlight.Load() != 1 {
			return errors.New("view loop not blocked yet")
		}
		return nil
	})
	e.reader.setBroken(true)
	select {
	case r := <-done:
		if !errors.Is(r.err, errBroken) || r.resp == nil || string(r.resp.KV.Value) != "one" {
			t.Fatalf("Shared on a failed view = %+v, %v; want the last result and the read error", r.resp, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shared still parked on a failed view")
	}
}

// TestBlockedViewOutlivesIdleTTL checks that the janitor never stops a view
// a blocking Get is parked on, however long the wait: the Get is still woken
// by a change after the idle TTL passed.
func TestBlockedViewOutlivesIdleTTL(t *testing.T) {
	e := startEnv(t)
	idx := e.put(t, "long", "one")
	clk := newFakeClock()
	c := viewcache.New(e.reader, viewcache.Config{Clock: clk, IdleTTL: time.Minute, MaxQueryTime: time.Hour})
	defer c.Close()
	if _, err := c.Get(context.Background(), kvReq("long", 0, 0)); err != nil {
		t.Fatal(err)
	}
	waitPending(t, clk, 1) // the janitor
	done := make(chan *catalog.ReadResponse, 1)
	go func() {
		resp, _ := c.Get(context.Background(), kvReq("long", idx, time.Hour))
		done <- resp
	}()
	waitPending(t, clk, 2) // and the parked Get's timer
	// Well past the idle TTL, twice, so that the janitor sweeps at a time
	// past it whatever its timer's phase; each time it sets its timer
	// again.
	for i := 0; i < 2; i++ {
		clk.Advance(5 * time.Minute)
		waitPending(t, clk, 2)
	}
	if n := c.Len(); n != 1 {
		t.Fatalf("views = %d while a Get is parked on it, want 1", n)
	}
	e.put(t, "long", "two")
	select {
	case resp := <-done:
		if resp == nil || resp.KV == nil || string(resp.KV.Value) != "two" {
			t.Fatalf("woken Get = %+v, want two", resp)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("parked Get not woken by a change after the idle TTL")
	}
	// Once nobody waits, the view goes idle as before.
	wait.For(t, 10*time.Second, func() error {
		clk.Advance(time.Minute)
		if n := c.Len(); n != 0 {
			return fmt.Errorf("views = %d, want 0", n)
		}
		return nil
	})
}

func TestNilMemoComputes(t *testing.T) {
	var m *viewcache.Memo
	n := 0
	for i := 0; i < 2; i++ {
		m.Do("k", func() any { n++; return n })
	}
	if n != 2 {
		t.Fatalf("nil memo computed %d times, want 2", n)
	}
}

// parkResult is what a ParkFunc received.
type parkResult struct {
	resp *catalog.ReadResponse
	memo *viewcache.Memo
	err  error
}

func parkInto(ch chan<- parkResult) viewcache.ParkFunc {
	return func(resp *catalog.ReadResponse, memo *viewcache.Memo, err error) {
		ch <- parkResult{resp, memo, err}
	}
}

func recvPark(t *testing.T, ch <-chan parkResult, what string) parkResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: parked query not answered", what)
	}
	panic("unreachable")
}

// TestParkedQueries checks Park: an index already passed is answered at
// once; parked queries are answered by a change (once each, sharing the
// result's Memo), by the end of their wait (with the current result), and
// with ErrClosed when the cache closes.
func TestParkedQueries(t *testing.T) {
	e := startEnv(t)
	idx := e.put(t, "parked", "one")
	clk := newFakeClock()
	c := viewcache.New(e.reader, viewcache.Config{Clock: clk})

	now := make(chan parkResult, 1)
	c.Park(kvReq("parked", idx-1, time.Minute), parkInto(now))
	if r := recvPark(t, now, "passed index"); r.err != nil || string(r.resp.KV.Value) != "one" {
		t.Fatalf("passed index: %+v", r)
	}

	woken := make(chan parkResult, 10)
	for i := 0; i < 10; i++ {
		c.Park(kvReq("parked", idx, time.Hour), parkInto(woken))
	}
	timedOut := make(chan parkResult, 1)
	c.Park(kvReq("parked", idx, time.Second), parkInto(timedOut))
	closed := make(chan parkResult, 1)
	c.Park(kvReq("other", 1<<40, time.Hour), parkInto(closed))
	wait.For(t, 10*time.Second, func() error {
		if n := c.Waiting(); n != 12 {
			return fmt.Errorf("waiting = %d, want 12", n)
		}
		return nil
	})
	clk.Advance(time.Second)
	if r := recvPark(t, timedOut, "timed out"); r.err != nil || r.resp.Meta.Index != idx {
		t.Fatalf("timed out: %+v, want the result at %d", r, idx)
	}
	e.put(t, "parked", "two")
	var memo *viewcache.Memo
	for i := 0; i < 10; i++ {
		r := recvPark(t, woken, "woken")
		if r.err != nil || string(r.resp.KV.Value) != "two" || r.memo == nil || (memo != nil && r.memo != memo) {
			t.Fatalf("woken %d: %+v", i, r)
		}
		memo = r.memo
	}
	c.Close()
	if r := recvPark(t, closed, "closed"); !errors.Is(r.err, viewcache.ErrClosed) {
		t.Fatalf("parked at Close: %+v, want ErrClosed", r)
	}
	select {
	case r := <-woken:
		t.Fatalf("a parked query answered twice: %+v", r)
	default:
	}
}

// TestManyParkedQueriesOneWake parks more queries on one view than one
// goroutine answers (answerParked fans them out): a change answers each of
// those it passes exactly once, with the new result and one Memo, leaves
// the others parked, and the view's count of waiters follows.
func TestManyParkedQueriesOneWake(t *testing.T) {
	e := startEnv(t)
	idx := e.put(t, "many", "one")
	c := viewcache.New(e.reader, viewcache.Config{})

	const woken, staying = 1000, 100
	var (
		calls   sync.Map // *int -> count
		results = make(chan parkResult, woken)
		left    = make(chan parkResult, staying)
	)
	for i := 0; i < woken; i++ {
		id := new(int)
		c.Park(kvReq("many", idx, time.Hour), func(resp *catalog.ReadResponse, memo *viewcache.Memo, err error) {
			if n, loaded := calls.LoadOrStore(id, 1); loaded {
				t.Errorf("parked query called again (%v)", n)
				return
			}
			results <- parkResult{resp, memo, err}
		})
	}
	for i := 0; i < staying; i++ {
		c.Park(kvReq("many", 1<<40, time.Hour), parkInto(left))
	}
	wait.For(t, 10*time.Second, func() error {
		if n := c.Waiting(); n != woken+staying {
			return fmt.Errorf("waiting = %d, want %d", n, woken+staying)
		}
		return nil
	})
	e.put(t, "many", "two")
	var memo *viewcache.Memo
	for i := 0; i < woken; i++ {
		r := recvPark(t, results, "woken")
		if r.err != nil || string(r.resp.KV.Value) != "two" || r.memo == nil || (memo != nil && r.memo != memo) {
			t.Fatalf("woken %d: %+v", i, r)
		}
		memo = r.memo
	}
	wait.For(t, 10*time.Second, func() error {
		if n := c.Waiting(); n != staying {
			return fmt.Errorf("waiting = %d, want %d", n, staying)
		}
		return nil
	})
	c.Close()
	for i := 0; i < staying; i++ {
		if r := recvPark(t, left, "closed"); !errors.Is(r.err, viewcache.ErrClosed) {
			t.Fatalf("parked at Close: %+v, want ErrClosed", r)
		}
	}
}
