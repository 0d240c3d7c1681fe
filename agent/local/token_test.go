package local_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tribune-mesh/tribune/agent/agenttest/inmem"
	"github.com/tribune-mesh/tribune/agent/config"
	"github.com/tribune-mesh/tribune/agent/local"
	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/clock"
	"github.com/tribune-mesh/tribune/server"
	"github.com/tribune-mesh/tribune/test/wait"
)

// tokenLog wraps the in-memory catalog and records, for every write, the
// token its context carried ("-" for none: the agent's own) and what it
// wrote.
type tokenLog struct {
	local.Backend
	mu     sync.Mutex
	writes []string
}

func (b *tokenLog) Apply(ctx context.Context, t catalog.CommandType, body any) (any, error) {
	tok, ok := server.TokenFrom(ctx)
	if !ok {
		tok = "-"
	}
	what := ""
	switch r := body.(type) {
	case *catalog.RegisterRequest:
		what = "register node"
		if r.Service != nil {
			what = "register " + r.Service.ID
		}
		for _, c := range r.Checks {
			what += " +" + c.CheckID
		}
	case *catalog.DeregisterRequest:
		what = "deregister " + r.ServiceID + r.CheckID
	}
	b.mu.Lock()
	b.writes = append(b.writes, tok+" "+what)
	b.mu.Unlock()
	return b.Backend.Apply(ctx, t, body)
}

// saw waits until a write with this token and description was made.
func (b *tokenLog) saw(t *testing.T, want string) {
	t.Helper()
	wait.For(t, 5*time.Second, func() error {
		b.mu.Lock()
		defer b.mu.Unlock()
		if slices.Contains(b.writes, want) {
			return nil
		}
		return fmt.Errorf("no write %q in %q", want, b.writes)
	})
}

