package agent_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/hashicorp/consul/api"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/tribune-mesh/tribune/agent"
	"github.com/tribune-mesh/tribune/agent/agenttest"
	"github.com/tribune-mesh/tribune/test/wait"
)

// A prepared-query upstream (destination_type "prepared_query") of an Envoy
// sidecar: an outbound listener named prepared_query:<query>:<addr>:<port>
// to a cluster <query>.default.<dc>.query.<trust domain> whose TLS checks
// the query's service's SPIFFE ID, with the mesh instances the query
// selects as endpoints; a change of the query's definition reaches the EDS.
func TestXDSPreparedQueryUpstream(t *testing.T) {
	t.Parallel()
	a, c := meshAgentWith(t, agenttest.Config(t), "")
	qid, _, err := c.PreparedQuery().Create(&api.PreparedQueryDefinition{Name: "dbq", Service: api.ServiceQuery{Service: "db"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{Name: "web", Port: 8080,
		Connect: &api.AgentServiceConnect{SidecarService: &api.AgentServiceRegistration{Port: 21500,
			Proxy: &api.AgentServiceConnectProxyConfig{Upstreams: []api.Upstream{
				{DestinationName: "db", LocalBindPort: 9191},
				{DestinationType: api.UpstreamDestTypePreparedQuery, DestinationName: "dbq", LocalBindPort: 9292},
			}}}}}); err != nil {
		t.Fatal(err)
	}
	x := newDeltaClient(t, a, "web-sidecar-proxy", "")
	x.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType})
	var qcluster string
	wait.For(t, 20*time.Second, func() error {
		cds := x.next(resource.ClusterType)
		x.ack(cds)
		for _, cl := range clustersOf(t, cds) {
			if strings.HasPrefix(cl.GetName(), "dbq.default.dc1.query.") {
				raw, _ := protojson.Marshal(cl)
				if !strings.Contains(string(raw), "/dc/dc1/svc/db") || !strings.Contains(string(raw), `"sni":"`+cl.GetName()+`"`) {
					t.Fatalf("query cluster's TLS = %s", raw)
				}
				qcluster = cl.GetName()
			}
		}
		if qcluster == "" {
			return fmt.Errorf("no prepared query cluster yet")
		}
		return nil
	})
	x.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNamesSubscribe: []string{qcluster}})
	eds := x.next(resource.EndpointType)
	if got := strings.Join(endpointsOf(t, eds), ","); got != "10.0.0.1:21000,10.0.0.2:21000" {
		t.Fatalf("query endpoints = %s", got)
	}
	x.ack(eds)
	x.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType})
	lds := x.next(resource.ListenerType)
	found := false
	for _, res := range lds.GetResources() {
		var l listener.Listener
		if err := res.GetResource().UnmarshalTo(&l); err != nil {
			t.Fatal(err)
		}
		if l.GetName() == "prepared_query:dbq:127.0.0.1:9292" {
			raw, _ := protojson.Marshal(&l)
			if !strings.Contains(string(raw), qcluster) {
				t.Fatalf("query listener does not lead to %s: %s", qcluster, raw)
			}
			found = true
		}
	}
	if !found {
		t.Fatalf("no prepared query listener in %v", lds.GetResources())
	}
	x.ack(lds)

	// The query now leaves out instances with a warning: n2's proxy warns.
	if _, err := c.Catalog().Register(&api.CatalogRegistration{Node: "n2", Address: "10.0.0.2", SkipNodeUpdate: true,
		Check: &api.AgentCheck{Node: "n2", CheckID: "db-proxy", Name: "proxy", Status: api.HealthWarning, ServiceID: "db-sidecar-proxy"}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PreparedQuery().Update(&api.PreparedQueryDefinition{ID: qid, Name: "dbq", Service: api.ServiceQuery{Service: "db", OnlyPassing: true}}, nil); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 20*time.Second, func() error {
		r := x.next(resource.EndpointType)
		x.ack(r)
		for _, res := range r.GetResources() {
			if res.GetName() != qcluster {
				continue
			}
			if got := strings.Join(endpointsOf(t, &discovery.DeltaDiscoveryResponse{Resources: []*discovery.Resource{res}}), ","); got != "10.0.0.1:21000" {
				return fmt.Errorf("query endpoints = %s, want n1's only", got)
			}
			return nil
		}
		return fmt.Errorf("no update of %s", qcluster)
	})
}

