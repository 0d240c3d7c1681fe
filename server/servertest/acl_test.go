package servertest_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/server"
	"github.com/tribune-mesh/tribune/server/servertest"
	"github.com/tribune-mesh/tribune/test/wait"
)

const testMgmt = "6b1a2b4e-0d8c-4a49-9f57-7f3e2a0c9d11"

// aclCluster runs three servers with ACLs on, default_policy deny, and
// waits until every one holds the built-in and management tokens.
func aclCluster(t *testing.T) *servertest.Cluster {
	t.Helper()
	c := servertest.New(t, servertest.Options{Configure: func(_ int, cfg *server.Config) {
		cfg.ACL = server.ACLConfig{Enabled: true, DefaultPolicy: "deny", InitialManagement: testMgmt}
	}})
	wait.For(t, servertest.DefaultTimeout, func() error {
		for _, s := range c.Running() {
			for _, secret := range []string{testMgmt, catalog.ACLAnonymousTokenSecret} {
				_, tok, err := s.Store().ACLTokenGet(nil, secret, true)
				if err != nil {
					return err
				}
				if tok == nil {
					return fmt.Errorf("%s: token %q not replicated yet", s.Name, secret)
				}
			}
		}
		return nil
	})
	return c
}

// rawClient is an RPC client of the server port that is no agent: it
// sends what the test tells it to, to the given server.
func rawClient(t *testing.T, c *servertest.Cluster, to *servertest.Server) *server.Client {
	t.Helper()
	cl := server.NewClient(server.ClientConfig{
		Servers:     func() []string { return []string{to.Addr} },
		Dial:        c.Net.Dialer("10.0.0.99:0"),
		HoldTimeout: 5 * time.Second,
	})
	t.Cleanup(cl.Close)
	return cl
}

func kvSet(ctx context.Context, cl *server.Client, key string) error {
	res, err := cl.Apply(ctx, catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVSet, Entry: catalog.KVEntry{Key: key, Value: []byte("v")}})
	if err != nil {
		return err
	}
	if r, ok := res.(catalog.KVResult); ok && r.Err != nil {
		return r.Err
	}
	return nil
}

// makeToken creates a policy with rules and a token linked to it, with
// the management token, and returns the token's secret.
func makeToken(t *testing.T, ctx context.Context, cl *server.Client, name, rules string) string {
	t.Helper()
	mctx := server.WithToken(ctx, testMgmt)
	pol := &catalog.ACLPolicy{ID: "pol-" + name, Name: name, Rules: rules}
	if res, err := cl.Apply(mctx, catalog.CmdACLPolicySet, pol); err != nil || res != nil {
		t.Fatalf("create policy: %v %v", res, err)
	}
	secret := fmt.Sprintf("00000000-0000-4000-8000-%012d", len(name))
	tok := &catalog.ACLToken{AccessorID: "acc-" + name, SecretID: secret, Policies: []catalog.ACLLink{{ID: pol.ID}}}
	if res, err := cl.Apply(mctx, catalog.CmdACLTokenSet, tok); err != nil || res != nil {
		t.Fatalf("create token: %v %v", res, err)
	}
	return secret
}

