package agent_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/hashicorp/consul/api"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/tribune-mesh/tribune/agent"
	"github.com/tribune-mesh/tribune/agent/agenttest"
	"github.com/tribune-mesh/tribune/agent/config"
	"github.com/tribune-mesh/tribune/test/wait"
)

// deltaClient plays Envoy on one delta ADS stream.
type deltaClient struct {
	t      *testing.T
	node   string
	stream discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	cancel context.CancelFunc
	recv   chan *discovery.DeltaDiscoveryResponse
	errc   chan error
}

func dialXDS(t *testing.T, a *agent.Agent) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(a.XDSAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func newDeltaClient(t *testing.T, a *agent.Agent, node, token string) *deltaClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "x-consul-token", token)
	}
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(dialXDS(t, a)).DeltaAggregatedResources(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	c := &deltaClient{t: t, node: node, stream: stream, cancel: cancel,
		recv: make(chan *discovery.DeltaDiscoveryResponse, 16), errc: make(chan error, 1)}
	go func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				c.errc <- err
				return
			}
			c.recv <- r
		}
	}()
	t.Cleanup(cancel)
	return c
}

func (c *deltaClient) send(req *discovery.DeltaDiscoveryRequest) {
	c.t.Helper()
	req.Node = nodeOf(c.node)
	if err := c.stream.Send(req); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// next returns the next response of typeURL (others are ACKed on the way).
func (c *deltaClient) next(typeURL string) *discovery.DeltaDiscoveryResponse {
	c.t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case r := <-c.recv:
			if r.GetTypeUrl() == typeURL {
				return r
			}
			c.ack(r)
		case err := <-c.errc:
			c.t.Fatalf("stream ended waiting for %s: %v", typeURL, err)
		case <-deadline:
			c.t.Fatalf("no %s response within 20s", typeURL)
		}
	}
}

func (c *deltaClient) ack(r *discovery.DeltaDiscoveryResponse) {
	c.t.Helper()
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
}

func (c *deltaClient) nack(r *discovery.DeltaDiscoveryResponse, msg string) {
	c.t.Helper()
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce(),
		ErrorDetail: &status.Status{Code: int32(codes.InvalidArgument), Message: msg}})
}

// meshAgentWith starts an agent with a web service and its sidecar
// (public port 21500, upstream db on 9191), and two db sidecars in the
// catalog on other nodes, all passing; token is the client's.
func meshAgentWith(t *testing.T, cfg *config.Config, token string) (*agent.Agent, *api.Client) {
	t.Helper()
	a := agenttest.Start(t, cfg)
	c, err := api.NewClient(&api.Config{Address: a.HTTPAddr(), Token: token})
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		waitManagement(t, c)
	}
	wait.For(t, 20*time.Second, func() error {
		roots, _, err := c.Agent().ConnectCARoots(nil)
		if err != nil {
			return err
		}
		if len(roots.Roots) == 0 {
			return fmt.Errorf("no CA roots yet")
		}
		return nil
	})
	for i, node := range []string{"n1", "n2"} {
		if _, err := c.Catalog().Register(&api.CatalogRegistration{Node: node, Address: fmt.Sprintf("10.0.0.%d", i+1),
			Service: &api.AgentService{Kind: api.ServiceKindConnectProxy, ID: "db-sidecar-proxy", Service: "db-sidecar-proxy", Port: 21000,
				Proxy: &api.AgentServiceConnectProxyConfig{DestinationServiceName: "db", DestinationServiceID: "db"}},
			Check: &api.AgentCheck{Node: node, CheckID: "db-proxy", Name: "proxy", Status: api.HealthPassing, ServiceID: "db-sidecar-proxy"},
		}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{Name: "web", Port: 8080,
		Connect: &api.AgentServiceConnect{SidecarService: &api.AgentServiceRegistration{Port: 21500,
			Proxy: &api.AgentServiceConnectProxyConfig{Upstreams: []api.Upstream{{DestinationName: "db", LocalBindPort: 9191}}}}}}); err != nil {
		t.Fatal(err)
	}
	return a, c
}

func endpointsOf(t *testing.T, r *discovery.DeltaDiscoveryResponse) []string {
	t.Helper()
	var out []string
	for _, res := range r.GetResources() {
		var cla endpoint.ClusterLoadAssignment
		if err := res.GetResource().UnmarshalTo(&cla); err != nil {
			t.Fatal(err)
		}
		for _, l := range cla.GetEndpoints() {
			for _, e := range l.GetLbEndpoints() {
				sa := e.GetEndpoint().GetAddress().GetSocketAddress()
				out = append(out, fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue()))
			}
		}
	}
	sort.Strings(out)
	return out
}

// publicListener returns the JSON of the public listener in r ("" if none).
func publicListener(t *testing.T, r *discovery.DeltaDiscoveryResponse) string {
	t.Helper()
	for _, res := range r.GetResources() {
		var l listener.Listener
		if err := res.GetResource().UnmarshalTo(&l); err != nil {
			t.Fatal(err)
		}
		if err := l.ValidateAll(); err != nil {
			t.Fatalf("listener %s invalid: %v", l.GetName(), err)
		}
		if strings.HasPrefix(l.GetName(), "public_listener:") {
			b, err := protojson.Marshal(&l)
			if err != nil {
				t.Fatal(err)
			}
			return string(b)
		}
	}
	return ""
}

