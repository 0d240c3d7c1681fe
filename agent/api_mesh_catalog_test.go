package agent_test

import (
	"encoding/json"
	"fmt"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/miekg/dns"

	"github.com/tribune-mesh/tribune/test/wait"
)

// A connect-proxy registered in the catalog is returned with its Proxy
// block exactly as registered, by /v1/catalog/connect of its destination
// (as the official client's TestAPI_CatalogConnect checks), and Connect
// native instances are listed there too; /v1/health/connect lists the
// proxies with their checks, honours ?passing and blocks until a proxy's
// health changes.
func TestAPICatalog_ConnectAndHealthConnect(t *testing.T) {
	t.Parallel()
	_, c := startAPI(t)
	cat := c.Catalog()
	proxy := &api.AgentService{
		Kind: api.ServiceKindConnectProxy, ID: "web-proxy1", Service: "web-proxy", Port: 8001,
		Proxy: &api.AgentServiceConnectProxyConfig{
			DestinationServiceName: "web", DestinationServiceID: "web1",
			LocalServiceAddress: "127.0.0.2", LocalServicePort: 8080,
			Upstreams: []api.Upstream{
				{DestinationName: "db", LocalBindPort: 9191, Config: map[string]interface{}{"connect_timeout_ms": float64(1000)}},
				{DestinationType: api.UpstreamDestTypePreparedQuery, DestinationName: "geo-cache", LocalBindPort: 8181},
			},
			Mode:             api.ProxyModeTransparent,
			TransparentProxy: &api.TransparentProxyConfig{OutboundListenerPort: 808},
		},
	}
	mustRegister := func(reg *api.CatalogRegistration) {
		t.Helper()
		if _, err := cat.Register(reg, nil); err != nil {
			t.Fatalf("register %+v: %v", reg.Service, err)
		}
	}
	mustRegister(&api.CatalogRegistration{Node: "foobar", Address: "192.168.10.10",
		Service: &api.AgentService{ID: "web1", Service: "web", Port: 8000},
		Check:   &api.AgentCheck{Node: "foobar", CheckID: "service:web1", Name: "web", Status: api.HealthPassing, ServiceID: "web1"}})
	mustRegister(&api.CatalogRegistration{Node: "foobar", Address: "192.168.10.10", Service: proxy,
		Check: &api.AgentCheck{Node: "foobar", CheckID: "service:web-proxy1", Name: "proxy", Status: api.HealthPassing, ServiceID: "web-proxy1"}})
	mustRegister(&api.CatalogRegistration{Node: "native", Address: "192.168.10.11",
		Service: &api.AgentService{ID: "web-native", Service: "web", Port: 8443, Connect: &api.AgentServiceConnect{Native: true}}})

	svcs, meta, err := cat.Connect("web", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if meta.LastIndex == 0 || len(svcs) != 2 {
		t.Fatalf("catalog connect web = %+v (index %d)", svcs, meta.LastIndex)
	}
	byID := map[string]*api.CatalogService{}
	for _, s := range svcs {
		byID[s.ServiceID] = s
	}
	p := byID["web-proxy1"]
	if p == nil || p.ServicePort != 8001 || p.Datacenter != "dc1" ||
		!reflect.DeepEqual(p.ServiceProxy, proxy.Proxy) {
		t.Fatalf("proxy = %+v\nproxy config %+v\nwant %+v", p, p.ServiceProxy, proxy.Proxy)
	}
	if n := byID["web-native"]; n == nil || n.ServicePort != 8443 {
		t.Fatalf("native = %+v", n)
	}
	if native, _, err := cat.Connect("web", "", &api.QueryOptions{Filter: "ServiceConnect.Native == true"}); err != nil || len(native) != 1 {
		t.Fatalf("filtered natives = %+v, %v", native, err)
	}
	// The plain catalog shows the proxy under its own name, not web's.
	if plain, _, err := cat.Service("web", "", nil); err != nil || len(plain) != 2 {
		t.Fatalf("catalog service web = %+v, %v", plain, err)
	}
	if none, _, err := cat.Connect("db", "", nil); err != nil || len(none) != 0 {
		t.Fatalf("catalog connect db = %+v, %v", none, err)
	}

	health := c.Health()
	hs, hmeta, err := health.Connect("web", "", true, nil)
	if err != nil || len(hs) != 2 {
		t.Fatalf("health connect web = %+v, %v", hs, err)
	}
	// A blocking query returns when the proxy's check goes critical, and
	// ?passing then leaves it out.
	done := make(chan error, 1)
	go func() {
		got, m, err := health.Connect("web", "", true, &api.QueryOptions{WaitIndex: hmeta.LastIndex, WaitTime: 30 * time.Second})
		if err == nil && (len(got) != 1 || got[0].Service.ID != "web-native" || m.LastIndex <= hmeta.LastIndex) {
			err = fmt.Errorf("after the proxy failed: %d instances at index %d", len(got), m.LastIndex)
		}
		done <- err
	}()
	mustRegister(&api.CatalogRegistration{Node: "foobar", Address: "192.168.10.10", SkipNodeUpdate: true,
		Check: &api.AgentCheck{Node: "foobar", CheckID: "service:web-proxy1", Name: "proxy", Status: api.HealthCritical, ServiceID: "web-proxy1"}})
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("blocking /v1/health/connect did not return on a proxy's check change")
	}

	// Deregistering a proxy wakes /v1/catalog/connect.
	_, cmeta, err := cat.Connect("web", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		got, _, err := cat.Connect("web", "", &api.QueryOptions{WaitIndex: cmeta.LastIndex, WaitTime: 30 * time.Second})
		if err == nil && len(got) != 1 {
			err = fmt.Errorf("after deregistration: %+v", got)
		}
		done <- err
	}()
	if _, err := cat.Deregister(&api.CatalogDeregistration{Node: "foobar", ServiceID: "web-proxy1"}, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("blocking /v1/catalog/connect did not return on a deregistration")
	}

	// A connect-proxy without a destination is refused with a 400.
	_, err = cat.Register(&api.CatalogRegistration{Node: "foobar", Address: "192.168.10.10",
		Service: &api.AgentService{Kind: api.ServiceKindConnectProxy, ID: "bad", Service: "bad", Port: 1}}, nil)
	if err == nil || !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), "DestinationServiceName") {
		t.Fatalf("proxy without destination: %v", err)
	}
}

