package agent_test

import (
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/serf/coordinate"

	"github.com/tribune-mesh/tribune/agent/agenttest"
	"github.com/tribune-mesh/tribune/test/wait"
)

// registerWeb registers node "ext1" with service "web" (port 80, tags
// v1+primary) and a passing service check, and node "ext2" with "web" (port
// 8080, tag v2) with a critical service check and a passing node check.
func registerWeb(t *testing.T, c *api.Client) {
	t.Helper()
	regs := []*api.CatalogRegistration{
		{
			Node: "ext1", Address: "10.0.0.1", NodeMeta: map[string]string{"rack": "r1"},
			Service: &api.AgentService{ID: "web1", Service: "web", Tags: []string{"v1", "primary"}, Port: 80,
				Meta: map[string]string{"version": "1"}},
			Checks: api.HealthChecks{
				{CheckID: "web1-alive", Name: "web1 alive", Status: api.HealthPassing, ServiceID: "web1"},
			},
		},
		{
			Node: "ext2", Address: "10.0.0.2",
			Service: &api.AgentService{ID: "web2", Service: "web", Tags: []string{"v2"}, Port: 8080},
			Checks: api.HealthChecks{
				{CheckID: "web2-alive", Name: "web2 alive", Status: api.HealthCritical, ServiceID: "web2", Output: "down"},
				{CheckID: "disk", Name: "disk", Status: api.HealthPassing},
			},
		},
		{
			Node: "ext2", Address: "10.0.0.2",
			Service: &api.AgentService{ID: "db1", Service: "db", Tags: []string{"pg"}, Port: 5432},
		},
	}
	for _, r := range regs {
		if _, err := c.Catalog().Register(r, nil); err != nil {
			t.Fatalf("register %s/%s: %v", r.Node, r.Service.ID, err)
		}
	}
}

