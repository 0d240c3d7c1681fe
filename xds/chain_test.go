package xds

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/discoverychain"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// goldenEntries are the config entries of the golden sidecars:
//   - db (tcp): subsets v1/v2 by a filter, v1 by default with a 3s connect
//     timeout, least_request, failing over to db in dc2;
//   - api (http): a splitter, 90% to v1 and 10% to v2;
//   - web (http): a router sending /admin (exact) to admin with a prefix
//     rewrite, retries and a timeout, GET|HEAD /static prefix requests with
//     an x-debug header to the static subset, ?beta=1 by regex to api, and
//     everything else to web.
func goldenEntries() *discoverychain.Entries {
	sub := func(f string) catalog.ServiceResolverSubset { return catalog.ServiceResolverSubset{Filter: f} }
	return &discoverychain.Entries{
		Resolvers: map[string]*catalog.ServiceResolverEntry{
			"db": {
				DefaultSubset:  "v1",
				Subsets:        map[string]catalog.ServiceResolverSubset{"v1": sub(`Service.Meta.version == "1"`), "v2": sub(`Service.Meta.version == "2"`)},
				ConnectTimeout: catalog.Duration(3 * time.Second),
				Failover:       map[string]catalog.ServiceResolverFailover{"*": {Datacenters: []string{"dc2"}}},
				LoadBalancer:   &catalog.LoadBalancer{Policy: "least_request", LeastRequestConfig: &catalog.LeastRequestConfig{ChoiceCount: 3}},
			},
			"api": {
				Subsets: map[string]catalog.ServiceResolverSubset{"v1": sub(`"v1" in Service.Tags`), "v2": sub(`"v2" in Service.Tags`)},
			},
			"cache": {Redirect: &catalog.ServiceResolverRedirect{Service: "db", Datacenter: "dc2"}},
			"web": {
				Subsets:        map[string]catalog.ServiceResolverSubset{"static": sub(`Service.Meta.kind == "static"`)},
				RequestTimeout: catalog.Duration(20 * time.Second),
				LoadBalancer:   &catalog.LoadBalancer{Policy: "ring_hash", HashPolicies: []catalog.HashPolicy{{Field: "header", FieldValue: "x-user"}, {SourceIP: true, Terminal: true}}},
			},
		},
		Splitters: map[string]*catalog.ServiceSplitterEntry{
			"api": {Splits: []catalog.ServiceSplit{{Weight: 90, ServiceSubset: "v1"},
				{Weight: 10, ServiceSubset: "v2", RequestHeaders: &catalog.HTTPHeaderModifiers{Set: map[string]string{"x-canary": "1"}}}}},
		},
		Routers: map[string]*catalog.ServiceRouterEntry{
			"web": {Routes: []catalog.ServiceRoute{
				{Match: &catalog.ServiceRouteMatch{HTTP: &catalog.ServiceRouteHTTPMatch{PathExact: "/admin"}},
					Destination: &catalog.ServiceRouteDestination{Service: "admin", PrefixRewrite: "/", RequestTimeout: catalog.Duration(2 * time.Second),
						NumRetries: 3, RetryOnConnectFailure: true, RetryOnStatusCodes: []uint32{503},
						RequestHeaders:  &catalog.HTTPHeaderModifiers{Add: map[string]string{"x-via": "router"}, Remove: []string{"cookie"}},
						ResponseHeaders: &catalog.HTTPHeaderModifiers{Set: map[string]string{"cache-control": "no-store"}}}},
				{Match: &catalog.ServiceRouteMatch{HTTP: &catalog.ServiceRouteHTTPMatch{PathPrefix: "/static", Methods: []string{"GET", "HEAD"},
					Header: []catalog.ServiceRouteHTTPMatchHeader{{Name: "x-debug", Present: true, Invert: true}}}},
					Destination: &catalog.ServiceRouteDestination{ServiceSubset: "static", IdleTimeout: catalog.Duration(time.Minute)}},
				{Match: &catalog.ServiceRouteMatch{HTTP: &catalog.ServiceRouteHTTPMatch{PathRegex: "/v[0-9]+/.*",
					QueryParam: []catalog.ServiceRouteHTTPMatchQueryParam{{Name: "beta", Exact: "1"}}}},
					Destination: &catalog.ServiceRouteDestination{Service: "api"}},
			}},
		},
		Defaults: map[string]discoverychain.ServiceDefaults{
			"api": {Protocol: "http"}, "web": {Protocol: "http"}, "admin": {Protocol: "http"}, "db": {Protocol: "tcp"},
		},
	}
}