// A sidecar_service registered through the agent, with its upstreams
// written in snake_case as configuration files and Consul's agent accept
// them, is stored with Consul's CamelCase Proxy block; its destination's
// <service>.connect.consul name answers with the sidecar's port.
func TestAPIAgent_SidecarUpstreamsAndConnectDNS(t *testing.T) {
	t.Parallel()
	d := startDNSAgent(t, nil)
	// The sidecar's listening check must pass for DNS to answer with it:
	// a real listener stands in for Envoy.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	port := ln.Addr().(*net.TCPAddr).Port
	body := `{"Name": "api", "Port": 9090, "Connect": {"sidecar_service": {"port": ` + fmt.Sprint(port) + `, "proxy": {
		"upstreams": [{"destination_name": "db", "local_bind_port": 9191, "config": {"connect_timeout_ms": 500}}],
		"config": {"protocol": "grpc"}}}}}`
	if r := httpString(t, d.a, "PUT", "/v1/agent/service/register", body); r.code != 200 {
		t.Fatalf("register: %d %s", r.code, r.body)
	}
	svcs, err := d.api.Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	sc := svcs["api-sidecar-proxy"]
	if sc == nil || sc.Proxy == nil || sc.Port != port {
		t.Fatalf("services = %v", svcs)
	}
	want := &api.AgentServiceConnectProxyConfig{
		DestinationServiceName: "api", DestinationServiceID: "api", LocalServiceAddress: "127.0.0.1", LocalServicePort: 9090,
		Config:    map[string]interface{}{"protocol": "grpc"},
		Upstreams: []api.Upstream{{DestinationName: "db", LocalBindPort: 9191, Config: map[string]interface{}{"connect_timeout_ms": float64(500)}}},
	}
	if !reflect.DeepEqual(sc.Proxy, want) {
		got, _ := json.Marshal(sc.Proxy)
		t.Fatalf("sidecar proxy = %s", got)
	}
	// Anti-entropy puts the sidecar in the catalog; the DNS name of the
	// mesh-capable instances of api answers with the sidecar's port.
	wait.For(t, 20*time.Second, func() error {
		m, err := d.tryQuery("udp", "api.connect.consul.", dns.TypeSRV)
		if err != nil {
			return err
		}
		if got := dnsSRVs(m.Answer); len(got) != 1 || !strings.HasPrefix(got[0], fmt.Sprint(port)+" ") {
			return fmt.Errorf("api.connect SRV = %v, want port %d", got, port)
		}
		return nil
	})
	m := d.query(t, "udp", "nothere.connect.consul.", dns.TypeA)
	dnsWantRcode(t, m, dns.RcodeNameError)
}
