package agent_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/miekg/dns"

	"github.com/tribune-mesh/tribune/agent/agenttest"
	"github.com/tribune-mesh/tribune/test/wait"
)

// registerInstance registers node with address addr and one instance of service
// (ID node+"-"+service) carrying tags, whose check has status.
func registerInstance(t *testing.T, c *api.Client, node, addr, service string, tags []string, status string) {
	t.Helper()
	id := node + "-" + service
	_, err := c.Catalog().Register(&api.CatalogRegistration{
		Node: node, Address: addr,
		NodeMeta: map[string]string{"rack": node},
		Service:  &api.AgentService{ID: id, Service: service, Tags: tags, Port: 8080, Meta: map[string]string{"node": node}},
		Checks: api.HealthChecks{
			{Node: node, CheckID: "chk-" + id, Name: "check", Status: status, ServiceID: id},
		},
	}, nil)
	if err != nil {
		t.Fatalf("register %s on %s: %v", service, node, err)
	}
}

// executeNodes runs a prepared query and returns the nodes it answered,
// sorted.
func executeNodes(t *testing.T, c *api.Client, idOrName string) []string {
	t.Helper()
	resp, _, err := c.PreparedQuery().Execute(idOrName, nil)
	if err != nil {
		t.Fatalf("execute %q: %v", idOrName, err)
	}
	return entryNodes(resp.Nodes)
}

func entryNodes(entries []api.ServiceEntry) []string {
	out := []string{}
	for _, e := range entries {
		out = append(out, e.Node.Node)
	}
	sort.Strings(out)
	return out
}

func createQuery(t *testing.T, c *api.Client, def *api.PreparedQueryDefinition) string {
	t.Helper()
	id, _, err := c.PreparedQuery().Create(def, nil)
	if err != nil {
		t.Fatalf("create query %q: %v", def.Name, err)
	}
	return id
}

func TestPreparedQuery_CRUD(t *testing.T) {
	a, c := startAPI(t)
	pq := c.PreparedQuery()

	list, meta, err := pq.List(nil)
	if err != nil || len(list) != 0 {
		t.Fatalf("empty list = %v, %v", list, err)
	}
	// A blocking list wakes when a query is created.
	blocked := goBlock(func() ([]*api.PreparedQueryDefinition, *api.QueryMeta, error) {
		return pq.List(&api.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 10 * time.Second})
	})

	def := &api.PreparedQueryDefinition{
		Name: "my-query",
		Service: api.ServiceQuery{
			Service:     "redis",
			Failover:    api.QueryFailoverOptions{NearestN: 3, Datacenters: []string{"dc1", "dc2"}},
			OnlyPassing: true,
			Tags:        []string{"primary", "!experimental"},
			NodeMeta:    map[string]string{"instance_type": "m3.large"},
			ServiceMeta: map[string]string{"environment": "production"},
		},
		DNS: api.QueryDNSOptions{TTL: "10s"},
	}
	id := createQuery(t, c, def)
	if len(id) != 36 {
		t.Fatalf("created ID %q is not a UUID", id)
	}
	if r := recvBlock(t, blocked, 15*time.Second); len(r.val) != 1 || r.meta.LastIndex <= meta.LastIndex {
		t.Fatalf("blocking list woke with %d queries at index %d (was %d)", len(r.val), r.meta.LastIndex, meta.LastIndex)
	}

	got, _, err := pq.Get(id, nil)
	if err != nil || len(got) != 1 {
		t.Fatalf("get = %v, %v", got, err)
	}
	g := got[0]
	def.ID = id
	if g.ID != id || g.Name != "my-query" || g.Service.Service != "redis" || g.DNS.TTL != "10s" || !g.Service.OnlyPassing ||
		g.Service.Failover.NearestN != 3 || strings.Join(g.Service.Failover.Datacenters, ",") != "dc1,dc2" ||
		strings.Join(g.Service.Tags, ",") != "primary,!experimental" || g.Service.NodeMeta["instance_type"] != "m3.large" ||
		g.Service.ServiceMeta["environment"] != "production" {
		t.Fatalf("read back %+v", g)
	}
	// Raw JSON carries the indexes, as Consul's does.
	raw := httpString(t, a, "GET", "/v1/query/"+id, "")
	var rawList []map[string]any
	if err := json.Unmarshal([]byte(raw.body), &rawList); err != nil || len(rawList) != 1 || rawList[0]["CreateIndex"] == nil || rawList[0]["ModifyIndex"] == nil {
		t.Fatalf("raw get: %d %s (%v)", raw.code, raw.body, err)
	}

	def.Name = "renamed"
	def.Service.Service = "memcached"
	if _, err := pq.Update(def, nil); err != nil {
		t.Fatalf("update: %v", err)
	}
	list, _, err = pq.List(nil)
	if err != nil || len(list) != 1 || list[0].Name != "renamed" || list[0].Service.Service != "memcached" {
		t.Fatalf("list after update = %+v, %v", list, err)
	}

	if _, err := pq.Delete(id, nil); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, _, err := pq.Get(id, nil); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("get after delete: %v, want a 404", err)
	}
	if r := httpString(t, a, "DELETE", "/v1/query/"+id, ""); r.code != http.StatusNotFound {
		t.Fatalf("delete of a missing query: %d %s", r.code, r.body)
	}
	if r := httpString(t, a, "PUT", "/v1/query/"+id, `{"Service":{"Service":"web"}}`); r.code != http.StatusNotFound {
		t.Fatalf("update of a missing query: %d %s", r.code, r.body)
	}
	if r := httpString(t, a, "GET", "/v1/query/"+id+"/execute", ""); r.code != http.StatusNotFound {
		t.Fatalf("execute of a missing query: %d %s", r.code, r.body)
	}
}

