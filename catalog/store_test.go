package catalog_test

import (
	"errors"
	"testing"

	"github.com/tribune-mesh/tribune/catalog"
)

func webRegistration(node, addr, id string, tags []string, port int, status string) *catalog.RegisterRequest {
	return &catalog.RegisterRequest{
		Node:     node,
		Address:  addr,
		NodeMeta: map[string]string{"rack": "r1"},
		Service:  &catalog.Service{ID: id, Service: "web", Tags: tags, Port: port},
		Checks: []*catalog.HealthCheck{
			{CheckID: catalog.SerfCheckID, Name: "Serf Health Status", Status: catalog.HealthPassing},
			{CheckID: "chk-" + id, Name: "web check", Status: status, ServiceID: id},
		},
	}
}

func TestRegisterNodeServiceChecks(t *testing.T) {
	s := newStore(t)
	register(t, s, 5, &catalog.RegisterRequest{
		ID:              "11111111-2222-3333-4444-555555555555",
		Node:            "n1",
		Address:         "10.0.0.1",
		Datacenter:      "dc1",
		TaggedAddresses: map[string]string{"lan": "10.0.0.1"},
		NodeMeta:        map[string]string{"rack": "r1"},
		Service:         &catalog.Service{Service: "web", Tags: []string{"v1", "primary"}, Port: 8080},
		Check:           &catalog.HealthCheck{CheckID: "svc", Name: "svc", ServiceID: "web", Status: catalog.HealthWarning},
		Checks: []*catalog.HealthCheck{
			{CheckID: "node", Name: "node"}, // status defaults to critical
		},
	})

	idx, n, err := s.GetNode(ws(), "n1")
	if err != nil || n == nil {
		t.Fatalf("GetNode = %v, %v", n, err)
	}
	if n.ID != "11111111-2222-3333-4444-555555555555" || n.Address != "10.0.0.1" || n.Datacenter != "dc1" ||
		n.Meta["rack"] != "r1" || n.TaggedAddresses["lan"] != "10.0.0.1" || n.CreateIndex != 5 || n.ModifyIndex != 5 || idx != 5 {
		t.Fatalf("node = %+v, idx %d", n, idx)
	}
	// Node names are case-insensitive.
	if _, n2, _ := s.GetNode(ws(), "N1"); n2 == nil || n2.Node != "n1" {
		t.Fatalf("GetNode(N1) = %+v", n2)
	}

	idx, ns, err := s.NodeServices(ws(), "n1")
	if err != nil || ns == nil || len(ns.Services) != 1 || idx != 5 {
		t.Fatalf("NodeServices = (%d, %+v, %v)", idx, ns, err)
	}
	svc := ns.Services[0]
	if svc.ID != "web" || svc.Service != "web" || svc.Port != 8080 || svc.Weights != (catalog.Weights{Passing: 1, Warning: 1}) ||
		svc.CreateIndex != 5 || svc.ModifyIndex != 5 {
		t.Fatalf("service = %+v", svc)
	}

	_, checks, err := s.NodeChecks(ws(), "n1")
	if err != nil || len(checks) != 2 {
		t.Fatalf("NodeChecks = %+v, %v", checks, err)
	}
	byID := map[string]*catalog.HealthCheck{}
	for _, c := range checks {
		byID[c.CheckID] = c
	}
	if c := byID["node"]; c == nil || c.Status != catalog.HealthCritical || c.ServiceID != "" || c.Node != "n1" {
		t.Fatalf("node check = %+v", c)
	}
	if c := byID["svc"]; c == nil || c.Status != catalog.HealthWarning || c.ServiceName != "web" ||
		!equalStrings(c.ServiceTags, []string{"v1", "primary"}) || c.CreateIndex != 5 {
		t.Fatalf("service check = %+v", c)
	}
	_, schecks, err := s.ServiceChecks(ws(), "web")
	if err != nil || len(schecks) != 1 || schecks[0].CheckID != "svc" {
		t.Fatalf("ServiceChecks(web) = %+v, %v", schecks, err)
	}
	if got := s.LastIndex(); got != 5 {
		t.Fatalf("LastIndex = %d", got)
	}
}

