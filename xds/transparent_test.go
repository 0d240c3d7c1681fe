package xds

import (
	"slices"
	"testing"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// Upstreams dialled directly whose instances share an address (two
// services on one host) cannot be told apart there: the shared address is
// matched by neither, and an upstream left with no address of its own gets
// no chain (which would match every address).
func TestTransparentDirectAddressesShared(t *testing.T) {
	p := testProxy(t)
	p.Outbound = &Outbound{}
	p.Upstreams[0].Endpoints = []Endpoint{{Address: "10.0.0.2", Port: 21000, Healthy: true}, {Address: "10.0.0.9", Port: 21000, Healthy: true}}
	p.Upstreams[1].Endpoints = []Endpoint{{Address: "10.0.0.9", Port: 21001, Healthy: true}}
	for i, vip := range []string{"240.0.0.1", "240.0.0.2"} {
		u := &p.Upstreams[i]
		u.LocalBindPort, u.Transparent, u.MatchAddresses, u.DialedDirectly = 0, true, []string{vip}, true
	}
	snap, err := Build(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Consistent(); err != nil {
		t.Fatal(err)
	}
	l, ok := snap.GetResources(resource.ListenerType)["outbound_listener:127.0.0.1:15001"].(*listener.Listener)
	if !ok {
		t.Fatal("no outbound listener")
	}
	if err := l.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, fc := range l.GetFilterChains() {
		for _, pr := range fc.GetFilterChainMatch().GetPrefixRanges() {
			got[fc.GetName()] = append(got[fc.GetName()], pr.GetAddressPrefix())
		}
	}
	dbDirect := PassthroughClusterPrefix + ClusterName("db", "dc1", td)
	if len(got) != 3 || !slices.Equal(got["db"], []string{"240.0.0.1"}) || !slices.Equal(got["cache"], []string{"240.0.0.2"}) ||
		!slices.Equal(got[dbDirect], []string{"10.0.0.2"}) {
		t.Fatalf("filter chains %v: want db and cache at their virtual IPs, db's own instance at 10.0.0.2, nothing at 10.0.0.9", got)
	}
	if l.GetDefaultFilterChain() != nil {
		t.Fatal("a default chain without passthrough")
	}
}
