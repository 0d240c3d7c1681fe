package local_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tribune-mesh/tribune/agent/agenttest/inmem"
	"github.com/tribune-mesh/tribune/agent/checks"
	"github.com/tribune-mesh/tribune/agent/local"
	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/clock"
	"github.com/tribune-mesh/tribune/test/wait"
)

const node = "node-1"

// harness is a State syncing to an in-memory catalog on a fake clock.
type harness struct {
	t       *testing.T
	clock   *clock.Fake
	backend *inmem.Backend
	state   *local.State
}

// start builds a State with cfg (Node, Backend and Clock filled in) and runs
// it until the test ends. Its first full sync is done when start returns.
func start(t *testing.T, cfg local.Config) *harness {
	t.Helper()
	fc := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	h := &harness{t: t, clock: fc, backend: inmem.New(fc)}
	cfg.Node = local.Node{ID: "11111111-2222-3333-4444-555555555555", Name: node, Datacenter: "dc1",
		Address: "10.0.0.1", Meta: map[string]string{"rack": "a"}}
	cfg.Backend = h.backend
	cfg.Clock = fc
	if cfg.Rand == nil {
		cfg.Rand = func() float64 { return 0 }
	}
	h.state = local.New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		h.state.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	wait.For(t, 5*time.Second, func() error {
		if h.catalogNode() == nil {
			return errors.New("node not registered yet")
		}
		return nil
	})
	return h
}

// catalogNode reads the node's services from the catalog, nil when the node
// is not registered.
func (h *harness) catalogNode() *catalog.NodeServices {
	h.t.Helper()
	resp, err := h.backend.Read(context.Background(), &catalog.ReadRequest{Op: catalog.ReadNode, Name: node})
	if err != nil {
		h.t.Fatal(err)
	}
	return resp.NodeServices
}

// catalogChecks reads the node's checks from the catalog by ID.
func (h *harness) catalogChecks() map[string]*catalog.HealthCheck {
	h.t.Helper()
	resp, err := h.backend.Read(context.Background(), &catalog.ReadRequest{Op: catalog.ReadNodeChecks, Name: node})
	if err != nil {
		h.t.Fatal(err)
	}
	out := map[string]*catalog.HealthCheck{}
	for _, c := range resp.Checks {
		out[c.CheckID] = c
	}
	return out
}

func (h *harness) catalogHasService(id string) bool {
	ns := h.catalogNode()
	if ns == nil {
		return false
	}
	for _, s := range ns.Services {
		if s.ID == id {
			return true
		}
	}
	return false
}

func (h *harness) apply(t catalog.CommandType, body any) {
	h.t.Helper()
	resp, err := h.backend.Apply(context.Background(), t, body)
	if err == nil {
		err, _ = resp.(error)
	}
	if err != nil {
		h.t.Fatal(err)
	}
}

func webService(id string) *catalog.Service {
	return &catalog.Service{ID: id, Service: "web", Port: 80, Tags: []string{}, Meta: map[string]string{},
		Weights: catalog.Weights{Passing: 1, Warning: 1}}
}

func TestFullSyncIntervalScalesWithClusterSize(t *testing.T) {
	for _, tc := range []struct {
		members int
		want    time.Duration
	}{
		{0, time.Minute}, {1, time.Minute}, {3, time.Minute}, {128, time.Minute},
		{129, 2 * time.Minute}, {256, 2 * time.Minute},
		{257, 3 * time.Minute}, {512, 3 * time.Minute},
		{513, 4 * time.Minute}, {1024, 4 * time.Minute},
		{1025, 5 * time.Minute}, {10000, 8 * time.Minute},
	} {
		if got := local.FullSyncInterval(tc.members, 0); got != tc.want {
			t.Errorf("FullSyncInterval(%d, 0) = %v, want %v", tc.members, got, tc.want)
		}
		// The jitter adds up to a quarter of the interval, never more.
		if got, want := local.FullSyncInterval(tc.members, 0.5), tc.want+tc.want/8; got != want {
			t.Errorf("FullSyncInterval(%d, 0.5) = %v, want %v", tc.members, got, want)
		}
		if got := local.FullSyncInterval(tc.members, 0.999999); got < tc.want || got >= tc.want+tc.want/4 {
			t.Errorf("FullSyncInterval(%d, ~1) = %v, outside [%v, %v)", tc.members, got, tc.want, tc.want+tc.want/4)
		}
	}
}