func TestAPICatalog_RegisterReadDeregister(t *testing.T) {
	t.Parallel()
	_, c := startAPI(t)
	registerWeb(t, c)
	cat := c.Catalog()

	nodes, meta, err := cat.Nodes(nil)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]string{}
	for _, n := range nodes {
		names[n.Node] = n.Address
	}
	if names["ext1"] != "10.0.0.1" || names["ext2"] != "10.0.0.2" {
		t.Fatalf("nodes = %v, want ext1 and ext2 with their addresses", names)
	}
	if meta.LastIndex == 0 {
		t.Fatal("nodes LastIndex 0")
	}
	// The agent registers its own node asynchronously after the election.
	self := selfNode(t, c)
	wait.For(t, 10*time.Second, func() error {
		nodes, _, err := cat.Nodes(nil)
		if err != nil {
			return err
		}
		for _, n := range nodes {
			if n.Node == self {
				return nil
			}
		}
		return fmt.Errorf("agent's own node %s missing from nodes", self)
	})

	svcs, _, err := cat.Services(nil)
	if err != nil {
		t.Fatal(err)
	}
	webTags := append([]string(nil), svcs["web"]...)
	sort.Strings(webTags)
	if want := []string{"primary", "v1", "v2"}; !reflect.DeepEqual(webTags, want) {
		t.Fatalf("services[web] tags = %v, want union %v", svcs["web"], want)
	}
	if !reflect.DeepEqual(svcs["db"], []string{"pg"}) {
		t.Fatalf("services[db] = %v", svcs["db"])
	}

	web, _, err := cat.Service("web", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(web) != 2 {
		t.Fatalf("catalog service web = %d instances, want 2", len(web))
	}
	byID := map[string]*api.CatalogService{}
	for _, s := range web {
		byID[s.ServiceID] = s
	}
	w1 := byID["web1"]
	if w1 == nil || w1.Node != "ext1" || w1.Address != "10.0.0.1" || w1.ServicePort != 80 ||
		w1.ServiceName != "web" || w1.ServiceMeta["version"] != "1" || w1.NodeMeta["rack"] != "r1" ||
		w1.Datacenter != "dc1" {
		t.Fatalf("web1 = %+v", w1)
	}
	if byID["web2"] == nil || byID["web2"].ServicePort != 8080 {
		t.Fatalf("web2 = %+v", byID["web2"])
	}

	tagged, _, err := cat.Service("web", "v2", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(tagged) != 1 || tagged[0].ServiceID != "web2" {
		t.Fatalf("web tag v2 = %+v, want only web2", tagged)
	}
	multi, _, err := cat.ServiceMultipleTags("web", []string{"v1", "primary"}, nil)
	if err != nil || len(multi) != 1 || multi[0].ServiceID != "web1" {
		t.Fatalf("web tags v1+primary = %+v, %v; want only web1", multi, err)
	}
	none, _, err := cat.Service("nosuch", "", nil)
	if err != nil || len(none) != 0 {
		t.Fatalf("unknown service = %+v, %v; want empty", none, err)
	}

	node, _, err := cat.Node("ext2", nil)
	if err != nil {
		t.Fatal(err)
	}
	if node == nil || node.Node.Node != "ext2" || node.Node.Address != "10.0.0.2" {
		t.Fatalf("catalog node ext2 = %+v", node)
	}
	if len(node.Services) != 2 || node.Services["web2"] == nil || node.Services["db1"] == nil ||
		node.Services["db1"].Port != 5432 {
		t.Fatalf("node ext2 services = %+v, want web2 and db1", node.Services)
	}
	if n, _, err := cat.Node("nosuch", nil); err != nil || n != nil {
		t.Fatalf("unknown node = %+v, %v; want nil", n, err)
	}

	list, _, err := cat.NodeServiceList("ext2", nil)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range list.Services {
		ids = append(ids, s.ID)
	}
	sort.Strings(ids)
	if list.Node.Node != "ext2" || !reflect.DeepEqual(ids, []string{"db1", "web2"}) {
		t.Fatalf("node service list = %s %v", list.Node.Node, ids)
	}

	dcs, err := cat.Datacenters()
	if err != nil || !reflect.DeepEqual(dcs, []string{"dc1"}) {
		t.Fatalf("datacenters = %v, %v", dcs, err)
	}

	// Deregister one service: its checks go with it, the node stays.
	if _, err := cat.Deregister(&api.CatalogDeregistration{Node: "ext2", ServiceID: "web2"}, nil); err != nil {
		t.Fatal(err)
	}
	web, _, err = cat.Service("web", "", nil)
	if err != nil || len(web) != 1 || web[0].ServiceID != "web1" {
		t.Fatalf("web after deregistering web2 = %+v, %v", web, err)
	}
	checks, _, err := c.Health().Node("ext2", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range checks {
		if ch.CheckID == "web2-alive" {
			t.Fatal("web2's check survived its service's deregistration")
		}
	}
	if len(checks) != 1 || checks[0].CheckID != "disk" {
		t.Fatalf("ext2 checks = %+v, want only disk", checks)
	}

	// Deregister the node: services and checks go.
	if _, err := cat.Deregister(&api.CatalogDeregistration{Node: "ext2"}, nil); err != nil {
		t.Fatal(err)
	}
	if n, _, err := cat.Node("ext2", nil); err != nil || n != nil {
		t.Fatalf("ext2 after node deregistration = %+v, %v", n, err)
	}
	svcs, _, err = cat.Services(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := svcs["db"]; ok {
		t.Fatalf("db still listed after its node left: %v", svcs)
	}
	if checks, _, _ := c.Health().Node("ext2", nil); len(checks) != 0 {
		t.Fatalf("ext2 checks after node deregistration = %+v", checks)
	}
}

// selfNode returns the agent's own node name.
func selfNode(t *testing.T, c *api.Client) string {
	t.Helper()
	self, err := c.Agent().Self()
	if err != nil {
		t.Fatal(err)
	}
	name, _ := self["Config"]["NodeName"].(string)
	if name == "" {
		t.Fatalf("agent self has no Config.NodeName: %v", self["Config"])
	}
	return name
}

func TestAPIHealth_Reads(t *testing.T) {
	t.Parallel()
	a, c := startAPI(t)
	registerWeb(t, c)
	h := c.Health()

	nodeChecks, _, err := h.Node("ext2", nil)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, ch := range nodeChecks {
		got[ch.CheckID] = ch.Status
	}
	if want := map[string]string{"web2-alive": "critical", "disk": "passing"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("health node ext2 = %v, want %v", got, want)
	}

	svcChecks, _, err := h.Checks("web", nil)
	if err != nil {
		t.Fatal(err)
	}
	got = map[string]string{}
	for _, ch := range svcChecks {
		got[ch.CheckID] = ch.Status
		if ch.ServiceName != "web" {
			t.Fatalf("check %s ServiceName %q", ch.CheckID, ch.ServiceName)
		}
	}
	if want := map[string]string{"web2-alive": "critical", "web1-alive": "passing"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("health checks web = %v, want %v", got, want)
	}

	all, _, err := h.Service("web", "", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 {
		t.Fatalf("health service web = %d, want 2", len(all))
	}
	for _, e := range all {
		ids := map[string]bool{}
		for _, ch := range e.Checks {
			ids[ch.CheckID] = true
		}
		switch e.Service.ID {
		case "web1":
			if !ids["web1-alive"] || len(ids) != 1 {
				t.Fatalf("web1 checks = %v", ids)
			}
			if e.Checks.AggregatedStatus() != api.HealthPassing {
				t.Fatalf("web1 aggregated %s", e.Checks.AggregatedStatus())
			}
		case "web2":
			// The node-level check applies to the instance too.
			if !ids["web2-alive"] || !ids["disk"] || len(ids) != 2 {
				t.Fatalf("web2 checks = %v, want web2-alive and disk", ids)
			}
		default:
			t.Fatalf("unexpected instance %s", e.Service.ID)
		}
		if e.Node == nil || e.Node.Address == "" {
			t.Fatalf("instance %s has no node", e.Service.ID)
		}
	}

	passing, _, err := h.Service("web", "", true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(passing) != 1 || passing[0].Service.ID != "web1" {
		t.Fatalf("passing web = %v, want only web1", serviceIDs(passing))
	}
	tagged, _, err := h.Service("web", "v2", false, nil)
	if err != nil || len(tagged) != 1 || tagged[0].Service.ID != "web2" {
		t.Fatalf("web tag v2 = %v, %v", serviceIDs(tagged), err)
	}
	if none, _, err := h.Service("web", "v2", true, nil); err != nil || len(none) != 0 {
		t.Fatalf("passing web tag v2 = %v, %v; want none", serviceIDs(none), err)
	}

	crit, _, err := h.State(api.HealthCritical, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(crit) != 1 || crit[0].CheckID != "web2-alive" || crit[0].Output != "down" {
		t.Fatalf("state critical = %+v", crit)
	}
	// serfHealth on the agent's own node is added asynchronously by the
	// leader.
	wait.For(t, 10*time.Second, func() error {
		anyState, _, err := h.State(api.HealthAny, nil)
		if err != nil {
			return err
		}
		ids := map[string]bool{}
		for _, ch := range anyState {
			ids[ch.CheckID] = true
		}
		for _, id := range []string{"web1-alive", "web2-alive", "disk", "serfHealth"} {
			if !ids[id] {
				return fmt.Errorf("state any lacks %s: %v", id, ids)
			}
		}
		return nil
	})
	if r := httpString(t, a, "GET", "/v1/health/state/bogus", ""); r.code != http.StatusBadRequest {
		t.Fatalf("state bogus = %d, want 400", r.code)
	}
}

func serviceIDs(es []*api.ServiceEntry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Service.ID)
	}
	return out
}

func TestAPIHealth_Filter(t *testing.T) {
	t.Parallel()
	a, c := startAPI(t)
	registerWeb(t, c)
	h := c.Health()

	port80, _, err := h.Service("web", "", false, &api.QueryOptions{Filter: "Service.Port == 80"})
	if err != nil {
		t.Fatal(err)
	}
	if len(port80) != 1 || port80[0].Service.ID != "web1" {
		t.Fatalf("filter Service.Port == 80 = %v", serviceIDs(port80))
	}
	nodeFilter, _, err := h.Service("web", "", false, &api.QueryOptions{Filter: `Node.Node == "ext2"`})
	if err != nil || len(nodeFilter) != 1 || nodeFilter[0].Service.ID != "web2" {
		t.Fatalf("filter Node.Node == ext2 = %v, %v", serviceIDs(nodeFilter), err)
	}

	checks, _, err := h.Checks("web", &api.QueryOptions{Filter: `Status == "passing"`})
	if err != nil {
		t.Fatal(err)
	}
	if len(checks) != 1 || checks[0].CheckID != "web1-alive" {
		t.Fatalf(`checks filter Status == "passing" = %+v`, checks)
	}
	state, _, err := h.State(api.HealthAny, &api.QueryOptions{Filter: `Status == "critical"`})
	if err != nil || len(state) != 1 || state[0].CheckID != "web2-alive" {
		t.Fatalf("state any filtered critical = %+v, %v", state, err)
	}

	cs, _, err := c.Catalog().Service("web", "", &api.QueryOptions{Filter: "ServicePort == 8080"})
	if err != nil || len(cs) != 1 || cs[0].ServiceID != "web2" {
		t.Fatalf("catalog service filter ServicePort == 8080 = %+v, %v", cs, err)
	}
	nodes, _, err := c.Catalog().Nodes(&api.QueryOptions{Filter: `Meta.rack == "r1"`})
	if err != nil || len(nodes) != 1 || nodes[0].Node != "ext1" {
		t.Fatalf("catalog nodes filter Meta.rack = %+v, %v", nodes, err)
	}

	for _, path := range []string{
		"/v1/health/service/web?filter=" + url.QueryEscape("Service.Port =="),
		"/v1/health/checks/web?filter=" + url.QueryEscape("NoSuchField == 1"),
		"/v1/catalog/nodes?filter=" + url.QueryEscape("((("),
	} {
		r := httpString(t, a, "GET", path, "")
		if r.code != http.StatusBadRequest || strings.TrimSpace(r.body) == "" {
			t.Fatalf("bad filter %s = %d %q, want 400 with a message", path, r.code, r.body)
		}
	}
	if _, _, err := h.Service("web", "", false, &api.QueryOptions{Filter: "Service.Port =="}); err == nil ||
		!strings.Contains(err.Error(), "400") {
		t.Fatalf("client with a bad filter: %v, want a 400 error", err)
	}
}

func TestAPIHealth_BlockingOnCheck(t *testing.T) {
	t.Parallel()
	_, c := startAPI(t)
	registerWeb(t, c)
	h := c.Health()
	_, meta, err := h.Service("web", "", true, nil)
	if err != nil {
		t.Fatal(err)
	}
	idx := meta.LastIndex

	// A write elsewhere (KV, another service) must not wake the query.
	ch := goBlock(func() ([]*api.ServiceEntry, *api.QueryMeta, error) {
		return h.Service("web", "", true, &api.QueryOptions{WaitIndex: idx, WaitTime: 600 * time.Millisecond})
	})
	time.Sleep(50 * time.Millisecond)
	if _, err := c.KV().Put(&api.KVPair{Key: "noise", Value: []byte("x")}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Catalog().Register(&api.CatalogRegistration{Node: "ext3", Address: "10.0.0.3",
		Service: &api.AgentService{ID: "cache", Service: "cache"}}, nil); err != nil {
		t.Fatal(err)
	}
	r := recvBlock(t, ch, 5*time.Second)
	if r.elapsed < 550*time.Millisecond {
		t.Fatalf("unrelated writes woke health/service/web after %v", r.elapsed)
	}
	if r.meta.LastIndex != idx {
		t.Fatalf("timed-out LastIndex %d, want %d", r.meta.LastIndex, idx)
	}

	// Turning web2's check passing wakes it, and web2 now passes.
	ch = goBlock(func() ([]*api.ServiceEntry, *api.QueryMeta, error) {
		return h.Service("web", "", true, &api.QueryOptions{WaitIndex: idx, WaitTime: 10 * time.Second})
	})
	time.Sleep(100 * time.Millisecond)
	writeAt := time.Now()
	if _, err := c.Catalog().Register(&api.CatalogRegistration{Node: "ext2", Address: "10.0.0.2",
		Check: &api.AgentCheck{CheckID: "web2-alive", Name: "web2 alive", Status: api.HealthPassing, ServiceID: "web2"}}, nil); err != nil {
		t.Fatal(err)
	}
	r = recvBlock(t, ch, 5*time.Second)
	if lag := time.Since(writeAt); lag > 2*time.Second {
		t.Fatalf("woke %v after the check change", lag)
	}
	if r.meta.LastIndex <= idx {
		t.Fatalf("LastIndex %d, want > %d", r.meta.LastIndex, idx)
	}
	if ids := serviceIDs(r.val); len(ids) != 2 {
		t.Fatalf("passing web after the check passed = %v, want web1 and web2", ids)
	}
}

// The agent's node carries its tagged addresses and the meta every agent
// adds (network segment, version) beside node_meta, and ?node-meta= filters
// the catalog and health reads the official client sends it on.
func TestAPICatalog_NodeMetaAndTaggedAddresses(t *testing.T) {
	t.Parallel()
	cfg := agenttest.Config(t)
	cfg.NodeMeta = map[string]string{"somekey": "somevalue"}
	a := agenttest.Start(t, cfg)
	c, err := api.NewClient(&api.Config{Address: a.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{Name: "web", Check: &api.AgentServiceCheck{TTL: "15s"}}); err != nil {
		t.Fatal(err)
	}
	match := &api.QueryOptions{NodeMeta: map[string]string{"somekey": "somevalue"}}
	nope := &api.QueryOptions{NodeMeta: map[string]string{"nope": "nope"}}
	wait.For(t, 10*time.Second, func() error {
		nodes, _, err := c.Catalog().Nodes(match)
		if err != nil {
			return err
		}
		if len(nodes) != 1 {
			return fmt.Errorf("nodes with somekey=somevalue: %+v", nodes)
		}
		n := nodes[0]
		for _, k := range []string{"lan", "lan_ipv4", "wan", "wan_ipv4"} {
			if n.TaggedAddresses[k] != "127.0.0.1" {
				return fmt.Errorf("tagged addresses %v lack %s", n.TaggedAddresses, k)
			}
		}
		if v, ok := n.Meta["consul-network-segment"]; !ok || v != "" || n.Meta["consul-version"] == "" || n.Meta["somekey"] != "somevalue" {
			return fmt.Errorf("node meta %v", n.Meta)
		}
		return nil
	})
	if nodes, _, err := c.Catalog().Nodes(nope); err != nil || len(nodes) != 0 {
		t.Fatalf("nodes with nope=nope: %+v %v", nodes, err)
	}
	if svcs, _, err := c.Catalog().Services(match); err != nil || len(svcs) != 2 { // web and consul
		t.Fatalf("services on matching nodes: %+v %v", svcs, err)
	}
	if svcs, _, err := c.Catalog().Services(nope); err != nil || len(svcs) != 0 {
		t.Fatalf("services on nope=nope nodes: %+v %v", svcs, err)
	}
	if s, _, err := c.Catalog().Service("web", "", nope); err != nil || len(s) != 0 {
		t.Fatalf("web on nope=nope nodes: %+v %v", s, err)
	}
	if s, _, err := c.Health().Service("web", "", false, match); err != nil || len(s) != 1 {
		t.Fatalf("web health on matching nodes: %+v %v", s, err)
	}
	if cs, _, err := c.Health().Checks("web", nope); err != nil || len(cs) != 0 {
		t.Fatalf("web checks on nope=nope nodes: %+v %v", cs, err)
	}
	if cs, _, err := c.Health().State(api.HealthAny, match); err != nil || len(cs) != 2 { // serfHealth and web's
		t.Fatalf("checks on matching nodes: %+v %v", cs, err)
	}
	node, _, err := c.Catalog().Node(selfNode(t, c), &api.QueryOptions{Filter: `Service == "web"`})
	if err != nil || node == nil || len(node.Services) != 1 || node.Services["web"] == nil {
		t.Fatalf("catalog node filtered to web: %+v %v", node, err)
	}
	res := httpString(t, a, "GET", "/v1/catalog/nodes?node-meta=:x", "")
	if res.code != 400 {
		t.Fatalf("node-meta without a key: %d %s", res.code, res.body)
	}
}

// Answers the official client's own tests check word for word: an unknown
// ?dc= on /v1/status, leader transfer and peer removal on a single server,
// and ?filter= on /v1/catalog/services selecting instances.
func TestAPI_StatusOperatorAndServicesFilter(t *testing.T) {
	t.Parallel()
	_, c := startAPI(t)
	wrong := &api.QueryOptions{Datacenter: "wrong_dc1"}
	if _, err := c.Status().LeaderWithQueryOptions(wrong); err == nil || !strings.Contains(err.Error(), "No path to datacenter") {
		t.Fatalf("leader of a wrong dc: %v", err)
	}
	if _, err := c.Status().PeersWithQueryOptions(wrong); err == nil || !strings.Contains(err.Error(), "No path to datacenter") {
		t.Fatalf("peers of a wrong dc: %v", err)
	}
	tr, err := c.Operator().RaftLeaderTransfer("", nil)
	if err == nil || !strings.Contains(err.Error(), "cannot find peer") || tr != nil {
		t.Fatalf("leader transfer on a single server: %+v %v", tr, err)
	}
	err = c.Operator().RaftRemovePeerByAddress("nope", nil)
	if err == nil || !strings.Contains(err.Error(), `address "nope" was not found in the Raft configuration`) {
		t.Fatalf("remove unknown peer: %v", err)
	}

	for _, reg := range []*api.AgentServiceRegistration{
		{ID: "foo-1", Name: "foo", Tags: []string{"b"}},
		{ID: "bar-1", Name: "bar", Tags: []string{"a", "b"}},
		{ID: "bar-2", Name: "bar", Tags: []string{"c"}},
	} {
		if err := c.Agent().ServiceRegister(reg); err != nil {
			t.Fatal(err)
		}
	}
	svcs, meta, err := c.Catalog().Services(&api.QueryOptions{Filter: "b in ServiceTags and a in ServiceTags"})
	if err != nil {
		t.Fatal(err)
	}
	if len(svcs) != 1 || !reflect.DeepEqual(svcs["bar"], []string{"a", "b"}) || meta.LastIndex == 0 {
		t.Fatalf("filtered services = %v (index %d)", svcs, meta.LastIndex)
	}
	if _, _, err := c.Catalog().Services(&api.QueryOptions{Filter: "ServiceTags =="}); err == nil ||
		!strings.Contains(err.Error(), "400") {
		t.Fatalf("bad filter: %v", err)
	}
}

// Autopilot configuration is stored through Raft: GET shows the server's
// defaults until a PUT, ?cas= compares ModifyIndex; autopilot state lists
// this server by its ID.
func TestAPIOperator_AutopilotConfigurationAndState(t *testing.T) {
	t.Parallel()
	a, c := startAPI(t)
	op := c.Operator()
	conf, err := op.AutopilotGetConfiguration(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !conf.CleanupDeadServers || conf.ServerStabilizationTime == nil || conf.ServerStabilizationTime.Duration() <= 0 {
		t.Fatalf("default configuration %+v", conf)
	}
	if ok, err := op.AutopilotCASConfiguration(&api.AutopilotConfiguration{ModifyIndex: conf.ModifyIndex - 1}, nil); err != nil || ok {
		t.Fatalf("CAS with a stale index = %v, %v", ok, err)
	}
	if ok, err := op.AutopilotCASConfiguration(&api.AutopilotConfiguration{CleanupDeadServers: false,
		ModifyIndex: conf.ModifyIndex}, nil); err != nil || !ok {
		t.Fatalf("CAS with the current index = %v, %v", ok, err)
	}
	conf2, err := op.AutopilotGetConfiguration(nil)
	if err != nil || conf2.CleanupDeadServers || conf2.ModifyIndex == 0 {
		t.Fatalf("after CAS: %+v %v", conf2, err)
	}
	if ok, err := op.AutopilotCASConfiguration(&api.AutopilotConfiguration{CleanupDeadServers: true,
		ModifyIndex: conf.ModifyIndex}, nil); err != nil || ok {
		t.Fatalf("second CAS with the old index = %v, %v", ok, err)
	}
	if err := op.AutopilotSetConfiguration(&api.AutopilotConfiguration{CleanupDeadServers: true,
		LastContactThreshold: api.NewReadableDuration(time.Second)}, nil); err != nil {
		t.Fatal(err)
	}
	conf3, err := op.AutopilotGetConfiguration(nil)
	if err != nil || !conf3.CleanupDeadServers || conf3.LastContactThreshold.Duration() != time.Second {
		t.Fatalf("after set: %+v %v", conf3, err)
	}
	res := httpString(t, a, "PUT", "/v1/operator/autopilot/configuration", `{"LastContactThreshold":"soon"}`)
	if res.code != 400 {
		t.Fatalf("bad duration: %d %s", res.code, res.body)
	}

	self, err := c.Agent().Self()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := self["Config"]["NodeID"].(string)
	name, _ := self["Config"]["NodeName"].(string)
	wait.For(t, 10*time.Second, func() error {
		st, err := op.AutopilotState(nil)
		if err != nil {
			return err
		}
		srv, ok := st.Servers[id]
		if !ok || !srv.Healthy || srv.Name != name || st.Leader != id || srv.Status != api.AutopilotServerLeader {
			return fmt.Errorf("autopilot state %+v", st)
		}
		return nil
	})
}

// A check registered through the catalog without a type gets the type of
// the probe its definition names, and a session answers its node checks in
// NodeChecks only (the deprecated Checks list is an input).
func TestAPICatalog_CheckTypeAndSessionChecks(t *testing.T) {
	t.Parallel()
	_, c := startAPI(t)
	_, err := c.Catalog().Register(&api.CatalogRegistration{Node: "foo", Address: "2.2.2.2", Checks: api.HealthChecks{
		{CheckID: "tcp", Status: api.HealthCritical, Definition: api.HealthCheckDefinition{TCP: "1.1.1.1:80"}},
		{CheckID: "udp", Status: api.HealthPassing, Type: "udp", Definition: api.HealthCheckDefinition{UDP: "1.1.1.1:53"}},
		{CheckID: "alive", Status: api.HealthPassing},
		{Name: "named-only", Status: api.HealthPassing},
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	checks, _, err := c.Health().Node("foo", nil)
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]string{}
	for _, ch := range checks {
		types[ch.CheckID] = ch.Type
	}
	if !reflect.DeepEqual(types, map[string]string{"tcp": "tcp", "udp": "udp", "alive": "", "named-only": ""}) {
		t.Fatalf("check types = %v", types)
	}
	id, _, err := c.Session().Create(&api.SessionEntry{Node: "foo", NodeChecks: []string{"alive"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	info, _, err := c.Session().Info(id, nil)
	if err != nil || info == nil || info.Checks != nil || !reflect.DeepEqual(info.NodeChecks, []string{"alive"}) {
		t.Fatalf("session = %+v, %v", info, err)
	}
}

// PUT /v1/coordinate/update sets a node's coordinate, which
// /v1/coordinate/node/<node> then answers; a coordinate of the wrong
// dimensionality is refused.
func TestAPICoordinate_Update(t *testing.T) {
	t.Parallel()
	a, c := startAPI(t)
	if _, err := c.Catalog().Register(&api.CatalogRegistration{Node: "foo", Address: "1.1.1.1"}, nil); err != nil {
		t.Fatal(err)
	}
	coord := coordinate.NewCoordinate(coordinate.DefaultConfig())
	coord.Height = 0.5
	entry := &api.CoordinateEntry{Node: "foo", Coord: coord}
	if _, err := c.Coordinate().Update(entry, nil); err != nil {
		t.Fatal(err)
	}
	got, _, err := c.Coordinate().Node("foo", nil)
	if err != nil || len(got) != 1 || !reflect.DeepEqual(got[0].Coord, coord) {
		t.Fatalf("coordinate of foo = %+v, %v", got, err)
	}
	res := httpString(t, a, "PUT", "/v1/coordinate/update", `{"Node":"foo","Coord":{"Vec":[1,2],"Error":1,"Height":0.1}}`)
	if res.code != 400 {
		t.Fatalf("two-dimensional coordinate: %d %s", res.code, res.body)
	}
}

// A snapshot save answers the metadata the client checks (index, known
// leader); an unknown ?dc= is refused.
func TestAPISnapshot_SaveMeta(t *testing.T) {
	t.Parallel()
	_, c := startAPI(t)
	if _, err := c.KV().Put(&api.KVPair{Key: "k", Value: []byte("v")}, nil); err != nil {
		t.Fatal(err)
	}
	snap, qm, err := c.Snapshot().Save(nil)
	if err != nil {
		t.Fatal(err)
	}
	snap.Close()
	if qm.LastIndex == 0 || !qm.KnownLeader || qm.RequestTime == 0 {
		t.Fatalf("snapshot meta %+v", qm)
	}
	if _, _, err := c.Snapshot().Save(&api.QueryOptions{Datacenter: "nope"}); err == nil ||
		!strings.Contains(err.Error(), "No path to datacenter") {
		t.Fatalf("snapshot of an unknown dc: %v", err)
	}
}

// /v1/operator/usage counts services and instances as Consul does.
func TestAPIOperator_Usage(t *testing.T) {
	t.Parallel()
	_, c := startAPI(t)
	reg := func(svc *api.AgentService) {
		t.Helper()
		if _, err := c.Catalog().Register(&api.CatalogRegistration{Node: "foobar", Address: "192.168.10.10", Service: svc}, nil); err != nil {
			t.Fatal(err)
		}
	}
	reg(&api.AgentService{ID: "redis1", Service: "redis", Port: 8000})
	reg(&api.AgentService{ID: "redis2", Service: "redis", Port: 8001})
	reg(&api.AgentService{Kind: api.ServiceKindConnectProxy, ID: "proxy1", Service: "proxy", Port: 9000,
		Proxy: &api.AgentServiceConnectProxyConfig{DestinationServiceName: "foo"}})
	reg(&api.AgentService{ID: "web-native", Service: "web", Port: 8002, Connect: &api.AgentServiceConnect{Native: true}})
	usage, _, err := c.Operator().Usage(nil)
	if err != nil {
		t.Fatal(err)
	}
	u, ok := usage.Usage["dc1"]
	if !ok || u.Services != 4 || u.ServiceInstances != 5 || u.BillableServiceInstances != 3 || u.Nodes != 2 ||
		u.ConnectServiceInstances["connect-proxy"] != 1 || u.ConnectServiceInstances["connect-native"] != 1 {
		t.Fatalf("usage = %+v", usage.Usage)
	}
}

// ?cached reads answer from a view the agent keeps fresh with blocking
// queries: the first is a MISS, the next a HIT of age 0, and a change in
// the catalog reaches the view.
func TestAPICatalog_CachedReads(t *testing.T) {
	t.Parallel()
	_, c := startAPI(t)
	q := &api.QueryOptions{UseCache: true}
	first, meta, err := c.Catalog().Service("consul", "", q)
	if err != nil || len(first) != 1 || meta.CacheHit || meta.LastIndex == 0 {
		t.Fatalf("first cached read: %+v %+v %v", first, meta, err)
	}
	_, meta, err = c.Catalog().Service("consul", "", q)
	if err != nil || !meta.CacheHit || meta.CacheAge != 0 {
		t.Fatalf("second cached read: %+v %v", meta, err)
	}
	if _, err := c.Catalog().Register(&api.CatalogRegistration{Node: "n2", Address: "10.0.0.2",
		Service: &api.AgentService{ID: "consul", Service: "consul", Port: 8300}}, nil); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, func() error {
		svcs, meta, err := c.Catalog().Service("consul", "", q)
		if err != nil {
			return err
		}
		if !meta.CacheHit || len(svcs) != 2 {
			return fmt.Errorf("cached read after the change: %d instances, hit %v", len(svcs), meta.CacheHit)
		}
		return nil
	})
	if hs, meta, err := c.Health().Service("consul", "", false, q); err != nil || len(hs) != 2 || meta.CacheHit {
		t.Fatalf("first cached health read: %d %+v %v", len(hs), meta, err)
	}
}
