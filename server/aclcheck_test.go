package server

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/test/wait"
)

const checkMgmt = "0f5d1e9c-2a4b-4c6d-8e0f-1a2b3c4d5e6f"

// aclTestServer starts a server with ACLs on (default_policy deny) and a
// token that may write under app/, and returns it with that token.
func aclTestServer(t testing.TB) (*Server, string) {
	t.Helper()
	s := startTestServer(t, func(c *Config) {
		c.ACL = ACLConfig{Enabled: true, DefaultPolicy: "deny", InitialManagement: checkMgmt}
	})
	wait.For(t, 10*time.Second, func() error {
		if _, tok, err := s.Store().ACLTokenGet(nil, checkMgmt, true); err != nil || tok == nil {
			return fmt.Errorf("management token not created yet (%v)", err)
		}
		return nil
	})
	ctx := WithToken(context.Background(), checkMgmt)
	const secret = "11111111-2222-4333-8444-555555555555"
	for _, c := range []struct {
		t    catalog.CommandType
		body any
	}{
		{catalog.CmdACLPolicySet, &catalog.ACLPolicy{ID: "p-app", Name: "app", Rules: `key_prefix "app/" { policy = "write" }`}},
		{catalog.CmdACLTokenSet, &catalog.ACLToken{AccessorID: "a-app", SecretID: secret, Policies: []catalog.ACLLink{{ID: "p-app"}}}},
	} {
		if res, err := s.Apply(ctx, c.t, c.body); err != nil || res != nil {
			t.Fatalf("apply %d: %v %v", c.t, res, err)
		}
	}
	return s, secret
}

// In-process calls are checked when they carry a token (an agent's API or
// anti-entropy) and trusted when they carry none (the server's own
// routines).
func TestInProcessCallsCheckedWithToken(t *testing.T) {
	s, secret := aclTestServer(t)
	ctx := context.Background()
	set := &catalog.KVRequest{Op: catalog.KVSet, Entry: catalog.KVEntry{Key: "other/k", Value: []byte("v")}}
	if _, err := s.Apply(ctx, catalog.CmdKV, set); err != nil {
		t.Fatalf("the server's own write: %v", err)
	}
	if _, err := s.Apply(WithToken(ctx, ""), catalog.CmdKV, set); !errors.Is(err, acl.ErrPermissionDenied) {
		t.Fatalf("anonymous in-process write: %v", err)
	}
	if _, err := s.Apply(WithToken(ctx, secret), catalog.CmdKV, set); !errors.Is(err, acl.ErrPermissionDenied) {
		t.Fatalf("write outside the token's prefix: %v", err)
	}
	set.Entry.Key = "app/k"
	if _, err := s.Apply(WithToken(ctx, secret), catalog.CmdKV, set); err != nil {
		t.Fatalf("allowed write: %v", err)
	}
	resp, err := s.Read(WithToken(ctx, secret), &catalog.ReadRequest{Op: catalog.ReadKVKeys})
	if err != nil || len(resp.Keys) != 1 || resp.Keys[0] != "app/k" || !resp.Meta.ResultsFilteredByACLs {
		t.Fatalf("keys seen by the token: %+v %v", resp, err)
	}
	resp, err = s.Read(ctx, &catalog.ReadRequest{Op: catalog.ReadKVKeys})
	if err != nil || len(resp.Keys) != 2 || resp.Meta.ResultsFilteredByACLs {
		t.Fatalf("keys seen by the server itself: %+v %v", resp, err)
	}
}

// BenchmarkACLCheck measures what enforcement adds to one RPC: resolving
// the token (cached) and checking a KV write, and filtering a list of 1000
// keys of which half are readable.
func BenchmarkACLCheck(b *testing.B) {
	s, secret := aclTestServer(b)
	ctx := WithToken(context.Background(), secret)
	cmd := &catalog.Command{Type: catalog.CmdKV, KV: &catalog.KVRequest{Op: catalog.KVSet, Entry: catalog.KVEntry{Key: "app/k"}}}
	b.Run("command", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if err := s.authorizeCommand(ctx, cmd); err != nil {
				b.Fatal(err)
			}
		}
	})
	keys := make([]string, 1000)
	for i := range keys {
		keys[i] = fmt.Sprintf("%s/%04d", []string{"app", "other"}[i%2], i)
	}
	req := &catalog.ReadRequest{Op: catalog.ReadKVKeys}
	b.Run("filter-1000-keys", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			authz, err := s.authorizeRead(ctx, req)
			if err != nil {
				b.Fatal(err)
			}
			resp := &catalog.ReadResponse{Keys: keys}
			filterRead(authz, req, resp)
			if len(resp.Keys) != 500 {
				b.Fatalf("%d keys kept", len(resp.Keys))
			}
		}
	})
}

