package federation

import (
	"errors"
	"net"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/serf/coordinate"

	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/clock"
	"github.com/tribune-mesh/tribune/gossip"
)

func server(node, dc, ip string, status gossip.Status) gossip.Member {
	return gossip.Member{Name: MemberName(node, dc), Addr: net.ParseIP(ip), Status: status,
		Tags: map[string]string{"role": "consul", "dc": dc, "port": "8300"}}
}

// at returns a coordinate at x seconds along one axis (no height, no
// adjustment), so that distances are exactly the differences.
func at(x float64) *coordinate.Coordinate {
	c := coordinate.NewCoordinate(coordinate.DefaultConfig())
	c.Vec[0] = x
	c.Height = 0
	return c
}

func TestDatacentersByRTT(t *testing.T) {
	members := []gossip.Member{
		server("a1", "dc1", "10.0.0.1", gossip.StatusAlive),
		server("a2", "dc1", "10.0.0.2", gossip.StatusAlive),
		server("b1", "dc2", "10.0.1.1", gossip.StatusAlive),
		server("c1", "dc3", "10.0.2.1", gossip.StatusAlive),
		server("c2", "dc3", "10.0.2.2", gossip.StatusFailed),
		server("d1", "dc4", "10.0.3.1", gossip.StatusAlive),
		{Name: "client", Tags: map[string]string{"role": "node", "dc": "dc9"}, Status: gossip.StatusAlive},
	}
	coords := map[string]*coordinate.Coordinate{
		"a1.dc1": at(0), "a2.dc1": at(0.001),
		"b1.dc2": at(0.200), // 200 ms away
		"c1.dc3": at(0.050), "c2.dc3": at(0.060),
		// dc4 has no coordinate yet: last.
	}
	// The order depends only on the coordinates the members report about
	// themselves, which every server of dc1 shares.
	r := New(Config{Datacenter: "dc1", Members: func() []gossip.Member { return members },
		Coordinates: func() map[string]*coordinate.Coordinate { return coords }})
	if got, want := r.Datacenters(), []string{"dc1", "dc3", "dc2", "dc4"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("datacenters %v, want %v", got, want)
	}
	// From dc2, dc1 and dc3 are 150 and 200 ms away.
	r = New(Config{Datacenter: "dc2", Members: func() []gossip.Member { return members },
		Coordinates: func() map[string]*coordinate.Coordinate { return coords }})
	if got, want := r.Datacenters(), []string{"dc2", "dc3", "dc1", "dc4"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("from dc2: %v, want %v", got, want)
	}
	// Without coordinates: own first, then by name.
	r = New(Config{Datacenter: "dc3", Members: func() []gossip.Member { return members }})
	if got, want := r.Datacenters(), []string{"dc3", "dc1", "dc2", "dc4"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("no coordinates: %v, want %v", got, want)
	}
	if r.Known("dc9") || !r.Known("dc4") || !r.Known("dc3") {
		t.Fatal("Known counts only datacenters with servers")
	}
	dcs := New(Config{Datacenter: "dc1", Members: func() []gossip.Member { return members },
		Coordinates: func() map[string]*coordinate.Coordinate { return coords }}).Coordinates()
	if len(dcs) != 4 || dcs[1].Datacenter != "dc3" || len(dcs[1].Coordinates) != 2 || len(dcs[3].Coordinates) != 0 {
		t.Fatalf("coordinates %+v", dcs)
	}
}

func TestServersRotateAwayFromFailures(t *testing.T) {
	members := []gossip.Member{
		server("b1", "dc2", "10.0.1.1", gossip.StatusAlive),
		server("b2", "dc2", "10.0.1.2", gossip.StatusAlive),
		server("b3", "dc2", "10.0.1.3", gossip.StatusFailed),
		server("c1", "dc3", "10.0.2.1", gossip.StatusFailed),
	}
	clk := clock.NewFake(time.Unix(1000, 0))
	r := New(Config{Datacenter: "dc1", Members: func() []gossip.Member { return members }, Clock: clk, FailedPenalty: time.Minute})
	if _, err := r.Servers("nowhere"); !errors.Is(err, ErrNoPath) || err.Error() != `No path to datacenter "nowhere"` {
		t.Fatalf("unknown datacenter: %v", err)
	}
	if _, err := r.Servers("dc3"); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("datacenter without an alive server: %v", err)
	}
	list, err := r.Servers("dc2")
	if err != nil || len(list) != 2 {
		t.Fatalf("servers %v %v", list, err)
	}
	r.MarkFailed("10.0.1.1:8300")
	for i := 0; i < 20; i++ {
		list, _ := r.Servers("dc2")
		if !reflect.DeepEqual(list, []string{"10.0.1.2:8300", "10.0.1.1:8300"}) {
			t.Fatalf("after a failure: %v", list)
		}
	}
	r.MarkFailed("10.0.1.2:8300")
	clk.Advance(time.Second)
	if list, _ := r.Servers("dc2"); !reflect.DeepEqual(list, []string{"10.0.1.1:8300", "10.0.1.2:8300"}) {
		t.Fatalf("both failed: the one that failed longest ago first: %v", list)
	}
	clk.Advance(time.Minute)
	seen := map[string]bool{}
	for i := 0; i < 100; i++ {
		list, _ := r.Servers("dc2")
		seen[list[0]] = true
	}
	if len(seen) != 2 {
		t.Fatalf("after the penalty, requests spread over both servers: %v", seen)
	}
}

func TestFailoverOrder(t *testing.T) {
	known := []string{"dc1", "dc3", "dc2", "dc4"}
	for _, tc := range []struct {
		f    catalog.QueryFailoverOptions
		want []string
	}{
		{catalog.QueryFailoverOptions{}, nil},
		{catalog.QueryFailoverOptions{NearestN: 2}, []string{"dc3", "dc2"}},
		{catalog.QueryFailoverOptions{NearestN: 9}, []string{"dc3", "dc2", "dc4"}},
		{catalog.QueryFailoverOptions{NearestN: 1, Datacenters: []string{"dc4", "dc3", "dc1"}}, []string{"dc3", "dc4"}},
		{catalog.QueryFailoverOptions{Targets: []catalog.QueryFailoverTarget{{Peer: "p"}, {Datacenter: "dc2"}}}, []string{"dc2"}},
	} {
		if got := FailoverOrder("dc1", known, tc.f); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%+v: %v, want %v", tc.f, got, tc.want)
		}
	}
}
