package viewcache_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/agent/agenttest"
	"github.com/tribune-mesh/tribune/agent/viewcache"
	"github.com/tribune-mesh/tribune/catalog"
)

// countingReader counts the reads that reach the real server and can be
// broken: while broken, reads in flight are cancelled and new ones fail.
type countingReader struct {
	inner viewcache.Reader

	calls    atomic.Int64 // every Read
	fresh    atomic.Int64 // Reads with MinQueryIndex == 0
	inFlight atomic.Int64

	mu      sync.Mutex
	broken  bool
	cancels map[int]context.CancelFunc
	next    int
}

var errBroken = errors.New("injected read failure")

func newCountingReader(inner viewcache.Reader) *countingReader {
	return &countingReader{inner: inner, cancels: map[int]context.CancelFunc{}}
}

func (r *countingReader) Read(ctx context.Context, req *catalog.ReadRequest) (*catalog.ReadResponse, error) {
	r.calls.Add(1)
	if req.Options.MinQueryIndex == 0 {
		r.fresh.Add(1)
	}
	r.inFlight.Add(1)
	defer r.inFlight.Add(-1)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.mu.Lock()
	if r.broken {
		r.mu.Unlock()
		return nil, errBroken
	}
	id := r.next
	r.next++
	r.cancels[id] = cancel
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.cancels, id)
		r.mu.Unlock()
	}()
	resp, err := r.inner.Read(ctx, req)
	r.mu.Lock()
	broken := r.broken
	r.mu.Unlock()
	if broken {
		return nil, errBroken
	}
	return resp, err
}

// setBroken breaks or heals the reader; breaking cancels reads in flight.
func (r *countingReader) setBroken(b bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.broken = b
	if b {
		for _, c := range r.cancels {
			c()
		}
	}
}

// fakeClock is a Clock moved by hand.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []fakeWaiter
}

type fakeWaiter struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_700_000_000, 0)} }

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) After(d time.Duration) <-chan time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- f.now
		return ch
	}
	f.waiters = append(f.waiters, fakeWaiter{at: f.now.Add(d), ch: ch})
	return ch
}

func (f *fakeClock) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
	kept := f.waiters[:0]
	for _, w := range f.waiters {
		if !w.at.After(f.now) {
			w.ch <- f.now
		} else {
			kept = append(kept, w)
		}
	}
	f.waiters = kept
}

// eventually polls cond until it returns "" or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		why := cond()
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", timeout, why)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// viewGoroutines counts goroutines running view loops or the janitor.
func viewGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "viewcache.(*Cache).run") || strings.Contains(g, "viewcache.(*Cache).janitor") {
			n++
		}
	}
	return n
}

type env struct {
	reader *countingReader
	client *api.Client
	node   string
}

func startEnv(t *testing.T) *env {
	t.Helper()
	a := agenttest.Start(t, nil)
	c, err := api.NewClient(&api.Config{Address: a.HTTPAddr()})
	if err != nil {
		t.Fatalf("api client: %v", err)
	}
	return &env{reader: newCountingReader(a.Server()), client: c, node: "n1"}
}

func (e *env) register(t *testing.T, id, service, addr string, port int) {
	t.Helper()
	_, err := e.client.Catalog().Register(&api.CatalogRegistration{
		Node: e.node, Address: "10.0.0.1",
		Service: &api.AgentService{ID: id, Service: service, Address: addr, Port: port},
	}, nil)
	if err != nil {
		t.Fatalf("register %s: %v", id, err)
	}
}

func healthReq(service string) *catalog.ReadRequest {
	return &catalog.ReadRequest{Op: catalog.ReadHealthService, Name: service,
		Options: catalog.QueryOptions{AllowStale: true}}
}

func TestViewServesFromMemoryAndFollowsChanges(t *testing.T) {
	e := startEnv(t)
	e.register(t, "web1", "web", "10.0.0.11", 80)
	c := viewcache.New(e.reader, viewcache.Config{})
	defer c.Close()
	ctx := context.Background()

	resp, err := c.Get(ctx, healthReq("web"))
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	if len(resp.Instances) != 1 {
		t.Fatalf("instances = %d, want 1", len(resp.Instances))
	}
	// The loop is now parked in its blocking query.
	eventually(t, 5*time.Second, func() string {
		if n := e.reader.inFlight.Load(); n != 1 {
			return fmt.Sprintf("reads in flight = %d", n)
		}
		return ""
	})
	before := e.reader.calls.Load()
	for i := 0; i < 1000; i++ {
		if _, err := c.Get(ctx, healthReq("web")); err != nil {
			t.Fatalf("get %d: %v", i, err)
		}
	}
	if got := e.reader.calls.Load(); got != before {
		t.Fatalf("1000 Gets made %d server reads, want 0", got-before)
	}

	e.register(t, "web2", "web", "10.0.0.12", 80)
	eventually(t, 5*time.Second, func() string {
		resp, err := c.Get(ctx, healthReq("web"))
		if err != nil {
			return err.Error()
		}
		if len(resp.Instances) != 2 {
			return fmt.Sprintf("instances = %d", len(resp.Instances))
		}
		return ""
	})
	// One change costs one read (the blocking query that returned), plus
	// the next blocking query the loop starts.
	if got := e.reader.calls.Load() - before; got > 3 {
		t.Fatalf("one change cost %d reads", got)
	}
}

