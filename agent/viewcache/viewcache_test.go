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
	"github.com/tribune-mesh/tribune/clock"
	"github.com/tribune-mesh/tribune/test/wait"
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

// newFakeClock returns a clock that moves only when the test advances it.
func newFakeClock() *clock.Fake { return clock.NewFake(time.Unix(1_700_000_000, 0)) }

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
	wait.For(t, 5*time.Second, func() error {
		if n := e.reader.inFlight.Load(); n != 1 {
			return fmt.Errorf("reads in flight = %d", n)
		}
		return nil
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
	wait.For(t, 5*time.Second, func() error {
		resp, err := c.Get(ctx, healthReq("web"))
		if err != nil {
			return err
		}
		if len(resp.Instances) != 2 {
			return fmt.Errorf("instances = %d", len(resp.Instances))
		}
		return nil
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
	clk := newFakeClock()
	c := viewcache.New(e.reader, viewcache.Config{IdleTTL: 3 * time.Minute, Clock: clk})
	defer c.Close()
	ctx := context.Background()
	if _, err := c.Get(ctx, healthReq("a")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, healthReq("b")); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Minute)
	if _, err := c.Get(ctx, healthReq("b")); err != nil { // b stays in use
		t.Fatal(err)
	}
	clk.Advance(90 * time.Second)
	wait.For(t, 5*time.Second, func() error {
		// Keep b in use while time passes; the janitor's timer fires
		// whenever it was set.
		if _, err := c.Get(ctx, healthReq("b")); err != nil {
			return err
		}
		clk.Advance(time.Minute)
		if n := c.Len(); n != 1 {
			return fmt.Errorf("views = %d, want 1 (a idle, b used)", n)
		}
		return nil
	})
	wait.For(t, 5*time.Second, func() error {
		clk.Advance(time.Minute)
		if n := c.Len(); n != 0 {
			return fmt.Errorf("views = %d, want 0", n)
		}
		if n := e.reader.inFlight.Load(); n != 0 {
			return fmt.Errorf("reads in flight = %d after every view went idle", n)
		}
		return nil
	})
}

func TestStaleIfErrorIsBounded(t *testing.T) {
	e := startEnv(t)
	e.register(t, "api1", "api", "", 8080)
	clk := newFakeClock()
	c := viewcache.New(e.reader, viewcache.Config{Clock: clk, StaleIfError: time.Minute,
		MinBackoff: time.Second, MaxBackoff: 4 * time.Second})
	defer c.Close()
	ctx := context.Background()
	if _, err := c.Get(ctx, healthReq("api")); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 5*time.Second, func() error {
		if e.reader.inFlight.Load() != 1 {
			return errors.New("loop not blocked yet")
		}
		return nil
	})

	if age, ok := c.Age(healthReq("api")); !ok || age != 0 {
		t.Fatalf("age of a view kept fresh = %v %v, want 0 true", age, ok)
	}
	if _, ok := c.Age(healthReq("other")); ok {
		t.Fatal("a read without a view has an age")
	}

	e.reader.setBroken(true)
	// The loop sees the failure, records it and backs off: a timer on the
	// fake clock besides the janitor's, set after the failure is recorded
	// (advancing the clock before that would date the failure after the
	// advance). Get still serves the last good result.
	wait.For(t, 5*time.Second, func() error {
		if e.reader.calls.Load() < 2 || e.reader.inFlight.Load() != 0 || clk.Pending() < 2 {
			return errors.New("loop has not failed and backed off yet")
		}
		return nil
	})
	clk.Advance(30 * time.Second)
	resp, err := c.Get(ctx, healthReq("api"))
	if err != nil || len(resp.Instances) != 1 {
		t.Fatalf("within the window: resp=%v err=%v, want the last result", resp, err)
	}
	if age, ok := c.Age(healthReq("api")); !ok || age < 30*time.Second || age > 35*time.Second {
		t.Fatalf("age while failing = %v %v, want about 30s", age, ok)
	}

	clk.Advance(31 * time.Second)
	if _, err := c.Get(ctx, healthReq("api")); !errors.Is(err, viewcache.ErrStale) || !errors.Is(err, errBroken) {
		t.Fatalf("past the window: err = %v, want ErrStale wrapping the read error", err)
	}

	e.reader.setBroken(false)
	e.register(t, "api2", "api", "", 8080)
	wait.For(t, 5*time.Second, func() error {
		clk.Advance(5 * time.Second) // let the backoff end
		resp, err := c.Get(ctx, healthReq("api"))
		if err != nil {
			return err
		}
		if len(resp.Instances) != 2 {
			return fmt.Errorf("instances = %d", len(resp.Instances))
		}
		return nil
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
	wait.For(t, 5*time.Second, func() error {
		if n := c.Len(); n != 0 {
			return fmt.Errorf("views = %d after a failed first read", n)
		}
		return nil
	})
}

func TestBlockingGet(t *testing.T) {
	e := startEnv(t)
	e.register(t, "q1", "queue", "", 1)
	clk := newFakeClock()
	c := viewcache.New(e.reader, viewcache.Config{Clock: clk})
	defer c.Close()
	ctx := context.Background()
	resp, err := c.Get(ctx, healthReq("queue"))
	if err != nil {
		t.Fatal(err)
	}
	// The janitor's timer is the one pending before a blocking Get.
	waitPending(t, clk, 1)
	req := healthReq("queue")
	req.Options.MinQueryIndex = resp.Meta.Index
	req.Options.MaxQueryTime = 10 * time.Second
	done := make(chan *catalog.ReadResponse, 1)
	go func() {
		r, _ := c.Get(ctx, req)
		done <- r
	}()
	waitPending(t, clk, 2) // the Get's own timer: it is parked
	clk.Advance(10*time.Second - time.Millisecond)
	select {
	case r := <-done:
		t.Fatalf("blocking Get returned before its wait: %+v", r)
	default:
	}
	clk.Advance(time.Millisecond)
	select {
	case r := <-done:
		if r == nil || r.Meta.Index != resp.Meta.Index {
			t.Fatalf("timed-out blocking Get: %+v, want index %d", r, resp.Meta.Index)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("blocking Get not ended by its wait")
	}

	go func() {
		r, _ := c.Get(ctx, req)
		done <- r
	}()
	waitPending(t, clk, 2)
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

// waitPending waits until clk has at least n timers pending.
func waitPending(t *testing.T, clk *clock.Fake, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := clk.WaitForPending(ctx, n); err != nil {
		t.Fatalf("%d timers not pending (have %d): %v", n, clk.Pending(), err)
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
	// The loops and the janitor start on their own goroutines: wait for
	// them to show up rather than count at once.
	wait.For(t, 5*time.Second, func() error {
		if n := viewGoroutines() - base; n != 6 {
			return fmt.Errorf("goroutines = %d, want 5 loops and the janitor", n)
		}
		return nil
	})
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

// Notify passes every new result of a view to its subscribers from the
// view's own goroutine (no goroutine waits per subscriber), keeps the view
// alive while subscribed however long it goes without a Get, passes nil
// when the view stops, and stops calling after cancel.
func TestNotifyFollowsAView(t *testing.T) {
	e := startEnv(t)
	e.register(t, "q1", "queue", "10.0.0.21", 80)
	clk := newFakeClock()
	c := viewcache.New(e.reader, viewcache.Config{IdleTTL: time.Minute, Clock: clk})
	defer c.Close()
	got := make(chan *catalog.ReadResponse, 64)
	cur, cancel, err := c.Notify(healthReq("queue"), func(r *catalog.ReadResponse) { got <- r })
	if err != nil {
		t.Fatal(err)
	}
	if cur == nil {
		// The view was started by Notify: its first result is passed.
		select {
		case cur = <-got:
		case <-time.After(10 * time.Second):
			t.Fatal("no first result")
		}
	}
	if len(cur.Instances) != 1 {
		t.Fatalf("instances = %d", len(cur.Instances))
	}
	// Idle for far longer than the TTL: a subscribed view stays.
	for range 5 {
		clk.Advance(time.Minute)
	}
	e.register(t, "q2", "queue", "10.0.0.22", 80)
	deadline := time.After(10 * time.Second)
	for {
		var r *catalog.ReadResponse
		select {
		case r = <-got:
		case <-deadline:
			t.Fatal("the change was not passed to the subscriber")
		}
		if r == nil {
			t.Fatal("the subscribed view stopped")
		}
		if len(r.Instances) == 2 {
			break
		}
	}
	if n := c.Len(); n != 1 {
		t.Fatalf("views = %d, want the subscribed one", n)
	}
	cancel()
	cancel() // idempotent
	for len(got) > 0 {
		<-got
	}
	e.register(t, "q3", "queue", "10.0.0.23", 80)
	wait.For(t, 10*time.Second, func() error {
		r, err := c.Get(context.Background(), healthReq("queue"))
		if err != nil {
			return err
		}
		if len(r.Instances) != 3 {
			return fmt.Errorf("instances = %d", len(r.Instances))
		}
		return nil
	})
	if len(got) != 0 {
		t.Fatalf("called %d times after cancel", len(got))
	}

	// A second subscriber hears of the view's end.
	stopped := make(chan *catalog.ReadResponse, 64)
	if _, _, err := c.Notify(healthReq("queue"), func(r *catalog.ReadResponse) { stopped <- r }); err != nil {
		t.Fatal(err)
	}
	c.Close()
	for r := (&catalog.ReadResponse{}); r != nil; {
		select {
		case r = <-stopped:
		case <-time.After(10 * time.Second):
			t.Fatal("the subscriber was not told the view stopped")
		}
	}
	if _, _, err := c.Notify(healthReq("queue"), func(*catalog.ReadResponse) {}); !errors.Is(err, viewcache.ErrClosed) {
		t.Fatalf("Notify after Close: %v", err)
	}
}
