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
