package catalog_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/tribune-mesh/tribune/catalog"
)

// A proxy block as configuration files write it (snake_case) decodes into
// Consul's fields; the opaque Config maps keep their keys.
func TestDecodeProxyConfig(t *testing.T) {
	var raw map[string]any
	if err := json.Unmarshal([]byte(`{"destination_service_name": "web", "destination_service_id": "web1",
		"local_service_port": 8080, "mode": "transparent", "config": {"bind_address": "0.0.0.0", "envoy_x": 1},
		"upstreams": [{"destination_name": "db", "local_bind_port": 9191, "config": {"connect_timeout_ms": 500}}],
		"transparent_proxy": {"outbound_listener_port": 15001}}`), &raw); err != nil {
		t.Fatal(err)
	}
	p, err := catalog.DecodeProxyConfig(raw)
	if err != nil {
		t.Fatal(err)
	}
	if p.DestinationServiceName != "web" || p.DestinationServiceID != "web1" || p.LocalServicePort != 8080 || p.Mode != "transparent" ||
		p.Config["bind_address"] != "0.0.0.0" || p.Config["envoy_x"] == nil || len(p.Upstreams) != 1 ||
		p.Upstreams[0].DestinationName != "db" || p.Upstreams[0].LocalBindPort != 9191 ||
		p.Upstreams[0].Config["connect_timeout_ms"] != float64(500) || p.TransparentProxy.OutboundListenerPort != 15001 {
		t.Fatalf("decoded %+v", p)
	}
	if _, err := catalog.DecodeProxyConfig(map[string]any{"upstreams": "db"}); !errors.Is(err, catalog.ErrInvalidRequest) {
		t.Fatalf("bad upstreams: %v", err)
	}
	c, err := catalog.DecodeServiceConnect(map[string]any{"native": true})
	if err != nil || c == nil || !c.Native {
		t.Fatalf("native: %+v %v", c, err)
	}
}

// The store refuses a connect-proxy without a destination and bad
// upstreams; mesh instances are listed by their destination.
func TestConnectServiceNodes(t *testing.T) {
	s := catalog.NewStore(nil)
	reg := func(idx uint64, svc *catalog.Service) error {
		return s.EnsureRegistration(idx, &catalog.RegisterRequest{Node: "n1", Address: "10.0.0.1", Service: svc})
	}
	if err := reg(1, &catalog.Service{ID: "web1", Service: "web", Port: 80}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []*catalog.Service{
		{Kind: catalog.ServiceKindConnectProxy, ID: "p", Service: "p", Port: 1},
		{Kind: catalog.ServiceKindConnectProxy, ID: "p", Service: "p", Proxy: &catalog.ConnectProxyConfig{DestinationServiceName: "web"}},
		{Kind: catalog.ServiceKindConnectProxy, ID: "p", Service: "p", Port: 1, Proxy: &catalog.ConnectProxyConfig{DestinationServiceName: "web",
			Upstreams: []catalog.Upstream{{DestinationName: "db", LocalBindPort: 1}, {DestinationName: "x", LocalBindPort: 1}}}},
		{ID: "q", Service: "q", Proxy: &catalog.ConnectProxyConfig{Upstreams: []catalog.Upstream{{LocalBindPort: 1}}}},
	} {
		if err := reg(2, bad); !errors.Is(err, catalog.ErrInvalidRequest) {
			t.Errorf("%+v accepted: %v", bad, err)
		}
	}
	if err := reg(3, &catalog.Service{Kind: catalog.ServiceKindConnectProxy, ID: "web1-proxy", Service: "web-proxy", Port: 21000,
		Proxy: &catalog.ConnectProxyConfig{DestinationServiceName: "web"}}); err != nil {
		t.Fatal(err)
	}
	if err := reg(4, &catalog.Service{ID: "web2", Service: "web", Port: 81, Connect: &catalog.ServiceConnect{Native: true}}); err != nil {
		t.Fatal(err)
	}
	idx, out, err := s.ConnectServiceNodes(nil, "web", nil, true)
	if err != nil || len(out) != 2 || idx != 4 {
		t.Fatalf("connect web = %d instances at %d, %v", len(out), idx, err)
	}
	if err := s.Deregister(5, &catalog.DeregisterRequest{Node: "n1", ServiceID: "web1-proxy"}); err != nil {
		t.Fatal(err)
	}
	if idx, out, _ := s.ConnectServiceNodes(nil, "web", nil, false); len(out) != 1 || idx != 5 {
		t.Fatalf("after a deregistration: %d instances at %d", len(out), idx)
	}
}

// DecodeProxyConfig, reachable from the agent's registration endpoint, never
// panics, and what it accepts the store validates without panicking.
func FuzzDecodeProxyConfig(f *testing.F) {
	f.Add([]byte(`{"destination_service_name": "web", "upstreams": [{"destination_name": "db", "local_bind_port": 9191}]}`))
	f.Add([]byte(`{"Upstreams": [{"DestinationType": "prepared_query"}], "Expose": {"Paths": [{"Path": "/x"}]}}`))
	f.Add([]byte(`{"config": {"a": [1, {"b": null}]}, "mode": "direct"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var raw map[string]any
		if json.Unmarshal(data, &raw) != nil {
			return
		}
		p, err := catalog.DecodeProxyConfig(raw)
		if err != nil || p == nil {
			return
		}
		s := catalog.NewStore(nil)
		_ = s.EnsureRegistration(1, &catalog.RegisterRequest{Node: "n1", Address: "10.0.0.1",
			Service: &catalog.Service{Kind: catalog.ServiceKindConnectProxy, ID: "p", Service: "p", Port: 1, Proxy: p}})
	})
}