// A unix socket upstream (local_bind_socket_path and _mode): its listener
// binds the socket, named <upstream>:<path>; a socket path with a port, or
// a mode that is not octal, is refused at registration.
func TestXDSSocketUpstream(t *testing.T) {
	t.Parallel()
	a, c := meshAgentWith(t, agenttest.Config(t), "")
	sock := filepath.Join(t.TempDir(), "db.sock")
	reg := func(u api.Upstream) error {
		return c.Agent().ServiceRegister(&api.AgentServiceRegistration{Name: "web", Port: 8080,
			Connect: &api.AgentServiceConnect{SidecarService: &api.AgentServiceRegistration{Port: 21500,
				Proxy: &api.AgentServiceConnectProxyConfig{Upstreams: []api.Upstream{u}}}}})
	}
	for _, bad := range []api.Upstream{
		{DestinationName: "db", LocalBindSocketPath: sock, LocalBindPort: 9191},
		{DestinationName: "db", LocalBindSocketPath: sock, LocalBindSocketMode: "0999"},
	} {
		if err := reg(bad); err == nil || !strings.Contains(err.Error(), "400") {
			t.Fatalf("registration with upstream %+v: %v, want a 400", bad, err)
		}
	}
	if err := reg(api.Upstream{DestinationName: "db", LocalBindSocketPath: sock, LocalBindSocketMode: "0600"}); err != nil {
		t.Fatal(err)
	}
	l := sidecarListener(t, a, "web-sidecar-proxy", "db:"+sock)
	if p := l.GetAddress().GetPipe(); p.GetPath() != sock || p.GetMode() != 0o600 {
		t.Fatalf("socket listener address = %v", l.GetAddress())
	}
}

// With ACLs, a prepared-query upstream is found as an execution finds it,
// with no right on the query (a proxy's token has none), and a query with a
// token of its own selects the instances that token may read, even those
// the proxy's token may not: an execution's rules.
func TestXDSPreparedQueryUpstreamACL(t *testing.T) {
	t.Parallel()
	a, root := meshAgentWith(t, aclConfig(agenttest.Config(t)), rootSecret)
	// The proxy may not read db, nor any query.
	proxyTok := policyToken(t, root, "web-proxy", `service "web" { policy = "write" } node_prefix "" { policy = "read" }`)
	dbReader := policyToken(t, root, "db-reader", `service_prefix "db" { policy = "read" } node_prefix "" { policy = "read" }`)
	for _, q := range []*api.PreparedQueryDefinition{
		{Name: "own", Token: dbReader, Service: api.ServiceQuery{Service: "db"}},
		{Name: "callers", Service: api.ServiceQuery{Service: "db"}},
	} {
		if _, _, err := root.PreparedQuery().Create(q, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := root.Agent().ServiceRegister(&api.AgentServiceRegistration{Name: "web", Port: 8080,
		Connect: &api.AgentServiceConnect{SidecarService: &api.AgentServiceRegistration{Port: 21500,
			Proxy: &api.AgentServiceConnectProxyConfig{Upstreams: []api.Upstream{
				{DestinationType: api.UpstreamDestTypePreparedQuery, DestinationName: "own", LocalBindPort: 9291},
				{DestinationType: api.UpstreamDestTypePreparedQuery, DestinationName: "callers", LocalBindPort: 9292},
			}}}}}); err != nil {
		t.Fatal(err)
	}
	x := newDeltaClient(t, a, "web-sidecar-proxy", proxyTok)
	x.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType})
	var names []string
	wait.For(t, 20*time.Second, func() error {
		cds := x.next(resource.ClusterType)
		x.ack(cds)
		names = names[:0]
		for _, res := range cds.GetResources() {
			if strings.Contains(res.GetName(), ".query.") {
				names = append(names, res.GetName())
			}
		}
		if len(names) != 2 {
			return fmt.Errorf("query clusters %v, want own's and callers'", names)
		}
		return nil
	})
	x.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNamesSubscribe: names})
	got := map[string]string{}
	wait.For(t, 20*time.Second, func() error {
		eds := x.next(resource.EndpointType)
		x.ack(eds)
		for _, res := range eds.GetResources() {
			got[strings.SplitN(res.GetName(), ".", 2)[0]] = strings.Join(endpointsOf(t, &discovery.DeltaDiscoveryResponse{Resources: []*discovery.Resource{res}}), ",")
		}
		if len(got) < 2 {
			return fmt.Errorf("endpoints of %v only", got)
		}
		return nil
	})
	if got["own"] != "10.0.0.1:21000,10.0.0.2:21000" || got["callers"] != "" {
		t.Fatalf("query endpoints %v: want own's query token to read db's two instances, the proxy's token none", got)
	}
}

