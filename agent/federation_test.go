package agent_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/miekg/dns"

	"github.com/tribune-mesh/tribune/agent/agenttest"
	"github.com/tribune-mesh/tribune/agent/config"
	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/connect"
	"github.com/tribune-mesh/tribune/server"
	"github.com/tribune-mesh/tribune/test/wait"
)

// startDC starts a datacenter of servers and clients (names prefixed by the
// datacenter) whose primary datacenter is primary, and waits for its leader
// and members.
func startDC(t *testing.T, dc, primary string, servers, clients int, mods ...func(*config.Config)) (srvs, cls []*node) {
	t.Helper()
	var join string
	for i := 0; i < servers+clients; i++ {
		isServer := i < servers
		name := fmt.Sprintf("%s-s%d", dc, i+1)
		if !isServer {
			name = fmt.Sprintf("%s-c%d", dc, i-servers+1)
		}
		c := agenttest.ClusterConfig(t, name, isServer, servers, join)
		c.Datacenter, c.PrimaryDatacenter = dc, primary
		for _, mod := range mods {
			mod(c)
		}
		if join == "" {
			join = agenttest.SerfAddr(c)
		}
		a := agenttest.StartNoWait(t, c)
		n := &node{cfg: c, agent: a, api: apiClient(t, a)}
		if isServer {
			srvs = append(srvs, n)
		} else {
			cls = append(cls, n)
		}
	}
	wait.For(t, 30*time.Second, func() error {
		for _, n := range append(append([]*node{}, srvs...), cls...) {
			leader, err := n.api.Status().Leader()
			if err != nil || leader == "" {
				return fmt.Errorf("%s: no leader (%v)", n.cfg.NodeName, err)
			}
		}
		peers, err := srvs[0].api.Status().Peers()
		if err != nil || len(peers) != servers {
			return fmt.Errorf("peers %v (%v)", peers, err)
		}
		return nil
	})
	return srvs, cls
}

// joinWAN joins a server to another's WAN pool through the HTTP API.
func joinWAN(t *testing.T, from, to *node) {
	t.Helper()
	r := httpString(t, from.agent, http.MethodPut, fmt.Sprintf("/v1/agent/join/127.0.0.1:%d?wan=1", to.cfg.Ports.SerfWAN), "")
	if r.code != http.StatusOK {
		t.Fatalf("WAN join: %d %s", r.code, r.body)
	}
}

func waitDatacenters(t *testing.T, n *node, want ...string) {
	t.Helper()
	wait.For(t, 20*time.Second, func() error {
		got, err := n.api.Catalog().Datacenters()
		if err != nil {
			return err
		}
		if !reflect.DeepEqual(got, want) {
			return fmt.Errorf("%s: datacenters %v, want %v", n.cfg.NodeName, got, want)
		}
		return nil
	})
}