func TestPreparedQuery_Invalid(t *testing.T) {
	a, c := startAPI(t)
	createQuery(t, c, &api.PreparedQueryDefinition{Name: "taken", Service: api.ServiceQuery{Service: "web"}})
	for _, tc := range []struct{ name, body, want string }{
		{"no service", `{"Name":"x"}`, "Must provide a Service name to query"},
		{"bad regexp", `{"Name":"x","Template":{"Type":"name_prefix_match","Regexp":"(["},"Service":{"Service":"web"}}`, "Bad Regexp"},
		{"bad template type", `{"Name":"x","Template":{"Type":"glob"},"Service":{"Service":"web"}}`, "Bad Template.Type"},
		{"bad interpolation", `{"Name":"x","Template":{"Type":"name_prefix_match"},"Service":{"Service":"${nope}"}}`, "unknown variable"},
		{"duplicate name", `{"Name":"taken","Service":{"Service":"api"}}`, "aliases an existing query name"},
		{"bad TTL", `{"Name":"x","Service":{"Service":"web"},"DNS":{"TTL":"soon"}}`, "Bad DNS TTL"},
		{"missing session", `{"Name":"x","Session":"7a2a5a5c-1111-2222-3333-444455556666","Service":{"Service":"web"}}`, "invalid session"},
		{"not JSON", `{`, "Request decode failed"},
	} {
		r := httpString(t, a, "POST", "/v1/query", tc.body)
		if r.code != http.StatusBadRequest || !strings.Contains(r.body, tc.want) {
			t.Errorf("%s: %d %q, want 400 with %q", tc.name, r.code, r.body, tc.want)
		}
	}
	// The client surfaces the duplicate as an error too.
	if _, _, err := c.PreparedQuery().Create(&api.PreparedQueryDefinition{Name: "taken", Service: api.ServiceQuery{Service: "x"}}, nil); err == nil {
		t.Fatal("duplicate name accepted through the client")
	}
	if list, _, _ := c.PreparedQuery().List(nil); len(list) != 1 {
		t.Fatalf("refused creates left %d queries", len(list))
	}
	if r := httpString(t, a, "PUT", "/v1/query", `{}`); r.code != http.StatusMethodNotAllowed {
		t.Fatalf("PUT /v1/query: %d", r.code)
	}
	if r := httpString(t, a, "PUT", "/v1/query/taken/execute", ""); r.code != http.StatusMethodNotAllowed {
		t.Fatalf("PUT execute: %d", r.code)
	}
}