func TestRegisterErrorsAreAtomic(t *testing.T) {
	cases := []struct {
		name    string
		req     *catalog.RegisterRequest
		wantErr error
	}{
		{"missing node name", &catalog.RegisterRequest{Address: "1.2.3.4"}, catalog.ErrInvalidRequest},
		{"service without name", &catalog.RegisterRequest{Node: "new", Service: &catalog.Service{ID: "x"}}, catalog.ErrInvalidRequest},
		{"check for missing service", &catalog.RegisterRequest{Node: "new",
			Checks: []*catalog.HealthCheck{{CheckID: "c", ServiceID: "ghost", Status: catalog.HealthPassing}}}, catalog.ErrMissingService},
		{"check on another node", &catalog.RegisterRequest{Node: "new",
			Check: &catalog.HealthCheck{Node: "other", CheckID: "c", Status: catalog.HealthPassing}}, catalog.ErrInvalidRequest},
		{"check without ID", &catalog.RegisterRequest{Node: "new",
			Check: &catalog.HealthCheck{Name: "c", Status: catalog.HealthPassing}}, catalog.ErrInvalidRequest},
		{"invalid status", &catalog.RegisterRequest{Node: "new",
			Check: &catalog.HealthCheck{CheckID: "c", Status: "sad"}}, catalog.ErrInvalidRequest},
		{"second check invalid", &catalog.RegisterRequest{Node: "new", Service: &catalog.Service{Service: "api"},
			Checks: []*catalog.HealthCheck{{CheckID: "ok", Status: catalog.HealthPassing}, {CheckID: "bad", Status: "nope"}}}, catalog.ErrInvalidRequest},
		{"existing node, bad check", &catalog.RegisterRequest{Node: "n1", Address: "9.9.9.9",
			Check: &catalog.HealthCheck{CheckID: "c", ServiceID: "ghost"}}, catalog.ErrMissingService},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			register(t, s, 1, webRegistration("n1", "10.0.0.1", "web1", nil, 80, catalog.HealthPassing))
			before := dump(t, s)
			err := s.EnsureRegistration(2, tc.req)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if string(dump(t, s)) != string(before) {
				t.Fatal("failed registration changed the store")
			}
		})
	}
}

func TestReRegisterIdenticalDoesNotBump(t *testing.T) {
	s := newStore(t)
	req := func() *catalog.RegisterRequest {
		return webRegistration("n1", "10.0.0.1", "web1", []string{"a", "b"}, 80, catalog.HealthPassing)
	}
	register(t, s, 1, req())
	before := dump(t, s)

	register(t, s, 2, req())
	if string(dump(t, s)) != string(before) {
		t.Fatalf("identical re-registration changed the store:\nbefore %s\nafter  %s", before, dump(t, s))
	}
	if s.LastIndex() != 1 {
		t.Fatalf("LastIndex = %d, want 1", s.LastIndex())
	}
	if idx, _, _ := s.CheckServiceNodes(ws(), "web", nil); idx != 1 {
		t.Fatalf("CheckServiceNodes index = %d, want 1", idx)
	}
	if idx, _, _ := s.NodeServices(ws(), "n1"); idx != 1 {
		t.Fatalf("NodeServices index = %d, want 1", idx)
	}

	// Changing only the service bumps the service, not the node or checks.
	r := req()
	r.Service.Port = 81
	register(t, s, 3, r)
	_, ns, _ := s.NodeServices(ws(), "n1")
	if sv := ns.Services[0]; sv.ModifyIndex != 3 || sv.CreateIndex != 1 || sv.Port != 81 {
		t.Fatalf("service after change = %+v", sv)
	}
	if ns.Node.ModifyIndex != 1 {
		t.Fatalf("node bumped by a service change: %+v", ns.Node)
	}
	if idx, _, _ := s.CheckServiceNodes(ws(), "web", nil); idx != 3 {
		t.Fatalf("CheckServiceNodes index = %d, want 3", idx)
	}

	// Changing only a check bumps that check.
	r = req()
	r.Service.Port = 81
	r.Checks[1].Output = "new output"
	register(t, s, 4, r)
	_, checks, _ := s.NodeChecks(ws(), "n1")
	for _, c := range checks {
		want := uint64(1)
		if c.CheckID == "chk-web1" {
			want = 4
		}
		if c.ModifyIndex != want || c.CreateIndex != 1 {
			t.Fatalf("check %s indexes %+v, want modify %d", c.CheckID, c.RaftIndex, want)
		}
	}

	// Changing the node address bumps the node, and the service views.
	r.Address = "10.0.0.2"
	register(t, s, 5, r)
	_, n, _ := s.GetNode(ws(), "n1")
	if n.ModifyIndex != 5 || n.CreateIndex != 1 || n.Address != "10.0.0.2" {
		t.Fatalf("node after address change = %+v", n)
	}
	if idx, _, _ := s.CheckServiceNodes(ws(), "web", nil); idx != 5 {
		t.Fatalf("CheckServiceNodes index after node change = %d, want 5", idx)
	}
	// Re-registering without an ID keeps the node's ID.
	register(t, s, 6, &catalog.RegisterRequest{ID: "abc", Node: "n2", Address: "10.0.0.9"})
	register(t, s, 7, &catalog.RegisterRequest{Node: "n2", Address: "10.0.0.9"})
	if _, n, _ := s.GetNode(ws(), "n2"); n.ID != "abc" || n.ModifyIndex != 6 {
		t.Fatalf("node n2 = %+v", n)
	}
}

