package xds

import (
	"context"
	"fmt"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// bigEndpoints is a snapshot of one ~60 KB endpoint set, version v.
func bigEndpoints(t *testing.T, v int) *cachev3.Snapshot {
	t.Helper()
	eps := make([]Endpoint, 2000)
	for i := range eps {
		eps[i] = Endpoint{Address: fmt.Sprintf("10.%d.%d.%d", v%250, i/250, i%250), Port: 21000, Healthy: true}
	}
	snap, err := cachev3.NewSnapshot(fmt.Sprint(v), map[resource.Type][]types.Resource{
		resource.EndpointType: {loadAssignment("big", eps)},
	})
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// dialDelta opens a delta ADS stream to addr, closed with the test.
func dialDelta(t *testing.T, ctx context.Context, addr string) discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient {
	t.Helper()
	st, err := adsConn(t, addr).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// A delta stream whose proxy stops reading holds up neither the goroutine
// that sets its snapshots (a proxy's build) nor another proxy's stream:
// what it is sent waits on its own goroutine.
func TestDeltaProxyNotReadingBlocksNoOne(t *testing.T) {
	s, addr := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	open := func(node string) discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient {
		st := dialDelta(t, ctx, addr)
		if err := st.Send(&discovery.DeltaDiscoveryRequest{Node: &core.Node{Id: node}, TypeUrl: resource.EndpointType}); err != nil {
			t.Fatal(err)
		}
		return st
	}
	stuck := open("stuck")
	// The stuck proxy asks again and again (each request opens a watch
	// that the next snapshot answers) but never reads: after a few
	// answers its flow-control windows are full and a send waits.
	for v := range 12 {
		done := make(chan error, 1)
		go func() { done <- s.SetSnapshot(ctx, "stuck", bigEndpoints(t, v)) }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("SetSnapshot %d of a proxy that does not read did not return", v)
		}
		if err := stuck.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.EndpointType, ResponseNonce: fmt.Sprint(v + 1)}); err != nil {
			t.Fatal(err)
		}
	}
	live := open("live")
	if err := s.SetSnapshot(ctx, "live", bigEndpoints(t, 1)); err != nil {
		t.Fatal(err)
	}
	resp, err := live.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var cla endpoint.ClusterLoadAssignment
	if len(resp.GetResources()) != 1 || resp.GetResources()[0].GetResource().UnmarshalTo(&cla) != nil || len(cla.GetEndpoints()[0].GetLbEndpoints()) != 2000 {
		t.Fatalf("live proxy got %v", resp.GetResources())
	}
}

// Envoy's order on a delta stream: listeners wait while the clusters (and
// their endpoints) they may use are not acknowledged. The proxy asks for
// clusters and listeners, then for the endpoints of the cluster it got:
// the endpoints come before the listeners (which were asked for first),
// and the listeners come once both are ACKed.
func TestDeltaListenersWaitForClusters(t *testing.T) {
	s, addr := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	snap, err := cachev3.NewSnapshot("1", map[resource.Type][]types.Resource{
		resource.ClusterType:  {&cluster.Cluster{Name: "db"}},
		resource.EndpointType: {loadAssignment("db", []Endpoint{{Address: "10.0.0.1", Port: 21000, Healthy: true}})},
		resource.ListenerType: {&listener.Listener{Name: "db:127.0.0.1:9191"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetSnapshot(ctx, "web-proxy", snap); err != nil {
		t.Fatal(err)
	}
	st := dialDelta(t, ctx, addr)
	send := func(req *discovery.DeltaDiscoveryRequest) {
		t.Helper()
		req.Node = &core.Node{Id: "web-proxy"}
		if err := st.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	recv := func(want string) *discovery.DeltaDiscoveryResponse {
		t.Helper()
		r, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if r.GetTypeUrl() != want {
			t.Fatalf("got a response of %s, want %s", r.GetTypeUrl(), want)
		}
		return r
	}
	send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType})
	send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType})
	cds := recv(resource.ClusterType)
	send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNamesSubscribe: []string{"db"}})
	eds := recv(resource.EndpointType)
	send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.EndpointType, ResponseNonce: eds.GetNonce()})
	send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType, ResponseNonce: cds.GetNonce()})
	lds := recv(resource.ListenerType)
	if len(lds.GetResources()) != 1 || lds.GetResources()[0].GetName() != "db:127.0.0.1:9191" {
		t.Fatalf("listeners: %v", lds.GetResources())
	}
}
