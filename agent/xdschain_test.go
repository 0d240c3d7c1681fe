package agent_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbachttp "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/hashicorp/consul/api"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/tribune-mesh/tribune/agent/agenttest"
	"github.com/tribune-mesh/tribune/test/wait"
)

// nextWith returns the next response of typeURL that ok accepts, ACKing
// every response on the way (the caller ACKs the one returned).
func (c *deltaClient) nextWith(typeURL string, ok func(*discovery.DeltaDiscoveryResponse) error) *discovery.DeltaDiscoveryResponse {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		r := c.next(typeURL)
		if last = ok(r); last == nil {
			return r
		}
		c.ack(r)
	}
	c.t.Fatalf("no acceptable %s response within 30s: %v", typeURL, last)
	return nil
}

// resourcesOf decodes a delta response's resources into fresh messages of
// new's type, by name.
func resourcesOf[T proto.Message](t *testing.T, r *discovery.DeltaDiscoveryResponse, newT func() T) map[string]T {
	t.Helper()
	out := map[string]T{}
	for _, res := range r.GetResources() {
		m := newT()
		if err := res.GetResource().UnmarshalTo(m); err != nil {
			t.Fatal(err)
		}
		if v, ok := any(m).(interface{ ValidateAll() error }); ok {
			if err := v.ValidateAll(); err != nil {
				t.Fatalf("%s invalid: %v", res.GetName(), err)
			}
		}
		out[res.GetName()] = m
	}
	return out
}

// endpointsOf subscribes to the endpoints of clusters and returns each
// one's addresses, comma-separated and sorted, once all have arrived.
func (c *deltaClient) endpointsOf(clusters ...string) map[string]string {
	c.t.Helper()
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNamesSubscribe: clusters})
	got := map[string]string{}
	wait.For(c.t, 30*time.Second, func() error {
		r := c.next(resource.EndpointType)
		for _, res := range r.GetResources() {
			got[res.GetName()] = strings.Join(endpointsOf(c.t, &discovery.DeltaDiscoveryResponse{Resources: []*discovery.Resource{res}}), ",")
		}
		c.ack(r)
		if len(got) < len(clusters) {
			return fmt.Errorf("endpoints of %d of %d clusters", len(got), len(clusters))
		}
		return nil
	})
	return got
}

// waitCluster returns the next CDS response with a cluster named with
// prefix.
func (c *deltaClient) waitCluster(prefix string) *discovery.DeltaDiscoveryResponse {
	c.t.Helper()
	return c.nextWith(resource.ClusterType, func(r *discovery.DeltaDiscoveryResponse) error {
		if clusterNamed(c.t, r, prefix) == nil {
			return fmt.Errorf("no %s cluster in %d clusters", prefix, len(r.GetResources()))
		}
		return nil
	})
}

func clusterNamed(t *testing.T, r *discovery.DeltaDiscoveryResponse, prefix string) *cluster.Cluster {
	t.Helper()
	for name, cl := range resourcesOf(t, r, func() *cluster.Cluster { return new(cluster.Cluster) }) {
		if strings.HasPrefix(name, prefix) {
			return cl
		}
	}
	return nil
}

// registerDB registers a passing db sidecar on node at addr with meta.
func registerDB(t *testing.T, c *api.Client, dc, node, addr string, meta map[string]string) {
	t.Helper()
	if _, err := c.Catalog().Register(&api.CatalogRegistration{Node: node, Address: addr, Datacenter: dc,
		Service: &api.AgentService{Kind: api.ServiceKindConnectProxy, ID: "db-sidecar-proxy", Service: "db-sidecar-proxy", Port: 21000, Meta: meta,
			Proxy: &api.AgentServiceConnectProxyConfig{DestinationServiceName: "db", DestinationServiceID: "db"}},
		Check: &api.AgentCheck{Node: node, CheckID: "db-proxy", Name: "proxy", Status: api.HealthPassing, ServiceID: "db-sidecar-proxy"},
	}, &api.WriteOptions{Datacenter: dc}); err != nil {
		t.Fatal(err)
	}
}

