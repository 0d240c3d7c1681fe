package agent_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/test/wait"
)

// /v1/catalog/gateway-services/<gateway> lists what a terminating or an
// ingress gateway routes to (the official client's
// TestAPI_CatalogGatewayServices_Terminating and _Ingress): the services
// its entry names with their settings and, for a "*", every typical
// service registered but Consul's own, marked FromWildcard; a blocking
// query wakes when the entry changes.
func TestAPICatalog_GatewayServices(t *testing.T) {
	t.Parallel()
	a, c := startAPI(t)
	cat, entries := c.Catalog(), c.ConfigEntries()
	for _, reg := range []*api.CatalogRegistration{
		{Node: "bar", Address: "192.168.10.11", Service: &api.AgentService{ID: "redis", Service: "redis", Port: 6379}},
		// Proxies and gateways are never covered by a wildcard.
		{Node: "bar", Address: "192.168.10.11", Service: &api.AgentService{Kind: api.ServiceKindConnectProxy, ID: "redis-proxy",
			Service: "redis-proxy", Port: 7000, Proxy: &api.AgentServiceConnectProxyConfig{DestinationServiceName: "redis"}}},
	} {
		if _, err := cat.Register(reg, nil); err != nil {
			t.Fatal(err)
		}
	}
	if ok, _, err := entries.Set(&api.TerminatingGatewayConfigEntry{Kind: api.TerminatingGateway, Name: "terminating",
		Services: []api.LinkedService{
			{Name: "api", CAFile: "api/ca.crt", CertFile: "api/client.crt", KeyFile: "api/client.key", SNI: "my-domain"},
			{Name: "*", CAFile: "ca.crt", CertFile: "client.crt", KeyFile: "client.key", SNI: "my-alt-domain"},
		}}, nil); err != nil || !ok {
		t.Fatalf("set terminating-gateway: %v", err)
	}
	got, meta, err := cat.GatewayServices("terminating", nil)
	if err != nil {
		t.Fatal(err)
	}
	gw := api.CompoundServiceName{Name: "terminating"}
	want := []*api.GatewayService{
		{Service: api.CompoundServiceName{Name: "api"}, Gateway: gw, GatewayKind: api.ServiceKindTerminatingGateway,
			CAFile: "api/ca.crt", CertFile: "api/client.crt", KeyFile: "api/client.key", SNI: "my-domain"},
		{Service: api.CompoundServiceName{Name: "redis"}, Gateway: gw, GatewayKind: api.ServiceKindTerminatingGateway,
			CAFile: "ca.crt", CertFile: "client.crt", KeyFile: "client.key", SNI: "my-alt-domain", FromWildcard: true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("terminating gateway services:\n got %s\nwant %s", jsonOf(t, got), jsonOf(t, want))
	}

	// A blocking query wakes on a change of the entry.
	ch := goBlock(func() ([]*api.GatewayService, *api.QueryMeta, error) {
		return cat.GatewayServices("terminating", &api.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 30 * time.Second})
	})
	if ok, _, err := entries.Set(&api.TerminatingGatewayConfigEntry{Kind: api.TerminatingGateway, Name: "terminating",
		Services: []api.LinkedService{{Name: "api"}}}, nil); err != nil || !ok {
		t.Fatalf("update terminating-gateway: %v", err)
	}
	res := recvBlock(t, ch, 20*time.Second)
	if len(res.val) != 1 || res.val[0].Service.Name != "api" || res.val[0].SNI != "" || res.meta.LastIndex <= meta.LastIndex {
		t.Fatalf("after the update: %s (index %d)", jsonOf(t, res.val), res.meta.LastIndex)
	}

	if ok, _, err := entries.Set(&api.IngressGatewayConfigEntry{Kind: api.IngressGateway, Name: "ingress",
		Listeners: []api.IngressListener{
			{Port: 8888, Services: []api.IngressService{{Name: "api"}}},
			{Port: 9999, Services: []api.IngressService{{Name: "redis"}}},
		}}, nil); err != nil || !ok {
		t.Fatalf("set ingress-gateway: %v", err)
	}
	got, _, err = cat.GatewayServices("ingress", nil)
	if err != nil {
		t.Fatal(err)
	}
	ing := api.CompoundServiceName{Name: "ingress"}
	want = []*api.GatewayService{
		{Service: api.CompoundServiceName{Name: "api"}, Gateway: ing, GatewayKind: api.ServiceKindIngressGateway, Protocol: "tcp", Port: 8888},
		{Service: api.CompoundServiceName{Name: "redis"}, Gateway: ing, GatewayKind: api.ServiceKindIngressGateway, Protocol: "tcp", Port: 9999},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ingress gateway services:\n got %s\nwant %s", jsonOf(t, got), jsonOf(t, want))
	}

	// A gateway without an entry routes nothing.
	if got, _, err := cat.GatewayServices("nothing", nil); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("unknown gateway: %+v, %v", got, err)
	}
	if r := httpString(t, a, http.MethodGet, "/v1/catalog/gateway-services/", ""); r.code != http.StatusBadRequest {
		t.Fatalf("no gateway name: %d %s", r.code, r.body)
	}
}

// /v1/health/ingress/<service> lists the instances of the ingress
// gateways that route to the service, not the service's own (the official
// client's TestAPI_HealthIngress), with ?passing.
func TestAPIHealth_Ingress(t *testing.T) {
	t.Parallel()
	_, c := startAPI(t)
	ag := c.Agent()
	for _, reg := range []*api.AgentServiceRegistration{
		{Name: "foo", Port: 8000},
		{Name: "foo-gateway", Port: 8001, Kind: api.ServiceKindIngressGateway},
		{Name: "other-gateway", Port: 8002, Kind: api.ServiceKindIngressGateway,
			Check: &api.AgentServiceCheck{TTL: "1m", Status: api.HealthCritical}},
	} {
		if err := ag.ServiceRegister(reg); err != nil {
			t.Fatal(err)
		}
	}
	// foo speaks http: the "*" of other-gateway's http listener covers it.
	if _, _, err := c.ConfigEntries().Set(&api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "foo", Protocol: "http"}, nil); err != nil {
		t.Fatal(err)
	}
	for _, e := range []*api.IngressGatewayConfigEntry{
		{Kind: api.IngressGateway, Name: "foo-gateway", Listeners: []api.IngressListener{{Port: 2222, Protocol: "tcp",
			Services: []api.IngressService{{Name: "foo"}}}}},
		{Kind: api.IngressGateway, Name: "other-gateway", Listeners: []api.IngressListener{{Port: 2223, Protocol: "http",
			Services: []api.IngressService{{Name: "*"}}}}},
	} {
		if _, _, err := c.ConfigEntries().Set(e, nil); err != nil {
			t.Fatal(err)
		}
	}
	waitFor := func(passing bool, want ...string) {
		t.Helper()
		wait.For(t, 20*time.Second, func() error {
			svcs, meta, err := c.Health().Ingress("foo", passing, nil)
			if err != nil {
				return err
			}
			var names []string
			for _, s := range svcs {
				names = append(names, s.Service.Service)
			}
			sort.Strings(names)
			if meta.LastIndex == 0 || !reflect.DeepEqual(names, want) {
				return fmt.Errorf("health ingress foo passing=%v: %v (index %d), want %v", passing, names, meta.LastIndex, want)
			}
			return nil
		})
	}
	waitFor(true, "foo-gateway")
	waitFor(false, "foo-gateway", "other-gateway")
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