func TestPartialSyncFollowsLocalChanges(t *testing.T) {
	h := start(t, local.Config{})
	ns := h.catalogNode()
	if ns.Node.Address != "10.0.0.1" || ns.Node.Meta["rack"] != "a" {
		t.Fatalf("node registered as %+v", ns.Node)
	}
	h.state.AddService(webService("web-1"), []*local.Check{{Health: &catalog.HealthCheck{
		CheckID: "web-1-check", Name: "web check", ServiceID: "web-1", Status: catalog.HealthPassing}}})
	wait.For(t, 5*time.Second, func() error {
		if !h.catalogHasService("web-1") {
			return errors.New("service not synced")
		}
		if c := h.catalogChecks()["web-1-check"]; c == nil || c.Status != catalog.HealthPassing || c.ServiceName != "web" {
			return fmt.Errorf("check in catalog: %+v", c)
		}
		return nil
	})
	if !h.state.RemoveService("web-1") {
		t.Fatal("RemoveService of a local service reported false")
	}
	wait.For(t, 5*time.Second, func() error {
		if h.catalogHasService("web-1") || h.catalogChecks()["web-1-check"] != nil {
			return errors.New("removed service still in the catalog")
		}
		return nil
	})
	if h.state.RemoveService("web-1") {
		t.Fatal("RemoveService of an unknown service reported true")
	}
}

// A full sync runs on the interval of the clock and no sooner: it restores
// what was removed from the catalog behind the agent's back and removes what
// the agent does not own.
func TestFullSyncRepairsTheCatalogOnItsInterval(t *testing.T) {
	h := start(t, local.Config{Members: func() int { return 200 }})
	h.state.AddService(webService("web-1"), nil)
	wait.For(t, 5*time.Second, func() error {
		if !h.catalogHasService("web-1") {
			return errors.New("service not synced")
		}
		return nil
	})
	// The full-sync timer and the reap ticker are armed.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.clock.WaitForPending(ctx, 2); err != nil {
		t.Fatalf("timers not armed: %v", err)
	}
	h.apply(catalog.CmdDeregister, &catalog.DeregisterRequest{Node: node, ServiceID: "web-1"})
	h.apply(catalog.CmdRegister, &catalog.RegisterRequest{Node: node, Address: "10.0.0.1", Service: &catalog.Service{ID: "stray", Service: "stray"}})

	// 200 members: two minutes. Nothing triggers a sync before then.
	h.clock.Advance(2*time.Minute - time.Second)
	if h.catalogHasService("web-1") || !h.catalogHasService("stray") {
		t.Fatal("catalog repaired before the full-sync interval")
	}
	h.clock.Advance(time.Second)
	wait.For(t, 5*time.Second, func() error {
		if !h.catalogHasService("web-1") {
			return errors.New("deleted service not restored")
		}
		if h.catalogHasService("stray") {
			return errors.New("stray service not removed")
		}
		return nil
	})
}

func TestTTLCheckTurnsCriticalWhenNotUpdated(t *testing.T) {
	h := start(t, local.Config{})
	if err := h.state.AddCheck(&local.Check{TTL: 10 * time.Second, Health: &catalog.HealthCheck{CheckID: "ttl", Name: "ttl"}}); err != nil {
		t.Fatal(err)
	}
	if err := h.state.UpdateCheck("ttl", catalog.HealthPassing, "fine"); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 5*time.Second, func() error {
		if c := h.catalogChecks()["ttl"]; c == nil || c.Status != catalog.HealthPassing {
			return fmt.Errorf("check in catalog: %+v", c)
		}
		return nil
	})
	h.clock.Advance(10 * time.Second)
	wait.For(t, 5*time.Second, func() error {
		c := h.catalogChecks()["ttl"]
		if c == nil || c.Status != catalog.HealthCritical || !strings.Contains(c.Output, "TTL expired") || !strings.Contains(c.Output, "fine") {
			return fmt.Errorf("check in catalog: %+v", c)
		}
		return nil
	})
}