func TestSkipNodeUpdate(t *testing.T) {
	s := newStore(t)
	register(t, s, 1, &catalog.RegisterRequest{Node: "n1", Address: "10.0.0.1", NodeMeta: map[string]string{"a": "b"}})
	register(t, s, 2, &catalog.RegisterRequest{Node: "n1", Address: "", SkipNodeUpdate: true,
		Service: &catalog.Service{Service: "web"}})
	_, n, _ := s.GetNode(ws(), "n1")
	if n.Address != "10.0.0.1" || n.Meta["a"] != "b" || n.ModifyIndex != 1 {
		t.Fatalf("SkipNodeUpdate changed the node: %+v", n)
	}
	// SkipNodeUpdate still creates a missing node.
	register(t, s, 3, &catalog.RegisterRequest{Node: "n2", Address: "10.0.0.2", SkipNodeUpdate: true})
	if _, n, _ := s.GetNode(ws(), "n2"); n == nil || n.Address != "10.0.0.2" {
		t.Fatalf("n2 = %+v", n)
	}
}

// topology: n1 web1[a,b] + api1, n2 web2[b,c], n3 db1; node checks on every
// node; service checks on web1, web2, api1, db1.
func topology(t *testing.T) *catalog.Store {
	t.Helper()
	s := newStore(t)
	register(t, s, 1, webRegistration("n1", "10.0.0.1", "web1", []string{"a", "b"}, 80, catalog.HealthPassing))
	register(t, s, 2, &catalog.RegisterRequest{Node: "n1", Address: "10.0.0.1", NodeMeta: map[string]string{"rack": "r1"},
		Service: &catalog.Service{ID: "api1", Service: "api", Port: 9000},
		Check:   &catalog.HealthCheck{CheckID: "chk-api1", ServiceID: "api1", Status: catalog.HealthWarning}})
	register(t, s, 3, webRegistration("n2", "10.0.0.2", "web2", []string{"b", "c"}, 80, catalog.HealthCritical))
	register(t, s, 4, &catalog.RegisterRequest{Node: "n3", Address: "10.0.0.3",
		Service: &catalog.Service{ID: "db1", Service: "db"},
		Checks: []*catalog.HealthCheck{
			{CheckID: catalog.SerfCheckID, Status: catalog.HealthMaint},
			{CheckID: "chk-db1", ServiceID: "db1", Status: catalog.HealthPassing},
		}})
	return s
}

