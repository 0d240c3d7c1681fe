package acl_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-memdb"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/test/wait"
)

// storeSource serves a CachingResolver straight from a state store, the
// way a server does, counting resolutions.
type storeSource struct {
	st      *catalog.Store
	fetches atomic.Int64
	down    atomic.Bool
}

var errDown = errors.New("servers unreachable")

func (s *storeSource) ResolveToken(ctx context.Context, secret string) (*acl.ResolvedToken, error) {
	if s.down.Load() {
		return nil, errDown
	}
	s.fetches.Add(1)
	idx, tok, pols, roles, err := s.st.ACLResolve(nil, secret)
	return &acl.ResolvedToken{Index: idx, Token: tok, Policies: pols, Roles: roles}, err
}

func (s *storeSource) WaitACLIndex(ctx context.Context, min uint64) (uint64, error) {
	for {
		ws := memdb.NewWatchSet()
		idx, _, err := s.st.Execute(ws, &catalog.ReadRequest{Op: catalog.ReadACLIndex})
		if err != nil || idx > min {
			return idx, err
		}
		if err := ws.WatchCtx(ctx); err != nil {
			return 0, err
		}
	}
}

func TestCachingResolverInvalidatesOnAnyChange(t *testing.T) {
	st := catalog.NewStore(nil)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(st.ACLPolicySet(1, &catalog.ACLPolicy{ID: "p", Name: "kv", Rules: `key_prefix "app/" { policy = "write" }`}))
	must(st.ACLTokenSet(2, &catalog.ACLToken{AccessorID: "a", SecretID: "s", Policies: []catalog.ACLLink{{ID: "p"}}}))
	src := &storeSource{st: st}
	r := acl.NewCachingResolver(acl.ResolverConfig{Source: src, Datacenter: "dc1", DownPolicy: acl.DownDeny})
	runResolver(t, r, 2)

	for i := 0; i < 100; i++ {
		a, err := r.Resolve("s")
		if err != nil || a.KeyWrite("app/x") != acl.Allow || a.KeyWrite("other") != acl.Deny {
			t.Fatalf("resolve: %v", err)
		}
		if acl.AccessorOf(a) != "a" {
			t.Fatalf("accessor %q", acl.AccessorOf(a))
		}
	}
	if n := src.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches for 100 resolutions, want 1 (cached)", n)
	}
	// Unknown secrets are cached as such, and refused.
	for i := 0; i < 3; i++ {
		if _, err := r.Resolve("nope"); !errors.Is(err, acl.ErrNotFound) {
			t.Fatalf("unknown secret: %v", err)
		}
	}
	if n := src.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}

	// A policy change invalidates the cached token.
	must(st.ACLPolicySet(3, &catalog.ACLPolicy{ID: "p", Name: "kv", Rules: `key_prefix "app/" { policy = "read" }`}))
	wait.For(t, time.Second, func() error {
		a, err := r.Resolve("s")
		if err != nil {
			return err
		}
		if a.KeyWrite("app/x") != acl.Deny {
			return errors.New("old policy still applies")
		}
		return nil
	})
	// A deleted token is refused.
	must(st.ACLTokenDelete(4, "a"))
	wait.For(t, time.Second, func() error {
		if _, err := r.Resolve("s"); !errors.Is(err, acl.ErrNotFound) {
			return errors.New("deleted token still resolves")
		}
		return nil
	})

	// Empty secret: the anonymous token, default policy (deny here).
	a, err := r.Resolve("")
	if err != nil || a.KeyRead("app/x") != acl.Deny || acl.AccessorOf(a) != catalog.ACLAnonymousTokenID {
		t.Fatalf("anonymous: %v", err)
	}
}

func TestCachingResolverExpiryAndDownPolicy(t *testing.T) {
	st := catalog.NewStore(nil)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	exp := now.Add(time.Minute)
	if err := st.ACLTokenSet(1, &catalog.ACLToken{AccessorID: "a", SecretID: "s", ExpirationTime: &exp}); err != nil {
		t.Fatal(err)
	}
	var clock atomic.Pointer[time.Time]
	clock.Store(&now)
	for _, tc := range []struct {
		policy  string
		wantErr bool
		allow   bool
	}{
		{acl.DownAllow, false, true},
		{acl.DownDeny, false, false},
		{acl.DownExtendCache, false, false},
	} {
		src := &storeSource{st: st}
		r := acl.NewCachingResolver(acl.ResolverConfig{Source: src, DownPolicy: tc.policy, Options: acl.PolicyOptions{DefaultAllow: false},
			TokenTTL: time.Second, Now: func() time.Time { return *clock.Load() }})
		clock.Store(&now)
		if _, err := r.Resolve("s"); err != nil {
			t.Fatalf("%s: resolve: %v", tc.policy, err)
		}
		// Servers gone and the TTL passed: down_policy decides.
		src.down.Store(true)
		later := now.Add(2 * time.Second)
		clock.Store(&later)
		a, err := r.Resolve("s")
		if err != nil {
			t.Fatalf("%s: %v", tc.policy, err)
		}
		if got := a.KeyRead("x") == acl.Allow; got != tc.allow {
			t.Fatalf("%s: allow = %v", tc.policy, got)
		}
		if tc.policy == acl.DownExtendCache && acl.AccessorOf(a) != "a" {
			t.Fatalf("extend-cache did not answer from the cache")
		}
		// Past its ExpirationTime the token is refused even from cache.
		expired := exp.Add(time.Second)
		clock.Store(&expired)
		if tc.policy == acl.DownExtendCache {
			if _, err := r.Resolve("s"); !errors.Is(err, acl.ErrNotFound) {
				t.Fatalf("expired token: %v", err)
			}
		}
	}
}

