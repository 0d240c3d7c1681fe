package agent_test

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/hashicorp/consul/api"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/tribune-mesh/tribune/agent/agenttest"
	"github.com/tribune-mesh/tribune/test/wait"
)

// outboundView is what a test reads of a transparent proxy's outbound
// listener: each filter chain's addresses, and whether connections to
// other addresses pass through.
type outboundView struct {
	chains      map[string][]string
	passthrough bool
}

func (o outboundView) String() string {
	names := make([]string, 0, len(o.chains))
	for n, addrs := range o.chains {
		names = append(names, n+"="+strings.Join(addrs, "+"))
	}
	sort.Strings(names)
	return fmt.Sprintf("%s passthrough=%v", strings.Join(names, ","), o.passthrough)
}

// readOutbound returns the outbound listener of r, if r has it.
func readOutbound(t *testing.T, r *discovery.DeltaDiscoveryResponse, name string) (outboundView, bool) {
	t.Helper()
	for _, l := range listenersOf(t, r) {
		if l.GetName() != name {
			continue
		}
		if len(l.GetListenerFilters()) != 1 || l.GetListenerFilters()[0].GetName() != "envoy.filters.listener.original_dst" {
			t.Fatalf("outbound listener without original_dst: %v", l.GetListenerFilters())
		}
		v := outboundView{chains: map[string][]string{}}
		for _, fc := range l.GetFilterChains() {
			for _, pr := range fc.GetFilterChainMatch().GetPrefixRanges() {
				v.chains[fc.GetName()] = append(v.chains[fc.GetName()], pr.GetAddressPrefix())
			}
		}
		if dc := l.GetDefaultFilterChain(); dc != nil {
			raw, _ := protojson.Marshal(dc)
			v.passthrough = strings.Contains(string(raw), `"cluster":"original-destination"`)
		}
		return v, true
	}
	return outboundView{}, false
}

// expectOutbound returns a function that waits until the outbound listener
// name of x's proxy reads want, answering x's listener updates meanwhile.
func expectOutbound(t *testing.T, x *deltaClient, name string) func(want string) {
	var cur outboundView
	return func(want string) {
		t.Helper()
		wait.For(t, 20*time.Second, func() error {
			if cur.chains != nil && cur.String() == want {
				return nil
			}
			r := x.next(resource.ListenerType)
			x.ack(r)
			if v, ok := readOutbound(t, r, name); ok {
				cur = v
			}
			if got := cur.String(); got != want {
				return fmt.Errorf("outbound listener %s: %s, want %s", name, got, want)
			}
			return nil
		})
	}
}