// The server port checks every RPC's token: none is the anonymous token
// (denied under default_policy deny, with Consul's message), an unknown
// one is "ACL not found", an allowed one passes, through a follower too
// (the forwarded request keeps its token).
func TestRPCEnforcesACLs(t *testing.T) {
	c := aclCluster(t)
	leader := c.WaitForLeader(servertest.DefaultTimeout)
	follower := c.Followers()[0]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	for _, to := range []*servertest.Server{leader, follower} {
		cl := rawClient(t, c, to)
		err := kvSet(ctx, cl, "secret/x")
		if !errors.Is(err, acl.ErrPermissionDenied) {
			t.Fatalf("%s: write without token: %v, want permission denied", to.Name, err)
		}
		want := `Permission denied: token with AccessorID '00000000-0000-0000-0000-000000000002' lacks permission 'key:write' on "secret/x"`
		if err.Error() != want {
			t.Fatalf("%s: message %q, want %q", to.Name, err, want)
		}
		err = kvSet(server.WithToken(ctx, "5e1c6f0a-1111-4222-8333-944445555666"), cl, "secret/x")
		if !errors.Is(err, acl.ErrNotFound) || err.Error() != "ACL not found" {
			t.Fatalf("%s: write with unknown token: %v, want ACL not found", to.Name, err)
		}
		if err := kvSet(server.WithToken(ctx, testMgmt), cl, "secret/x"); err != nil {
			t.Fatalf("%s: write with management token: %v", to.Name, err)
		}
	}

	cl := rawClient(t, c, follower)
	app := makeToken(t, ctx, cl, "app", `key_prefix "app/" { policy = "write" }
key_prefix "app/locked/" { policy = "read" }
node_prefix "" { policy = "read" }
service "web" { policy = "write" }`)
	actx := server.WithToken(ctx, app)
	wait.For(t, servertest.DefaultTimeout, func() error { return kvSet(actx, cl, "app/a") })
	if err := kvSet(actx, cl, "other/a"); !errors.Is(err, acl.ErrPermissionDenied) {
		t.Fatalf("write outside the token's prefix: %v", err)
	}
	// A recursive delete needs write on everything beneath the prefix.
	_, err := cl.Apply(actx, catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVDeleteTree, Entry: catalog.KVEntry{Key: "app/"}})
	if !errors.Is(err, acl.ErrPermissionDenied) {
		t.Fatalf("delete-tree over a read-only sub-prefix: %v", err)
	}
	// Every operation of a transaction is checked.
	_, err = cl.Apply(actx, catalog.CmdTxn, []catalog.TxnOp{
		{KV: &catalog.TxnKVOp{Verb: catalog.KVSet, Key: "app/b", Value: []byte("1")}},
		{KV: &catalog.TxnKVOp{Verb: catalog.KVSet, Key: "other/b", Value: []byte("1")}},
	})
	if !errors.Is(err, acl.ErrPermissionDenied) || !strings.Contains(err.Error(), `"other/b"`) {
		t.Fatalf("txn with one denied operation: %v", err)
	}
	// Catalog: registering needs node:write on the node...
	reg := &catalog.RegisterRequest{Node: "n1", Address: "10.1.1.1", Service: &catalog.Service{ID: "web1", Service: "web"}}
	if _, err := cl.Apply(actx, catalog.CmdRegister, reg); !errors.Is(err, acl.ErrPermissionDenied) {
		t.Fatalf("register on a node without node:write: %v", err)
	}
	if res, err := cl.Apply(server.WithToken(ctx, testMgmt), catalog.CmdRegister, reg); err != nil || res != nil {
		t.Fatalf("register with management: %v %v", res, err)
	}
	reg2 := &catalog.RegisterRequest{Node: "n2", Address: "10.1.1.2", Service: &catalog.Service{ID: "db1", Service: "db"}}
	if res, err := cl.Apply(server.WithToken(ctx, testMgmt), catalog.CmdRegister, reg2); err != nil || res != nil {
		t.Fatalf("register with management: %v %v", res, err)
	}
	// ...and deregistering a service service:write on it.
	if _, err := cl.Apply(actx, catalog.CmdDeregister, &catalog.DeregisterRequest{Node: "n2", ServiceID: "db1"}); !errors.Is(err, acl.ErrPermissionDenied) {
		t.Fatalf("deregister db: %v", err)
	}

	// Reads: lists are filtered and say so; the ACL tables need acl:read.
	resp, err := cl.Read(actx, &catalog.ReadRequest{Op: catalog.ReadKVKeys, Key: ""})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(resp.Keys, ",") != "app/a" || !resp.Meta.ResultsFilteredByACLs {
		t.Fatalf("keys seen by the app token: %v filtered=%v", resp.Keys, resp.Meta.ResultsFilteredByACLs)
	}
	resp, err = cl.Read(actx, &catalog.ReadRequest{Op: catalog.ReadServices})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := resp.Services["db"]; ok || resp.Services["web"] == nil || !resp.Meta.ResultsFilteredByACLs {
		t.Fatalf("services seen by the app token: %v", resp.Services)
	}
	resp, err = cl.Read(ctx, &catalog.ReadRequest{Op: catalog.ReadKVGet, Key: "secret/x"})
	if err != nil || resp.KV != nil {
		t.Fatalf("anonymous read of secret/x: %+v %v", resp, err)
	}
	if _, err := cl.Read(actx, &catalog.ReadRequest{Op: catalog.ReadACLTokens}); !errors.Is(err, acl.ErrPermissionDenied) {
		t.Fatalf("token list without acl:read: %v", err)
	}
	resp, err = cl.Read(server.WithToken(ctx, testMgmt), &catalog.ReadRequest{Op: catalog.ReadKVKeys})
	if err != nil || len(resp.Keys) != 2 || resp.Meta.ResultsFilteredByACLs {
		t.Fatalf("keys seen by management: %+v %v", resp, err)
	}
	// A token may read itself by its secret, and nobody else's.
	if _, err := cl.Read(actx, &catalog.ReadRequest{Op: catalog.ReadACLTokenSecret, Name: app}); err != nil {
		t.Fatalf("read own token: %v", err)
	}
	if _, err := cl.Read(actx, &catalog.ReadRequest{Op: catalog.ReadACLTokenSecret, Name: testMgmt}); !errors.Is(err, acl.ErrPermissionDenied) {
		t.Fatalf("read another token by secret: %v", err)
	}

	// Snapshots and operator calls.
	if _, err := cl.SaveSnapshot(actx); !errors.Is(err, acl.ErrPermissionDenied) || !strings.Contains(err.Error(), "acl:write") {
		t.Fatalf("snapshot save without acl:write: %v", err)
	}
	if _, err := cl.Operator(ctx, &server.OperatorRequest{Op: server.OpRaftConfiguration}); !errors.Is(err, acl.ErrPermissionDenied) {
		t.Fatalf("raft configuration without operator:read: %v", err)
	}
	if _, err := cl.Operator(server.WithToken(ctx, testMgmt), &server.OperatorRequest{Op: server.OpRaftConfiguration}); err != nil {
		t.Fatalf("raft configuration with management: %v", err)
	}
	// Status stays open, as Consul's is.
	if _, _, err := cl.Status(ctx); err != nil {
		t.Fatal(err)
	}
}

