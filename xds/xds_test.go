package xds

import (
	"context"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacconfig "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbac "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/connect"
	"github.com/tribune-mesh/tribune/test/wait"
)

const td = "c0ffee00-0000-0000-0000-000000000001.consul"

// testProxy returns a web sidecar with upstreams db (2 instances, one
// unhealthy) and cache.
func testProxy(t testing.TB) *Proxy {
	t.Helper()
	root, err := connect.NewRoot(connect.Config{}, td, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	id := connect.ServiceID(td, "dc1", "web")
	csr, key, err := connect.NewLeafCSR(id, "ec", 256)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := connect.SignLeaf(root, csr, id, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return &Proxy{
		ID: "web-sidecar-proxy", Service: "web", Datacenter: "dc1", TrustDomain: td,
		PublicAddress: "0.0.0.0", PublicPort: 21000, LocalAppPort: 8080,
		LeafCert: leaf.CertPEM, LeafKey: key, Roots: []string{root.RootCert},
		Upstreams: []Upstream{
			{DestinationName: "db", LocalBindPort: 9191, Endpoints: []Endpoint{
				{Address: "10.0.0.2", Port: 21000, Healthy: true}, {Address: "10.0.0.3", Port: 21000, Healthy: false}}},
			{DestinationName: "cache", LocalBindPort: 9192, Endpoints: []Endpoint{{Address: "10.0.0.4", Port: 21000, Healthy: true}}},
		},
		Intentions: []*catalog.Intention{{SourceName: "api", DestinationName: "web", Action: "allow"}},
	}
}

type validator interface{ Validate() error }

func TestBuildSnapshot(t *testing.T) {
	p := testProxy(t)
	snap, err := Build(p)
	if err != nil {
		t.Fatal(err)
	}
	clusters := snap.GetResources(resource.ClusterType)
	eps := snap.GetResources(resource.EndpointType)
	lis := snap.GetResources(resource.ListenerType)
	if len(clusters) != 3 || len(eps) != 2 || len(lis) != 3 {
		t.Fatalf("got %d clusters, %d endpoints, %d listeners; want 3, 2, 3", len(clusters), len(eps), len(lis))
	}
	for name, r := range clusters {
		if err := r.(validator).Validate(); err != nil {
			t.Errorf("cluster %s invalid: %v", name, err)
		}
	}
	for name, r := range lis {
		if err := r.(validator).Validate(); err != nil {
			t.Errorf("listener %s invalid: %v", name, err)
		}
	}
	dbName := ClusterName("db", "dc1", td)
	if _, ok := clusters[dbName]; !ok {
		t.Fatalf("no cluster %s", dbName)
	}
	if c := clusters[dbName].(*cluster.Cluster); c.GetTransportSocket() == nil {
		t.Fatal("upstream cluster without TLS")
	}
	cla := eps[dbName].(*endpoint.ClusterLoadAssignment)
	if err := cla.Validate(); err != nil {
		t.Fatal(err)
	}
	if n := len(cla.Endpoints[0].LbEndpoints); n != 1 {
		t.Fatalf("db endpoints: %d, want only the healthy one", n)
	}
	pub := lis["public_listener:0.0.0.0:21000"].(*listener.Listener)
	if pub == nil || pub.FilterChains[0].TransportSocket == nil || len(pub.FilterChains[0].Filters) != 2 {
		t.Fatalf("public listener: %v", pub)
	}

	// Same input, same version; an endpoint change, a new version.
	again, _ := Build(testProxy(t))
	_ = again
	v1 := snap.GetVersion(resource.EndpointType)
	snap2, _ := Build(p)
	if snap2.GetVersion(resource.EndpointType) != v1 {
		t.Fatal("identical proxy got a new version")
	}
	p.Upstreams[0].Endpoints[1].Healthy = true
	snap3, _ := Build(p)
	if snap3.GetVersion(resource.EndpointType) == v1 {
		t.Fatal("endpoint change kept the version")
	}
	if snap3.GetVersion(resource.ClusterType) != snap.GetVersion(resource.ClusterType) {
		t.Fatal("endpoint change changed the clusters' version")
	}
}

func TestBuildRefusesBadProxy(t *testing.T) {
	for name, mut := range map[string]func(p *Proxy){
		"no leaf":         func(p *Proxy) { p.LeafCert = "" },
		"no service":      func(p *Proxy) { p.Service = "" },
		"duplicate bind":  func(p *Proxy) { p.Upstreams[1].LocalBindPort = p.Upstreams[0].LocalBindPort },
		"bad bind port":   func(p *Proxy) { p.Upstreams[0].LocalBindPort = 70000 },
		"too many upstrs": func(p *Proxy) { p.Upstreams = make([]Upstream, MaxUpstreams+1) },
		"transparent upstream without an outbound listener": func(p *Proxy) {
			p.Upstreams[0].Transparent, p.Upstreams[0].MatchAddresses = true, []string{"240.0.0.1"}
		},
		"two transparent upstreams at one address": func(p *Proxy) {
			p.Outbound = &Outbound{}
			for i := range p.Upstreams {
				p.Upstreams[i].Transparent, p.Upstreams[i].MatchAddresses = true, []string{"240.0.0.1"}
			}
		},
		"transparent upstream at a bad address": func(p *Proxy) {
			p.Outbound = &Outbound{}
			p.Upstreams[0].Transparent, p.Upstreams[0].MatchAddresses = true, []string{"240.0.0"}
		},
		"outbound port out of range": func(p *Proxy) { p.Outbound = &Outbound{Port: 70000} },
		"exposed path not absolute": func(p *Proxy) {
			p.Expose = []ExposePath{{Path: "health", LocalPathPort: 8080, ListenerPort: 21500}}
		},
		"exposed path on the public port": func(p *Proxy) {
			p.Expose = []ExposePath{{Path: "/health", LocalPathPort: 8080, ListenerPort: p.PublicPort}}
		},
		"two exposed paths on one port": func(p *Proxy) {
			p.Expose = []ExposePath{{Path: "/a", LocalPathPort: 8080, ListenerPort: 21500}, {Path: "/b", LocalPathPort: 8080, ListenerPort: 21500}}
		},
		"exposed path with a bad protocol": func(p *Proxy) {
			p.Expose = []ExposePath{{Path: "/a", LocalPathPort: 8080, ListenerPort: 21500, Protocol: "grpc"}}
		},
		"exposed path to port 0": func(p *Proxy) { p.Expose = []ExposePath{{Path: "/a", ListenerPort: 21500}} },
		"no bind port, not transparent": func(p *Proxy) {
			p.Outbound = &Outbound{}
			p.Upstreams[0].LocalBindPort = 0
		},
	} {
		p := testProxy(t)
		mut(p)
		if _, err := Build(p); err == nil {
			t.Errorf("%s: built", name)
		}
	}
}

// evalPrincipal evaluates the principals Build generates against a client
// certificate URI.
func evalPrincipal(t *testing.T, p *rbacconfig.Principal, uri string) bool {
	switch id := p.Identifier.(type) {
	case *rbacconfig.Principal_Authenticated_:
		m := id.Authenticated.PrincipalName
		switch mp := m.MatchPattern.(type) {
		case interface{ GetExact() string }:
			return mp.GetExact() == uri
		}
		if pre := m.GetPrefix(); pre != "" {
			return strings.HasPrefix(uri, pre)
		}
		if re := m.GetSafeRegex(); re != nil {
			return regexp.MustCompile(re.Regex).MatchString(uri)
		}
		if ex := m.GetExact(); ex != "" {
			return ex == uri
		}
		t.Fatalf("unsupported matcher %v", m)
	case *rbacconfig.Principal_AndIds:
		return allOf(id.AndIds.Ids, func(s *rbacconfig.Principal) bool { return evalPrincipal(t, s, uri) })
	case *rbacconfig.Principal_OrIds:
		return anyOf(id.OrIds.Ids, func(s *rbacconfig.Principal) bool { return evalPrincipal(t, s, uri) })
	case *rbacconfig.Principal_NotId:
		return !evalPrincipal(t, id.NotId, uri)
	}
	t.Fatalf("unsupported principal %T", p.Identifier)
	return false
}

// rbacAllows evaluates the public listener's RBAC filter for a source.
func rbacAllows(t *testing.T, l *listener.Listener, source string) bool {
	var cfg rbac.RBAC
	if err := l.FilterChains[0].Filters[0].GetTypedConfig().UnmarshalTo(&cfg); err != nil {
		t.Fatal(err)
	}
	uri := connect.ServiceID(td, "dc2", source).String()
	matched := false
	for _, pol := range cfg.Rules.Policies {
		for _, pr := range pol.Principals {
			if evalPrincipal(t, pr, uri) {
				matched = true
			}
		}
	}
	if cfg.Rules.Action == rbacconfig.RBAC_ALLOW {
		return matched
	}
	return !matched
}

// TestRBACAgreesWithAuthorize: for every source and both default policies,
// the generated RBAC filter reaches connect.Authorize's decision.
func TestRBACAgreesWithAuthorize(t *testing.T) {
	sets := [][]*catalog.Intention{
		nil,
		{{SourceName: "api", DestinationName: "web", Action: "allow"}},
		{{SourceName: "*", DestinationName: "web", Action: "deny"}, {SourceName: "api", DestinationName: "web", Action: "allow"}},
		{{SourceName: "*", DestinationName: "*", Action: "allow"}, {SourceName: "*", DestinationName: "web", Action: "deny"},
			{SourceName: "api", DestinationName: "*", Action: "allow"}, {SourceName: "api", DestinationName: "web", Action: "deny"}},
		{{SourceName: "bad", DestinationName: "*", Action: "deny"}, {SourceName: "*", DestinationName: "*", Action: "allow"}},
		{{SourceName: "api", DestinationName: "web", Permissions: []any{"l7"}}},
		// A wildcard source of higher precedence decides for a named one.
		{{SourceName: "*", DestinationName: "web", Action: "allow"}, {SourceName: "bad", DestinationName: "*", Action: "deny"}},
		{{SourceName: "api", DestinationName: "other", Action: "allow"}},
	}
	for i, ixns := range sets {
		for _, def := range []bool{false, true} {
			p := testProxy(t)
			p.Intentions = ixns
			p.DefaultAllow = def
			snap, err := Build(p)
			if err != nil {
				t.Fatal(err)
			}
			l := snap.GetResources(resource.ListenerType)["public_listener:0.0.0.0:21000"].(*listener.Listener)
			for _, src := range []string{"api", "bad", "web", "other", "x"} {
				want := connect.Authorize(ixns, src, "web", def).Allowed
				if got := rbacAllows(t, l, src); got != want {
					t.Errorf("set %d default-allow=%v source %s: RBAC allows=%v, Authorize=%v", i, def, src, got, want)
				}
			}
		}
	}
}

// adsClient is a minimal xDS client: it subscribes to one type on one ADS
// stream and ACKs (or NACKs) what it receives.
type adsClient struct {
	stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	node   string
}

// adsConn returns an ADS client of addr whose connection closes with the
// test.
func adsConn(t testing.TB, addr string) discovery.AggregatedDiscoveryServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return discovery.NewAggregatedDiscoveryServiceClient(conn)
}

func dialADS(t testing.TB, ctx context.Context, addr, node string) *adsClient {
	t.Helper()
	st, err := adsConn(t, addr).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &adsClient{stream: st, node: node}
}

func (c *adsClient) subscribe(typeURL string) error {
	return c.stream.Send(&discovery.DiscoveryRequest{Node: &core.Node{Id: c.node}, TypeUrl: typeURL})
}

func (c *adsClient) recvAndAnswer(nack bool) (*discovery.DiscoveryResponse, error) {
	resp, err := c.stream.Recv()
	if err != nil {
		return nil, err
	}
	req := &discovery.DiscoveryRequest{TypeUrl: resp.TypeUrl, VersionInfo: resp.VersionInfo, ResponseNonce: resp.Nonce}
	if nack {
		req.VersionInfo = ""
		req.ErrorDetail = &status.Status{Code: 3, Message: "test rejects this"}
	}
	return resp, c.stream.Send(req)
}

func startServer(t testing.TB) (*Server, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s := NewServer(ctx, nil)
	g := grpc.NewServer()
	s.Register(g)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	return s, ln.Addr().String()
}

func TestADSPushAckNack(t *testing.T) {
	s, addr := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p := testProxy(t)
	snap1, err := s.Update(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	v1 := snap1.GetVersion(resource.ClusterType)
	c := dialADS(t, ctx, addr, p.ID)
	if err := c.subscribe(resource.ClusterType); err != nil {
		t.Fatal(err)
	}
	resp, err := c.recvAndAnswer(false)
	if err != nil {
		t.Fatal(err)
	}
	if resp.VersionInfo != v1 || len(resp.Resources) != 3 {
		t.Fatalf("CDS push: version %s (want %s), %d resources", resp.VersionInfo, v1, len(resp.Resources))
	}
	if err := s.WaitAcked(ctx, resource.ClusterType, v1, []string{p.ID}); err != nil {
		t.Fatal(err)
	}
	// A catalog change: a new version is pushed without a new request.
	p.Upstreams = append(p.Upstreams, Upstream{DestinationName: "search", LocalBindPort: 9193})
	snap2, err := s.Update(ctx, p)
	if err != nil || snap2.GetVersion(resource.ClusterType) == v1 {
		t.Fatalf("update: %v", err)
	}
	v2 := snap2.GetVersion(resource.ClusterType)
	// The client rejects it: counted and logged, the ACKed version stays.
	resp, err = c.recvAndAnswer(true)
	if err != nil || resp.VersionInfo != v2 || len(resp.Resources) != 4 {
		t.Fatalf("second push: %v %v", resp.GetVersionInfo(), err)
	}
	wait.For(t, 5*time.Second, func() error {
		if n := s.Stats().Nacks; n != 1 {
			return fmt.Errorf("%d NACKs counted", n)
		}
		return nil
	})
	if s.Acked(p.ID, resource.ClusterType) != v1 {
		t.Fatalf("after NACK: stats %+v, acked %s", s.Stats(), s.Acked(p.ID, resource.ClusterType))
	}
}

// A proxyless client's snapshot: per service an API listener whose RDS
// route leads to an EDS cluster with weighted localities; every resource
// validates and the references close.
func TestBuildProxyless(t *testing.T) {
	snap, err := BuildProxyless(&Proxyless{ID: "c", Datacenter: "dc1", TrustDomain: td, Services: []ProxylessService{
		{Name: "greeter", Endpoints: []Endpoint{{Address: "10.0.0.1", Port: 50051, Healthy: true}, {Address: "10.0.0.2", Port: 50051}}},
		{Name: "billing"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType} {
		rs := snap.GetResources(typ)
		if len(rs) != 2 {
			t.Fatalf("%d resources of %s, want 2", len(rs), typ)
		}
		for name, r := range rs {
			if err := r.(interface{ ValidateAll() error }).ValidateAll(); err != nil {
				t.Errorf("%s %s invalid: %v", typ, name, err)
			}
		}
	}
	cla := snap.GetResources(resource.EndpointType)[ClusterName("greeter", "dc1", td)].(*endpoint.ClusterLoadAssignment)
	if l := cla.GetEndpoints()[0]; len(l.GetLbEndpoints()) != 1 || l.GetLoadBalancingWeight().GetValue() != 1 {
		t.Fatalf("greeter endpoints = %v", cla)
	}
	if snap.GetResources(resource.ListenerType)["greeter"].(*listener.Listener).GetApiListener() == nil {
		t.Fatal("greeter listener is not an API listener")
	}
	if _, err := BuildProxyless(&Proxyless{ID: "c", Datacenter: "dc1", TrustDomain: td, Services: []ProxylessService{{}}}); err == nil {
		t.Fatal("a service without a name was accepted")
	}
}

// BuildMemo reuses what did not change (a proxy whose endpoints changed
// keeps its clusters and listeners, the same objects), and the version map
// it fills in is the one go-control-plane would compute.
func TestBuildMemo(t *testing.T) {
	m := NewMemo()
	p := testProxy(t)
	a, err := BuildMemo(p, m)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := Build(p)
	if err != nil {
		t.Fatal(err)
	}
	if a.GetVersion(resource.ClusterType) != plain.GetVersion(resource.ClusterType) {
		t.Fatal("a memoized build differs from a plain one")
	}
	again, _ := BuildMemo(p, m)
	if again.GetVersion(resource.ClusterType) != a.GetVersion(resource.ClusterType) {
		t.Fatal("an unchanged proxy got a new version")
	}
	p.Upstreams[0].Endpoints = append(p.Upstreams[0].Endpoints, Endpoint{Address: "10.0.0.9", Port: 21000, Healthy: true})
	b, err := BuildMemo(p, m)
	if err != nil {
		t.Fatal(err)
	}
	if b.GetVersion(resource.EndpointType) == a.GetVersion(resource.EndpointType) {
		t.Fatal("a new endpoint did not change the version")
	}
	for _, typ := range []string{resource.ClusterType, resource.ListenerType} {
		for name, r := range b.GetResources(typ) {
			if a.GetResources(typ)[name] != r {
				t.Errorf("%s %s was rebuilt for an endpoint change", typ, name)
			}
		}
	}
	db := ClusterName("db", "dc1", td)
	if b.GetResources(resource.EndpointType)[db] == a.GetResources(resource.EndpointType)[db] {
		t.Error("db's endpoints were not rebuilt")
	}
	if err := b.Consistent(); err != nil {
		t.Fatalf("memoized snapshot inconsistent: %v", err)
	}
	if err := consistent(b, nil); err != nil {
		t.Fatalf("cheap check refuses a consistent snapshot: %v", err)
	}
	broken, _ := Build(p)
	eps := broken.set(resource.EndpointType)
	eps.entries = slices.DeleteFunc(eps.entries, func(e snapEntry) bool { return e.name == db })
	if consistent(broken, nil) == nil || broken.Consistent() == nil {
		t.Fatal("a snapshot missing endpoints passed a check")
	}
	// The versions are go-control-plane's (a hash of each resource's
	// encoding), computed once per resource.
	computed, err := b.Cache()
	if err != nil {
		t.Fatal(err)
	}
	computed.VersionMap = nil
	if err := computed.ConstructVersionMap(); err != nil {
		t.Fatal(err)
	}
	for _, typ := range []string{resource.ClusterType, resource.EndpointType, resource.ListenerType} {
		if fmt.Sprint(computed.GetVersionMap(typ)) != fmt.Sprint(b.GetVersionMap(typ)) {
			t.Errorf("%s version map = %v, want %v", typ, b.GetVersionMap(typ), computed.GetVersionMap(typ))
		}
	}
}