// A sidecar in transparent mode gets an outbound listener on 15001 that
// reaches every mesh service its service may reach at the service's
// virtual IP, each through the same cluster a named upstream would use,
// and passes other connections through; an intention that denies a
// service takes it out, the mesh entry's MeshDestinationsOnly stops the
// passthrough, and service-defaults can make a service's sidecars
// transparent.
func TestXDSTransparentProxy(t *testing.T) {
	t.Parallel()
	a, c := meshAgentWith(t, agenttest.Config(t), "")
	// api: another mesh service, with a sidecar on n3.
	if _, err := c.Catalog().Register(&api.CatalogRegistration{Node: "n3", Address: "10.0.0.3",
		Service: &api.AgentService{Kind: api.ServiceKindConnectProxy, ID: "api-sidecar-proxy", Service: "api-sidecar-proxy", Port: 21000,
			Proxy: &api.AgentServiceConnectProxyConfig{DestinationServiceName: "api", DestinationServiceID: "api"}}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{Name: "frontend", Port: 8081,
		Connect: &api.AgentServiceConnect{SidecarService: &api.AgentServiceRegistration{Port: 21501,
			Proxy: &api.AgentServiceConnectProxyConfig{Mode: api.ProxyModeTransparent}}}}); err != nil {
		t.Fatal(err)
	}
	vip := func(svc string) string {
		t.Helper()
		var ip string
		wait.For(t, 20*time.Second, func() error {
			var out struct {
				Chain struct{ AutoVirtualIPs []string }
			}
			if _, err := c.Raw().Query("/v1/discovery-chain/"+svc, &out, nil); err != nil {
				return err
			}
			if len(out.Chain.AutoVirtualIPs) != 1 {
				return fmt.Errorf("%s has no virtual IP yet", svc)
			}
			ip = out.Chain.AutoVirtualIPs[0]
			return nil
		})
		return ip
	}
	dbIP, apiIP, webIP := vip("db"), vip("api"), vip("web")

	const name = "outbound_listener:127.0.0.1:15001"
	x := newDeltaClient(t, a, "frontend-sidecar-proxy", "")
	x.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType})
	cds := x.next(resource.ClusterType)
	var names []string
	for _, cl := range clustersOf(t, cds) {
		names = append(names, strings.SplitN(cl.GetName(), ".", 2)[0])
	}
	sort.Strings(names)
	// Its own service (frontend) is no upstream of it.
	if want := []string{"api", "db", "local_app", "original-destination", "web"}; !slices.Equal(names, want) {
		t.Fatalf("clusters %v, want %v", names, want)
	}
	x.ack(cds)
	x.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType})
	expect := expectOutbound(t, x, name)
	expect(fmt.Sprintf("api=%s,db=%s,web=%s passthrough=true", apiIP, dbIP, webIP))

	// An intention denying frontend -> db takes db out.
	if _, err := c.Connect().IntentionUpsert(&api.Intention{SourceName: "frontend", DestinationName: "db", Action: api.IntentionActionDeny}, nil); err != nil {
		t.Fatal(err)
	}
	expect(fmt.Sprintf("api=%s,web=%s passthrough=true", apiIP, webIP))

	// Mesh destinations only: no passthrough.
	if _, _, err := c.ConfigEntries().Set(&api.MeshConfigEntry{TransparentProxy: api.TransparentProxyMeshConfig{MeshDestinationsOnly: true}}, nil); err != nil {
		t.Fatal(err)
	}
	expect(fmt.Sprintf("api=%s,web=%s passthrough=false", apiIP, webIP))

	// api's instances may be dialled directly: frontend reaches 10.0.0.3
	// over mTLS to api's identity.
	roots, _, err := c.Agent().ConnectCARoots(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.ConfigEntries().Set(&api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "api",
		TransparentProxy: &api.TransparentProxyConfig{DialedDirectly: true}}, nil); err != nil {
		t.Fatal(err)
	}
	expect(fmt.Sprintf("api=%s,passthrough~api.default.dc1.internal.%s=10.0.0.3,web=%s passthrough=false", apiIP, roots.TrustDomain, webIP))

	// service-defaults make web's sidecar (direct by its registration)
	// transparent, on the port they name.
	if _, _, err := c.ConfigEntries().Set(&api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "web", Mode: api.ProxyModeTransparent,
		TransparentProxy: &api.TransparentProxyConfig{OutboundListenerPort: 15011}}, nil); err != nil {
		t.Fatal(err)
	}
	w := newDeltaClient(t, a, "web-sidecar-proxy", "")
	w.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType})
	w.ack(w.next(resource.ClusterType))
	w.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType})
	// db is its named upstream (port 9191), matched at its virtual IP too;
	// frontend and api through the default allow.
	expectOutbound(t, w, "outbound_listener:127.0.0.1:15011")(fmt.Sprintf("api=%s,db=%s,frontend=%s,passthrough~api.default.dc1.internal.%s=10.0.0.3 passthrough=false",
		apiIP, dbIP, vip("frontend"), roots.TrustDomain))

	// A bad mode in service-defaults is refused.
	if _, _, err := c.ConfigEntries().Set(&api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "web", Mode: "sideways"}, nil); err == nil || !strings.Contains(err.Error(), "400") {
		t.Fatalf("service-defaults with mode sideways: %v, want 400", err)
	}
}