// A sidecar's upstream follows its discovery chain: a resolver's default
// subset (by a bexpr filter on the instances' meta) and connect timeout
// shape the cluster and its endpoints; with protocol http the upstream
// listener routes over RDS, and a service-router written with PUT
// /v1/config reaches the route configuration the proxy holds.
func TestXDSChainSubsetsAndRouter(t *testing.T) {
	t.Parallel()
	a, c := meshAgentWith(t, agenttest.Config(t), "")
	registerDB(t, c, "", "n3", "10.0.0.3", map[string]string{"version": "2"})
	if _, _, err := c.ConfigEntries().Set(&api.ServiceResolverConfigEntry{Kind: api.ServiceResolver, Name: "db", DefaultSubset: "v2",
		Subsets: map[string]api.ServiceResolverSubset{
			"v1": {Filter: `Service.Meta.version != "2"`},
			"v2": {Filter: `Service.Meta.version == "2"`},
		},
		ConnectTimeout: 2 * time.Second}, nil); err != nil {
		t.Fatal(err)
	}
	const node = "web-sidecar-proxy"
	x := newDeltaClient(t, a, node, "")
	x.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType})
	cds := x.waitCluster("v2.db.default.dc1.internal.")
	v2 := clusterNamed(t, cds, "v2.db.default.dc1.internal.")
	if v2.GetConnectTimeout().AsDuration() != 2*time.Second {
		t.Fatalf("v2 cluster connect timeout %v", v2.GetConnectTimeout().AsDuration())
	}
	x.ack(cds)
	x.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNamesSubscribe: []string{v2.GetName()}})
	eds := x.next(resource.EndpointType)
	if got := endpointsOf(t, eds); strings.Join(got, ",") != "10.0.0.3:21000" {
		t.Fatalf("v2 endpoints = %v, want only the version 2 instance", got)
	}
	x.ack(eds)
	x.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType})
	lds := x.next(resource.ListenerType)
	if _, ok := resourcesOf(t, lds, func() *listener.Listener { return new(listener.Listener) })["db:127.0.0.1:9191"]; !ok {
		t.Fatalf("no db listener in %v", lds.GetResources())
	}
	x.ack(lds)

	// protocol http: the upstream listener switches to RDS.
	if _, _, err := c.ConfigEntries().Set(&api.ProxyConfigEntry{Kind: api.ProxyDefaults, Name: api.ProxyConfigGlobal,
		Config: map[string]any{"protocol": "http"}}, nil); err != nil {
		t.Fatal(err)
	}
	lds2 := x.nextWith(resource.ListenerType, func(r *discovery.DeltaDiscoveryResponse) error {
		l := resourcesOf(t, r, func() *listener.Listener { return new(listener.Listener) })["db:127.0.0.1:9191"]
		var m hcm.HttpConnectionManager
		if l == nil || l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&m) != nil || m.GetRds().GetRouteConfigName() != "db" {
			return fmt.Errorf("db listener without RDS: %v", l)
		}
		return nil
	})
	x.ack(lds2)
	x.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.RouteType, ResourceNamesSubscribe: []string{"db"}})
	rds := x.next(resource.RouteType)
	rc := resourcesOf(t, rds, func() *route.RouteConfiguration { return new(route.RouteConfiguration) })["db"]
	if rc == nil || len(rc.GetVirtualHosts()[0].GetRoutes()) != 1 {
		t.Fatalf("db routes = %v", rc)
	}
	x.ack(rds)

	// A service-router: /v1 goes to subset v1, with retries.
	if _, _, err := c.ConfigEntries().Set(&api.ServiceRouterConfigEntry{Kind: api.ServiceRouter, Name: "db", Routes: []api.ServiceRoute{{
		Match:       &api.ServiceRouteMatch{HTTP: &api.ServiceRouteHTTPMatch{PathPrefix: "/v1"}},
		Destination: &api.ServiceRouteDestination{ServiceSubset: "v1", NumRetries: 2, RetryOnConnectFailure: true},
	}}}, nil); err != nil {
		t.Fatal(err)
	}
	rds2 := x.nextWith(resource.RouteType, func(r *discovery.DeltaDiscoveryResponse) error {
		rc := resourcesOf(t, r, func() *route.RouteConfiguration { return new(route.RouteConfiguration) })["db"]
		if rc == nil || len(rc.GetVirtualHosts()[0].GetRoutes()) != 2 {
			return fmt.Errorf("db routes = %v", rc)
		}
		return nil
	})
	routes := resourcesOf(t, rds2, func() *route.RouteConfiguration { return new(route.RouteConfiguration) })["db"].GetVirtualHosts()[0].GetRoutes()
	first := routes[0]
	if first.GetMatch().GetPrefix() != "/v1" || !strings.HasPrefix(first.GetRoute().GetCluster(), "v1.db.default.dc1.internal.") ||
		first.GetRoute().GetRetryPolicy().GetNumRetries().GetValue() != 2 || first.GetRoute().GetRetryPolicy().GetRetryOn() != "connect-failure" {
		t.Fatalf("first route = %v", first)
	}
	if !strings.HasPrefix(routes[1].GetRoute().GetCluster(), "v2.db.default.dc1.internal.") {
		t.Fatalf("catch-all route = %v", routes[1])
	}
	x.ack(rds2)

	// The public listener of an http service enforces L7 intentions with
	// the HTTP RBAC filter (ACLs are off: the default allows, so the
	// filter lists what a permission denies).
	if _, _, err := c.ConfigEntries().Set(&api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: "web",
		Sources: []*api.SourceIntention{{Name: "lb", Permissions: []*api.IntentionPermission{{
			Action: api.IntentionActionDeny, HTTP: &api.IntentionHTTPPermission{PathPrefix: "/admin", Methods: []string{"DELETE"}},
		}}}}}, nil); err != nil {
		t.Fatal(err)
	}
	pub := x.nextWith(resource.ListenerType, func(r *discovery.DeltaDiscoveryResponse) error {
		l := resourcesOf(t, r, func() *listener.Listener { return new(listener.Listener) })["public_listener:0.0.0.0:21500"]
		var m hcm.HttpConnectionManager
		if l == nil || l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&m) != nil {
			return fmt.Errorf("public listener without HTTP: %v", l)
		}
		var rules rbachttp.RBAC
		if f := m.GetHttpFilters()[0]; f.GetName() != "envoy.filters.http.rbac" || f.GetTypedConfig().UnmarshalTo(&rules) != nil {
			return fmt.Errorf("public listener's first HTTP filter: %v", f)
		}
		if _, ok := rules.GetRules().GetPolicies()["consul-intentions-layer7-0"]; !ok {
			return fmt.Errorf("no L7 policy in %v", rules.GetRules())
		}
		return nil
	})
	x.ack(pub)

	// A chain Tribune cannot serve (a cluster peer's service) leaves its
	// upstream out; the rest of the proxy's configuration still flows.
	if _, _, err := c.ConfigEntries().Set(&api.ServiceResolverConfigEntry{Kind: api.ServiceResolver, Name: "db",
		Redirect: &api.ServiceResolverRedirect{Peer: "elsewhere"}}, nil); err != nil {
		t.Fatal(err)
	}
	x.nextWith(resource.ListenerType, func(r *discovery.DeltaDiscoveryResponse) error {
		for _, name := range r.GetRemovedResources() {
			if name == "db:127.0.0.1:9191" {
				return nil
			}
		}
		return fmt.Errorf("db listener not removed: %v", r.GetRemovedResources())
	})
}