func TestWANPoolAndCrossDCRequests(t *testing.T) {
	dc1, dc1c := startDC(t, "dc1", "dc1", 1, 1, func(c *config.Config) { c.TranslateWANAddrs = true })
	dc2, _ := startDC(t, "dc2", "dc1", 1, 0)
	joinWAN(t, dc2[0], dc1[0])

	// Every agent lists its own datacenter first; a client asks its
	// servers.
	waitDatacenters(t, dc1[0], "dc1", "dc2")
	waitDatacenters(t, dc2[0], "dc2", "dc1")
	waitDatacenters(t, dc1c[0], "dc1", "dc2")

	members, err := dc1[0].api.Agent().Members(true)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range members {
		names = append(names, m.Name)
	}
	if strings.Join(names, ",") != "dc1-s1.dc1,dc2-s1.dc2" {
		t.Fatalf("WAN members %v", names)
	}
	if lan, _ := dc1c[0].api.Agent().Members(true); len(lan) != 0 {
		t.Fatalf("a client agent listed WAN members: %v", lan)
	}
	// ?filter applies to members, WAN and LAN (TestAPI_AgentMembersOpts
	// of the official client).
	for _, tc := range []struct {
		wan    bool
		filter string
		want   int
	}{{true, `Tags["dc"] == dc2`, 1}, {true, `Tags["dc"] == dc3`, 0}, {false, `Tags["dc"] == dc1`, 2}, {false, `Name == "nope"`, 0}} {
		got, err := dc1[0].api.Agent().MembersOpts(api.MembersOpts{WAN: tc.wan, Filter: tc.filter})
		if err != nil || len(got) != tc.want {
			t.Fatalf("members wan=%v filter %s: %d, %v; want %d", tc.wan, tc.filter, len(got), err, tc.want)
		}
	}

	// A write and a read for dc2 through dc1's client agent land in dc2
	// only.
	c := dc1c[0].api
	if _, err := c.KV().Put(&api.KVPair{Key: "where", Value: []byte("dc2")}, &api.WriteOptions{Datacenter: "dc2"}); err != nil {
		t.Fatalf("put ?dc=dc2: %v", err)
	}
	kv, _, err := dc2[0].api.KV().Get("where", nil)
	if err != nil || kv == nil || string(kv.Value) != "dc2" {
		t.Fatalf("dc2 local get: %+v %v", kv, err)
	}
	if kv, _, err := c.KV().Get("where", nil); err != nil || kv != nil {
		t.Fatalf("dc1 holds a dc2 write: %+v %v", kv, err)
	}
	kv, _, err = c.KV().Get("where", &api.QueryOptions{Datacenter: "dc2"})
	if err != nil || kv == nil || string(kv.Value) != "dc2" {
		t.Fatalf("get ?dc=dc2 from dc1: %+v %v", kv, err)
	}
	nodes, _, err := c.Catalog().Nodes(&api.QueryOptions{Datacenter: "dc2"})
	if err != nil || len(nodes) != 1 || nodes[0].Node != "dc2-s1" || nodes[0].Datacenter != "dc2" {
		t.Fatalf("catalog nodes ?dc=dc2: %+v %v", nodes, err)
	}
	entries, _, err := c.Health().Service("consul", "", true, &api.QueryOptions{Datacenter: "dc2"})
	if err != nil || len(entries) != 1 || entries[0].Node.Node != "dc2-s1" {
		t.Fatalf("health ?dc=dc2: %+v %v", entries, err)
	}
	// A blocking query in dc2 wakes on a dc2 write.
	_, meta, err := c.KV().Get("where", &api.QueryOptions{Datacenter: "dc2"})
	if err != nil {
		t.Fatal(err)
	}
	ch := goBlock(func() (*api.KVPair, *api.QueryMeta, error) {
		return c.KV().Get("where", &api.QueryOptions{Datacenter: "dc2", WaitIndex: meta.LastIndex, WaitTime: 20 * time.Second})
	})
	if _, err := dc2[0].api.KV().Put(&api.KVPair{Key: "where", Value: []byte("dc2-again")}, nil); err != nil {
		t.Fatal(err)
	}
	if res := recvBlock(t, ch, 15*time.Second); res.err != nil || res.val == nil || string(res.val.Value) != "dc2-again" {
		t.Fatalf("blocking get ?dc=dc2: %+v", res)
	}

	// Sessions, status and user events of dc2 through dc1's client.
	wo := &api.WriteOptions{Datacenter: "dc2"}
	sid, _, err := c.Session().Create(&api.SessionEntry{Node: "dc2-s1", TTL: "30s"}, wo)
	if err != nil {
		t.Fatalf("session create ?dc=dc2: %v", err)
	}
	if s, _, err := c.Session().Renew(sid, wo); err != nil || s == nil || s.ID != sid {
		t.Fatalf("session renew ?dc=dc2: %+v %v", s, err)
	}
	if s, _, err := dc2[0].api.Session().Info(sid, nil); err != nil || s == nil {
		t.Fatalf("session not in dc2: %+v %v", s, err)
	}
	leader2, err := dc2[0].api.Status().Leader()
	if err != nil {
		t.Fatal(err)
	}
	if got, err := c.Status().LeaderWithQueryOptions(&api.QueryOptions{Datacenter: "dc2"}); err != nil || got != leader2 {
		t.Fatalf("status leader ?dc=dc2: %q %v, want %q", got, err, leader2)
	}
	if _, _, err := c.Event().Fire(&api.UserEvent{Name: "deploy", Payload: []byte("v2")}, wo); err != nil {
		t.Fatalf("event fire ?dc=dc2: %v", err)
	}
	wait.For(t, 10*time.Second, func() error {
		evs, _, err := dc2[0].api.Event().List("deploy", nil)
		if err != nil || len(evs) != 1 || string(evs[0].Payload) != "v2" {
			return fmt.Errorf("dc2 events %+v %v", evs, err)
		}
		return nil
	})
	if evs, _, _ := dc1[0].api.Event().List("deploy", nil); len(evs) != 0 {
		t.Fatalf("a dc2 event reached dc1: %+v", evs)
	}

	// An unknown datacenter has no path, from a server and from a client.
	for _, n := range []*node{dc1[0], dc1c[0]} {
		r := httpString(t, n.agent, http.MethodGet, "/v1/kv/where?dc=nowhere", "")
		if r.code != http.StatusInternalServerError || !strings.Contains(r.body, "No path to datacenter") {
			t.Fatalf("%s: ?dc=nowhere: %d %q", n.cfg.NodeName, r.code, r.body)
		}
		r = httpString(t, n.agent, http.MethodPut, "/v1/kv/where?dc=nowhere", "x")
		if r.code != http.StatusInternalServerError || !strings.Contains(r.body, "No path to datacenter") {
			t.Fatalf("%s: PUT ?dc=nowhere: %d %q", n.cfg.NodeName, r.code, r.body)
		}
	}

	// DNS names of another datacenter, answered by a client agent of dc1.
	if _, err := dc2[0].api.Catalog().Register(&api.CatalogRegistration{Node: "web-node", Address: "10.2.0.1",
		Service: &api.AgentService{Service: "web", Port: 80}}, nil); err != nil {
		t.Fatal(err)
	}
	d := &dnsAgent{a: dc1c[0].agent, api: c, addr: fmt.Sprintf("127.0.0.1:%d", dc1c[0].cfg.Ports.DNS)}
	dnsWant(t, "web.service.dc2.consul", dnsAddrs(d.query(t, "udp", "web.service.dc2.consul", dns.TypeA).Answer), []string{"10.2.0.1"})
	dnsWant(t, "web-node.node.dc2.consul", dnsAddrs(d.query(t, "udp", "web-node.node.dc2.consul", dns.TypeA).Answer), []string{"10.2.0.1"})
	dnsWantRcode(t, d.query(t, "udp", "web.service.consul", dns.TypeA), dns.RcodeNameError)
	// translate_wan_addrs: a node of dc2 with a WAN address is answered
	// with it.
	if _, err := dc2[0].api.Catalog().Register(&api.CatalogRegistration{Node: "wan-node", Address: "10.2.0.2",
		TaggedAddresses: map[string]string{"wan": "192.0.2.7"}}, nil); err != nil {
		t.Fatal(err)
	}
	if n, _, err := c.Catalog().Node("wan-node", &api.QueryOptions{Datacenter: "dc2"}); err != nil || n == nil || n.Node.Address != "192.0.2.7" {
		t.Fatalf("translated node: %+v %v", n, err)
	}
	// The agent answers DNS from its view of dc2's nodes, which follows
	// the registration a moment later (a blocking query): wait for it.
	wait.For(t, 10*time.Second, func() error {
		got := dnsAddrs(d.query(t, "udp", "wan-node.node.dc2.consul", dns.TypeA).Answer)
		if strings.Join(got, ",") != "192.0.2.7" {
			return fmt.Errorf("wan-node.node.dc2.consul = %v, want [192.0.2.7]", got)
		}
		return nil
	})
	dnsWantRcode(t, d.query(t, "udp", "web.service.nowhere.consul", dns.TypeA), dns.RcodeNameError)

	// A prepared query without instances here fails over to dc2.
	for i, fo := range []api.QueryFailoverOptions{{NearestN: 1}, {Datacenters: []string{"nowhere", "dc2"}}} {
		id, _, err := c.PreparedQuery().Create(&api.PreparedQueryDefinition{Name: fmt.Sprintf("web-%d", i),
			Service: api.ServiceQuery{Service: "web", Failover: fo}}, nil)
		if err != nil {
			t.Fatalf("create query: %v", err)
		}
		res, _, err := c.PreparedQuery().Execute(id, nil)
		if err != nil {
			t.Fatalf("execute: %v", err)
		}
		if res.Datacenter != "dc2" || res.Failovers != i+1 || len(res.Nodes) != 1 || res.Nodes[0].Node.Node != "web-node" {
			t.Fatalf("failover %+v: answered from %s after %d failovers: %+v", fo, res.Datacenter, res.Failovers, res.Nodes)
		}
		// DNS fails over the same way, once the agent's view has the new
		// query.
		name := fmt.Sprintf("web-%d.query.consul", i)
		wait.For(t, 10*time.Second, func() error {
			if got := dnsAddrs(d.query(t, "udp", name, dns.TypeA).Answer); strings.Join(got, ",") != "10.2.0.1" {
				return fmt.Errorf("%s = %v, want [10.2.0.1]", name, got)
			}
			return nil
		})
	}

	// WAN coordinates list both datacenters.
	r := httpString(t, dc1[0].agent, http.MethodGet, "/v1/coordinate/datacenters", "")
	if r.code != http.StatusOK || !strings.Contains(r.body, `"Datacenter":"dc2"`) {
		t.Fatalf("coordinate datacenters: %d %s", r.code, r.body)
	}
}