func TestCheckOutputIsCutToCheckOutputMaxSize(t *testing.T) {
	for _, tc := range []struct {
		limit, want int
	}{{0, 4096}, {10, 10}, {8192, 8192}} {
		h := start(t, local.Config{CheckOutputMaxSize: tc.limit})
		if err := h.state.AddCheck(&local.Check{TTL: time.Minute, Health: &catalog.HealthCheck{CheckID: "ttl", Name: "ttl"}}); err != nil {
			t.Fatal(err)
		}
		out := strings.Repeat("x", 10000)
		if err := h.state.UpdateCheck("ttl", catalog.HealthPassing, out); err != nil {
			t.Fatal(err)
		}
		got := h.state.Checks()["ttl"].Output
		if !strings.HasPrefix(got, out[:tc.want]+" ...") || strings.HasPrefix(got, out[:tc.want+1]) {
			t.Errorf("limit %d: output kept %d bytes of x: %.40q...", tc.limit, strings.Count(got, "x"), got)
		}
		if !strings.Contains(got, fmt.Sprintf("captured %d of 10000 bytes", tc.want)) {
			t.Errorf("limit %d: output does not say what it cut: %q", tc.limit, got[len(got)-40:])
		}
	}
}

func TestServiceCriticalTooLongIsDeregistered(t *testing.T) {
	h := start(t, local.Config{})
	h.state.AddService(webService("web-1"), []*local.Check{{DeregisterAfter: 30 * time.Second,
		Health: &catalog.HealthCheck{CheckID: "web-1-check", Name: "web", ServiceID: "web-1", Status: catalog.HealthCritical}}})
	h.clock.Advance(29 * time.Second)
	if h.state.Service("web-1") == nil {
		t.Fatal("service reaped before deregister_critical_service_after")
	}
	wait.For(t, 5*time.Second, func() error {
		h.clock.Advance(time.Second) // the reaper looks once a second
		if h.state.Service("web-1") != nil {
			return errors.New("service still local")
		}
		if h.catalogHasService("web-1") {
			return errors.New("service still in the catalog")
		}
		return nil
	})
}

func TestLookupsAndErrors(t *testing.T) {
	h := start(t, local.Config{})
	h.state.AddService(webService("web-1"), nil)
	s := h.state.Service("web-1")
	if s == nil || s.Service != "web" {
		t.Fatalf("Service(web-1) = %+v", s)
	}
	s.Service = "changed"
	if h.state.Service("web-1").Service != "web" {
		t.Fatal("Service returned the State's own copy")
	}
	if h.state.Service("nope") != nil {
		t.Fatal("Service of an unknown ID is not nil")
	}
	err := h.state.AddCheck(&local.Check{Health: &catalog.HealthCheck{CheckID: "c", ServiceID: "nope"}})
	if !errors.Is(err, local.ErrInvalid) || err.Error() != `ServiceID "nope" does not exist` {
		t.Fatalf("check of an unknown service: %v", err)
	}
	err = h.state.UpdateCheck("nope", catalog.HealthPassing, "")
	if !errors.Is(err, local.ErrNotFound) || err.Error() != `Unknown check ID "nope"` {
		t.Fatalf("update of an unknown check: %v", err)
	}
	if err := h.state.AddCheck(&local.Check{Health: &catalog.HealthCheck{CheckID: "plain"}}); err != nil {
		t.Fatal(err)
	}
	if err := h.state.UpdateCheck("plain", catalog.HealthPassing, ""); !errors.Is(err, local.ErrInvalid) {
		t.Fatalf("TTL update of a check without TTL: %v", err)
	}
}

// An alias check follows another instance's health through blocking reads
// of the backend.
func TestAliasCheckFollowsTheAliasedInstance(t *testing.T) {
	h := start(t, local.Config{})
	if err := h.state.AddCheck(&local.Check{Probe: &checks.Definition{CheckID: "alias", AliasNode: "node-2", AliasService: "db-1"},
		Health: &catalog.HealthCheck{CheckID: "alias", Name: "alias", Status: catalog.HealthPassing}}); err != nil {
		t.Fatal(err)
	}
	status := func(want string) func() error {
		return func() error {
			if c := h.state.Checks()["alias"]; c == nil || c.Status != want {
				return fmt.Errorf("alias check %+v, want %s", c, want)
			}
			return nil
		}
	}
	wait.For(t, 10*time.Second, status(catalog.HealthCritical)) // not registered
	h.apply(catalog.CmdRegister, &catalog.RegisterRequest{Node: "node-2", Address: "10.0.0.2",
		Service: &catalog.Service{ID: "db-1", Service: "db"},
		Checks:  []*catalog.HealthCheck{{CheckID: "db-check", Name: "db", ServiceID: "db-1", Status: catalog.HealthPassing}}})
	wait.For(t, 10*time.Second, status(catalog.HealthPassing))
	h.apply(catalog.CmdRegister, &catalog.RegisterRequest{Node: "node-2", Address: "10.0.0.2",
		Checks: []*catalog.HealthCheck{{CheckID: "db-check", Name: "db", ServiceID: "db-1", Status: catalog.HealthWarning}}})
	wait.For(t, 10*time.Second, status(catalog.HealthWarning))
}

