package xds

import (
	"testing"

	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/tribune-mesh/tribune/catalog"
)

// A proxyless client's service with a chain gets the chain's routes: a
// splitter's weights over one cluster per subset, each with its subset's
// endpoints; a split of weight 0 leaves its cluster out (the client asks
// for the clusters its routes use, no more).
func TestBuildProxylessChain(t *testing.T) {
	e := goldenEntries()
	e.Splitters["api"] = &catalog.ServiceSplitterEntry{Splits: []catalog.ServiceSplit{{Weight: 100, ServiceSubset: "v1"}, {Weight: 0, ServiceSubset: "v2"}}}
	up := chainUpstream(t, e, "api", 9191)
	snap, err := BuildProxyless(&Proxyless{ID: "c", Datacenter: "dc1", TrustDomain: td, Services: []ProxylessService{
		{Name: "api", Chain: up.Chain, TargetEndpoints: up.TargetEndpoints},
		{Name: "billing"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType} {
		for name, r := range snap.GetResources(typ) {
			if err := r.(interface{ ValidateAll() error }).ValidateAll(); err != nil {
				t.Errorf("%s %s invalid: %v", typ, name, err)
			}
		}
	}
	v1 := "v1.api.default.dc1.internal." + td
	rc := snap.GetResources(resource.RouteType)["api"].(*route.RouteConfiguration)
	routes := rc.GetVirtualHosts()[0].GetRoutes()
	if len(routes) != 1 || len(routeClusters(routes[0])) != 1 || routeClusters(routes[0])[0] != v1 {
		t.Fatalf("api routes = %v", routes)
	}
	clusters := snap.GetResources(resource.ClusterType)
	if len(clusters) != 2 || clusters[v1] == nil {
		t.Fatalf("clusters = %v, want billing's and %s", clusters, v1)
	}
	cla := snap.GetResources(resource.EndpointType)[v1].(*endpoint.ClusterLoadAssignment)
	if n := len(cla.GetEndpoints()[0].GetLbEndpoints()); n != 1 {
		t.Fatalf("v1 has %d endpoints, want its healthy one", n)
	}
}

// A proxyless client's resolver with failover keeps its cluster, whose
// endpoints are its target's while one is healthy and the first failover
// target's with a healthy one otherwise.
func TestBuildProxylessChainFailover(t *testing.T) {
	up := chainUpstream(t, goldenEntries(), "db", 9191) // v1, failover to dc2
	primary, backup := "v1.db.default.default.dc1", "v1.db.default.default.dc2"
	if up.Chain.Targets[primary] == nil || up.Chain.Targets[backup] == nil {
		t.Fatalf("targets %v, want %s and %s", up.Chain.Targets, primary, backup)
	}
	cluster := "v1.db.default.dc1.internal." + td
	endpointsOf := func(eps map[string][]Endpoint) []string {
		t.Helper()
		snap, err := BuildProxyless(&Proxyless{ID: "c", Datacenter: "dc1", TrustDomain: td, Services: []ProxylessService{
			{Name: "db", Chain: up.Chain, TargetEndpoints: eps}}})
		if err != nil {
			t.Fatal(err)
		}
		if n := len(snap.GetResources(resource.ClusterType)); n != 1 {
			t.Fatalf("%d clusters, want the resolver's one", n)
		}
		cla, ok := snap.GetResources(resource.EndpointType)[cluster].(*endpoint.ClusterLoadAssignment)
		if !ok {
			t.Fatalf("no endpoints for %s: %v", cluster, snap.GetResources(resource.EndpointType))
		}
		var out []string
		for _, l := range cla.GetEndpoints() {
			for _, e := range l.GetLbEndpoints() {
				out = append(out, e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress())
			}
		}
		return out
	}
	healthy := func(addr string) []Endpoint { return []Endpoint{{Address: addr, Port: 8080, Healthy: true}} }
	sick := []Endpoint{{Address: "10.1.0.9", Port: 8080}}
	for _, c := range []struct {
		name            string
		primary, backup []Endpoint
		want            string
	}{
		{"primary healthy", healthy("10.1.0.1"), healthy("10.2.0.1"), "10.1.0.1"},
		{"primary without a healthy instance", sick, healthy("10.2.0.1"), "10.2.0.1"},
		{"primary without instances", nil, healthy("10.2.0.1"), "10.2.0.1"},
		{"neither healthy: the primary's (no healthy endpoint)", sick, nil, ""},
	} {
		got := endpointsOf(map[string][]Endpoint{primary: c.primary, backup: c.backup})
		if c.want == "" && len(got) == 0 {
			continue
		}
		if len(got) != 1 || got[0] != c.want {
			t.Errorf("%s: endpoints %v, want [%s]", c.name, got, c.want)
		}
	}
}