func TestPreparedQuery_Execute(t *testing.T) {
	a, c := startAPI(t)
	registerInstance(t, c, "n1", "10.1.0.1", "web", []string{"primary", "v1"}, api.HealthPassing)
	registerInstance(t, c, "n2", "10.1.0.2", "web", []string{"primary", "canary"}, api.HealthWarning)
	registerInstance(t, c, "n3", "10.1.0.3", "web", []string{"primary"}, api.HealthCritical)
	registerInstance(t, c, "n4", "10.1.0.4", "web", []string{"secondary"}, api.HealthPassing)
	registerInstance(t, c, "n5", "10.1.0.5", "api", nil, api.HealthPassing)

	allID := createQuery(t, c, &api.PreparedQueryDefinition{Name: "web-all", Service: api.ServiceQuery{Service: "web"}, DNS: api.QueryDNSOptions{TTL: "15s"}})
	for _, tc := range []struct {
		name string
		sq   api.ServiceQuery
		want string
	}{
		{"web-passing", api.ServiceQuery{Service: "web", OnlyPassing: true}, "n1,n4"},
		{"web-primary", api.ServiceQuery{Service: "web", Tags: []string{"primary"}}, "n1,n2"},
		{"web-stable", api.ServiceQuery{Service: "web", Tags: []string{"primary", "!canary"}}, "n1"},
		{"web-not-primary", api.ServiceQuery{Service: "web", Tags: []string{"!PRIMARY"}}, "n4"},
		{"web-ignore", api.ServiceQuery{Service: "web", IgnoreCheckIDs: []string{"chk-n3-web"}}, "n1,n2,n3,n4"},
		{"web-rack", api.ServiceQuery{Service: "web", NodeMeta: map[string]string{"rack": "n4"}}, "n4"},
		{"web-meta", api.ServiceQuery{Service: "web", ServiceMeta: map[string]string{"node": "n2"}}, "n2"},
		{"nothing", api.ServiceQuery{Service: "missing"}, ""},
	} {
		createQuery(t, c, &api.PreparedQueryDefinition{Name: tc.name, Service: tc.sq})
		if got := strings.Join(executeNodes(t, c, tc.name), ","); got != tc.want {
			t.Errorf("execute %s = %q, want %q", tc.name, got, tc.want)
		}
	}

	// By ID and by name, with the response's fixed fields.
	for _, key := range []string{allID, "web-all", "WEB-ALL"} {
		resp, qm, err := c.PreparedQuery().Execute(key, nil)
		if err != nil {
			t.Fatalf("execute %q: %v", key, err)
		}
		if got := strings.Join(entryNodes(resp.Nodes), ","); got != "n1,n2,n4" {
			t.Errorf("execute %q = %s, want critical n3 left out", key, got)
		}
		if resp.Service != "web" || resp.DNS.TTL != "15s" || resp.Datacenter != "dc1" || resp.Failovers != 0 || qm.LastIndex == 0 {
			t.Errorf("execute %q response: %+v meta %+v", key, resp, qm)
		}
		for _, e := range resp.Nodes {
			if e.Service == nil || e.Service.Service != "web" || len(e.Checks) == 0 {
				t.Errorf("execute %q entry: %+v", key, e)
			}
		}
	}

	// ?limit= cuts after shuffling; every instance is seen first sometimes.
	firsts := map[string]bool{}
	for i := 0; i < 60 && len(firsts) < 3; i++ {
		r := httpString(t, a, "GET", "/v1/query/web-all/execute?limit=1", "")
		var resp api.PreparedQueryExecuteResponse
		if err := json.Unmarshal([]byte(r.body), &resp); err != nil || len(resp.Nodes) != 1 {
			t.Fatalf("limit=1: %d %s (%v)", r.code, r.body, err)
		}
		firsts[resp.Nodes[0].Node.Node] = true
	}
	if len(firsts) != 3 {
		t.Errorf("shuffled executions only ever started with %v", firsts)
	}
	if r := httpString(t, a, "GET", "/v1/query/web-all/execute?limit=x", ""); r.code != http.StatusBadRequest {
		t.Errorf("bad limit: %d %s", r.code, r.body)
	}

	// ?near=_agent puts the agent's own instance first once its
	// coordinate is in the catalog.
	self := selfNode(t, c)
	// Through the agent, so that anti-entropy keeps it.
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "self-web", Name: "web", Port: 8080}); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, func() error {
		if got := executeNodes(t, c, "web-all"); len(got) != 4 {
			return fmt.Errorf("web-all answers %v", got)
		}
		return nil
	})
	wait.For(t, 15*time.Second, func() error {
		if coords, _, err := c.Coordinate().Node(self, nil); err != nil || len(coords) == 0 {
			return fmt.Errorf("no coordinate for %s yet (%v)", self, err)
		}
		return nil
	})
	for i := 0; i < 10; i++ {
		resp, _, err := c.PreparedQuery().Execute("web-all", &api.QueryOptions{Near: "_agent"})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Nodes) != 4 || resp.Nodes[0].Node.Node != self {
			t.Fatalf("near=_agent answered %v first, want %s", resp.Nodes, self)
		}
	}
}

