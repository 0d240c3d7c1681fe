package xds

import (
	"context"
	"maps"
	"slices"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// clusters is a snapshot of clusters with the given names; a name's
// version changes with timeout.
func clusters(t *testing.T, timeout time.Duration, names ...string) *Snapshot {
	t.Helper()
	var rs []types.Resource
	for _, n := range names {
		rs = append(rs, &cluster.Cluster{Name: n, ConnectTimeout: durationpb.New(timeout)})
	}
	c, err := cachev3.NewSnapshot("v", map[resource.Type][]types.Resource{resource.ClusterType: rs})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := snapshotOf(c)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// holds returns what dt's proxy holds, as a map.
func holds(dt *deltaType) map[string]string {
	out := maps.Clone(dt.returned)
	if dt.held != nil {
		out = map[string]string{}
		for _, e := range dt.held.entries {
			out[e.name] = e.version
		}
	}
	return out
}

// The subscription rules of a delta stream (go-control-plane's
// stream.Subscription, legacy wildcards allowed) and what an answer sends.
func TestDeltaTypeAnswer(t *testing.T) {
	snap := clusters(t, time.Second, "a", "b", "c")
	all := snap.GetVersionMap(resource.ClusterType)
	old := clusters(t, 2*time.Second, "a", "b", "c").GetVersionMap(resource.ClusterType)
	req := func(sub, unsub []string, initial map[string]string) *discovery.DeltaDiscoveryRequest {
		return &discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType, ResourceNamesSubscribe: sub,
			ResourceNamesUnsubscribe: unsub, InitialResourceVersions: initial}
	}
	for _, tc := range []struct {
		name string
		t    *deltaType
		// then: a later request's lists, applied before answering
		sub, unsub    []string
		send, removed []string
		versions      map[string]string
		whole         bool
	}{
		{name: "legacy wildcard, nothing held", t: newDeltaType(req(nil, nil, nil)),
			send: []string{"a", "b", "c"}, versions: all, whole: true},
		{name: "wildcard after a reconnect: only what changed, and what is gone",
			t:    newDeltaType(req(nil, nil, map[string]string{"a": all["a"], "b": old["b"], "gone": "x"})),
			send: []string{"b", "c"}, removed: []string{"gone"}, versions: all, whole: true},
		{name: "explicit wildcard", t: newDeltaType(req([]string{"*"}, nil, nil)),
			send: []string{"a", "b", "c"}, versions: all, whole: true},
		{name: "names, one missing: told it does not exist",
			t:    newDeltaType(req([]string{"a", "missing"}, nil, nil)),
			send: []string{"a"}, removed: []string{"missing"}, versions: map[string]string{"a": all["a"]}},
		{name: "wildcard and a missing name: told it does not exist",
			t:       newDeltaType(req([]string{"*", "missing"}, nil, map[string]string{"a": all["a"], "b": all["b"], "c": all["c"]})),
			removed: []string{"missing"}, versions: all, whole: true},
		{name: "a missing name subscribed then unsubscribed: nothing to tell",
			t:   newDeltaType(req([]string{"a", "missing"}, nil, map[string]string{"a": all["a"]})),
			sub: []string{}, unsub: []string{"missing"},
			versions: map[string]string{"a": all["a"]}},
		{name: "a held name subscribed again: sent again",
			t:   newDeltaType(req([]string{"a", "b"}, nil, map[string]string{"a": all["a"], "b": all["b"]})),
			sub: []string{"a"}, unsub: nil,
			send: []string{"a"}, versions: map[string]string{"a": all["a"], "b": all["b"]}},
		{name: "names covering the type share its versions",
			t:    newDeltaType(req([]string{"c", "b", "a"}, nil, nil)),
			send: []string{"a", "b", "c"}, versions: all, whole: true},
		{name: "a held name gone from the snapshot is removed",
			t:       newDeltaType(req([]string{"a", "gone"}, nil, map[string]string{"a": all["a"], "gone": "x"})),
			removed: []string{"gone"}, versions: map[string]string{"a": all["a"]}},
		{name: "unsubscribed name: forgotten, no removal",
			t:   newDeltaType(req([]string{"a", "b"}, nil, map[string]string{"a": all["a"], "b": all["b"]})),
			sub: []string{"c"}, unsub: []string{"b"},
			send: []string{"c"}, versions: map[string]string{"a": all["a"], "c": all["c"]}},
		{name: "wildcard ended by unsubscribing *",
			t:   newDeltaType(req([]string{"*", "a"}, nil, map[string]string{"a": all["a"], "b": all["b"]})),
			sub: nil, unsub: []string{"*"},
			versions: map[string]string{"a": all["a"]}},
		{name: "legacy wildcard, then a name: still a wildcard, the name sent again",
			t:   newDeltaType(req(nil, nil, map[string]string{"a": all["a"], "b": all["b"], "c": all["c"]})),
			sub: []string{"a"}, unsub: nil,
			send: []string{"a"}, versions: all, whole: true},
		{name: "wildcard and named, the name unsubscribed: sent again",
			t:   newDeltaType(req([]string{"*", "a"}, nil, map[string]string{"a": all["a"], "b": all["b"], "c": all["c"]})),
			sub: nil, unsub: []string{"a"},
			send: []string{"a"}, versions: all, whole: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.sub != nil || tc.unsub != nil {
				tc.t.update(tc.sub, tc.unsub, true)
			}
			entries, removed, versions, whole := tc.t.answer(snap)
			var send []string
			for _, e := range entries {
				send = append(send, e.name)
			}
			if !slices.Equal(send, tc.send) || !slices.Equal(removed, tc.removed) {
				t.Errorf("send %v removed %v, want %v %v", send, removed, tc.send, tc.removed)
			}
			if whole != nil {
				versions = holds(&deltaType{held: whole})
			}
			if !maps.Equal(versions, tc.versions) || (whole != nil) != tc.whole {
				t.Errorf("versions %v (whole %v), want %v (%v)", versions, whole != nil, tc.versions, tc.whole)
			}
		})
	}
}

