package leafcert_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-memdb"

	"github.com/tribune-mesh/tribune/agent/leafcert"
	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/clock"
	"github.com/tribune-mesh/tribune/connect"
	"github.com/tribune-mesh/tribune/server"
	"github.com/tribune-mesh/tribune/test/wait"
)

// startServer starts a single in-memory server whose CA reads the time
// from clk and signs leaves for leafTTL.
func startServer(t *testing.T, clk clock.Clock, leafTTL time.Duration) *server.Server {
	t.Helper()
	cfg := server.DefaultConfig()
	cfg.NodeName = "leafcert-1"
	cfg.InMemory = true
	cfg.Bootstrap = true
	cfg.RaftMultiplier = 1
	cfg.RPCAddr = "127.0.0.1:0"
	cfg.AdvertiseAddr = "127.0.0.1:0"
	cfg.Logger = hclog.NewNullLogger()
	cfg.Clock = clk
	cfg.CAConfig = connect.Config{LeafCertTTL: leafTTL}
	s, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Shutdown() })
	wait.For(t, 10*time.Second, func() error {
		_, roots, _, err := s.Store().CARoots(memdb.NewWatchSet())
		if err != nil {
			return err
		}
		if len(roots) == 0 {
			return fmt.Errorf("no root yet")
		}
		return nil
	})
	return s
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

func activeRoot(t *testing.T, s *server.Server) (*catalog.CARoot, []*catalog.CARoot) {
	t.Helper()
	_, roots, _, err := s.Store().CARoots(memdb.NewWatchSet())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range roots {
		if r.Active {
			return r, roots
		}
	}
	t.Fatal("no active root")
	return nil, nil
}