// flaky is the in-memory catalog with writes that fail while down is set.
type flaky struct {
	*inmem.Backend
	down atomic.Bool
}

func (f *flaky) Apply(ctx context.Context, t catalog.CommandType, body any) (any, error) {
	if f.down.Load() {
		return nil, errors.New("servers unreachable")
	}
	return f.Backend.Apply(ctx, t, body)
}

// A failed sync is retried after a pause on the clock until it succeeds.
func TestFailedSyncIsRetried(t *testing.T) {
	fc := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	be := &flaky{Backend: inmem.New(fc)}
	h := &harness{t: t, clock: fc, backend: be.Backend}
	h.state = local.New(local.Config{Node: local.Node{Name: node, Address: "10.0.0.1"}, Backend: be, Clock: fc})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.state.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	waitCtx, waitCancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer waitCancel()
	// The first full sync is done once its timer is armed again, beside
	// the reap ticker.
	if err := fc.WaitForPending(waitCtx, 2); err != nil {
		t.Fatalf("first full sync not done: %v", err)
	}
	be.down.Store(true)
	h.state.AddService(webService("web-1"), nil)
	for i := 0; i < 3; i++ {
		// The failed sync arms its retry pause.
		if err := fc.WaitForPending(waitCtx, 3); err != nil {
			t.Fatalf("retry %d not armed: %v", i, err)
		}
		if h.catalogHasService("web-1") {
			t.Fatal("service in the catalog while the servers are down")
		}
		if i == 2 {
			be.down.Store(false)
		}
		fc.Advance(time.Second)
	}
	wait.For(t, 5*time.Second, func() error {
		if !h.catalogHasService("web-1") {
			return errors.New("service not synced after the servers came back")
		}
		return nil
	})
}

// WaitSync returns once the change made before it is in the catalog, times
// out while the servers refuse writes, and does not wait without Run.
func TestWaitSyncReturnsOnceTheCatalogHasTheChange(t *testing.T) {
	fc := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	be := &flaky{Backend: inmem.New(fc)}
	h := &harness{t: t, clock: fc, backend: be.Backend}
	h.state = local.New(local.Config{Node: local.Node{Name: node, Address: "10.0.0.1"}, Backend: be, Clock: fc})

	idle, cancelIdle := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelIdle()
	h.state.AddService(webService("web-0"), nil)
	if err := h.state.WaitSync(idle); !errors.Is(err, local.ErrNotSyncing) {
		t.Fatalf("WaitSync without Run = %v, want ErrNotSyncing", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.state.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	waitCtx, waitCancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer waitCancel()
	if err := fc.WaitForPending(waitCtx, 2); err != nil {
		t.Fatalf("first full sync not done: %v", err)
	}

	h.state.AddService(webService("web-1"), nil)
	if err := h.state.WaitSync(waitCtx); err != nil {
		t.Fatalf("WaitSync: %v", err)
	}
	// No waiting here: WaitSync promised the catalog has it.
	if !h.catalogHasService("web-1") {
		t.Fatal("WaitSync returned before the catalog had web-1")
	}

	be.down.Store(true)
	h.state.AddService(webService("web-2"), nil)
	short, cancelShort := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancelShort()
	if err := h.state.WaitSync(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitSync while the servers refuse writes = %v, want deadline exceeded", err)
	}
	be.down.Store(false)
	// The failed sync retries after its pause on the fake clock.
	if err := fc.WaitForPending(waitCtx, 3); err != nil {
		t.Fatalf("retry not armed: %v", err)
	}
	fc.Advance(time.Second)
	if err := h.state.WaitSync(waitCtx); err != nil {
		t.Fatalf("WaitSync after the servers came back: %v", err)
	}
	if !h.catalogHasService("web-2") {
		t.Fatal("WaitSync returned before the catalog had web-2")
	}
}