// A raw delta ADS client playing Envoy against a real agent: it subscribes
// as the web sidecar, gets clusters, endpoints and listeners that validate,
// ACKs them; NACKs a listener update and the server keeps the version it
// ACKed before (logged and counted); sees an instance going critical leave
// the EDS and an intention change reach the RBAC filter.
func TestXDSDeltaSidecar(t *testing.T) {
	t.Parallel()
	a, c := meshAgentWith(t, agenttest.Config(t), "")
	const node = "web-sidecar-proxy"
	x := newDeltaClient(t, a, node, "")

	cfg := subscribeSidecar(t, x)
	if got := strings.Join(cfg.endpoints, ","); got != "10.0.0.1:21000,10.0.0.2:21000" {
		t.Fatalf("db endpoints = %v", got)
	}
	if pub := cfg.publicListener(); !strings.Contains(pub, "21500") || !strings.Contains(pub, "envoy.filters.network.rbac") {
		t.Fatalf("public listener = %s", pub)
	}
	lds := cfg.lds
	srv := a.XDSServer()
	wait.For(t, 10*time.Second, func() error {
		if v := srv.Acked(node, resource.ListenerType); v != lds.GetSystemVersionInfo() {
			return fmt.Errorf("listeners acked %q, want %q", v, lds.GetSystemVersionInfo())
		}
		return nil
	})

	// An intention change reaches the RBAC filter; the proxy NACKs it and
	// the server keeps the version it ACKed.
	if _, _, err := c.ConfigEntries().Set(&api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: "web",
		Sources: []*api.SourceIntention{{Name: "api", Action: api.IntentionActionDeny}}}, nil); err != nil {
		t.Fatal(err)
	}
	lds2 := x.next(resource.ListenerType)
	if pub := publicListener(t, lds2); !strings.Contains(pub, `/svc/api$`) {
		t.Fatalf("RBAC after deny api = %s", pub)
	}
	nacks := srv.Stats().Nacks
	x.nack(lds2, "test: rejected on purpose")
	wait.For(t, 10*time.Second, func() error {
		if srv.Stats().Nacks != nacks+1 || srv.LastNack(node, resource.ListenerType) != "test: rejected on purpose" {
			return fmt.Errorf("nacks %d, last %q", srv.Stats().Nacks, srv.LastNack(node, resource.ListenerType))
		}
		return nil
	})
	if v := srv.Acked(node, resource.ListenerType); v != lds.GetSystemVersionInfo() {
		t.Fatalf("after a NACK listeners acked %q, want the previous %q", v, lds.GetSystemVersionInfo())
	}

	// An instance going critical leaves the EDS.
	if _, err := c.Catalog().Register(&api.CatalogRegistration{Node: "n2", Address: "10.0.0.2", SkipNodeUpdate: true,
		Check: &api.AgentCheck{Node: "n2", CheckID: "db-proxy", Name: "proxy", Status: api.HealthCritical, ServiceID: "db-sidecar-proxy"}}, nil); err != nil {
		t.Fatal(err)
	}
	eds2 := x.next(resource.EndpointType)
	if got := endpointsOf(t, eds2); strings.Join(got, ",") != "10.0.0.1:21000" {
		t.Fatalf("db endpoints after n2 failed = %v", got)
	}
	x.ack(eds2)

	// The next intention change is accepted.
	if _, _, err := c.ConfigEntries().Set(&api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: "web",
		Sources: []*api.SourceIntention{{Name: "billing", Action: api.IntentionActionDeny}}}, nil); err != nil {
		t.Fatal(err)
	}
	lds3 := x.next(resource.ListenerType)
	if pub := publicListener(t, lds3); !strings.Contains(pub, `/svc/billing$`) || strings.Contains(pub, `/svc/api$`) {
		t.Fatalf("RBAC after deny billing = %s", pub)
	}
	x.ack(lds3)
	wait.For(t, 10*time.Second, func() error {
		if v := srv.Acked(node, resource.ListenerType); v != lds3.GetSystemVersionInfo() {
			return fmt.Errorf("listeners acked %q, want %q", v, lds3.GetSystemVersionInfo())
		}
		return nil
	})
}

