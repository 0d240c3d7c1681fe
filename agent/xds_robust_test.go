package agent_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/agent/agenttest"
	"github.com/tribune-mesh/tribune/agent/config"
	"github.com/tribune-mesh/tribune/test/wait"
)

// sidecarConfig is what a raw client playing Envoy holds after it
// subscribed: every cluster, the endpoints of the EDS ones, every listener.
type sidecarConfig struct {
	db        string              // the db upstream's cluster name
	endpoints []string            // the db cluster's endpoints
	listeners map[string]string   // name -> JSON of the public listener, "" for others
	eds       map[string]struct{} // the EDS clusters
	lds       *discovery.DeltaDiscoveryResponse
}

// publicListener returns the JSON of the public listener.
func (c *sidecarConfig) publicListener() string {
	for name, pub := range c.listeners {
		if strings.HasPrefix(name, "public_listener:") {
			return pub
		}
	}
	return ""
}

// subscribeSidecar subscribes x as Envoy does on a new stream (CDS, then
// EDS for the clusters it got, then LDS), ACKs each response and checks
// that the configuration is whole: every resource validates, every EDS
// cluster has its endpoints, the public and upstream listeners are there.
func subscribeSidecar(t *testing.T, x *deltaClient) *sidecarConfig {
	t.Helper()
	out := &sidecarConfig{listeners: map[string]string{}, eds: map[string]struct{}{}}
	x.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType})
	cds := x.next(resource.ClusterType)
	for _, cl := range clustersOf(t, cds) {
		if cl.GetType() == cluster.Cluster_EDS {
			out.eds[cl.GetName()] = struct{}{}
		}
		if strings.HasPrefix(cl.GetName(), "db.default.dc1.internal.") {
			out.db = cl.GetName()
		}
	}
	if out.db == "" || len(cds.GetResources()) != 2 {
		t.Fatalf("clusters = %v", cds.GetResources())
	}
	x.ack(cds)
	names := make([]string, 0, len(out.eds))
	for n := range out.eds {
		names = append(names, n)
	}
	x.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNamesSubscribe: names})
	eds := x.next(resource.EndpointType)
	got := map[string]bool{}
	for _, res := range eds.GetResources() {
		got[res.GetName()] = true
	}
	for n := range out.eds {
		if !got[n] {
			t.Fatalf("EDS cluster %s has no endpoints in %v", n, eds.GetResources())
		}
	}
	out.endpoints = endpointsOf(t, eds)
	x.ack(eds)
	x.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType})
	lds := x.next(resource.ListenerType)
	for _, res := range lds.GetResources() {
		var l listener.Listener
		if err := res.GetResource().UnmarshalTo(&l); err != nil {
			t.Fatal(err)
		}
		if err := l.ValidateAll(); err != nil {
			t.Fatalf("listener %s invalid: %v", l.GetName(), err)
		}
		out.listeners[l.GetName()] = publicListener(t, &discovery.DeltaDiscoveryResponse{Resources: []*discovery.Resource{res}})
	}
	if len(out.listeners) != 2 || publicListener(t, lds) == "" {
		t.Fatalf("listeners = %v", lds.GetResources())
	}
	x.ack(lds)
	out.lds = lds
	return out
}

// waitEndpoints reads EDS responses (ACKing them and anything else) until
// the db cluster's endpoints are want.
func waitEndpoints(t *testing.T, x *deltaClient, want string) {
	t.Helper()
	for {
		r := x.next(resource.EndpointType)
		got := strings.Join(endpointsOf(t, r), ",")
		x.ack(r)
		if got == want {
			return
		}
		t.Logf("db endpoints %s, waiting for %s", got, want)
	}
}

// setInstance writes the health of db's instance on node through c,
// retrying while the servers elect a leader.
func setInstance(t *testing.T, c *api.Client, node, addr, status string) {
	t.Helper()
	wait.For(t, 30*time.Second, func() error {
		_, err := c.Catalog().Register(&api.CatalogRegistration{Node: node, Address: addr,
			Service: &api.AgentService{Kind: api.ServiceKindConnectProxy, ID: "db-sidecar-proxy", Service: "db-sidecar-proxy", Port: 21000,
				Proxy: &api.AgentServiceConnectProxyConfig{DestinationServiceName: "db", DestinationServiceID: "db"}},
			Check: &api.AgentCheck{Node: node, CheckID: "db-proxy", Name: "proxy", Status: status, ServiceID: "db-sidecar-proxy"},
		}, nil)
		return err
	})
}