func TestPreparedQuery_Templates(t *testing.T) {
	a, c := startAPI(t)
	registerInstance(t, c, "db1", "10.2.0.1", "mysql-customer", []string{"primary"}, api.HealthPassing)
	registerInstance(t, c, "db2", "10.2.0.2", "mysql-customer", []string{"replica"}, api.HealthPassing)
	registerInstance(t, c, "db3", "10.2.0.3", "mysql-billing", []string{"primary"}, api.HealthPassing)
	registerInstance(t, c, "r1", "10.2.0.4", "redis", nil, api.HealthPassing)

	createQuery(t, c, &api.PreparedQueryDefinition{
		Name:     "geo-db",
		Template: api.QueryTemplate{Type: "name_prefix_match", Regexp: `^geo-db-(.*?)-([^\-]+?)$`},
		Service:  api.ServiceQuery{Service: "mysql-${match(1)}", Tags: []string{"${match(2)}"}},
		DNS:      api.QueryDNSOptions{TTL: "3s"},
	})
	// A catch-all template that answers any service by its name.
	createQuery(t, c, &api.PreparedQueryDefinition{
		Template: api.QueryTemplate{Type: "name_prefix_match", RemoveEmptyTags: true},
		Service:  api.ServiceQuery{Service: "${name.full}", Tags: []string{"${match(1)}"}},
	})
	// A static query overrides the templates for its exact name.
	createQuery(t, c, &api.PreparedQueryDefinition{Name: "geo-db-static", Service: api.ServiceQuery{Service: "redis"}})

	for _, tc := range []struct{ name, want string }{
		{"geo-db-customer-primary", "db1"},
		{"geo-db-customer-replica", "db2"},
		{"geo-db-billing-primary", "db3"},
		{"geo-db-billing-replica", ""},
		{"geo-db-static", "r1"},
		{"redis", "r1"}, // catch-all; the empty ${match(1)} tag is removed
	} {
		if got := strings.Join(executeNodes(t, c, tc.name), ","); got != tc.want {
			t.Errorf("execute %q = %q, want %q", tc.name, got, tc.want)
		}
	}
	resp, _, err := c.PreparedQuery().Execute("geo-db-customer-primary", nil)
	if err != nil || resp.Service != "mysql-customer" || resp.DNS.TTL != "3s" {
		t.Fatalf("template execute response: %+v, %v", resp, err)
	}

	// Explain shows the rendered query.
	r := httpString(t, a, "GET", "/v1/query/geo-db-customer-replica/explain", "")
	var explained struct{ Query api.PreparedQueryDefinition }
	if err := json.Unmarshal([]byte(r.body), &explained); err != nil || r.code != http.StatusOK {
		t.Fatalf("explain: %d %s (%v)", r.code, r.body, err)
	}
	q := explained.Query
	if q.Name != "geo-db" || q.Service.Service != "mysql-customer" || strings.Join(q.Service.Tags, ",") != "replica" || q.Template.Type != "name_prefix_match" {
		t.Fatalf("explained %+v", q)
	}
	if r := httpString(t, a, "GET", "/v1/query/redis/explain", ""); !strings.Contains(r.body, `"Tags":[]`) || !strings.Contains(r.body, `"Service":"redis"`) {
		t.Fatalf("explain of the catch-all: %s", r.body)
	}

	// Only one catch-all, and template names are unique like any other.
	for _, def := range []*api.PreparedQueryDefinition{
		{Template: api.QueryTemplate{Type: "name_prefix_match"}, Service: api.ServiceQuery{Service: "x"}},
		{Name: "geo-db", Template: api.QueryTemplate{Type: "name_prefix_match"}, Service: api.ServiceQuery{Service: "x"}},
	} {
		if _, _, err := c.PreparedQuery().Create(def, nil); err == nil || !strings.Contains(err.Error(), "400") {
			t.Errorf("create %q: %v, want a 400", def.Name, err)
		}
	}
}