// Exposed paths of a sidecar (Proxy.Expose.Paths): a plain HTTP listener
// exposed_path_<path> per path to exposed_cluster_<local port>; a path that
// is not absolute, or two on one listener port, is refused at registration.
func TestXDSExposedPaths(t *testing.T) {
	t.Parallel()
	a, c := meshAgentWith(t, agenttest.Config(t), "")
	reg := func(paths ...api.ExposePath) error {
		return c.Agent().ServiceRegister(&api.AgentServiceRegistration{Name: "web", Port: 8080,
			Connect: &api.AgentServiceConnect{SidecarService: &api.AgentServiceRegistration{Port: 21500,
				Proxy: &api.AgentServiceConnectProxyConfig{Expose: api.ExposeConfig{Paths: paths}}}}})
	}
	for _, bad := range [][]api.ExposePath{
		{{Path: "health", LocalPathPort: 8080, ListenerPort: 21600}},
		{{Path: "/a", LocalPathPort: 8080, ListenerPort: 21600}, {Path: "/b", LocalPathPort: 8080, ListenerPort: 21600}},
		{{Path: "/a", LocalPathPort: 8080, ListenerPort: 21600, Protocol: "tcp"}},
	} {
		if err := reg(bad...); err == nil || !strings.Contains(err.Error(), "400") {
			t.Fatalf("registration exposing %+v: %v, want a 400", bad, err)
		}
	}
	if err := reg(api.ExposePath{Path: "/health", LocalPathPort: 8080, ListenerPort: 21600},
		api.ExposePath{Path: "/metrics", LocalPathPort: 9102, ListenerPort: 21601, Protocol: "HTTP2"}); err != nil {
		t.Fatal(err)
	}
	x := newDeltaClient(t, a, "web-sidecar-proxy", "")
	x.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType})
	cds := x.next(resource.ClusterType)
	x.ack(cds)
	x.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType})
	got := map[string]string{}
	wait.For(t, 20*time.Second, func() error {
		lds := x.next(resource.ListenerType)
		x.ack(lds)
		for _, l := range listenersOf(t, lds) {
			if strings.HasPrefix(l.GetName(), "exposed_path_") {
				raw, _ := protojson.Marshal(l)
				got[l.GetName()] = fmt.Sprintf("%d %v", l.GetAddress().GetSocketAddress().GetPortValue(), strings.Contains(string(raw), "exposed_cluster_"))
			}
		}
		if got["exposed_path_health"] != "21600 true" || got["exposed_path_metrics"] != "21601 true" {
			return fmt.Errorf("exposed listeners %v", got)
		}
		return nil
	})
	for _, res := range cds.GetResources() {
		if strings.HasPrefix(res.GetName(), "exposed_cluster_") {
			got[res.GetName()] = "cluster"
		}
	}
	if got["exposed_cluster_8080"] != "cluster" || got["exposed_cluster_9102"] != "cluster" {
		t.Fatalf("exposed clusters missing: %v", got)
	}
}