// Consul #10563: sidecars stopped getting updates. A raw delta ADS client
// playing Envoy holds a stream to a client agent of a 3-server cluster:
// after the leader is killed and a new one elected, a catalog change (an
// instance going critical) and an intention change still reach it; after
// the agent restarts, the client reconnects as Envoy does and gets a whole,
// consistent configuration of the current catalog, and changes after that.
func TestXDSStreamThroughLeaderKillAndAgentRestart(t *testing.T) {
	t.Parallel()
	const proxyID = "web-sidecar-proxy"
	srvs, cls := startClusterWith(t, 3, 1, func(c *config.Config) {
		if c.Server {
			return
		}
		// From the configuration, so that the restarted agent has it.
		c.Services = []config.ServiceDefinition{{Kind: "connect-proxy", ID: proxyID, Name: proxyID, Port: 21500,
			Proxy: map[string]any{"DestinationServiceName": "web", "LocalServicePort": 8080,
				"Upstreams": []any{map[string]any{"DestinationName": "db", "LocalBindPort": 9191}}}}}
	})
	client := cls[0]
	waitRoots(t, client.api)
	setInstance(t, client.api, "n1", "10.0.0.1", api.HealthPassing)
	setInstance(t, client.api, "n2", "10.0.0.2", api.HealthPassing)

	x := newDeltaClient(t, client.agent, proxyID, "")
	first := subscribeSidecar(t, x)
	if got := strings.Join(first.endpoints, ","); got != "10.0.0.1:21000,10.0.0.2:21000" {
		t.Fatalf("db endpoints = %s", got)
	}

	// Kill the leader; after the election, changes still reach the stream.
	old := leaderOf(t, srvs)
	old.stop(t)
	oldAddr := fmt.Sprintf("127.0.0.1:%d", old.cfg.Ports.Server)
	var rest []*node
	for _, s := range srvs {
		if s != old {
			rest = append(rest, s)
		}
	}
	wait.For(t, 30*time.Second, func() error {
		l, err := rest[0].api.Status().Leader()
		if err != nil || l == "" || l == oldAddr {
			return fmt.Errorf("leader %q (%v)", l, err)
		}
		return nil
	})
	changed := time.Now()
	setInstance(t, client.api, "n2", "10.0.0.2", api.HealthCritical)
	waitEndpoints(t, x, "10.0.0.1:21000")
	t.Logf("EDS update after the leader kill: %v from the write", time.Since(changed))
	wait.For(t, 30*time.Second, func() error {
		_, _, err := client.api.ConfigEntries().Set(&api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: "web",
			Sources: []*api.SourceIntention{{Name: "api", Action: api.IntentionActionDeny}}}, nil)
		return err
	})
	for {
		lds := x.next(resource.ListenerType)
		pub := publicListener(t, lds)
		x.ack(lds)
		if strings.Contains(pub, `/svc/api$`) {
			break
		}
	}

	// Restart the agent: the stream ends; the catalog changes while the
	// agent is down; the client reconnects and gets the whole, current
	// configuration.
	client.stop(t)
	select {
	case <-x.errc:
	case <-time.After(20 * time.Second):
		t.Fatal("the stream outlived its agent")
	}
	setInstance(t, rest[0].api, "n2", "10.0.0.2", api.HealthPassing)
	// It joins through a live server (the first, which it joined before,
	// may be the one killed).
	client.cfg.RetryJoin = []string{agenttest.SerfAddr(rest[0].cfg)}
	restarted := agenttest.StartNoWait(t, client.cfg)
	x2 := newDeltaClient(t, restarted, proxyID, "")
	second := subscribeSidecar(t, x2)
	if got := strings.Join(second.endpoints, ","); got != "10.0.0.1:21000,10.0.0.2:21000" {
		t.Fatalf("db endpoints after the restart = %s", got)
	}
	if second.db != first.db {
		t.Fatalf("db cluster %s after the restart, %s before", second.db, first.db)
	}
	if pub := second.publicListener(); !strings.Contains(pub, `/svc/api$`) {
		t.Fatalf("the restarted agent's RBAC lost the intention: %s", pub)
	}
	setInstance(t, rest[0].api, "n1", "10.0.0.1", api.HealthCritical)
	waitEndpoints(t, x2, "10.0.0.2:21000")
}