// chainUpstream compiles the chain of service in dc1 and gives each
// target two endpoints, one healthy and one not.
func chainUpstream(t *testing.T, e *discoverychain.Entries, service string, port int) Upstream {
	t.Helper()
	return chainUpstreamIn(t, e, service, "dc1", port)
}

// chainUpstreamIn is chainUpstream for an upstream in datacenter dc.
func chainUpstreamIn(t *testing.T, e *discoverychain.Entries, service, dc string, port int) Upstream {
	t.Helper()
	return chainUpstreamOf(t, e, discoverychain.Request{Service: service, Datacenter: dc, TrustDomain: td}, port)
}

// chainUpstreamOf is chainUpstream for the chain req asks for; the
// upstream names its datacenter when it is not the proxy's (dc1), as a
// registration does.
func chainUpstreamOf(t *testing.T, e *discoverychain.Entries, req discoverychain.Request, port int) Upstream {
	t.Helper()
	ch, err := discoverychain.CompileRequest(e, req)
	if err != nil {
		t.Fatal(err)
	}
	u := Upstream{DestinationName: req.Service, LocalBindPort: port, Chain: ch, TargetEndpoints: map[string][]Endpoint{}}
	if req.Datacenter != "dc1" {
		u.Datacenter = req.Datacenter
	}
	ids := make([]string, 0, len(ch.Targets))
	for id := range ch.Targets {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for i, id := range ids {
		u.TargetEndpoints[id] = []Endpoint{{Address: fmt.Sprintf("10.%d.0.1", i+1), Port: 21000, Healthy: true}, {Address: fmt.Sprintf("10.%d.0.2", i+1), Port: 21000}}
	}
	return u
}

// Two upstreams of one service, one overriding its connect timeout, get
// two clusters: the override's is named with the chain's customization
// hash.
func TestChainOverridesNameClusters(t *testing.T) {
	e := goldenEntries()
	p := goldenProxy()
	plain := chainUpstream(t, e, "admin", 9191)
	ch, err := discoverychain.CompileRequest(e, discoverychain.Request{Service: "admin", Datacenter: "dc1", TrustDomain: td, OverrideConnectTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	custom := Upstream{DestinationName: "admin", LocalBindPort: 9192, Chain: ch,
		TargetEndpoints: map[string][]Endpoint{"admin.default.default.dc1": {{Address: "10.0.0.1", Port: 21000, Healthy: true}}}}
	p.Upstreams = []Upstream{plain, custom}
	snap, err := Build(p)
	if err != nil {
		t.Fatal(err)
	}
	clusters := snap.GetResources(resource.ClusterType)
	sni := "admin.default.dc1.internal." + td
	if _, ok := clusters[sni]; !ok {
		t.Fatalf("no %s in %v", sni, clusters)
	}
	if _, ok := clusters[ch.CustomizationHash+"~"+sni]; !ok || ch.CustomizationHash == "" {
		t.Fatalf("no customized cluster (hash %q) in %v", ch.CustomizationHash, clusters)
	}
	if err := snap.Consistent(); err != nil {
		t.Fatal(err)
	}
}

// goldenProxy is a sidecar of frontend with fixed (fake) certificates, so
// that golden files are stable.
func goldenProxy() *Proxy {
	return &Proxy{
		ID: "frontend-sidecar-proxy", Service: "frontend", Datacenter: "dc1", TrustDomain: td,
		PublicAddress: "0.0.0.0", PublicPort: 21000, LocalAppPort: 8080,
		LeafCert: "LEAF-CERT", LeafKey: "LEAF-KEY", Roots: []string{"ROOT-CERT"},
		Intentions: []*catalog.Intention{
			{SourceName: "*", DestinationName: "frontend", Action: "deny"},
			{SourceName: "lb", DestinationName: "frontend", Action: "allow"},
		},
	}
}

// TestChainGolden builds sidecars with 0, 1 and 3 chained upstreams (a
// failover, a splitter, a router) and L7 intentions, checks every resource
// with ValidateAll and the snapshot with Consistent, and compares them with
// testdata/<name>.golden (go test -update rewrites them).
func TestChainGolden(t *testing.T) {
	e := goldenEntries()
	l7ixns := []*catalog.Intention{
		{SourceName: "*", DestinationName: "frontend", Action: "deny"},
		{SourceName: "lb", DestinationName: "frontend", Permissions: []any{
			map[string]any{"Action": "deny", "HTTP": map[string]any{"PathPrefix": "/admin"}},
			map[string]any{"Action": "allow", "HTTP": map[string]any{"PathPrefix": "/", "Methods": []any{"GET", "POST"},
				"Header": []any{map[string]any{"Name": "x-tenant", "Exact": "a"}}}},
		}},
		{SourceName: "ops", DestinationName: "frontend", Action: "allow"},
	}
	for _, tc := range []struct {
		name string
		mut  func(p *Proxy)
	}{
		{"upstreams-0", func(p *Proxy) {}},
		{"upstreams-1", func(p *Proxy) { p.Upstreams = []Upstream{chainUpstream(t, e, "db", 9191)} }},
		{"upstreams-3", func(p *Proxy) {
			p.Upstreams = []Upstream{chainUpstream(t, e, "db", 9191), chainUpstream(t, e, "api", 9192), chainUpstream(t, e, "web", 9193)}
		}},
		// Cross-datacenter: a resolver redirect to dc2, and an upstream
		// in dc2 (no mesh gateway: the remote instances' addresses).
		{"cross-dc", func(p *Proxy) {
			p.Upstreams = []Upstream{chainUpstream(t, e, "cache", 9191), chainUpstreamIn(t, e, "api", "dc2", 9192)}
		}},
		// Three upstreams of web: the local one, the one that names
		// dc1, and one overriding the protocol (another chain of the
		// same upstream ID): three route configurations, each its
		// upstream's.
		{"same-service-upstreams", func(p *Proxy) {
			named := chainUpstream(t, e, "web", 9192)
			named.Datacenter = "dc1"
			p.Upstreams = []Upstream{chainUpstream(t, e, "web", 9191), named,
				chainUpstreamOf(t, e, discoverychain.Request{Service: "web", Datacenter: "dc1", TrustDomain: td, OverrideProtocol: "http2"}, 9193)}
		}},
		// A transparent proxy: db (tcp) and api (http) reached at their
		// virtual IPs only, web at its own port and its virtual IP too;
		// anything else passes through.
		{"transparent", func(p *Proxy) {
			db, api, web := chainUpstream(t, e, "db", 0), chainUpstream(t, e, "api", 0), chainUpstream(t, e, "web", 9193)
			db.Transparent, db.MatchAddresses, db.DialedDirectly = true, []string{"240.0.0.1"}, true
			api.Transparent, api.MatchAddresses = true, []string{"240.0.0.2", "10.96.0.5"}
			web.Transparent, web.MatchAddresses = true, []string{"240.0.0.3"}
			p.Upstreams = []Upstream{db, api, web}
			p.Outbound = &Outbound{Passthrough: true}
		}},
		// Exposed paths: plain HTTP listeners to the app's ports; two
		// paths whose names would clash.
		{"expose", func(p *Proxy) {
			p.Expose = []ExposePath{
				{Path: "/health", LocalPathPort: 8080, ListenerPort: 21500},
				{Path: "/metrics", LocalPathPort: 9102, ListenerPort: 21501, Protocol: "http2"},
				{Path: "/a/b", LocalPathPort: 8080, ListenerPort: 21502},
				{Path: "/ab", LocalPathPort: 8080, ListenerPort: 21503},
			}
		}},
		{"l7-public", func(p *Proxy) {
			p.Protocol = "http"
			p.Intentions = l7ixns
		}},
		{"l7-public-default-allow", func(p *Proxy) {
			p.Protocol = "grpc"
			p.DefaultAllow = true
			p.Intentions = l7ixns
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := goldenProxy()
			tc.mut(p)
			snap, err := Build(p)
			if err != nil {
				t.Fatal(err)
			}
			memo, err := BuildMemo(p, NewMemo())
			if err != nil {
				t.Fatal(err)
			}
			for _, typ := range []string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType, resource.SecretType} {
				if memo.GetVersion(typ) != snap.GetVersion(typ) {
					t.Errorf("%s: memoized build differs", typ)
				}
			}
			checkGolden(t, tc.name, snap)
		})
	}
}

// checkGolden validates every resource of snap and compares the snapshot
// with testdata/<name>.golden.
func checkGolden(t *testing.T, name string, snap *Snapshot) {
	t.Helper()
	if err := snap.Consistent(); err != nil {
		t.Fatalf("inconsistent: %v", err)
	}
	out := map[string]map[string]any{}
	for _, typ := range []string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType, resource.SecretType} {
		out[typ] = map[string]any{}
		for n, r := range snap.GetResources(typ) {
			if err := r.(interface{ ValidateAll() error }).ValidateAll(); err != nil {
				t.Errorf("%s %s invalid: %v", typ, n, err)
			}
			out[typ][n] = normalJSON(t, r)
		}
	}
	got, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -update writes it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the build (go test -update rewrites it); got:\n%s", path, got)
	}
}

