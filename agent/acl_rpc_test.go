package agent_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/agent/agenttest"
	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/server"
	"github.com/tribune-mesh/tribune/test/wait"
)

// startACLCluster starts three servers and one client with ACLs on
// (default_policy deny, the root management token) over real sockets, and
// waits until the management token works everywhere.
func startACLCluster(t *testing.T) (srvs []*node, client *node) {
	t.Helper()
	var join string
	for i := range 4 {
		isServer := i < 3
		name := fmt.Sprintf("s%d", i+1)
		if !isServer {
			name = "c1"
		}
		c := aclConfig(agenttest.ClusterConfig(t, name, isServer, 3, join))
		if join == "" {
			join = agenttest.SerfAddr(c)
		}
		a := agenttest.StartNoWait(t, c)
		n := &node{cfg: c, agent: a, api: tokenClient(t, a, rootSecret)}
		if isServer {
			srvs = append(srvs, n)
		} else {
			client = n
		}
	}
	for _, n := range append(srvs[:3:3], client) {
		wait.For(t, 30*time.Second, func() error {
			_, err := n.api.KV().Put(&api.KVPair{Key: "ready", Value: []byte("1")}, nil)
			return err
		})
	}
	return srvs, client
}

// The cluster's server port refuses a KV write that carries no token, on
// every server; the HTTP API of a client agent forwards its caller's token,
// so the same write through it is refused without a token and accepted
// with one.
func TestServerPortRefusesWriteWithoutToken(t *testing.T) {
	srvs, client := startACLCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, s := range srvs {
		addr := "127.0.0.1:" + strconv.Itoa(s.cfg.Ports.Server)
		cl := server.NewClient(server.ClientConfig{Servers: func() []string { return []string{addr} }, HoldTimeout: 5 * time.Second})
		defer cl.Close()
		_, err := cl.Apply(ctx, catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVSet, Entry: catalog.KVEntry{Key: "raw", Value: []byte("x")}})
		if !errors.Is(err, acl.ErrPermissionDenied) {
			t.Fatalf("%s: raw write without token: %v, want permission denied", s.cfg.NodeName, err)
		}
		_, err = cl.Apply(server.WithToken(ctx, rootSecret), catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVSet, Entry: catalog.KVEntry{Key: "raw", Value: []byte("x")}})
		if err != nil {
			t.Fatalf("%s: raw write with the management token: %v", s.cfg.NodeName, err)
		}
	}
	anon := tokenClient(t, client.agent, "")
	if _, err := anon.KV().Put(&api.KVPair{Key: "via-client", Value: []byte("x")}, nil); statusOf(err) != http.StatusForbidden {
		t.Fatalf("write through the client agent without token: %v", err)
	}
	bogus := tokenClient(t, client.agent, "5e1c6f0a-1111-4222-8333-944445555666")
	if _, err := bogus.KV().Put(&api.KVPair{Key: "via-client", Value: []byte("x")}, nil); statusOf(err) != http.StatusForbidden {
		t.Fatalf("write through the client agent with an unknown token: %v", err)
	}
	if _, err := client.api.KV().Put(&api.KVPair{Key: "via-client", Value: []byte("x")}, nil); err != nil {
		t.Fatalf("write through the client agent with the management token: %v", err)
	}
}