func TestIdenticalGetsShareOneRead(t *testing.T) {
	e := startEnv(t)
	e.register(t, "db1", "db", "", 5432)
	c := viewcache.New(e.reader, viewcache.Config{})
	defer c.Close()

	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := c.Get(context.Background(), healthReq("db"))
			if err == nil && len(resp.Instances) != 1 {
				err = fmt.Errorf("instances = %d", len(resp.Instances))
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := e.reader.fresh.Load(); n != 1 {
		t.Fatalf("50 concurrent first Gets made %d non-blocking reads, want 1", n)
	}
	if n := c.Len(); n != 1 {
		t.Fatalf("views = %d, want 1", n)
	}
	// A different read is a different view.
	if _, err := c.Get(context.Background(), healthReq("other")); err != nil {
		t.Fatal(err)
	}
	if n := c.Len(); n != 2 {
		t.Fatalf("views = %d, want 2", n)
	}
}

func TestIdleViewsAreStopped(t *testing.T) {
	e := startEnv(t)
	clock := newFakeClock()
	c := viewcache.New(e.reader, viewcache.Config{IdleTTL: 3 * time.Minute, Clock: clock})
	defer c.Close()
	ctx := context.Background()
	if _, err := c.Get(ctx, healthReq("a")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, healthReq("b")); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Minute)
	if _, err := c.Get(ctx, healthReq("b")); err != nil { // b stays in use
		t.Fatal(err)
	}
	clock.Advance(90 * time.Second)
	eventually(t, 5*time.Second, func() string {
		// Keep b in use while time passes; the janitor's timer fires
		// whenever it was set.
		if _, err := c.Get(ctx, healthReq("b")); err != nil {
			return err.Error()
		}
		clock.Advance(time.Minute)
		if n := c.Len(); n != 1 {
			return fmt.Sprintf("views = %d, want 1 (a idle, b used)", n)
		}
		return ""
	})
	eventually(t, 5*time.Second, func() string {
		clock.Advance(time.Minute)
		if n := c.Len(); n != 0 {
			return fmt.Sprintf("views = %d, want 0", n)
		}
		if n := e.reader.inFlight.Load(); n != 0 {
			return fmt.Sprintf("reads in flight = %d after every view went idle", n)
		}
		return ""
	})
}

func TestStaleIfErrorIsBounded(t *testing.T) {
	e := startEnv(t)
	e.register(t, "api1", "api", "", 8080)
	clock := newFakeClock()
	c := viewcache.New(e.reader, viewcache.Config{Clock: clock, StaleIfError: time.Minute,
		MinBackoff: time.Second, MaxBackoff: 4 * time.Second})
	defer c.Close()
	ctx := context.Background()
	if _, err := c.Get(ctx, healthReq("api")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() string {
		if e.reader.inFlight.Load() != 1 {
			return "loop not blocked yet"
		}
		return ""
	})

	e.reader.setBroken(true)
	// The loop sees the failure and backs off; Get still serves the last
	// good result.
	eventually(t, 5*time.Second, func() string {
		if e.reader.calls.Load() < 2 || e.reader.inFlight.Load() != 0 {
			return "loop has not failed yet"
		}
		return ""
	})
	clock.Advance(30 * time.Second)
	resp, err := c.Get(ctx, healthReq("api"))
	if err != nil || len(resp.Instances) != 1 {
		t.Fatalf("within the window: resp=%v err=%v, want the last result", resp, err)
	}

	clock.Advance(31 * time.Second)
	if _, err := c.Get(ctx, healthReq("api")); !errors.Is(err, viewcache.ErrStale) || !errors.Is(err, errBroken) {
		t.Fatalf("past the window: err = %v, want ErrStale wrapping the read error", err)
	}

	e.reader.setBroken(false)
	e.register(t, "api2", "api", "", 8080)
	eventually(t, 5*time.Second, func() string {
		clock.Advance(5 * time.Second) // let the backoff end
		resp, err := c.Get(ctx, healthReq("api"))
		if err != nil {
			return err.Error()
		}
		if len(resp.Instances) != 2 {
			return fmt.Sprintf("instances = %d", len(resp.Instances))
		}
		return ""
	})
}