func TestServicesTagUnion(t *testing.T) {
	s := topology(t)
	idx, svcs, err := s.Services(ws())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{"web": {"a", "b", "c"}, "api": {}, "db": {}}
	if len(svcs) != len(want) {
		t.Fatalf("Services = %v, want %v", svcs, want)
	}
	for name, tags := range want {
		got, ok := svcs[name]
		if !ok || got == nil || !equalStrings(got, tags) {
			t.Fatalf("Services[%s] = %#v, want %#v", name, got, tags)
		}
	}
	if idx != 4 {
		t.Fatalf("index = %d, want 4", idx)
	}
}

func TestServiceInstancesTagFilter(t *testing.T) {
	s := topology(t)
	cases := []struct {
		service string
		tags    []string
		want    []string
	}{
		{"web", nil, []string{"n1/web1", "n2/web2"}},
		{"web", []string{"b"}, []string{"n1/web1", "n2/web2"}},
		{"web", []string{"a"}, []string{"n1/web1"}},
		{"web", []string{"c"}, []string{"n2/web2"}},
		{"web", []string{"a", "b"}, []string{"n1/web1"}},
		{"web", []string{"a", "c"}, []string{}},
		{"web", []string{"B"}, []string{"n1/web1", "n2/web2"}},
		{"web", []string{"zzz"}, []string{}},
		{"WEB", nil, []string{"n1/web1", "n2/web2"}},
		{"api", nil, []string{"n1/api1"}},
		{"api", []string{"a"}, []string{}},
		{"nope", nil, []string{}},
	}
	for _, tc := range cases {
		for _, withChecks := range []bool{false, true} {
			name := tc.service
			for _, tg := range tc.tags {
				name += "+" + tg
			}
			if withChecks {
				name += "/health"
			}
			t.Run(name, func(t *testing.T) {
				read := s.ServiceInstances
				if withChecks {
					read = s.CheckServiceNodes
				}
				_, got, err := read(ws(), tc.service, tc.tags)
				if err != nil {
					t.Fatal(err)
				}
				if names := nodeNames(got); !equalStrings(names, tc.want) {
					t.Fatalf("= %q, want %q", names, tc.want)
				}
				for _, csn := range got {
					if !withChecks && len(csn.Checks) != 0 {
						t.Fatalf("ServiceInstances returned checks: %+v", csn.Checks)
					}
					if csn.Node == nil || csn.Node.Address == "" {
						t.Fatalf("instance without node: %+v", csn)
					}
				}
			})
		}
	}
}

func TestCheckServiceNodesIncludeNodeChecks(t *testing.T) {
	s := topology(t)
	cases := []struct {
		service    string
		wantChecks map[string][]string // instance -> checks
		wantStatus map[string]string
	}{
		{"web",
			map[string][]string{
				"n1/web1": {"n1/chk-web1", "n1/serfHealth"},
				"n2/web2": {"n2/chk-web2", "n2/serfHealth"},
			},
			map[string]string{"n1/web1": catalog.HealthPassing, "n2/web2": catalog.HealthCritical}},
		{"api",
			map[string][]string{"n1/api1": {"n1/chk-api1", "n1/serfHealth"}},
			map[string]string{"n1/api1": catalog.HealthWarning}},
		{"db",
			// The node check in maintenance makes the instance critical.
			map[string][]string{"n3/db1": {"n3/chk-db1", "n3/serfHealth"}},
			map[string]string{"n3/db1": catalog.HealthCritical}},
	}
	for _, tc := range cases {
		t.Run(tc.service, func(t *testing.T) {
			idx, csns, err := s.CheckServiceNodes(ws(), tc.service, nil)
			if err != nil {
				t.Fatal(err)
			}
			if idx == 0 {
				t.Fatal("index 0")
			}
			if len(csns) != len(tc.wantChecks) {
				t.Fatalf("%d instances, want %d", len(csns), len(tc.wantChecks))
			}
			for _, csn := range csns {
				key := csn.Node.Node + "/" + csn.Service.ID
				if got := checkIDs(csn.Checks); !equalStrings(got, tc.wantChecks[key]) {
					t.Errorf("%s checks = %q, want %q", key, got, tc.wantChecks[key])
				}
				if got := catalog.AggregatedStatus(csn.Checks); got != tc.wantStatus[key] {
					t.Errorf("%s status = %q, want %q", key, got, tc.wantStatus[key])
				}
			}
		})
	}

	// A node check going critical affects every instance on the node and
	// moves the index of every service on it.
	register(t, s, 10, &catalog.RegisterRequest{Node: "n1", SkipNodeUpdate: true,
		Check: &catalog.HealthCheck{CheckID: catalog.SerfCheckID, Status: catalog.HealthCritical}})
	for _, svc := range []string{"web", "api"} {
		idx, csns, _ := s.CheckServiceNodes(ws(), svc, nil)
		if idx != 10 {
			t.Errorf("%s index = %d, want 10", svc, idx)
		}
		for _, csn := range csns {
			if csn.Node.Node == "n1" && catalog.AggregatedStatus(csn.Checks) != catalog.HealthCritical {
				t.Errorf("%s on n1 not critical after its node check failed: %+v", svc, csn.Checks)
			}
		}
	}
	if idx, _, _ := s.CheckServiceNodes(ws(), "db", nil); idx != 4 {
		t.Errorf("db index moved to %d by another node's check", idx)
	}
}