func TestCrossDCUnreachableIsAnErrorNotAHang(t *testing.T) {
	dc1, _ := startDC(t, "dc1", "dc1", 1, 0)
	dc2, _ := startDC(t, "dc2", "dc1", 1, 0)
	joinWAN(t, dc2[0], dc1[0])
	waitDatacenters(t, dc1[0], "dc1", "dc2")
	dc2[0].stop(t)
	start := time.Now()
	r := httpString(t, dc1[0].agent, http.MethodGet, "/v1/kv/k?dc=dc2", "")
	if r.code != http.StatusInternalServerError || time.Since(start) > 20*time.Second {
		t.Fatalf("?dc= to a stopped datacenter: %d %q after %s", r.code, r.body, time.Since(start))
	}
	t.Logf("unreachable datacenter answered %d %q in %s", r.code, strings.TrimSpace(r.body), time.Since(start))
}

// policyIn reports the policy of that ID in a server's replica.
func policyIn(t *testing.T, n *node, id string) *catalog.ACLPolicy {
	t.Helper()
	_, p, err := n.agent.Server().Store().ACLPolicyGet(nil, id, false)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReplicationOneWriter(t *testing.T) {
	dc1, _ := startDC(t, "dc1", "dc1", 3, 0)
	dc2, _ := startDC(t, "dc2", "dc1", 3, 0)
	ctx := context.Background()

	// Before the WAN join, a global write in the secondary fails cleanly
	// and is not applied there.
	entry := &api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "web", Protocol: "http"}
	if _, _, err := dc2[0].api.ConfigEntries().Set(entry, nil); err == nil {
		t.Fatal("a config entry was written in the secondary without the primary")
	}
	if _, e, _ := dc2[0].agent.Server().Store().ConfigEntry(nil, api.ServiceDefaults, "web"); e != nil {
		t.Fatalf("the secondary wrote global state itself: %+v", e)
	}

	joinWAN(t, dc2[0], dc1[0])
	waitDatacenters(t, dc2[1], "dc2", "dc1")

	// Written in the primary, replicated to every server of the secondary.
	pol := &catalog.ACLPolicy{ID: "11111111-2222-3333-4444-555555555555", Name: "ops", Rules: `key_prefix "" { policy = "read" }`}
	if _, err := dc1[0].agent.Server().Apply(ctx, catalog.CmdACLPolicySet, pol); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, func() error {
		for _, n := range dc2 {
			if p := policyIn(t, n, pol.ID); p == nil || p.Rules != pol.Rules {
				return fmt.Errorf("%s: policy %+v", n.cfg.NodeName, p)
			}
		}
		return nil
	})

	// Written through the secondary: forwarded to the primary, then
	// replicated back.
	if _, _, err := dc2[1].api.ConfigEntries().Set(entry, nil); err != nil {
		t.Fatalf("config entry through the secondary: %v", err)
	}
	// Committed by the primary's leader: dc1[0] (maybe a follower)
	// applies it a moment later.
	wait.For(t, 10*time.Second, func() error {
		if _, e, _ := dc1[0].agent.Server().Store().ConfigEntry(nil, api.ServiceDefaults, "web"); e == nil {
			return fmt.Errorf("the write through the secondary did not reach the primary")
		}
		return nil
	})
	// The server that took the write answers once its replica has it:
	// the writer reads back what it wrote.
	if e, _, err := dc2[1].api.ConfigEntries().Get(api.ServiceDefaults, "web", &api.QueryOptions{AllowStale: true}); err != nil || e == nil {
		t.Fatalf("read back in the secondary right after the write: %+v %v", e, err)
	}
	wait.For(t, 10*time.Second, func() error {
		if _, e, _ := dc2[0].agent.Server().Store().ConfigEntry(nil, api.ServiceDefaults, "web"); e == nil {
			return fmt.Errorf("config entry not replicated")
		}
		return nil
	})

	// Intentions through the secondary: a read-modify-write with the
	// primary's CAS index, twice (create, then change).
	for _, action := range []api.IntentionAction{api.IntentionActionAllow, api.IntentionActionDeny} {
		if _, err := dc2[2].api.Connect().IntentionUpsert(&api.Intention{SourceName: "web", DestinationName: "db", Action: action}, nil); err != nil {
			t.Fatalf("intention %s through the secondary: %v", action, err)
		}
		got, _, err := dc1[0].api.Connect().IntentionGetExact("web", "db", nil)
		if err != nil || got == nil || got.Action != action {
			t.Fatalf("intention in the primary: %+v %v", got, err)
		}
		got, _, err = dc2[2].api.Connect().IntentionGetExact("web", "db", &api.QueryOptions{AllowStale: true})
		if err != nil || got == nil || got.Action != action {
			t.Fatalf("intention read back in the secondary: %+v %v", got, err)
		}
	}

	// Replication survives a leader change in the secondary and one in
	// the primary (Consul's replication once stopped after a re-election).
	transferLeadership(t, dc2)
	transferLeadership(t, dc1)
	changed := time.Now()
	pol2 := &catalog.ACLPolicy{ID: "11111111-2222-3333-4444-666666666666", Name: "ops2", Rules: `node_prefix "" { policy = "read" }`}
	if _, err := dc1[0].agent.Server().Apply(ctx, catalog.CmdACLPolicySet, pol2); err != nil {
		t.Fatal(err)
	}
	if _, err := dc1[0].agent.Server().Apply(ctx, catalog.CmdACLPolicyDelete, &catalog.ACLDeleteRequest{ID: pol.ID}); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, func() error {
		for _, n := range dc2 {
			if p := policyIn(t, n, pol2.ID); p == nil {
				return fmt.Errorf("%s: new policy not replicated after the leader change", n.cfg.NodeName)
			}
			if p := policyIn(t, n, pol.ID); p != nil {
				return fmt.Errorf("%s: deleted policy still there", n.cfg.NodeName)
			}
		}
		return nil
	})
	t.Logf("replicated %s after both leader changes", time.Since(changed).Round(time.Millisecond))
	// Every server of dc2 answers with its leader's replication status.
	for _, n := range dc2 {
		st, err := n.agent.Server().ReplicationStatus(ctx)
		if err != nil || !st.Running || st.ReplicatedIndex == 0 || st.LastSuccess.IsZero() {
			t.Fatalf("%s: replication status %+v %v", n.cfg.NodeName, st, err)
		}
	}
}