func TestPreparedQuery_DNS(t *testing.T) {
	cfg := agenttest.Config(t)
	a := agenttest.Start(t, cfg)
	c, err := api.NewClient(&api.Config{Address: a.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	dnsAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.Ports.DNS))
	registerInstance(t, c, "n1", "10.3.0.1", "web", []string{"primary"}, api.HealthPassing)
	registerInstance(t, c, "n2", "10.3.0.2", "web", []string{"canary"}, api.HealthPassing)
	registerInstance(t, c, "n3", "10.3.0.3", "web", []string{"primary"}, api.HealthCritical)
	createQuery(t, c, &api.PreparedQueryDefinition{Name: "web-stable", Service: api.ServiceQuery{Service: "web", Tags: []string{"!canary"}}, DNS: api.QueryDNSOptions{TTL: "10s"}})
	createQuery(t, c, &api.PreparedQueryDefinition{
		Name:     "tag-",
		Template: api.QueryTemplate{Type: "name_prefix_match", Regexp: `^tag-(.+)$`},
		Service:  api.ServiceQuery{Service: "web", Tags: []string{"${match(1)}"}},
	})

	ask := func(name string, qtype uint16) (*dns.Msg, error) {
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(name), qtype)
		cl := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
		r, _, err := cl.Exchange(m, dnsAddr)
		return r, err
	}
	answers := func(r *dns.Msg) string {
		var out []string
		for _, rr := range r.Answer {
			switch v := rr.(type) {
			case *dns.A:
				out = append(out, v.A.String())
			case *dns.SRV:
				out = append(out, fmt.Sprintf("%s:%d", v.Target, v.Port))
			}
		}
		sort.Strings(out)
		return strings.Join(out, ",")
	}
	for _, tc := range []struct {
		name  string
		qtype uint16
		want  string
	}{
		{"web-stable.query.consul", dns.TypeA, "10.3.0.1"},
		{"Web-Stable.query.dc1.consul", dns.TypeA, "10.3.0.1"},
		{"tag-canary.query.consul", dns.TypeA, "10.3.0.2"},
		{"web-stable.query.consul", dns.TypeSRV, "n1.node.dc1.consul.:8080"},
		{"_web-stable._tcp.query.consul", dns.TypeSRV, "n1.node.dc1.consul.:8080"},
	} {
		// The first lookup of a name may wait for its views to fill.
		wait.For(t, 10*time.Second, func() error {
			r, err := ask(tc.name, tc.qtype)
			if err != nil {
				return err
			}
			if r.Rcode != dns.RcodeSuccess || answers(r) != tc.want {
				return fmt.Errorf("%s %s: rcode %s answers %q, want %q", tc.name, dns.TypeToString[tc.qtype],
					dns.RcodeToString[r.Rcode], answers(r), tc.want)
			}
			return nil
		})
	}
	for _, name := range []string{"no-such-query.query.consul", "tag-missing.query.consul"} {
		r, err := ask(name, dns.TypeA)
		if err != nil {
			t.Fatal(err)
		}
		if r.Rcode != dns.RcodeNameError {
			t.Errorf("%s: rcode %s, want NXDOMAIN", name, dns.RcodeToString[r.Rcode])
		}
	}

	// A query created after the first lookups is answered too: the list
	// view follows the catalog.
	createQuery(t, c, &api.PreparedQueryDefinition{Name: "late", Service: api.ServiceQuery{Service: "web", Tags: []string{"canary"}}})
	wait.For(t, 10*time.Second, func() error {
		r, err := ask("late.query.consul", dns.TypeA)
		if err != nil {
			return err
		}
		if got := answers(r); got != "10.3.0.2" {
			return fmt.Errorf("late.query: rcode %s answers %q", dns.RcodeToString[r.Rcode], got)
		}
		return nil
	})
}