// List reads drop what the token may not read, through a client agent (the
// servers filter the RPC) and a server agent alike, and say so with
// X-Consul-Results-Filtered-By-ACLs when the request carried a token;
// ?filter= applies first, so rows it would drop anyway do not count.
func TestListsFilteredByACLs(t *testing.T) {
	srvs, client := startACLCluster(t)
	root := client.api
	for _, r := range []*api.CatalogRegistration{
		{Node: "n1", Address: "10.1.0.1", Service: &api.AgentService{ID: "web1", Service: "web"}},
		{Node: "n2", Address: "10.1.0.2", Service: &api.AgentService{ID: "db1", Service: "db"}},
	} {
		if _, err := root.Catalog().Register(r, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []string{"app/a", "app/secret/x"} {
		if _, err := root.KV().Put(&api.KVPair{Key: k, Value: []byte("v")}, nil); err != nil {
			t.Fatal(err)
		}
	}
	secret := policyToken(t, root, "web-reader", `service "web" { policy = "read" }
node "n1" { policy = "read" }
key_prefix "app/" { policy = "read" }
key_prefix "app/secret/" { policy = "deny" }`)
	for _, n := range []*node{client, srvs[1]} {
		web := tokenClient(t, n.agent, secret)
		wait.For(t, 10*time.Second, func() error {
			svcs, meta, err := web.Catalog().Services(nil)
			if err != nil {
				return err
			}
			if len(svcs) != 1 || svcs["web"] == nil || !meta.ResultsFilteredByACLs {
				return fmt.Errorf("%s: services %v filtered=%v", n.cfg.NodeName, svcs, meta.ResultsFilteredByACLs)
			}
			return nil
		})
		nodes, meta, err := web.Catalog().Nodes(&api.QueryOptions{WaitIndex: 1, WaitTime: time.Second})
		if err != nil || len(nodes) != 1 || nodes[0].Node != "n1" || !meta.ResultsFilteredByACLs {
			t.Fatalf("%s: blocking nodes = %v filtered=%v %v", n.cfg.NodeName, nodes, meta.ResultsFilteredByACLs, err)
		}
		nodes, meta, err = web.Catalog().Nodes(&api.QueryOptions{Filter: `Node == "n1"`})
		if err != nil || len(nodes) != 1 || meta.ResultsFilteredByACLs {
			t.Fatalf("%s: filtered nodes = %v filtered=%v %v", n.cfg.NodeName, nodes, meta.ResultsFilteredByACLs, err)
		}
		checks, _, err := web.Health().Checks("db", nil)
		if err != nil || len(checks) != 0 {
			t.Fatalf("%s: checks of db = %v %v", n.cfg.NodeName, checks, err)
		}
		keys, meta, err := web.KV().Keys("app/", "", nil)
		if err != nil || len(keys) != 1 || keys[0] != "app/a" || !meta.ResultsFilteredByACLs {
			t.Fatalf("%s: keys = %v filtered=%v %v", n.cfg.NodeName, keys, meta.ResultsFilteredByACLs, err)
		}
		// Without a token nothing says that rows were dropped.
		anon := tokenClient(t, n.agent, "")
		nodes, meta, err = anon.Catalog().Nodes(nil)
		if err != nil || len(nodes) != 0 || meta.ResultsFilteredByACLs {
			t.Fatalf("%s: anonymous nodes = %v filtered=%v %v", n.cfg.NodeName, nodes, meta.ResultsFilteredByACLs, err)
		}
	}
}

// policyToken creates a policy with rules and a token of it, and returns
// the token's secret.
func policyToken(t *testing.T, root *api.Client, name, rules string) string {
	t.Helper()
	pol, _, err := root.ACL().PolicyCreate(&api.ACLPolicy{Name: name, Rules: rules}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := root.ACL().TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{ID: pol.ID}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tok.SecretID
}

// A client agent has its leaf certificates signed with the token that
// asked for them (service:write on the service), not with its own: the
// agent here has no token of its own, which default_policy deny refuses.
func TestLeafSignedWithCallersToken(t *testing.T) {
	_, client := startACLCluster(t)
	secret := policyToken(t, client.api, "web-writer", `service "web" { policy = "write" }`)
	web := tokenClient(t, client.agent, secret)
	wait.For(t, 30*time.Second, func() error {
		leaf, _, err := web.Agent().ConnectCALeaf("web", nil)
		if err != nil {
			return err
		}
		if leaf.Service != "web" || leaf.CertPEM == "" {
			return fmt.Errorf("leaf %+v", leaf)
		}
		return nil
	})
	if _, _, err := tokenClient(t, client.agent, "").Agent().ConnectCALeaf("web", nil); statusOf(err) != http.StatusForbidden {
		t.Fatalf("leaf without token: %v", err)
	}
}

// A prepared query with a token of its own runs with that token whoever
// executes it, through a client agent as through a server agent, and the
// token never reaches the caller; a query without one runs with the
// caller's token.
func TestPreparedQueryRunsWithItsToken(t *testing.T) {
	srvs, client := startACLCluster(t)
	root := client.api
	if _, err := root.Catalog().Register(&api.CatalogRegistration{Node: "n2", Address: "10.1.0.2",
		Service: &api.AgentService{ID: "db1", Service: "db"}}, nil); err != nil {
		t.Fatal(err)
	}
	qtok := policyToken(t, root, "db-reader", `service "db" { policy = "read" }
node_prefix "" { policy = "read" }`)
	if _, _, err := root.PreparedQuery().Create(&api.PreparedQueryDefinition{Name: "db-own", Token: qtok, Service: api.ServiceQuery{Service: "db"}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := root.PreparedQuery().Create(&api.PreparedQueryDefinition{Name: "db-caller", Service: api.ServiceQuery{Service: "db"}}, nil); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*node{client, srvs[2]} {
		anon := tokenClient(t, n.agent, "")
		// At once, also on a follower (s3) that may not hold the query
		// yet: the leader checks the read it answers
		// (TestForwardedReadCheckedByLeader).
		res, _, err := anon.PreparedQuery().Execute("db-own", nil)
		if err != nil || len(res.Nodes) != 1 || res.Nodes[0].Node.Node != "n2" {
			t.Fatalf("%s: anonymous execution of a query with a token: %+v %v", n.cfg.NodeName, res, err)
		}
		res, _, err = anon.PreparedQuery().Execute("db-caller", nil)
		if err != nil || len(res.Nodes) != 0 {
			t.Fatalf("%s: anonymous execution of a query without a token: %+v %v", n.cfg.NodeName, res, err)
		}
	}
	qs, _, err := tokenClient(t, client.agent, qtok).PreparedQuery().List(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		if q.Token == qtok {
			t.Fatalf("query token shown to a token without acl:write: %+v", q)
		}
	}
}