// startACLDatacenters starts one server in dc1 (the primary, with the
// management token root) and one in dc2 (replicating with root), ACLs on,
// and WAN-joins them. Their API clients use root.
func startACLDatacenters(t *testing.T, root, defaultPolicy string, tokenReplication bool) (dc1, dc2 *node) {
	t.Helper()
	var nodes []*node
	for _, dc := range []string{"dc1", "dc2"} {
		c := agenttest.ClusterConfig(t, dc+"-s1", true, 1, "")
		c.Datacenter, c.PrimaryDatacenter = dc, "dc1"
		c.ACL.Enabled, c.ACL.DefaultPolicy, c.ACL.EnableTokenReplication = true, defaultPolicy, tokenReplication
		if dc == "dc1" {
			c.ACL.Tokens.InitialManagement = root
		} else {
			c.ACL.Tokens.Replication = root
		}
		a := agenttest.StartNoWait(t, c)
		ac, err := api.NewClient(&api.Config{Address: a.HTTPAddr(), Token: root})
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, &node{cfg: c, agent: a, api: ac})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err = a.WaitForLeader(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	dc1, dc2 = nodes[0], nodes[1]
	if err := dc1.api.Agent().Join(fmt.Sprintf("127.0.0.1:%d", dc2.cfg.Ports.SerfWAN), true); err != nil {
		t.Fatalf("WAN join: %v", err)
	}
	// dc2 answers with root once it knows it (replicated, or resolved in
	// dc1).
	wait.For(t, 20*time.Second, func() error {
		_, _, err := dc2.api.ACL().PolicyList(nil)
		return err
	})
	return dc1, dc2
}

func TestACLWritesInASecondaryGoToThePrimary(t *testing.T) {
	dc1, dc2 := startACLDatacenters(t, "11111111-2222-3333-4444-000000000001", "allow", true)
	st, _, err := dc2.api.ACL().Replication(nil)
	if err != nil || !st.Enabled || !st.Running || st.SourceDatacenter != "dc1" || st.ReplicationType != "tokens" || st.ReplicatedTokenIndex == 0 {
		t.Fatalf("dc2 replication status %+v %v", st, err)
	}
	if st, _, err := dc1.api.ACL().Replication(nil); err != nil || st.Enabled {
		t.Fatalf("dc1 replication status %+v %v", st, err)
	}

	// A policy created through dc2 is created in dc1 and read back in dc2.
	p, _, err := dc2.api.ACL().PolicyCreate(&api.ACLPolicy{Name: "from-dc2", Rules: `key_prefix "" { policy = "read" }`}, nil)
	if err != nil || p == nil || p.ID == "" {
		t.Fatalf("policy create in dc2: %+v %v", p, err)
	}
	if got, _, err := dc1.api.ACL().PolicyRead(p.ID, nil); err != nil || got == nil || got.Name != "from-dc2" {
		t.Fatalf("the policy is not in the primary: %+v %v", got, err)
	}
	// A global token too; a local one stays in dc2.
	global, _, err := dc2.api.ACL().TokenCreate(&api.ACLToken{Description: "global", Policies: []*api.ACLTokenPolicyLink{{ID: p.ID}}}, nil)
	if err != nil {
		t.Fatalf("global token in dc2: %v", err)
	}
	local, _, err := dc2.api.ACL().TokenCreate(&api.ACLToken{Description: "local", Local: true}, nil)
	if err != nil {
		t.Fatalf("local token in dc2: %v", err)
	}
	if tok, _, err := dc1.api.ACL().TokenRead(global.AccessorID, nil); err != nil || tok == nil {
		t.Fatalf("global token not in the primary: %v", err)
	}
	if _, _, err := dc1.api.ACL().TokenRead(local.AccessorID, nil); err == nil {
		t.Fatal("a local token of dc2 reached the primary")
	}
	// Replication does not delete dc2's local token.
	if _, _, err := dc1.api.ACL().PolicyCreate(&api.ACLPolicy{Name: "later"}, nil); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, func() error {
		list, _, err := dc2.api.ACL().PolicyList(nil)
		if err != nil {
			return err
		}
		for _, e := range list {
			if e.Name == "later" {
				return nil
			}
		}
		return fmt.Errorf("policy not replicated")
	})
	if tok, _, err := dc2.api.ACL().TokenRead(local.AccessorID, nil); err != nil || tok == nil {
		t.Fatalf("dc2's local token is gone: %v", err)
	}
}