// Connect prepared queries (Service.Connect, or ?connect=true on an
// execution) select the service's mesh instances: its sidecar proxies, at
// the proxies' addresses and ports, over HTTP and DNS; a plain execution
// still answers the service's own instances.
func TestPreparedQuery_Connect(t *testing.T) {
	cfg := agenttest.Config(t)
	a := agenttest.Start(t, cfg)
	c, err := api.NewClient(&api.Config{Address: a.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	registerInstance(t, c, "n1", "10.4.0.1", "web", nil, api.HealthPassing)
	for node, status := range map[string]string{"n1": api.HealthPassing, "n2": api.HealthCritical} {
		if _, err := c.Catalog().Register(&api.CatalogRegistration{Node: node, Address: "10.4.0." + node[1:],
			Service: &api.AgentService{ID: "web-sidecar-proxy", Service: "web-sidecar-proxy", Kind: api.ServiceKindConnectProxy, Port: 21000,
				Proxy: &api.AgentServiceConnectProxyConfig{DestinationServiceName: "web"}},
			Check: &api.AgentCheck{Node: node, CheckID: "proxy", Name: "proxy", Status: status, ServiceID: "web-sidecar-proxy"},
		}, nil); err != nil {
			t.Fatal(err)
		}
	}
	createQuery(t, c, &api.PreparedQueryDefinition{Name: "web", Service: api.ServiceQuery{Service: "web"}})
	createQuery(t, c, &api.PreparedQueryDefinition{Name: "web-mesh", Service: api.ServiceQuery{Service: "web", Connect: true}})

	check := func(name string, q *api.QueryOptions, wantKind api.ServiceKind, wantPort int) {
		t.Helper()
		resp, _, err := c.PreparedQuery().Execute(name, q)
		if err != nil {
			t.Fatalf("execute %s: %v", name, err)
		}
		if resp.Service != "web" || len(resp.Nodes) != 1 || resp.Nodes[0].Node.Node != "n1" ||
			resp.Nodes[0].Service.Kind != wantKind || resp.Nodes[0].Service.Port != wantPort {
			t.Fatalf("execute %s (connect %v): service %q nodes %+v", name, q != nil && q.Connect, resp.Service, resp.Nodes)
		}
	}
	check("web", nil, "", 8080)
	check("web", &api.QueryOptions{Connect: true}, api.ServiceKindConnectProxy, 21000)
	check("web-mesh", nil, api.ServiceKindConnectProxy, 21000)

	r, err := http.Get("http://" + a.HTTPAddr() + "/v1/query/web/execute?connect=maybe")
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusBadRequest {
		t.Fatalf("?connect=maybe: %d, want 400", r.StatusCode)
	}

	dnsAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.Ports.DNS))
	wait.For(t, 10*time.Second, func() error {
		m := new(dns.Msg)
		m.SetQuestion("web-mesh.query.consul.", dns.TypeSRV)
		resp, _, err := (&dns.Client{Net: "udp", Timeout: 5 * time.Second}).Exchange(m, dnsAddr)
		if err != nil {
			return err
		}
		if len(resp.Answer) != 1 {
			return fmt.Errorf("web-mesh SRV answers %v, want the one passing proxy", resp.Answer)
		}
		if srv, ok := resp.Answer[0].(*dns.SRV); !ok || srv.Port != 21000 || srv.Target != "n1.node.dc1.consul." {
			return fmt.Errorf("web-mesh SRV answer %v, want n1's proxy on 21000", resp.Answer[0])
		}
		return nil
	})
}