// TestLeafAlwaysValid runs an hour of fake time with a one-minute leaf TTL:
// at every step the cached leaf is valid, it is renewed between half and
// three quarters of its life, and a rotation yields a leaf of the new root.
func TestLeafAlwaysValid(t *testing.T) {
	fake := clock.NewFake(time.Now())
	srv := startServer(t, fake, time.Minute)
	m := leafcert.New(leafcert.Config{Signer: srv, Reader: srv, Datacenter: "dc1", Clock: fake,
		Logger: hclog.New(&hclog.LoggerOptions{Output: testWriter{t}, Level: hclog.Warn})})
	t.Cleanup(m.Close)
	ctx := context.Background()

	get := func() *leafcert.Leaf {
		t.Helper()
		l, err := m.Get(ctx, "web", 0, 0)
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		return l
	}
	// settled waits until the cached leaf is not due for renewal and its
	// renewal timer is armed, so that the test advances the clock past
	// that timer, not past the moment the manager reads the clock.
	settled := func() *leafcert.Leaf {
		t.Helper()
		var leaf *leafcert.Leaf
		wait.For(t, 10*time.Second, func() error {
			leaf = get()
			if !fake.Now().Before(leaf.RenewAt) {
				return fmt.Errorf("leaf %s due for renewal at %v, now %v", leaf.SerialNumber, leaf.RenewAt, fake.Now())
			}
			if fake.Pending() < 1 {
				return fmt.Errorf("renewal timer of leaf %s not armed yet", leaf.SerialNumber)
			}
			if again := get(); again.SerialNumber != leaf.SerialNumber {
				return fmt.Errorf("leaf changed while settling")
			}
			return nil
		})
		return leaf
	}

	first := get()
	seen := map[string]bool{first.SerialNumber: true}
	for step := 0; step < 720; step++ { // 720 x 5s = 1h
		leaf := settled()
		now := fake.Now()
		if now.Before(leaf.ValidAfter) || !now.Before(leaf.ValidBefore) {
			t.Fatalf("step %d: cached leaf valid %v..%v, now %v", step, leaf.ValidAfter, leaf.ValidBefore, now)
		}
		// Renewed between half and three quarters of the life it had
		// when it was signed (the CA backdates ValidAfter by a minute).
		life := leaf.ValidBefore.Sub(leaf.ValidAfter) - time.Minute
		if at := leaf.RenewAt.Sub(leaf.ValidAfter.Add(time.Minute)); at < life/2-time.Second || at > life*3/4+time.Second {
			t.Fatalf("renewal at %v of a %v life", at, life)
		}
		root, roots := activeRoot(t, srv)
		if id, err := connect.VerifyLeaf(leaf.CertPEM, roots, now); err != nil || id.Service != "web" {
			t.Fatalf("step %d: leaf does not verify: %v", step, err)
		}
		if leaf.RootID != root.ID {
			t.Fatalf("step %d: leaf of root %s, active %s", step, leaf.RootID, root.ID)
		}
		seen[leaf.SerialNumber] = true
		fake.Advance(5 * time.Second)
	}
	// One leaf per 30..45s of a 61s life: at least 80 in an hour.
	if len(seen) < 80 {
		t.Fatalf("only %d leaves in an hour of one-minute leaves", len(seen))
	}

	// A rotation replaces the leaf at once, with one of the new root. (No
	// renewal is due and the clock stands still, so the next leaf is the
	// rotation's.)
	before := settled()
	oldRoot, _ := activeRoot(t, srv)
	if err := srv.CASetConfig(ctx, &server.CASetConfigRequest{Config: catalog.CAConfiguration{
		PrivateKeyType: "ec", PrivateKeyBits: 384, LeafCertTTL: time.Minute}}); err != nil {
		t.Fatalf("rotate: %v", err)
	}
	newRoot, roots := activeRoot(t, srv)
	if newRoot.ID == oldRoot.ID || len(roots) != 2 {
		t.Fatalf("no rotation: %+v", roots)
	}
	after, err := m.Get(ctx, "web", before.ModifyIndex, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if after.RootID != newRoot.ID || after.SerialNumber == before.SerialNumber {
		t.Fatalf("leaf after rotation of root %s, want %s", after.RootID, newRoot.ID)
	}
	// It verifies against the new root alone, and against the old root
	// alone through the cross-signed certificate in its chain.
	if _, err := connect.VerifyLeaf(after.CertPEM, []*catalog.CARoot{newRoot}, fake.Now()); err != nil {
		t.Fatalf("new leaf vs new root: %v", err)
	}
	oldOnly := *oldRoot
	oldOnly.IntermediateCerts = newRoot.IntermediateCerts
	if _, err := connect.VerifyLeaf(after.CertPEM, []*catalog.CARoot{&oldOnly}, fake.Now()); err != nil {
		t.Fatalf("new leaf vs old root through the cross-signed cert: %v", err)
	}
}

func TestGetErrors(t *testing.T) {
	fake := clock.NewFake(time.Now())
	srv := startServer(t, fake, time.Hour)
	m := leafcert.New(leafcert.Config{Signer: srv, Reader: srv, Datacenter: "dc1", Clock: fake, MaxServices: 1})
	if _, err := m.Get(context.Background(), "a", 0, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Get(context.Background(), "b", 0, 0); err != leafcert.ErrTooManyServices {
		t.Fatalf("second service: %v", err)
	}
	m.Close()
	if _, err := m.Get(context.Background(), "a", 0, 0); err != leafcert.ErrClosed {
		t.Fatalf("after Close: %v", err)
	}
}

// Changed is open while the leaf is the one the caller holds, closed once
// it is not, and nil for a service without a leaf.
func TestChanged(t *testing.T) {
	fake := clock.NewFake(time.Now())
	srv := startServer(t, fake, time.Hour)
	m := leafcert.New(leafcert.Config{Signer: srv, Reader: srv, Datacenter: "dc1", Clock: fake})
	defer m.Close()
	if m.Changed("a", 0) != nil {
		t.Fatal("a channel for a service without a leaf")
	}
	leaf, err := m.Get(context.Background(), "a", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.Changed("a", leaf.ModifyIndex):
		t.Fatal("closed for the current leaf")
	default:
	}
	select {
	case <-m.Changed("a", leaf.ModifyIndex+1):
	default:
		t.Fatal("open for another leaf than the current one")
	}
}

// Notify calls its subscriber when the service's leaf is renewed, and no
// longer after cancel.
func TestNotify(t *testing.T) {
	fake := clock.NewFake(time.Now())
	srv := startServer(t, fake, time.Hour)
	m := leafcert.New(leafcert.Config{Signer: srv, Reader: srv, Datacenter: "dc1", Clock: fake})
	defer m.Close()
	if _, ok := m.Notify("a", func() {}); ok {
		t.Fatal("Notify of a service without a leaf")
	}
	leaf, err := m.Get(context.Background(), "a", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	called := make(chan struct{}, 16)
	cancel, ok := m.Notify("a", func() { called <- struct{}{} })
	if !ok {
		t.Fatal("Notify refused a service with a leaf")
	}
	// Past the renewal time: the leaf is replaced and the subscriber told.
	wait.For(t, 10*time.Second, func() error {
		fake.Advance(time.Minute)
		select {
		case <-called:
			return nil
		default:
			return fmt.Errorf("not called")
		}
	})
	renewed, err := m.Get(context.Background(), "a", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if renewed.SerialNumber == leaf.SerialNumber {
		t.Fatal("called without a new leaf")
	}
	cancel()
	for len(called) > 0 {
		<-called
	}
	wait.For(t, 10*time.Second, func() error {
		fake.Advance(time.Minute)
		l, err := m.Get(context.Background(), "a", 0, 0)
		if err != nil {
			return err
		}
		if l.SerialNumber == renewed.SerialNumber {
			return fmt.Errorf("not renewed again yet")
		}
		return nil
	})
	if len(called) != 0 {
		t.Fatal("called after cancel")
	}
}
