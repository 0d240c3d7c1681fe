package agent_test

import (
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/agent/agenttest"
	"github.com/tribune-mesh/tribune/test/wait"
)

// TestAPIDiscoveryChain carries the expectations of the client's
// TestAPI_DiscoveryChain_Get (the CustomizationHash aside: Consul's value
// comes from a hash of its own Go structs).
func TestAPIDiscoveryChain(t *testing.T) {
	t.Parallel()
	const clusterID = "11111111-2222-3333-4444-555555555555"
	cfg := agenttest.Config(t)
	cfg.Connect.CAConfig = map[string]any{"cluster_id": clusterID}
	a := agenttest.Start(t, cfg)
	c, err := api.NewClient(&api.Config{Address: a.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, 20*time.Second, func() error {
		_, _, err := c.Connect().CARoots(nil)
		return err
	})
	dcs := c.DiscoveryChain()
	sni := func(dc string) string { return "web.default." + dc + ".internal." + clusterID + ".consul" }
	chain := func(dc string, timeout time.Duration, isDefault bool) *api.DiscoveryChainResponse {
		id := "web.default.default." + dc
		return &api.DiscoveryChainResponse{Chain: &api.CompiledDiscoveryChain{
			ServiceName: "web", Namespace: "default", Datacenter: dc, Protocol: "tcp", Default: isDefault,
			StartNode: "resolver:" + id,
			Nodes: map[string]*api.DiscoveryGraphNode{"resolver:" + id: {Type: api.DiscoveryGraphNodeTypeResolver, Name: id,
				Resolver: &api.DiscoveryResolver{Default: isDefault, ConnectTimeout: timeout, Target: id}}},
			Targets: map[string]*api.DiscoveryTarget{id: {ID: id, Service: "web", Namespace: "default", Datacenter: dc,
				ConnectTimeout: timeout, SNI: sni(dc), Name: sni(dc)}},
		}}
	}
	check := func(name string, opts *api.DiscoveryChainOptions, want *api.DiscoveryChainResponse) {
		t.Helper()
		got, _, err := dcs.Get("web", opts, nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(got.Chain.Targets, want.Chain.Targets) || !reflect.DeepEqual(got.Chain.Nodes, want.Chain.Nodes) {
			t.Errorf("%s: targets %+v nodes %+v", name, got.Chain.Targets, got.Chain.Nodes)
		}
		got.Chain.Targets, got.Chain.Nodes, want.Chain.Targets, want.Chain.Nodes = nil, nil, nil, nil
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", name, got.Chain, want.Chain)
		}
	}
	check("default", nil, chain("dc1", 5*time.Second, true))
	check("default in dc2", &api.DiscoveryChainOptions{EvaluateInDatacenter: "dc2"}, chain("dc2", 5*time.Second, true))

	if ok, _, err := c.ConfigEntries().Set(&api.ServiceResolverConfigEntry{Kind: api.ServiceResolver, Name: "web", ConnectTimeout: 33 * time.Second}, nil); err != nil || !ok {
		t.Fatalf("set resolver: %v %v", ok, err)
	}
	check("modified", nil, chain("dc1", 33*time.Second, false))

	got, _, err := dcs.Get("web", &api.DiscoveryChainOptions{EvaluateInDatacenter: "dc2",
		OverrideMeshGateway: api.MeshGatewayConfig{Mode: api.MeshGatewayModeLocal}, OverrideProtocol: "grpc",
		OverrideConnectTimeout: 22 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := chain("dc2", 22*time.Second, false)
	want.Chain.Protocol = "grpc"
	want.Chain.Targets["web.default.default.dc2"].MeshGateway = api.MeshGatewayConfig{Mode: api.MeshGatewayModeLocal}
	if got.Chain.CustomizationHash == "" || len(got.Chain.CustomizationHash) != 8 {
		t.Errorf("CustomizationHash = %q", got.Chain.CustomizationHash)
	}
	got.Chain.CustomizationHash = ""
	if !reflect.DeepEqual(got, want) {
		t.Errorf("overrides:\n got %+v\nwant %+v", got.Chain, want.Chain)
	}

	// A blocking read wakes when an entry of the chain changes.
	_, meta, err := dcs.Get("web", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := goBlock(func() (*api.DiscoveryChainResponse, *api.QueryMeta, error) {
		return dcs.Get("web", nil, &api.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 30 * time.Second})
	})
	if _, _, err := c.ConfigEntries().Set(&api.ServiceResolverConfigEntry{Kind: api.ServiceResolver, Name: "web", ConnectTimeout: 7 * time.Second}, nil); err != nil {
		t.Fatal(err)
	}
	res := <-done
	if res.err != nil || res.val.Chain.Targets["web.default.default.dc1"].ConnectTimeout != 7*time.Second {
		t.Fatalf("blocking read = %+v", res)
	}

	if r := httpString(t, a, http.MethodPost, "/v1/discovery-chain/web", `{"OverrideConnectTimeout":"soon"}`); r.code != http.StatusBadRequest {
		t.Errorf("bad override = %d %s", r.code, r.body)
	}
}