// Each service and check is synced with the token it was registered with;
// one without a token, and the node, with the Backend's (the agent's). A
// deregistration uses the token it was made with, else the registration's.
func TestSyncUsesRegistrationTokens(t *testing.T) {
	h := start(t, local.Config{WithToken: server.WithToken})
	rec := &tokenLog{Backend: h.backend}
	h.state = local.New(local.Config{Node: local.Node{Name: node, Address: "10.0.0.1"}, Backend: rec, Clock: h.clock,
		WithToken: server.WithToken, DataDir: t.TempDir()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.state.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	web := &config.ServiceDefinition{ID: "web1", Name: "web", Token: "tw",
		Checks: []config.CheckDefinition{{ID: "web-ttl", TTL: time.Minute}}}
	if err := h.state.AddServiceDefinition(web, false); err != nil {
		t.Fatal(err)
	}
	if err := h.state.AddServiceDefinition(&config.ServiceDefinition{ID: "db1", Name: "db"}, false); err != nil {
		t.Fatal(err)
	}
	c, err := h.state.CheckFromDefinition(&config.CheckDefinition{ID: "disk", TTL: time.Minute, Token: "tn"}, "", false)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.state.AddCheck(c); err != nil {
		t.Fatal(err)
	}
	rec.saw(t, "tw register web1 +web-ttl")
	rec.saw(t, "- register db1")
	rec.saw(t, "tn register node +disk")

	h.state.RemoveServiceWithToken("web1", "tdel")
	h.state.RemoveService("db1")
	h.state.RemoveCheck("disk")
	rec.saw(t, "tdel deregister web1")
	rec.saw(t, "- deregister db1")
	rec.saw(t, "tn deregister disk")
	for _, id := range []string{"web1", "db1"} {
		wait.For(t, 5*time.Second, func() error {
			if h.catalogHasService(id) {
				return fmt.Errorf("%s still in the catalog", id)
			}
			return nil
		})
	}
}

// A service and a check registered through the API are kept in the data
// dir with their token (0600) and registered again, with it, by a new State
// on the same dir; a deregistered one is forgotten.
func TestRegisteredThroughAPIPersisted(t *testing.T) {
	dir := t.TempDir()
	h := start(t, local.Config{WithToken: server.WithToken, DataDir: dir})
	raw := map[string]any{"ID": "web1", "Name": "web", "Port": 80, "Check": map[string]any{"CheckID": "web-ttl", "TTL": "1m"}}
	def, err := config.DecodeServiceDefinition(raw)
	if err != nil {
		t.Fatal(err)
	}
	def.Token = "tw"
	if err := h.state.RegisterService(raw, def, false); err != nil {
		t.Fatal(err)
	}
	rawCheck := map[string]any{"ID": "disk", "Name": "disk", "TTL": "1m"}
	cdef, err := config.DecodeCheckDefinition(rawCheck)
	if err != nil {
		t.Fatal(err)
	}
	cdef.Token = "tn"
	if err := h.state.RegisterCheck(rawCheck, cdef); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"services", "checks"} {
		files, err := os.ReadDir(filepath.Join(dir, kind))
		if err != nil || len(files) != 1 {
			t.Fatalf("%s: %v %v", kind, files, err)
		}
		info, err := files[0].Info()
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm() != 0o600 {
			t.Fatalf("%s file mode %v", kind, info.Mode().Perm())
		}
	}

	// Wait for the first State's sync, then clear the catalog so that the
	// second one has to write them again.
	wait.For(t, 5*time.Second, func() error {
		if !h.catalogHasService("web1") || h.catalogChecks()["disk"] == nil {
			return fmt.Errorf("not synced yet")
		}
		return nil
	})
	h.apply(catalog.CmdDeregister, &catalog.DeregisterRequest{Node: node, ServiceID: "web1"})
	h.apply(catalog.CmdDeregister, &catalog.DeregisterRequest{Node: node, CheckID: "disk"})
	rec := &tokenLog{Backend: h.backend}
	again := local.New(local.Config{Node: local.Node{Name: node, Address: "10.0.0.1"}, Backend: rec, Clock: h.clock,
		WithToken: server.WithToken, DataDir: dir})
	if err := again.LoadPersisted(); err != nil {
		t.Fatal(err)
	}
	if s := again.Service("web1"); s == nil || s.Port != 80 {
		t.Fatalf("web1 after load: %+v", s)
	}
	if _, ok := again.Checks()["disk"]; !ok {
		t.Fatalf("disk check after load: %v", again.Checks())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); again.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	rec.saw(t, "tw register web1 +web-ttl")
	rec.saw(t, "tn register node +disk")

	again.RemoveService("web1")
	again.RemoveCheck("disk")
	for _, kind := range []string{"services", "checks"} {
		if files, _ := os.ReadDir(filepath.Join(dir, kind)); len(files) != 0 {
			t.Fatalf("%s left after deregistration: %v", kind, files)
		}
	}
	// A damaged file is skipped, not fatal.
	if err := os.WriteFile(filepath.Join(dir, "services", "junk"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := local.New(local.Config{Node: local.Node{Name: node}, Backend: rec, Clock: h.clock, DataDir: dir}).LoadPersisted(); err != nil {
		t.Fatal(err)
	}
}

// FuzzLoadPersisted: whatever a services or checks file holds, loading it
// never panics (a bad file is skipped).
func FuzzLoadPersisted(f *testing.F) {
	f.Add([]byte(`{"Definition":{"ID":"web1","Name":"web","Check":{"TTL":"1m"}},"Token":"tw"}`))
	f.Add([]byte(`{"Definition":{"ID":"disk","TTL":"1m","ServiceID":"nope"}}`))
	f.Add([]byte(`{"Definition":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		for _, kind := range []string{"services", "checks"} {
			if err := os.MkdirAll(filepath.Join(dir, kind), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, kind, "f"), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		fc := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
		st := local.New(local.Config{Node: local.Node{Name: node}, Backend: inmem.New(fc), Clock: fc, DataDir: dir})
		defer st.StopChecks()
		if err := st.LoadPersisted(); err != nil {
			t.Fatal(err)
		}
	})
}