// A deleted token is refused on the server port as soon as the server
// applied the delete: the server's cache follows the ACL tables.
func TestRPCRefusesDeletedToken(t *testing.T) {
	c := aclCluster(t)
	leader := c.WaitForLeader(servertest.DefaultTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cl := rawClient(t, c, leader)
	secret := makeToken(t, ctx, cl, "tmp", `key_prefix "" { policy = "write" }`)
	tctx := server.WithToken(ctx, secret)
	if err := kvSet(tctx, cl, "k"); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Apply(server.WithToken(ctx, testMgmt), catalog.CmdACLTokenDelete, &catalog.ACLDeleteRequest{ID: "acc-tmp"}); err != nil {
		t.Fatal(err)
	}
	// The cache drops the token when its watch sees the delete, right
	// after the FSM applied it.
	wait.For(t, 2*time.Second, func() error {
		if err := kvSet(tctx, cl, "k"); !errors.Is(err, acl.ErrNotFound) {
			return fmt.Errorf("write with a deleted token: %v, want ACL not found", err)
		}
		return nil
	})
}

// A read a follower forwards to the leader is checked and filtered there,
// with the leader's state: the follower's may not hold yet what the check
// depends on. Here the read executes a prepared query created a moment
// before, whose own token it runs with: checked on the follower, which has
// not heard of the query yet, it ran as the anonymous caller and answered
// no instance, without an error.
func TestForwardedReadCheckedByLeader(t *testing.T) {
	c := aclCluster(t)
	leader := c.WaitForLeader(servertest.DefaultTimeout)
	f := c.Followers()[0]
	mgmt := server.WithToken(context.Background(), testMgmt)
	apply := func(typ catalog.CommandType, body any) {
		t.Helper()
		if res, err := leader.Apply(mgmt, typ, body); err != nil || res != nil {
			t.Fatalf("apply %d: %v %v", typ, res, err)
		}
	}
	apply(catalog.CmdRegister, &catalog.RegisterRequest{Node: "n1", Address: "10.1.0.1", Service: &catalog.Service{ID: "db1", Service: "db"}})
	c.WaitForReplication(servertest.DefaultTimeout)
	// Everything the leader sends the follower now arrives 500 ms late: the
	// query's log entry, and the answer to the read forwarded to it.
	c.Net.Delay(leader.Addr, f.Addr, 500*time.Millisecond)
	t.Cleanup(c.Heal)
	apply(catalog.CmdPreparedQuery, &catalog.PreparedQueryRequest{Op: catalog.PreparedQueryCreate,
		Query: catalog.PreparedQuery{ID: "q1", Name: "dbq", Token: testMgmt, Service: catalog.ServiceQuery{Service: "db"}}})
	if _, q, err := f.Store().PreparedQueryGet(nil, "q1"); err != nil || q != nil {
		t.Fatalf("the follower holds the query already (%v, %v): the test cannot tell where the read is checked", q, err)
	}
	anon := server.WithToken(context.Background(), "")
	resp, err := f.Read(anon, &catalog.ReadRequest{Op: catalog.ReadHealthService, Name: "db", PreparedQueryID: "q1"})
	if err != nil || len(resp.Instances) != 1 {
		t.Fatalf("anonymous execution of a query with a token through a follower: %+v %v, want 1 instance", resp, err)
	}
}

// A write a follower forwards is checked by the leader, which applies it:
// a token created a moment ago writes through a follower that has not
// heard of it yet (it answered "ACL not found").
func TestForwardedWriteCheckedByLeader(t *testing.T) {
	c := aclCluster(t)
	leader := c.WaitForLeader(servertest.DefaultTimeout)
	f := c.Followers()[0]
	c.Net.Delay(leader.Addr, f.Addr, 500*time.Millisecond)
	t.Cleanup(c.Heal)
	secret := makeToken(t, context.Background(), rawClient(t, c, leader), "writer", `key_prefix "app/" { policy = "write" }`)
	if _, tok, err := f.Store().ACLTokenGet(nil, secret, true); err != nil || tok != nil {
		t.Fatalf("the follower holds the token already (%v, %v): the test cannot tell where the write is checked", tok, err)
	}
	res, err := f.Apply(server.WithToken(context.Background(), secret), catalog.CmdKV,
		&catalog.KVRequest{Op: catalog.KVSet, Entry: catalog.KVEntry{Key: "app/x", Value: []byte("v")}})
	if err != nil {
		t.Fatalf("a write with a new token through a follower: %v %v", res, err)
	}
}
