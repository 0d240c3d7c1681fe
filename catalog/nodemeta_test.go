package catalog_test

import (
	"testing"
	"time"

	"github.com/tribune-mesh/tribune/catalog"
)

// Reads with NodeMeta keep only what lives on nodes carrying every pair, and
// a change of a node's meta wakes a reader filtered on it.
func TestReadNodeMetaFilter(t *testing.T) {
	s := newStore(t)
	reg := func(idx uint64, node string, meta map[string]string, svc string) {
		register(t, s, idx, &catalog.RegisterRequest{Node: node, Address: "10.0.0.1", NodeMeta: meta,
			Service: &catalog.Service{ID: svc, Service: svc, Tags: []string{node}},
			Checks:  []*catalog.HealthCheck{{CheckID: "c-" + svc, Name: "c", ServiceID: svc, Status: catalog.HealthPassing}}})
	}
	reg(1, "a", map[string]string{"rack": "r1", "env": "prod"}, "web")
	reg(2, "b", map[string]string{"rack": "r2", "env": "prod"}, "db")
	reg(3, "c", nil, "web")

	read := func(op catalog.ReadOp, name string, meta map[string]string) *catalog.ReadResponse {
		t.Helper()
		_, out, err := s.Execute(ws(), &catalog.ReadRequest{Op: op, Name: name, NodeMeta: meta})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	r1 := map[string]string{"rack": "r1"}
	if got := read(catalog.ReadNodes, "", r1).Nodes; len(got) != 1 || got[0].Node != "a" {
		t.Fatalf("nodes rack=r1: %+v", got)
	}
	if got := read(catalog.ReadNodes, "", map[string]string{"env": "prod"}).Nodes; len(got) != 2 {
		t.Fatalf("nodes env=prod: %+v", got)
	}
	if got := read(catalog.ReadNodes, "", map[string]string{"env": "prod", "rack": "r3"}).Nodes; len(got) != 0 {
		t.Fatalf("nodes env=prod,rack=r3: %+v", got)
	}
	svcs := read(catalog.ReadServices, "", r1).Services
	if len(svcs) != 1 || len(svcs["web"]) != 1 || svcs["web"][0] != "a" {
		t.Fatalf("services rack=r1: %+v", svcs)
	}
	if got := read(catalog.ReadServiceInstances, "web", r1).Instances; len(got) != 1 || got[0].Node.Node != "a" {
		t.Fatalf("web instances rack=r1: %+v", got)
	}
	if got := read(catalog.ReadHealthService, "web", map[string]string{"nope": "nope"}).Instances; len(got) != 0 {
		t.Fatalf("web health nope=nope: %+v", got)
	}
	if got := read(catalog.ReadServiceChecks, "web", r1).Checks; len(got) != 1 || got[0].Node != "a" {
		t.Fatalf("web checks rack=r1: %+v", got)
	}
	if got := read(catalog.ReadChecksInState, catalog.HealthAny, map[string]string{"env": "prod"}).Checks; len(got) != 2 {
		t.Fatalf("checks env=prod: %+v", got)
	}
	// Without a filter, everything.
	if got := read(catalog.ReadNodes, "", nil).Nodes; len(got) != 3 {
		t.Fatalf("nodes unfiltered: %+v", got)
	}

	// A reader of rack=r1 nodes wakes when c moves to rack r1.
	w := ws()
	if _, _, err := s.Execute(w, &catalog.ReadRequest{Op: catalog.ReadNodes, NodeMeta: r1}); err != nil {
		t.Fatal(err)
	}
	register(t, s, 4, &catalog.RegisterRequest{Node: "c", Address: "10.0.0.1", NodeMeta: r1})
	if timedOut := w.Watch(time.After(5 * time.Second)); timedOut {
		t.Fatal("reader filtered on node meta not woken by a meta change")
	}
	if got := read(catalog.ReadNodes, "", r1).Nodes; len(got) != 2 {
		t.Fatalf("nodes rack=r1 after the change: %+v", got)
	}
}