// normalJSON is a resource as JSON with stable formatting (protojson's
// whitespace is not).
func normalJSON(t *testing.T, r types.Resource) any {
	t.Helper()
	raw, err := protojson.Marshal(proto.Message(r))
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// Upstreams of one service whose chains differ (one names the proxy's
// datacenter, one overrides the protocol) get a route configuration each,
// which their listeners name, routing to their own chain's clusters.
func TestUpstreamsOfOneServiceOwnRoutes(t *testing.T) {
	e := goldenEntries()
	p := goldenProxy()
	named := chainUpstream(t, e, "web", 9192)
	named.Datacenter = "dc1"
	h2 := chainUpstreamOf(t, e, discoverychain.Request{Service: "web", Datacenter: "dc1", TrustDomain: td, OverrideProtocol: "http2"}, 9193)
	p.Upstreams = []Upstream{chainUpstream(t, e, "web", 9191), named, h2}
	snap, err := Build(p)
	if err != nil {
		t.Fatal(err)
	}
	routes := snap.GetResources(resource.RouteType)
	want := map[string]string{ // listener -> route configuration
		"web:127.0.0.1:9191":        "web",
		"web?dc=dc1:127.0.0.1:9192": "web?dc=dc1",
		"web:127.0.0.1:9193":        "web:127.0.0.1:9193",
	}
	if len(routes) != len(want) {
		t.Fatalf("%d route configurations, want %d", len(routes), len(want))
	}
	for lname, rname := range want {
		l, _ := snap.GetResources(resource.ListenerType)[lname].(*listener.Listener)
		var m hcm.HttpConnectionManager
		if l == nil || l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&m) != nil {
			t.Fatalf("no L7 listener %s", lname)
		}
		if got := m.GetRds().GetRouteConfigName(); got != rname {
			t.Errorf("listener %s routes over %q, want %q", lname, got, rname)
		}
		rc, _ := routes[rname].(*route.RouteConfiguration)
		if rc == nil {
			t.Fatalf("no route configuration %s", rname)
		}
		custom := strings.HasPrefix(rc.GetVirtualHosts()[0].GetRoutes()[len(rc.GetVirtualHosts()[0].GetRoutes())-1].GetRoute().GetCluster(), h2.Chain.CustomizationHash+"~")
		if custom != (lname == "web:127.0.0.1:9193") {
			t.Errorf("route %s: reaches the http2 chain's clusters %v", rname, custom)
		}
	}
}