// Cross-datacenter targets: an upstream with Datacenter dc2 gets a cluster
// named for dc2 whose endpoints are dc2's instances (read with ?dc=dc2;
// no mesh gateway: their own addresses), and a resolver failing over to
// dc2 gets an aggregate cluster whose second member holds dc2's instances.
func TestXDSChainCrossDC(t *testing.T) {
	t.Parallel()
	dc1, _ := startDC(t, "dc1", "dc1", 1, 0)
	dc2, _ := startDC(t, "dc2", "dc1", 1, 0)
	joinWAN(t, dc2[0], dc1[0])
	waitDatacenters(t, dc1[0], "dc1", "dc2")
	a, c := dc1[0].agent, dc1[0].api
	wait.For(t, 20*time.Second, func() error {
		roots, _, err := c.Agent().ConnectCARoots(nil)
		if err != nil || len(roots.Roots) == 0 {
			return fmt.Errorf("no CA roots yet (%v)", err)
		}
		return nil
	})
	registerDB(t, c, "dc2", "far", "10.9.0.1", nil)
	registerDB(t, c, "dc1", "near", "10.1.0.1", nil)
	if _, _, err := c.ConfigEntries().Set(&api.ServiceResolverConfigEntry{Kind: api.ServiceResolver, Name: "cache",
		Redirect: &api.ServiceResolverRedirect{Service: "db"}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.ConfigEntries().Set(&api.ServiceResolverConfigEntry{Kind: api.ServiceResolver, Name: "db",
		Failover: map[string]api.ServiceResolverFailover{"*": {Datacenters: []string{"dc2"}}}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{Name: "web", Port: 8080,
		Connect: &api.AgentServiceConnect{SidecarService: &api.AgentServiceRegistration{Port: 21500,
			Proxy: &api.AgentServiceConnectProxyConfig{Upstreams: []api.Upstream{
				{DestinationName: "db", Datacenter: "dc2", LocalBindPort: 9191},
				{DestinationName: "cache", LocalBindPort: 9192},
			}}}}}); err != nil {
		t.Fatal(err)
	}
	x := newDeltaClient(t, a, "web-sidecar-proxy", "")
	x.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType})
	cds := x.waitCluster("failover-target~1~db.default.dc2.internal.")
	remote := clusterNamed(t, cds, "db.default.dc2.internal.")
	agg := clusterNamed(t, cds, "db.default.dc1.internal.")
	if remote == nil || agg == nil || agg.GetClusterType().GetName() != "envoy.clusters.aggregate" {
		t.Fatalf("clusters: dc2 %v, aggregate %v", remote, agg)
	}
	if !strings.Contains(protojson.Format(remote), "/dc/dc2/svc/db") {
		t.Fatalf("dc2 cluster does not verify dc2's identity: %s", protojson.Format(remote))
	}
	x.ack(cds)
	names := []string{remote.GetName()}
	for name := range resourcesOf(t, cds, func() *cluster.Cluster { return new(cluster.Cluster) }) {
		if strings.HasPrefix(name, "failover-target~") {
			names = append(names, name)
		}
	}
	got := x.endpointsOf(names...)
	for name, eps := range got {
		want := "10.9.0.1:21000"
		if strings.Contains(name, ".dc1.") {
			want = "10.1.0.1:21000"
		}
		if eps != want {
			t.Errorf("endpoints of %s = %q, want %q", name, eps, want)
		}
	}
	if len(names) != 3 {
		t.Fatalf("clusters with endpoints: %v", names)
	}
}

// An upstream in a datacenter that cannot be reached does not hold back
// the proxy's configuration: its cluster is there without endpoints, and
// the other upstreams are served.
func TestXDSChainUnreachableDatacenter(t *testing.T) {
	t.Parallel()
	a, c := meshAgentWith(t, agenttest.Config(t), "")
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{Name: "api", Port: 8081,
		Connect: &api.AgentServiceConnect{SidecarService: &api.AgentServiceRegistration{Port: 21501,
			Proxy: &api.AgentServiceConnectProxyConfig{Upstreams: []api.Upstream{
				{DestinationName: "db", Datacenter: "dc9", LocalBindPort: 9191},
				{DestinationName: "db", LocalBindPort: 9192},
			}}}}}); err != nil {
		t.Fatal(err)
	}
	x := newDeltaClient(t, a, "api-sidecar-proxy", "")
	x.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType})
	cds := x.waitCluster("db.default.dc9.internal.")
	local := clusterNamed(t, cds, "db.default.dc1.internal.")
	if local == nil {
		t.Fatalf("no local db cluster in %v", cds.GetResources())
	}
	x.ack(cds)
	remote := clusterNamed(t, cds, "db.default.dc9.internal.").GetName()
	got := x.endpointsOf(local.GetName(), remote)
	if got[local.GetName()] != "10.0.0.1:21000,10.0.0.2:21000" || got[remote] != "" {
		t.Fatalf("endpoints = %v", got)
	}
}