// What the proxy holds may be a snapshot's type itself: a later
// subscription change edits a map of its own, never the snapshot.
func TestDeltaTypeSharedVersionsCopiedOnEdit(t *testing.T) {
	snap := clusters(t, time.Second, "a", "b")
	all := snap.GetVersionMap(resource.ClusterType)
	dt := newDeltaType(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType, ResourceNamesSubscribe: []string{"*", "a"}})
	_, _, _, whole := dt.answer(snap)
	if whole == nil {
		t.Fatal("a wildcard's versions are not the snapshot's")
	}
	dt.held, dt.returned = whole, nil
	dt.update(nil, []string{"a"}, true) // a stays wanted by the wildcard: held as ""
	dt.update([]string{"x"}, nil, true)
	dt.update(nil, []string{"*", "x", "b"}, true)
	if got := snap.GetVersionMap(resource.ClusterType); !maps.Equal(got, all) {
		t.Fatalf("the snapshot's versions were edited: %v, want %v", got, all)
	}
	if got := holds(dt); !maps.Equal(got, map[string]string{"a": ""}) || dt.held != nil {
		t.Fatalf("holds %v (a snapshot's: %v) after the changes, want a:\"\"", got, dt.held != nil)
	}
}

// On a real stream: one answer of a type in flight at a time (the next
// waits for the ACK), removals, and a reconnect that names what the proxy
// holds gets only what changed.
func TestDeltaStreamAnswers(t *testing.T) {
	s, addr := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.SetSnapshot(ctx, "web", clusters(t, time.Second, "a", "b")); err != nil {
		t.Fatal(err)
	}
	open := func(initial map[string]string) (discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient, chan *discovery.DeltaDiscoveryResponse) {
		st := dialDelta(t, ctx, addr)
		if err := st.Send(&discovery.DeltaDiscoveryRequest{Node: &core.Node{Id: "web"}, TypeUrl: resource.ClusterType, InitialResourceVersions: initial}); err != nil {
			t.Fatal(err)
		}
		ch := make(chan *discovery.DeltaDiscoveryResponse, 16)
		go func() {
			for {
				r, err := st.Recv()
				if err != nil {
					close(ch)
					return
				}
				ch <- r
			}
		}()
		return st, ch
	}
	recv := func(ch chan *discovery.DeltaDiscoveryResponse) *discovery.DeltaDiscoveryResponse {
		t.Helper()
		select {
		case r, ok := <-ch:
			if !ok {
				t.Fatal("stream ended")
			}
			return r
		case <-ctx.Done():
			t.Fatal("no response")
		}
		return nil
	}
	names := func(r *discovery.DeltaDiscoveryResponse) []string {
		var out []string
		for _, res := range r.GetResources() {
			out = append(out, res.GetName())
		}
		return out
	}
	st, ch := open(nil)
	r1 := recv(ch)
	if got := names(r1); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("first answer %v", got)
	}
	held := map[string]string{}
	for _, res := range r1.GetResources() {
		held[res.GetName()] = res.GetVersion()
	}
	// Not ACKed yet: a new snapshot waits.
	if err := s.SetSnapshot(ctx, "web", clusters(t, 2*time.Second, "a", "c")); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-ch:
		t.Fatalf("answer %v sent before the last one was ACKed", names(r))
	case <-time.After(300 * time.Millisecond):
	}
	if err := st.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType, ResponseNonce: r1.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	r2 := recv(ch)
	if got := names(r2); !slices.Equal(got, []string{"a", "c"}) || !slices.Equal(r2.GetRemovedResources(), []string{"b"}) {
		t.Fatalf("second answer %v removed %v, want [a c] removed [b]", got, r2.GetRemovedResources())
	}
	for _, res := range r2.GetResources() {
		held[res.GetName()] = res.GetVersion()
	}
	delete(held, "b")

	// A reconnect naming what it holds: an empty answer (Envoy waits for
	// one on a wildcard), then only a real change.
	_, ch2 := open(held)
	if r := recv(ch2); len(r.GetResources()) != 0 || len(r.GetRemovedResources()) != 0 {
		t.Fatalf("reconnect answer %v removed %v, want nothing", names(r), r.GetRemovedResources())
	}
}

