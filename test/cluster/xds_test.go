package cluster

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tribune-mesh/tribune/agent/agenttest"
	"github.com/tribune-mesh/tribune/test/procs"
)

// edsWatcher plays Envoy on one delta ADS stream: CDS and LDS as
// wildcards, EDS for every cluster it gets, everything ACKed; it keeps the
// endpoints it last got of each cluster.
type edsWatcher struct {
	mu        sync.Mutex
	endpoints map[string]string // cluster -> "addr:port,..." sorted
	err       error
}

func watchEDS(t *testing.T, addr, node string) *edsWatcher {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); conn.Close() })
	w := &edsWatcher{endpoints: map[string]string{}}
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		err := w.run(stream, node)
		w.mu.Lock()
		w.err = err
		w.mu.Unlock()
	}()
	return w
}

func (w *edsWatcher) run(stream discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient, node string) error {
	if err := stream.Send(&discovery.DeltaDiscoveryRequest{Node: &core.Node{Id: node}, TypeUrl: resource.ClusterType}); err != nil {
		return err
	}
	if err := stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType}); err != nil {
		return err
	}
	subscribed := map[string]bool{}
	for {
		r, err := stream.Recv()
		if err != nil {
			return err
		}
		if err := stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()}); err != nil {
			return err
		}
		switch r.GetTypeUrl() {
		case resource.ClusterType:
			var names []string
			for _, res := range r.GetResources() {
				if n := res.GetName(); n != "local_app" && !subscribed[n] {
					subscribed[n] = true
					names = append(names, n)
				}
			}
			if len(names) > 0 {
				if err := stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNamesSubscribe: names}); err != nil {
					return err
				}
			}
		case resource.EndpointType:
			for _, res := range r.GetResources() {
				var cla endpoint.ClusterLoadAssignment
				if err := res.GetResource().UnmarshalTo(&cla); err != nil {
					return err
				}
				var eps []string
				for _, l := range cla.GetEndpoints() {
					for _, e := range l.GetLbEndpoints() {
						sa := e.GetEndpoint().GetAddress().GetSocketAddress()
						eps = append(eps, fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue()))
					}
				}
				sort.Strings(eps)
				w.mu.Lock()
				w.endpoints[cla.GetClusterName()] = strings.Join(eps, ",")
				w.mu.Unlock()
			}
		}
	}
}

// waitFor waits until the endpoints of the cluster whose name starts with
// prefix are want.
func (w *edsWatcher) waitFor(t *testing.T, d time.Duration, prefix, want string) {
	t.Helper()
	waitUntil(t, d, "EDS of "+prefix, func() error {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.err != nil {
			return fmt.Errorf("stream ended: %w", w.err)
		}
		for name, got := range w.endpoints {
			if strings.HasPrefix(name, prefix) {
				if got != want {
					return fmt.Errorf("endpoints %s, want %s", got, want)
				}
				return nil
			}
		}
		return fmt.Errorf("no endpoints yet (%v)", w.endpoints)
	})
}

func setDBInstance(t *testing.T, c *api.Client, node, addr, status string) {
	t.Helper()
	waitUntil(t, 30*time.Second, "register "+node, func() error {
		_, err := c.Catalog().Register(&api.CatalogRegistration{Node: node, Address: addr,
			Service: &api.AgentService{Kind: api.ServiceKindConnectProxy, ID: "db-sidecar-proxy", Service: "db-sidecar-proxy", Port: 21000,
				Proxy: &api.AgentServiceConnectProxyConfig{DestinationServiceName: "db"}},
			Check: &api.AgentCheck{Node: node, CheckID: "db-proxy", Name: "proxy", Status: status, ServiceID: "db-sidecar-proxy"},
		}, nil)
		return err
	})
}

// Consul #10563 with a leader that stops answering without closing its
// connections (SIGSTOP: a hung process, a VM paused): the client agent's
// blocking queries, sent to the leader, must not wait on it for ever. A raw
// ADS client holds a stream to the client agent; once the other two servers
// elect a leader, an instance going critical reaches its EDS within the
// deadline.
func TestXDSThroughPausedLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	grpcPort := agenttest.FreePorts(t, 1)[0]
	c := procs.StartCluster(t, procs.Options{Servers: 3, Clients: 1, AgentArgs: func(name string, server bool) []string {
		if server {
			return nil
		}
		return []string{"-grpc-port", strconv.Itoa(grpcPort), "-hcl", `services {
  kind = "connect-proxy"
  id = "web-sidecar-proxy"
  name = "web-sidecar-proxy"
  port = 21500
  proxy {
    destination_service_name = "web"
    local_service_port = 8080
    upstreams = [{ destination_name = "db", local_bind_port = 9191 }]
  }
}`}
	}})
	cl := c.Clients[0].Client(t)
	waitUntil(t, 60*time.Second, "CA roots on the client", func() error {
		roots, _, err := cl.Agent().ConnectCARoots(nil)
		if err != nil {
			return err
		}
		if len(roots.Roots) == 0 {
			return fmt.Errorf("no roots")
		}
		return nil
	})
	setDBInstance(t, cl, "n1", "10.0.0.1", api.HealthPassing)
	setDBInstance(t, cl, "n2", "10.0.0.2", api.HealthPassing)
	w := watchEDS(t, "127.0.0.1:"+strconv.Itoa(grpcPort), "web-sidecar-proxy")
	w.waitFor(t, 60*time.Second, "db.", "10.0.0.1:21000,10.0.0.2:21000")

	leader := c.Leader(t, 20*time.Second)
	if err := leader.Pause(); err != nil {
		t.Fatal(err)
	}
	var other *procs.Agent
	for _, s := range c.Servers {
		if s != leader {
			other = s
		}
	}
	waitUntil(t, 60*time.Second, "a new leader", func() error {
		l, _, err := procs.Status(other.HTTPAddr())
		if err != nil || l == "" || l == leader.RPCAddr() {
			return fmt.Errorf("leader %q (%v)", l, err)
		}
		return nil
	})
	changed := time.Now()
	setDBInstance(t, other.Client(t), "n2", "10.0.0.2", api.HealthCritical)
	w.waitFor(t, 60*time.Second, "db.", "10.0.0.1:21000")
	t.Logf("EDS update %v after the write, with the old leader paused", time.Since(changed))
	if err := leader.Resume(); err != nil {
		t.Fatal(err)
	}
}
