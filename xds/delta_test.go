package xds

import (
	"context"
	"fmt"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
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

// A delta stream whose proxy stops reading holds up neither the goroutine
// that sets its snapshots (a proxy's build) nor another proxy's stream:
// what it is sent waits on its own goroutine.
func TestDeltaProxyNotReadingBlocksNoOne(t *testing.T) {
	s, addr := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	open := func(node string) discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		st, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
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