// A proxy that subscribes to a name that does not exist is told so once,
// in removed_resources (Envoy warms the cluster of endpoints that do not
// exist at once instead of at its initial fetch timeout), and gets the
// resource when it appears.
func TestDeltaStreamTellsOfMissingNames(t *testing.T) {
	s, addr := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.SetSnapshot(ctx, "web", clusters(t, time.Second, "a")); err != nil {
		t.Fatal(err)
	}
	st := dialDelta(t, ctx, addr)
	recv := func() *discovery.DeltaDiscoveryResponse {
		t.Helper()
		r, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if err := st.Send(&discovery.DeltaDiscoveryRequest{Node: &core.Node{Id: "web"}, TypeUrl: resource.ClusterType,
		ResourceNamesSubscribe: []string{"a", "missing"}}); err != nil {
		t.Fatal(err)
	}
	r1 := recv()
	if len(r1.GetResources()) != 1 || r1.GetResources()[0].GetName() != "a" || !slices.Equal(r1.GetRemovedResources(), []string{"missing"}) {
		t.Fatalf("first answer %v removed %v, want a, removed [missing]", r1.GetResources(), r1.GetRemovedResources())
	}
	// ACK, then a change elsewhere: "missing" is not told of again.
	if err := st.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType, ResponseNonce: r1.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetSnapshot(ctx, "web", clusters(t, 2*time.Second, "a")); err != nil {
		t.Fatal(err)
	}
	r2 := recv()
	if len(r2.GetResources()) != 1 || len(r2.GetRemovedResources()) != 0 {
		t.Fatalf("second answer %v removed %v, want a alone", r2.GetResources(), r2.GetRemovedResources())
	}
	if err := st.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType, ResponseNonce: r2.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	// It appears: sent.
	if err := s.SetSnapshot(ctx, "web", clusters(t, 2*time.Second, "a", "missing")); err != nil {
		t.Fatal(err)
	}
	r3 := recv()
	if len(r3.GetResources()) != 1 || r3.GetResources()[0].GetName() != "missing" || len(r3.GetRemovedResources()) != 0 {
		t.Fatalf("third answer %v removed %v, want missing", r3.GetResources(), r3.GetRemovedResources())
	}
	// Subscribing again to a name it holds (the proxy may have forgotten
	// it): sent again, unchanged.
	if err := st.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType, ResponseNonce: r3.GetNonce(),
		ResourceNamesSubscribe: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	r4 := recv()
	if len(r4.GetResources()) != 1 || r4.GetResources()[0].GetName() != "a" || r4.GetResources()[0].GetVersion() != r2.GetResources()[0].GetVersion() {
		t.Fatalf("answer to a subscription again %v, want a at %s", r4.GetResources(), r2.GetResources()[0].GetVersion())
	}
}