func TestCachingResolverAgentRecoveryWithoutServers(t *testing.T) {
	src := &storeSource{st: catalog.NewStore(nil)}
	src.down.Store(true)
	r := acl.NewCachingResolver(acl.ResolverConfig{Source: src, DownPolicy: acl.DownDeny, AgentRecovery: "recover", NodeName: "node-1"})
	a, err := r.Resolve("recover")
	if err != nil {
		t.Fatal(err)
	}
	if a.AgentWrite("node-1") != acl.Allow || a.NodeRead("other") != acl.Allow || a.AgentWrite("node-2") != acl.Deny || a.KeyRead("x") != acl.Deny {
		t.Fatal("agent recovery token grants the wrong rights")
	}
	if src.fetches.Load() != 0 {
		t.Fatal("agent recovery token asked the servers")
	}
}

// blockingSource is a storeSource whose watch always fails (tokens are
// trusted for token_ttl only) and whose resolutions wait for gate.
type blockingSource struct {
	*storeSource
	gate    chan struct{}
	started chan struct{} // closed at the first watch: Run is running
	once    sync.Once
}

func (s *blockingSource) ResolveToken(ctx context.Context, secret string) (*acl.ResolvedToken, error) {
	select {
	case <-s.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return s.storeSource.ResolveToken(ctx, secret)
}

func (s *blockingSource) WaitACLIndex(ctx context.Context, _ uint64) (uint64, error) {
	s.once.Do(func() { close(s.started) })
	return 0, errDown
}

// With down_policy async-cache, a token past token_ttl is answered from the
// cache at once while one refresh runs behind it; the next request sees
// what the refresh found.
func TestCachingResolverAsyncCache(t *testing.T) {
	st := catalog.NewStore(nil)
	if err := st.ACLTokenSet(1, &catalog.ACLToken{AccessorID: "a", SecretID: "s"}); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var clock atomic.Pointer[time.Time]
	clock.Store(&now)
	src := &blockingSource{storeSource: &storeSource{st: st}, gate: make(chan struct{}, 1), started: make(chan struct{})}
	r := acl.NewCachingResolver(acl.ResolverConfig{Source: src, DownPolicy: acl.DownAsyncCache,
		TokenTTL: time.Second, Now: func() time.Time { return *clock.Load() }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	defer func() { cancel(); close(src.gate); <-done }()
	<-src.started

	src.gate <- struct{}{} // the first resolution has nothing cached: it waits
	if _, err := r.Resolve("s"); err != nil {
		t.Fatal(err)
	}
	if err := st.ACLTokenDelete(2, "a"); err != nil {
		t.Fatal(err)
	}
	later := now.Add(2 * time.Second)
	clock.Store(&later)
	answered := make(chan error, 1)
	go func() { _, err := r.Resolve("s"); answered <- err }()
	select {
	case err := <-answered:
		if err != nil {
			t.Fatalf("async-cache did not answer from the cache: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("async-cache waited for the servers")
	}
	src.gate <- struct{}{} // let the background refresh through
	wait.For(t, 10*time.Second, func() error {
		if _, err := r.Resolve("s"); !errors.Is(err, acl.ErrNotFound) {
			return fmt.Errorf("deleted token still resolves after the refresh: %v", err)
		}
		return nil
	})
}

// A secret that is both the agent recovery token and a real token keeps
// the real token's rights while the servers answer (the official client's
// TestAPI_AgentUpdateToken sets its management token as agent_recovery and
// then needs acl:write with it), and the recovery rights without servers.
func TestCachingResolverRecoverySecretThatIsAToken(t *testing.T) {
	st := catalog.NewStore(nil)
	if err := st.ACLPolicySet(1, &catalog.ACLPolicy{ID: "p", Name: "acl", Rules: `acl = "write"`}); err != nil {
		t.Fatal(err)
	}
	if err := st.ACLTokenSet(2, &catalog.ACLToken{AccessorID: "a", SecretID: "root", Policies: []catalog.ACLLink{{ID: "p"}}}); err != nil {
		t.Fatal(err)
	}
	src := &storeSource{st: st}
	r := acl.NewCachingResolver(acl.ResolverConfig{Source: src, Datacenter: "dc1", DownPolicy: acl.DownDeny, AgentRecovery: "root", NodeName: "node-1"})
	runResolver(t, r, 2)
	a, err := r.Resolve("root")
	if err != nil {
		t.Fatal(err)
	}
	if acl.ACLWrite(a) != acl.Allow {
		t.Fatal("a real token that is also the recovery secret lost its own rights")
	}
	// A recovery secret the servers do not know still gets the recovery
	// rights.
	r.SetAgentRecoveryToken("recover")
	a, err = r.Resolve("recover")
	if err != nil {
		t.Fatal(err)
	}
	if a.AgentWrite("node-1") != acl.Allow || acl.ACLWrite(a) != acl.Deny {
		t.Fatal("unknown recovery secret: wrong rights")
	}
}

// runResolver runs r's watch until the test ends and waits until it has
// seen index.
func runResolver(t *testing.T, r *acl.CachingResolver, index uint64) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	wait.For(t, 5*time.Second, func() error {
		if r.Index() != index {
			return errors.New("watch not started")
		}
		return nil
	})
}