func TestAggregatedStatus(t *testing.T) {
	mk := func(st ...string) []*catalog.HealthCheck {
		var out []*catalog.HealthCheck
		for _, s := range st {
			out = append(out, &catalog.HealthCheck{Status: s})
		}
		return out
	}
	cases := []struct {
		in   []string
		want string
	}{
		{nil, catalog.HealthPassing},
		{[]string{catalog.HealthPassing}, catalog.HealthPassing},
		{[]string{catalog.HealthPassing, catalog.HealthWarning}, catalog.HealthWarning},
		{[]string{catalog.HealthWarning, catalog.HealthCritical, catalog.HealthPassing}, catalog.HealthCritical},
		{[]string{catalog.HealthPassing, catalog.HealthMaint}, catalog.HealthCritical},
	}
	for _, tc := range cases {
		if got := catalog.AggregatedStatus(mk(tc.in...)); got != tc.want {
			t.Errorf("AggregatedStatus(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestChecksInState(t *testing.T) {
	s := topology(t)
	cases := []struct {
		state string
		want  []string
	}{
		{catalog.HealthPassing, []string{"n1/chk-web1", "n1/serfHealth", "n2/serfHealth", "n3/chk-db1"}},
		{catalog.HealthWarning, []string{"n1/chk-api1"}},
		{catalog.HealthCritical, []string{"n2/chk-web2"}},
		{catalog.HealthMaint, []string{"n3/serfHealth"}},
		{catalog.HealthAny, []string{"n1/chk-api1", "n1/chk-web1", "n1/serfHealth", "n2/chk-web2", "n2/serfHealth", "n3/chk-db1", "n3/serfHealth"}},
		{"bogus", []string{}},
	}
	for _, tc := range cases {
		t.Run(tc.state, func(t *testing.T) {
			idx, checks, err := s.ChecksInState(ws(), tc.state)
			if err != nil {
				t.Fatal(err)
			}
			if checks == nil {
				t.Fatal("nil slice")
			}
			if got := checkIDs(checks); !equalStrings(got, tc.want) {
				t.Fatalf("= %q, want %q", got, tc.want)
			}
			if idx != 4 {
				t.Fatalf("index = %d, want 4", idx)
			}
		})
	}
}

func TestDeregisterService(t *testing.T) {
	s := topology(t)
	if err := s.Deregister(10, &catalog.DeregisterRequest{Node: "n1", ServiceID: "web1"}); err != nil {
		t.Fatal(err)
	}
	_, ns, _ := s.NodeServices(ws(), "n1")
	if len(ns.Services) != 1 || ns.Services[0].ID != "api1" {
		t.Fatalf("n1 services = %+v", ns.Services)
	}
	_, checks, _ := s.NodeChecks(ws(), "n1")
	if got := checkIDs(checks); !equalStrings(got, []string{"n1/chk-api1", "n1/serfHealth"}) {
		t.Fatalf("n1 checks = %q", got)
	}
	idx, csns, _ := s.CheckServiceNodes(ws(), "web", nil)
	if names := nodeNames(csns); !equalStrings(names, []string{"n2/web2"}) || idx != 10 {
		t.Fatalf("web = (%d, %q)", idx, names)
	}
	if idx, _, _ := s.CheckServiceNodes(ws(), "db", nil); idx != 4 {
		t.Fatalf("db index moved to %d", idx)
	}
	_, all, _ := s.ChecksInState(ws(), catalog.HealthAny)
	for _, c := range all {
		if c.ServiceID == "web1" {
			t.Fatalf("check of removed service survives: %+v", c)
		}
	}
	// Deregistering a missing service or a service of a missing node is a no-op.
	before := dump(t, s)
	for _, req := range []*catalog.DeregisterRequest{{Node: "n1", ServiceID: "ghost"}, {Node: "ghost", ServiceID: "web1"}, {Node: "ghost"}, {Node: "n1", CheckID: "ghost"}} {
		if err := s.Deregister(11, req); err != nil {
			t.Fatalf("Deregister(%+v): %v", req, err)
		}
	}
	if string(dump(t, s)) != string(before) {
		t.Fatal("no-op deregistrations changed the store")
	}
	// The last instance leaving removes the service from Services().
	if err := s.Deregister(12, &catalog.DeregisterRequest{Node: "n2", ServiceID: "web2"}); err != nil {
		t.Fatal(err)
	}
	_, svcs, _ := s.Services(ws())
	if _, ok := svcs["web"]; ok {
		t.Fatalf("web still listed: %v", svcs)
	}
}

func TestDeregisterCheck(t *testing.T) {
	s := topology(t)
	if err := s.Deregister(10, &catalog.DeregisterRequest{Node: "n1", CheckID: catalog.SerfCheckID}); err != nil {
		t.Fatal(err)
	}
	_, checks, _ := s.NodeChecks(ws(), "n1")
	if got := checkIDs(checks); !equalStrings(got, []string{"n1/chk-api1", "n1/chk-web1"}) {
		t.Fatalf("n1 checks = %q", got)
	}
	// The node check was part of every instance's health: both services on
	// n1 see the change.
	for _, svc := range []string{"web", "api"} {
		if idx, _, _ := s.CheckServiceNodes(ws(), svc, nil); idx != 10 {
			t.Errorf("%s index = %d, want 10", svc, idx)
		}
	}
}

func TestDeregisterNode(t *testing.T) {
	s := topology(t)
	registerNode(t, s, 5, "n4")
	createSession(t, s, 6, catalog.Session{ID: "s1", Node: "n1"})
	if err := s.Deregister(10, &catalog.DeregisterRequest{Node: "n1"}); err != nil {
		t.Fatal(err)
	}
	if _, n, _ := s.GetNode(ws(), "n1"); n != nil {
		t.Fatalf("node survives: %+v", n)
	}
	idx, ns, err := s.NodeServices(ws(), "n1")
	if err != nil || ns != nil {
		t.Fatalf("NodeServices(n1) = %+v, %v", ns, err)
	}
	if idx == 0 {
		t.Fatal("NodeServices of missing node returned index 0")
	}
	_, checks, _ := s.NodeChecks(ws(), "n1")
	if len(checks) != 0 {
		t.Fatalf("checks survive: %q", checkIDs(checks))
	}
	_, all, _ := s.ChecksInState(ws(), catalog.HealthAny)
	for _, c := range all {
		if c.Node == "n1" {
			t.Fatalf("check survives: %+v", c)
		}
	}
	_, svcs, _ := s.Services(ws())
	if _, ok := svcs["api"]; ok {
		t.Fatalf("api survives: %v", svcs)
	}
	if _, csns, _ := s.CheckServiceNodes(ws(), "web", nil); !equalStrings(nodeNames(csns), []string{"n2/web2"}) {
		t.Fatalf("web = %q", nodeNames(csns))
	}
	_, nodes, _ := s.Nodes(ws())
	var names []string
	for _, n := range nodes {
		names = append(names, n.Node)
	}
	if !equalStrings(names, []string{"n2", "n3", "n4"}) {
		t.Fatalf("Nodes = %q", names)
	}
	if getSession(t, s, "s1") != nil {
		t.Fatal("session survives")
	}
	if s.LastIndex() != 10 {
		t.Fatalf("LastIndex = %d, want 10", s.LastIndex())
	}
	// A service cannot be registered on a node that no longer exists unless
	// the node is registered along with it.
	if err := s.EnsureRegistration(11, &catalog.RegisterRequest{Node: "n1", Service: &catalog.Service{Service: "web"}}); err != nil {
		t.Fatalf("re-register node with service: %v", err)
	}
	if _, n, _ := s.GetNode(ws(), "n1"); n == nil || n.CreateIndex != 11 {
		t.Fatalf("re-registered node = %+v", n)
	}
}

func TestNodeServicesMissingNode(t *testing.T) {
	s := newStore(t)
	idx, ns, err := s.NodeServices(ws(), "ghost")
	if err != nil || ns != nil || idx != 0 {
		t.Fatalf("empty store: (%d, %+v, %v)", idx, ns, err)
	}
	s = topology(t)
	idx, ns, err = s.NodeServices(ws(), "ghost")
	if err != nil || ns != nil {
		t.Fatalf("(%d, %+v, %v), want nil", idx, ns, err)
	}
	if idx != 4 {
		t.Fatalf("index = %d, want 4", idx)
	}
	// A node without services has a non-nil empty list.
	registerNode(t, s, 5, "bare")
	_, ns, _ = s.NodeServices(ws(), "bare")
	if ns == nil || ns.Services == nil || len(ns.Services) != 0 {
		t.Fatalf("bare node = %+v", ns)
	}
}

func TestServiceRename(t *testing.T) {
	// Re-registering a service ID under a new name moves it between
	// services and moves both services' indexes.
	s := topology(t)
	register(t, s, 10, &catalog.RegisterRequest{Node: "n1", Address: "10.0.0.1", NodeMeta: map[string]string{"rack": "r1"},
		Service: &catalog.Service{ID: "api1", Service: "api2", Port: 9000}})
	if _, csns, _ := s.ServiceInstances(ws(), "api", nil); len(csns) != 0 {
		t.Fatalf("api still has instances: %q", nodeNames(csns))
	}
	if _, csns, _ := s.ServiceInstances(ws(), "api2", nil); !equalStrings(nodeNames(csns), []string{"n1/api1"}) {
		t.Fatalf("api2 = %q", nodeNames(csns))
	}
	for _, svc := range []string{"api", "api2"} {
		if idx, _, _ := s.ServiceInstances(ws(), svc, nil); idx != 10 {
			t.Errorf("%s index = %d, want 10", svc, idx)
		}
	}
}

func TestCheckOf(t *testing.T) {
	s := topology(t)
	cases := []struct {
		node, id string
		want     string // status, "" = nil
	}{
		{"n1", "chk-web1", catalog.HealthPassing},
		{"N1", "chk-web1", catalog.HealthPassing},
		{"n2", "chk-web2", catalog.HealthCritical},
		{"n1", "chk-web2", ""},
		{"ghost", catalog.SerfCheckID, ""},
	}
	for _, tc := range cases {
		c, err := s.CheckOf(tc.node, tc.id)
		if err != nil {
			t.Fatalf("CheckOf(%s, %s): %v", tc.node, tc.id, err)
		}
		if (c == nil) != (tc.want == "") || (c != nil && c.Status != tc.want) {
			t.Fatalf("CheckOf(%s, %s) = %+v, want status %q", tc.node, tc.id, c, tc.want)
		}
	}
}

func TestExecuteDispatch(t *testing.T) {
	s := topology(t)
	createSession(t, s, 5, catalog.Session{ID: "s1", Node: "n1"})
	kvSet(t, s, 6, "app/a", "1")
	kvSet(t, s, 7, "app/b/c", "2")

	cases := []struct {
		req   catalog.ReadRequest
		check func(*catalog.ReadResponse) bool
	}{
		{catalog.ReadRequest{Op: catalog.ReadKVGet, Key: "app/a"}, func(r *catalog.ReadResponse) bool { return r.KV != nil && string(r.KV.Value) == "1" }},
		{catalog.ReadRequest{Op: catalog.ReadKVList, Key: "app/"}, func(r *catalog.ReadResponse) bool { return len(r.KVs) == 2 }},
		{catalog.ReadRequest{Op: catalog.ReadKVKeys, Key: "app/", Separator: "/"}, func(r *catalog.ReadResponse) bool {
			return equalStrings(r.Keys, []string{"app/a", "app/b/"})
		}},
		{catalog.ReadRequest{Op: catalog.ReadNodes}, func(r *catalog.ReadResponse) bool { return len(r.Nodes) == 3 }},
		{catalog.ReadRequest{Op: catalog.ReadNode, Name: "n1"}, func(r *catalog.ReadResponse) bool {
			return r.NodeServices != nil && len(r.NodeServices.Services) == 2
		}},
		{catalog.ReadRequest{Op: catalog.ReadServices}, func(r *catalog.ReadResponse) bool { return len(r.Services) == 3 }},
		{catalog.ReadRequest{Op: catalog.ReadServiceInstances, Name: "web", Tags: []string{"a"}}, func(r *catalog.ReadResponse) bool {
			return len(r.Instances) == 1 && len(r.Instances[0].Checks) == 0
		}},
		{catalog.ReadRequest{Op: catalog.ReadHealthService, Name: "web"}, func(r *catalog.ReadResponse) bool {
			return len(r.Instances) == 2 && len(r.Instances[0].Checks) == 2
		}},
		{catalog.ReadRequest{Op: catalog.ReadNodeChecks, Name: "n1"}, func(r *catalog.ReadResponse) bool { return len(r.Checks) == 3 }},
		{catalog.ReadRequest{Op: catalog.ReadServiceChecks, Name: "web"}, func(r *catalog.ReadResponse) bool { return len(r.Checks) == 2 }},
		{catalog.ReadRequest{Op: catalog.ReadChecksInState, Name: catalog.HealthCritical}, func(r *catalog.ReadResponse) bool { return len(r.Checks) == 1 }},
		{catalog.ReadRequest{Op: catalog.ReadSession, Name: "s1"}, func(r *catalog.ReadResponse) bool { return len(r.Sessions) == 1 }},
		{catalog.ReadRequest{Op: catalog.ReadSession, Name: "ghost"}, func(r *catalog.ReadResponse) bool { return len(r.Sessions) == 0 }},
		{catalog.ReadRequest{Op: catalog.ReadSessions}, func(r *catalog.ReadResponse) bool { return len(r.Sessions) == 1 }},
	}
	for _, tc := range cases {
		t.Run(string(tc.req.Op)+" "+tc.req.Name+tc.req.Key, func(t *testing.T) {
			idx, resp, err := s.Execute(ws(), &tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if idx == 0 {
				t.Fatal("index 0")
			}
			if !tc.check(resp) {
				t.Fatalf("unexpected response %+v", resp)
			}
		})
	}

	// Index 0 is never answered.
	empty := newStore(t)
	if idx, _, err := empty.Execute(ws(), &catalog.ReadRequest{Op: catalog.ReadKVGet, Key: "x"}); err != nil || idx != 1 {
		t.Fatalf("empty store index = %d, %v; want 1", idx, err)
	}
	if _, _, err := s.Execute(ws(), &catalog.ReadRequest{Op: "bogus"}); !errors.Is(err, catalog.ErrInvalidRequest) {
		t.Fatalf("unknown read: err = %v", err)
	}
}
