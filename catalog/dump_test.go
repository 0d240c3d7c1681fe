package catalog_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/tribune-mesh/tribune/catalog"
)

// The dump holds every node, every instance with its node's and its own
// checks (and no other service's), and every check; its watch fires on a
// node, service or check change and not on a KV write.
func TestCatalogDump(t *testing.T) {
	s := newStore(t)
	register(t, s, 1, &catalog.RegisterRequest{Node: "n1", Address: "10.0.0.1",
		Service: &catalog.Service{ID: "web-1", Service: "web"},
		Checks: []*catalog.HealthCheck{
			{CheckID: "node-ok", Status: catalog.HealthPassing},
			{CheckID: "web-ok", ServiceID: "web-1", Status: catalog.HealthCritical},
		}})
	register(t, s, 2, &catalog.RegisterRequest{Node: "n1", Address: "10.0.0.1",
		Service: &catalog.Service{ID: "db-1", Service: "db"},
		Checks:  []*catalog.HealthCheck{{CheckID: "db-ok", ServiceID: "db-1", Status: catalog.HealthPassing}}})
	registerNode(t, s, 3, "n2")

	w := ws()
	idx, nodes, instances, checks, err := s.CatalogDump(w)
	if err != nil {
		t.Fatal(err)
	}
	if idx != 3 || len(nodes) != 2 || len(instances) != 2 || len(checks) != 3 {
		t.Fatalf("dump: index %d, %d nodes, %d instances, %d checks", idx, len(nodes), len(instances), len(checks))
	}
	for _, in := range instances {
		got := map[string]bool{}
		for _, c := range in.Checks {
			got[c.CheckID] = true
		}
		want := map[string]map[string]bool{"web-1": {"node-ok": true, "web-ok": true}, "db-1": {"node-ok": true, "db-ok": true}}[in.Service.ID]
		if fmt.Sprint(got) != fmt.Sprint(want) || in.Node.Node != "n1" {
			t.Errorf("%s: node %s checks %v, want %v", in.Service.ID, in.Node.Node, got, want)
		}
	}
	// Through Execute, as a server runs it.
	resp := &catalog.ReadRequest{Op: catalog.ReadCatalogDump}
	if _, out, err := s.Execute(ws(), resp); err != nil || len(out.Nodes) != 2 || len(out.Instances) != 2 || len(out.Checks) != 3 {
		t.Fatalf("Execute(%s): %+v, %v", catalog.ReadCatalogDump, out, err)
	}

	kvSet(t, s, 4, "unrelated", "x")
	// Watch reports true when it timed out.
	if !w.Watch(time.After(noFireWait)) {
		t.Fatal("a KV write woke the dump")
	}
	register(t, s, 5, &catalog.RegisterRequest{Node: "n1", Address: "10.0.0.1", SkipNodeUpdate: true,
		Checks: []*catalog.HealthCheck{{CheckID: "web-ok", ServiceID: "web-1", Status: catalog.HealthPassing}}})
	if w.Watch(time.After(fireWait)) {
		t.Fatal("a check change did not wake the dump")
	}
}

// BenchmarkCatalogDump reads a catalog of 1,000 services of 3 instances
// (one check each) on 300 nodes: what one /v1/internal/ui/services costs.
func BenchmarkCatalogDump(b *testing.B) {
	s := catalog.NewStore(newFakeClock())
	idx := uint64(1)
	for i := 0; i < 3000; i++ {
		node := fmt.Sprintf("node-%d", i%300)
		id := fmt.Sprintf("svc-%d-%d", i/3, i%3)
		if err := s.EnsureRegistration(idx, &catalog.RegisterRequest{Node: node, Address: "10.0.0.1",
			Service: &catalog.Service{ID: id, Service: fmt.Sprintf("svc-%d", i/3), Tags: []string{"a", "b"}},
			Checks:  []*catalog.HealthCheck{{CheckID: id + "-ok", ServiceID: id, Status: catalog.HealthPassing}}}); err != nil {
			b.Fatal(err)
		}
		idx++
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, _, _, err := s.CatalogDump(ws()); err != nil {
			b.Fatal(err)
		}
	}
}