// listenersOf decodes the listeners of a delta response, each checked with
// ValidateAll.
func listenersOf(t *testing.T, r *discovery.DeltaDiscoveryResponse) []*listener.Listener {
	t.Helper()
	var out []*listener.Listener
	for _, res := range r.GetResources() {
		l := new(listener.Listener)
		if err := res.GetResource().UnmarshalTo(l); err != nil {
			t.Fatal(err)
		}
		if err := l.ValidateAll(); err != nil {
			t.Fatalf("listener %s invalid: %v", l.GetName(), err)
		}
		out = append(out, l)
	}
	return out
}

// A sidecar registered with expose.checks serves its service's HTTP check
// on a listener of the expose range (the check's ExposedPort, shown by the
// agent's API), to the path and port the check names.
func TestXDSExposedChecks(t *testing.T) {
	t.Parallel()
	cfg := agenttest.Config(t)
	port := agenttest.FreePorts(t, 1)[0]
	cfg.Ports.ExposeMinPort, cfg.Ports.ExposeMaxPort = port, port
	a, c := meshAgentWith(t, cfg, "")
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{Name: "web", Port: 8080,
		Check: &api.AgentServiceCheck{CheckID: "web-http", HTTP: "http://127.0.0.1:8080/healthz", Interval: "10s"},
		Connect: &api.AgentServiceConnect{SidecarService: &api.AgentServiceRegistration{Port: 21500,
			Proxy: &api.AgentServiceConnectProxyConfig{Expose: api.ExposeConfig{Checks: true}}}}}); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 20*time.Second, func() error {
		checks, err := c.Agent().Checks()
		if err != nil {
			return err
		}
		if ch := checks["web-http"]; ch == nil || ch.ExposedPort != port {
			return fmt.Errorf("check %+v, want exposed at %d", ch, port)
		}
		return nil
	})
	l := sidecarListener(t, a, "web-sidecar-proxy", "exposed_path_healthz")
	raw, _ := protojson.Marshal(l)
	if got := l.GetAddress().GetSocketAddress().GetPortValue(); got != uint32(port) || !strings.Contains(string(raw), `"path":"/healthz"`) ||
		!strings.Contains(string(raw), "exposed_cluster_8080") {
		t.Fatalf("exposed check listener on %d: %s", got, raw)
	}
}

// sidecarListener plays Envoy for the sidecar node of a (clusters, then
// listeners) until it is sent the listener called name, and returns it.
func sidecarListener(t *testing.T, a *agent.Agent, node, name string) *listener.Listener {
	t.Helper()
	x := newDeltaClient(t, a, node, "")
	x.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType})
	x.ack(x.next(resource.ClusterType))
	x.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType})
	var found *listener.Listener
	wait.For(t, 20*time.Second, func() error {
		lds := x.next(resource.ListenerType)
		x.ack(lds)
		for _, l := range listenersOf(t, lds) {
			if l.GetName() == name {
				found = l
				return nil
			}
		}
		return fmt.Errorf("no listener %s yet", name)
	})
	return found
}

// clustersOf decodes the clusters of a delta response, each checked with
// ValidateAll.
func clustersOf(t *testing.T, r *discovery.DeltaDiscoveryResponse) []*cluster.Cluster {
	t.Helper()
	var out []*cluster.Cluster
	for _, res := range r.GetResources() {
		cl := new(cluster.Cluster)
		if err := res.GetResource().UnmarshalTo(cl); err != nil {
			t.Fatal(err)
		}
		if err := cl.ValidateAll(); err != nil {
			t.Fatalf("cluster %s invalid: %v", cl.GetName(), err)
		}
		out = append(out, cl)
	}
	return out
}