func TestFirstReadErrorIsReturnedAndNotKept(t *testing.T) {
	e := startEnv(t)
	c := viewcache.New(e.reader, viewcache.Config{})
	defer c.Close()
	_, err := c.Get(context.Background(), &catalog.ReadRequest{Op: "no.such.read"})
	if !errors.Is(err, catalog.ErrInvalidRequest) {
		t.Fatalf("err = %v, want ErrInvalidRequest", err)
	}
	eventually(t, 5*time.Second, func() string {
		if n := c.Len(); n != 0 {
			return fmt.Sprintf("views = %d after a failed first read", n)
		}
		return ""
	})
}

func TestBlockingGet(t *testing.T) {
	e := startEnv(t)
	e.register(t, "q1", "queue", "", 1)
	c := viewcache.New(e.reader, viewcache.Config{})
	defer c.Close()
	ctx := context.Background()
	resp, err := c.Get(ctx, healthReq("queue"))
	if err != nil {
		t.Fatal(err)
	}
	req := healthReq("queue")
	req.Options.MinQueryIndex = resp.Meta.Index
	req.Options.MaxQueryTime = 50 * time.Millisecond
	start := time.Now()
	same, err := c.Get(ctx, req)
	if err != nil || same.Meta.Index != resp.Meta.Index {
		t.Fatalf("timed-out blocking Get: index %v err %v", same, err)
	}
	if time.Since(start) < 40*time.Millisecond {
		t.Fatalf("blocking Get returned after %v, before its wait", time.Since(start))
	}

	req.Options.MaxQueryTime = 10 * time.Second
	done := make(chan *catalog.ReadResponse, 1)
	go func() {
		r, _ := c.Get(ctx, req)
		done <- r
	}()
	time.Sleep(20 * time.Millisecond)
	e.register(t, "q2", "queue", "", 2)
	select {
	case r := <-done:
		if r == nil || len(r.Instances) != 2 || r.Meta.Index <= resp.Meta.Index {
			t.Fatalf("woken Get: %+v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("blocking Get not woken by a change")
	}
}

func TestCloseStopsEverything(t *testing.T) {
	e := startEnv(t)
	base := viewGoroutines()
	c := viewcache.New(e.reader, viewcache.Config{})
	for i := 0; i < 5; i++ {
		if _, err := c.Get(context.Background(), healthReq(fmt.Sprintf("s%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if n := viewGoroutines() - base; n != 6 {
		t.Fatalf("goroutines = %d, want 5 loops and the janitor", n)
	}
	c.Close()
	c.Close()
	if n := viewGoroutines() - base; n != 0 {
		t.Fatalf("%d view goroutines left after Close", n)
	}
	if n := e.reader.inFlight.Load(); n != 0 {
		t.Fatalf("%d reads in flight after Close", n)
	}
	if _, err := c.Get(context.Background(), healthReq("s0")); !errors.Is(err, viewcache.ErrClosed) {
		t.Fatalf("Get after Close: %v", err)
	}
}

// staticReader answers at once with a fixed result, and blocks blocking
// queries until their context ends: a catalog that never changes.
type staticReader struct{ resp *catalog.ReadResponse }

func (r staticReader) Read(ctx context.Context, req *catalog.ReadRequest) (*catalog.ReadResponse, error) {
	if req.Options.MinQueryIndex > 0 {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return r.resp, nil
}

// TestGetWithDoneContext checks that a done context reads only memory: a
// view with its result answers; a view without one returns at once.
func TestGetWithDoneContext(t *testing.T) {
	want := &catalog.ReadResponse{Meta: catalog.QueryMeta{Index: 7}}
	c := viewcache.New(staticReader{resp: want}, viewcache.Config{})
	defer c.Close()
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Get(done, healthReq("web")); !errors.Is(err, context.Canceled) {
		// The view was just started; its first read may have ended
		// already, in which case it answers.
		if err != nil {
			t.Fatalf("first Get with a done context: %v", err)
		}
	}
	if _, err := c.Get(context.Background(), healthReq("web")); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		got, err := c.Get(done, healthReq("web"))
		if err != nil || got != want {
			t.Fatalf("Get %d with a done context: %v, %v", i, got, err)
		}
	}
}

// BenchmarkGetHit measures Gets of a view that has its result, from
// parallel goroutines, as DNS queries do.
func BenchmarkGetHit(b *testing.B) {
	resp := &catalog.ReadResponse{Meta: catalog.QueryMeta{Index: 7}}
	c := viewcache.New(staticReader{resp: resp}, viewcache.Config{})
	defer c.Close()
	ctx := context.Background()
	for i := 0; i < 100; i++ {
		if _, err := c.Get(ctx, healthReq(fmt.Sprintf("svc-%d", i))); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := catalog.ReadRequest{Op: catalog.ReadHealthService, Name: "svc-1",
				Options: catalog.QueryOptions{AllowStale: true}}
			if _, err := c.Get(ctx, &req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