// signIn has a datacenter's server sign a leaf for service web and returns
// it with that datacenter's active root.
func signIn(t *testing.T, n *node) (*x509.Certificate, *catalog.CARoot, string) {
	t.Helper()
	srv := n.agent.Server()
	_, roots, cfg, err := srv.Store().CARoots(nil)
	if err != nil || cfg == nil {
		t.Fatalf("roots: %v", err)
	}
	var active *catalog.CARoot
	for _, r := range roots {
		if r.Active {
			active = r
		}
	}
	id := connect.ServiceID(connect.TrustDomain(cfg.ClusterID), n.cfg.Datacenter, "web")
	csr, _, err := connect.NewLeafCSR(id, "ec", 256)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.SignLeaf(context.Background(), &server.SignLeafRequest{Service: "web", CSR: csr})
	if err != nil {
		t.Fatalf("sign a leaf in %s: %v", n.cfg.Datacenter, err)
	}
	leaf, err := connect.ParseCert(resp.Leaf.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	return leaf, active, cfg.ClusterID
}

// verifyWith checks that a leaf, shown with the intermediates of its
// datacenter's active root, chains to one of the primary's roots.
func verifyWith(leaf *x509.Certificate, primaryRoots []*catalog.CARoot, intermediates []string) error {
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range primaryRoots {
		c, err := connect.ParseCert(r.RootCert)
		if err != nil {
			return err
		}
		roots.AddCert(c)
	}
	for _, p := range intermediates {
		c, err := connect.ParseCert(p)
		if err != nil {
			return err
		}
		inters.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}

func TestConnectCAOfASecondaryIsAnIntermediateOfThePrimary(t *testing.T) {
	dc1, _ := startDC(t, "dc1", "dc1", 1, 0)
	dc2, _ := startDC(t, "dc2", "dc1", 1, 0)
	joinWAN(t, dc2[0], dc1[0])

	primaryRoots := func() ([]*catalog.CARoot, string) {
		_, roots, cfg, err := dc1[0].agent.Server().Store().CARoots(nil)
		if err != nil || cfg == nil {
			t.Fatalf("dc1 roots: %v", err)
		}
		for _, r := range roots {
			if r.Active {
				return roots, r.ID
			}
		}
		t.Fatal("dc1 has no active root")
		return nil, ""
	}
	waitSecondary := func(wantActive string) {
		t.Helper()
		wait.For(t, 20*time.Second, func() error {
			_, roots, _, err := dc2[0].agent.Server().Store().CARootsWithKeys(nil)
			if err != nil {
				return err
			}
			for _, r := range roots {
				if r.Active && r.ID == wantActive && r.PrivateKey != "" && len(r.IntermediateCerts) > 0 {
					return nil
				}
			}
			return fmt.Errorf("dc2 is not on dc1's active root %s yet", wantActive)
		})
	}
	check := func() {
		t.Helper()
		roots, active := primaryRoots()
		waitSecondary(active)
		leaf, dc2Active, clusterID := signIn(t, dc2[0])
		_, _, dc1Cluster := signIn(t, dc1[0])
		if clusterID != dc1Cluster {
			t.Fatalf("dc2's trust domain %s is not dc1's %s", clusterID, dc1Cluster)
		}
		if !strings.Contains(leaf.URIs[0].String(), "/dc/dc2/svc/web") {
			t.Fatalf("dc2 leaf URI %s", leaf.URIs[0])
		}
		if err := verifyWith(leaf, roots, dc2Active.IntermediateCerts); err != nil {
			t.Fatalf("dc2's leaf does not chain to dc1's roots: %v", err)
		}
		if err := verifyWith(leaf, roots, nil); err == nil {
			t.Fatal("dc2's leaf chains without its intermediate: not signed by the intermediate")
		}
	}
	check()

	// A CA configuration change through dc2 goes to dc1 and rotates its
	// root; dc2 follows with a new intermediate.
	_, before := primaryRoots()
	if _, err := dc2[0].api.Connect().CASetConfig(&api.CAConfig{Provider: "consul",
		Config: map[string]any{"PrivateKeyType": "rsa", "PrivateKeyBits": 2048}}, nil); err != nil {
		t.Fatalf("CA configuration through dc2: %v", err)
	}
	if _, after := primaryRoots(); after == before {
		t.Fatal("the primary's root did not rotate")
	}
	check()
}

// transferLeadership moves a datacenter's leadership to another server and
// waits for the new leader.
func transferLeadership(t *testing.T, servers []*node) {
	t.Helper()
	var leader *node
	for _, n := range servers {
		if n.agent.Server().IsLeader() {
			leader = n
		}
	}
	if leader == nil {
		t.Fatal("no leader")
	}
	if err := leader.agent.Server().Raft().LeadershipTransfer().Error(); err != nil {
		t.Fatalf("leadership transfer: %v", err)
	}
	wait.For(t, 10*time.Second, func() error {
		for _, n := range servers {
			if n != leader && n.agent.Server().IsLeader() {
				return nil
			}
		}
		return fmt.Errorf("no new leader after %s", leader.cfg.NodeName)
	})
}

// TestTokensResolveInThePrimaryWithoutTokenReplication: a secondary without
// token replication resolves the primary's tokens there.
func TestTokensResolveInThePrimaryWithoutTokenReplication(t *testing.T) {
	const root = "11111111-2222-3333-4444-000000000002"
	dc1, dc2 := startACLDatacenters(t, root, "deny", false)
	if _, _, err := dc2.agent.Server().Store().ACLTokenGet(nil, root, true); err != nil {
		t.Fatal(err)
	}
	if _, tok, _ := dc2.agent.Server().Store().ACLTokenGet(nil, root, true); tok != nil {
		t.Fatal("the management token was replicated without token replication")
	}
	// A token of dc1 with a read-only policy: it reads in dc2, not writes.
	p, _, err := dc1.api.ACL().PolicyCreate(&api.ACLPolicy{Name: "kv-read", Rules: `key_prefix "" { policy = "read" }`}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := dc1.api.ACL().TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{ID: p.ID}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	reader, err := api.NewClient(&api.Config{Address: dc2.agent.HTTPAddr(), Token: tok.SecretID})
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, func() error {
		_, _, err := reader.KV().Get("any", nil)
		return err
	})
	if _, err := reader.KV().Put(&api.KVPair{Key: "any", Value: []byte("x")}, nil); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("a read-only token of dc1 wrote in dc2: %v", err)
	}
}