// A read that executes a prepared query is filtered with the query's
// token only for the query's own service.
func TestPreparedQueryTokenOnlyForItsService(t *testing.T) {
	s, secret := aclTestServer(t)
	mctx := WithToken(context.Background(), checkMgmt)
	for _, c := range []struct {
		t    catalog.CommandType
		body any
	}{
		{catalog.CmdRegister, &catalog.RegisterRequest{Node: "n1", Address: "10.0.0.1", Service: &catalog.Service{ID: "db1", Service: "db"}}},
		{catalog.CmdRegister, &catalog.RegisterRequest{Node: "n1", Address: "10.0.0.1", Service: &catalog.Service{ID: "vault1", Service: "vault"}}},
		{catalog.CmdPreparedQuery, &catalog.PreparedQueryRequest{Op: catalog.PreparedQueryCreate,
			Query: catalog.PreparedQuery{ID: "q1", Name: "dbq", Token: checkMgmt, Service: catalog.ServiceQuery{Service: "db"}}}},
	} {
		if res, err := s.Apply(mctx, c.t, c.body); err != nil || res != nil {
			t.Fatalf("apply %d: %v %v", c.t, res, err)
		}
	}
	ctx := WithToken(context.Background(), secret)
	for svc, want := range map[string]int{"db": 1, "vault": 0} {
		resp, err := s.Read(ctx, &catalog.ReadRequest{Op: catalog.ReadHealthService, Name: svc, PreparedQueryID: "q1"})
		if err != nil || len(resp.Instances) != want {
			t.Fatalf("%s as query q1: %+v %v, want %d instances", svc, resp, err, want)
		}
	}
}

// A registration needs node:write only when it creates or changes its node
// (Consul's rule): a service token with node:read keeps its instance
// registered on an existing node, but cannot create a node, change one, or
// register a node check.
func TestRegisterNeedsNodeWriteOnlyForNodeChanges(t *testing.T) {
	s, _ := aclTestServer(t)
	mgmt := WithToken(context.Background(), checkMgmt)
	const svcSecret = "31111111-2222-4333-8444-555555555555"
	for _, c := range []struct {
		t    catalog.CommandType
		body any
	}{
		{catalog.CmdACLPolicySet, &catalog.ACLPolicy{ID: "p-web", Name: "web", Rules: `service "web" { policy = "write" }
node_prefix "" { policy = "read" }`}},
		{catalog.CmdACLTokenSet, &catalog.ACLToken{AccessorID: "a-web", SecretID: svcSecret, Policies: []catalog.ACLLink{{ID: "p-web"}}}},
		{catalog.CmdRegister, &catalog.RegisterRequest{Node: "n1", Address: "10.0.0.1", NodeMeta: map[string]string{"rack": "a"}}},
	} {
		if _, err := s.Apply(mgmt, c.t, c.body); err != nil {
			t.Fatalf("apply %d: %v", c.t, err)
		}
	}
	web := WithToken(context.Background(), svcSecret)
	svc := &catalog.Service{ID: "web1", Service: "web", Port: 80}
	for _, c := range []struct {
		name string
		req  *catalog.RegisterRequest
		ok   bool
	}{
		{"same node", &catalog.RegisterRequest{Node: "n1", Address: "10.0.0.1", NodeMeta: map[string]string{"rack": "a"}, Service: svc,
			Checks: []*catalog.HealthCheck{{Node: "n1", CheckID: "web-ok", Name: "web", ServiceID: "web1", Status: "passing"}}}, true},
		{"skip node update", &catalog.RegisterRequest{Node: "n1", SkipNodeUpdate: true, Service: svc}, true},
		{"new node", &catalog.RegisterRequest{Node: "n2", Address: "10.0.0.2", Service: svc}, false},
		{"changed address", &catalog.RegisterRequest{Node: "n1", Address: "10.0.0.9", NodeMeta: map[string]string{"rack": "a"}, Service: svc}, false},
		{"changed meta", &catalog.RegisterRequest{Node: "n1", Address: "10.0.0.1", Service: svc}, false},
		{"node check", &catalog.RegisterRequest{Node: "n1", SkipNodeUpdate: true,
			Check: &catalog.HealthCheck{Node: "n1", CheckID: "disk", Name: "disk", Status: "passing"}}, false},
		{"other service", &catalog.RegisterRequest{Node: "n1", SkipNodeUpdate: true, Service: &catalog.Service{ID: "db1", Service: "db"}}, false},
	} {
		_, err := s.Apply(web, catalog.CmdRegister, c.req)
		if c.ok && err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
		if !c.ok && !errors.Is(err, acl.ErrPermissionDenied) {
			t.Errorf("%s: %v, want permission denied", c.name, err)
		}
	}
}