// With ACLs on, a stream needs a token with service:write on the proxied
// service (x-consul-token metadata); deleting the token ends the stream.
func TestXDSStreamTokens(t *testing.T) {
	t.Parallel()
	a, root := meshAgentWith(t, aclConfig(agenttest.Config(t)), rootSecret)
	const node = "web-sidecar-proxy"

	anon := newDeltaClient(t, a, node, "")
	anon.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType})
	select {
	case err := <-anon.errc:
		if grpcstatus.Code(err) != codes.PermissionDenied {
			t.Fatalf("anonymous stream ended with %v", err)
		}
	case r := <-anon.recv:
		t.Fatalf("anonymous stream got %v", r)
	case <-time.After(20 * time.Second):
		t.Fatal("anonymous stream not refused")
	}

	pol, _, err := root.ACL().PolicyCreate(&api.ACLPolicy{Name: "web-proxy",
		Rules: `service "web" { policy = "write" } service "db" { policy = "read" } node_prefix "" { policy = "read" }`}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := root.ACL().TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{ID: pol.ID}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	x := newDeltaClient(t, a, node, tok.SecretID)
	x.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType})
	cds := x.next(resource.ClusterType)
	if len(cds.GetResources()) != 2 {
		t.Fatalf("clusters with a token = %v", cds.GetResources())
	}
	x.ack(cds)

	if _, err := root.ACL().TokenDelete(tok.AccessorID, nil); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	for {
		select {
		case err := <-x.errc:
			if c := grpcstatus.Code(err); c != codes.PermissionDenied && c != codes.Unauthenticated {
				t.Fatalf("stream of a deleted token ended with %v", err)
			}
			t.Logf("stream ended %v after its token was deleted", time.Since(deleted))
			return
		case r := <-x.recv:
			x.ack(r)
		case <-time.After(20 * time.Second):
			t.Fatal("stream of a deleted token still open")
		}
	}
}

func nodeOf(id string) *core.Node { return &core.Node{Id: id} }

// State of the world, as grpc-go and older Envoys speak it: a NACKed
// version is not sent again (the proxy keeps the version it ACKed); the
// next response carries the next change.
func TestXDSSotWNack(t *testing.T) {
	t.Parallel()
	a, c := meshAgentWith(t, agenttest.Config(t), "")
	const node = "web-sidecar-proxy"
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(dialXDS(t, a)).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	recv := make(chan *discovery.DiscoveryResponse, 16)
	go func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				close(recv)
				return
			}
			recv <- r
		}
	}()
	next := func() *discovery.DiscoveryResponse {
		t.Helper()
		select {
		case r, ok := <-recv:
			if !ok {
				t.Fatal("stream ended")
			}
			return r
		case <-time.After(20 * time.Second):
			t.Fatal("no response within 20s")
		}
		return nil
	}
	send := func(req *discovery.DiscoveryRequest) {
		t.Helper()
		req.Node = nodeOf(node)
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	setDB2 := func(status string) {
		t.Helper()
		if _, err := c.Catalog().Register(&api.CatalogRegistration{Node: "n2", Address: "10.0.0.2", SkipNodeUpdate: true,
			Check: &api.AgentCheck{Node: "n2", CheckID: "db-proxy", Name: "proxy", Status: status, ServiceID: "db-sidecar-proxy"}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	send(&discovery.DiscoveryRequest{TypeUrl: resource.ClusterType})
	cds := next()
	send(&discovery.DiscoveryRequest{TypeUrl: resource.ClusterType, VersionInfo: cds.GetVersionInfo(), ResponseNonce: cds.GetNonce()})
	var db string
	for _, res := range cds.GetResources() {
		var cl cluster.Cluster
		if err := res.UnmarshalTo(&cl); err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(cl.GetName(), "db.") {
			db = cl.GetName()
		}
	}
	send(&discovery.DiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNames: []string{db}})
	v1 := next()
	send(&discovery.DiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNames: []string{db}, VersionInfo: v1.GetVersionInfo(), ResponseNonce: v1.GetNonce()})
	srv := a.XDSServer()
	wait.For(t, 10*time.Second, func() error {
		if v := srv.Acked(node, resource.EndpointType); v != v1.GetVersionInfo() {
			return fmt.Errorf("EDS acked %q, want %q", v, v1.GetVersionInfo())
		}
		return nil
	})
	setDB2(api.HealthCritical)
	v2 := next()
	if v2.GetTypeUrl() != resource.EndpointType || v2.GetVersionInfo() == v1.GetVersionInfo() {
		t.Fatalf("after a change got %s %s", v2.GetTypeUrl(), v2.GetVersionInfo())
	}
	// NACK v2: Envoy names the version it still runs.
	send(&discovery.DiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNames: []string{db}, VersionInfo: v1.GetVersionInfo(),
		ResponseNonce: v2.GetNonce(), ErrorDetail: &status.Status{Code: int32(codes.InvalidArgument), Message: "sotw: rejected"}})
	wait.For(t, 10*time.Second, func() error {
		if srv.LastNack(node, resource.EndpointType) != "sotw: rejected" {
			return fmt.Errorf("NACK not recorded")
		}
		return nil
	})
	if v := srv.Acked(node, resource.EndpointType); v != v1.GetVersionInfo() {
		t.Fatalf("after a NACK EDS acked %q, want %q", v, v1.GetVersionInfo())
	}
	setDB2(api.HealthPassing)
	v3 := next()
	if v3.GetVersionInfo() == v2.GetVersionInfo() {
		t.Fatalf("the NACKed version %s was sent again", v2.GetVersionInfo())
	}
}
