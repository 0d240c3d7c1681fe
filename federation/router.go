// Package federation owns what a server knows about the other datacenters:
// the datacenters present in the WAN gossip pool, their healthy servers
// (in the order requests should try them, away from servers that just
// failed), and the WAN network coordinates that order the datacenters by
// estimated round-trip time.
//
// It decides and never sends: the server forwards requests and runs
// replication with what the Router answers. It must not import agent or
// server.
package federation

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/serf/coordinate"

	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/clock"
	"github.com/tribune-mesh/tribune/gossip"
)

// ErrNoPath is returned for a datacenter no WAN member belongs to. Its text
// is Consul's answer to ?dc= naming an unknown datacenter.
var ErrNoPath = errors.New("No path to datacenter")

// ErrUnreachable is returned for a known datacenter with no alive server.
var ErrUnreachable = errors.New("datacenter unreachable: no alive server in the WAN pool")

// DefaultFailedPenalty is how long a server that failed a request is tried
// only after the others of its datacenter.
const DefaultFailedPenalty = 30 * time.Second

// Config configures a Router.
type Config struct {
	// Datacenter is this server's datacenter.
	Datacenter string
	// Members lists the WAN pool's members, this server included
	// (gossip.Pool.Members). Required.
	Members func() []gossip.Member
	// Coordinates returns the coordinate each WAN member last reported
	// about itself (gossip.Pool.Coordinates); nil orders datacenters by
	// name.
	Coordinates func() map[string]*coordinate.Coordinate
	// Clock times the failed-server penalty; nil means clock.New().
	Clock clock.Clock
	// FailedPenalty is how long a failed server goes to the back of its
	// datacenter's list; 0 means DefaultFailedPenalty.
	FailedPenalty time.Duration
}

// Router answers which datacenters exist and which servers to ask in each.
// It is safe for concurrent use.
type Router struct {
	cfg Config

	mu sync.Mutex
	// failed holds when each server address last failed a request.
	failed map[string]time.Time
}

// New returns a Router over a WAN pool's members.
func New(cfg Config) *Router {
	if cfg.Clock == nil {
		cfg.Clock = clock.New()
	}
	if cfg.FailedPenalty <= 0 {
		cfg.FailedPenalty = DefaultFailedPenalty
	}
	return &Router{cfg: cfg, failed: map[string]time.Time{}}
}

// Server is one server of a datacenter as the WAN pool knows it.
type Server struct {
	// Name is the WAN member name, "<node>.<dc>"; Node the node name.
	Name, Node string
	Datacenter string
	// Addr is the server RPC address ("ip:port").
	Addr  string
	Alive bool
}

// NodeName returns the node part of a WAN member name "<node>.<dc>".
func NodeName(member, dc string) string {
	return strings.TrimSuffix(member, "."+dc)
}

// MemberName returns the WAN member name of a server.
func MemberName(node, dc string) string { return node + "." + dc }

// servers returns every server member of the pool, grouped by datacenter.
func (r *Router) servers() map[string][]Server {
	out := map[string][]Server{}
	for _, m := range r.cfg.Members() {
		dc := m.Tags["dc"]
		if !m.IsServer() || dc == "" || m.Status == gossip.StatusLeft {
			continue
		}
		out[dc] = append(out[dc], Server{Name: m.Name, Node: NodeName(m.Name, dc), Datacenter: dc,
			Addr: m.ServerAddr(), Alive: m.Status == gossip.StatusAlive || m.Status == gossip.StatusLeaving})
	}
	return out
}

// Known reports whether a server of dc is (or was, until it is reaped)
// in the WAN pool.
func (r *Router) Known(dc string) bool {
	if dc == r.cfg.Datacenter {
		return true
	}
	_, ok := r.servers()[dc]
	return ok
}

// Servers returns the RPC addresses of dc's alive servers in the order to
// try them: servers without a recent failure first, in random order so that
// requests spread, then the ones that failed, longest ago first. It returns
// ErrNoPath for an unknown datacenter and ErrUnreachable when none of its
// servers is alive.
func (r *Router) Servers(dc string) ([]string, error) {
	all, ok := r.servers()[dc]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrNoPath, dc)
	}
	now := r.cfg.Clock.Now()
	var fresh, penalised []string
	r.mu.Lock()
	failedAt := map[string]time.Time{}
	for _, s := range all {
		if !s.Alive {
			continue
		}
		if at, ok := r.failed[s.Addr]; ok && now.Sub(at) < r.cfg.FailedPenalty {
			failedAt[s.Addr] = at
			penalised = append(penalised, s.Addr)
			continue
		}
		delete(r.failed, s.Addr)
		fresh = append(fresh, s.Addr)
	}
	r.mu.Unlock()
	if len(fresh)+len(penalised) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrUnreachable, dc)
	}
	rand.Shuffle(len(fresh), func(i, j int) { fresh[i], fresh[j] = fresh[j], fresh[i] })
	sort.Slice(penalised, func(i, j int) bool { return failedAt[penalised[i]].Before(failedAt[penalised[j]]) })
	return append(fresh, penalised...), nil
}

// MarkFailed records that a request to a server failed, so that the next
// requests try its datacenter's other servers first.
func (r *Router) MarkFailed(addr string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed[addr] = r.cfg.Clock.Now()
	// Bounded by the pool's servers: forget entries past their penalty.
	now := r.cfg.Clock.Now()
	for a, at := range r.failed {
		if now.Sub(at) >= r.cfg.FailedPenalty {
			delete(r.failed, a)
		}
	}
}

// Datacenters returns every known datacenter, this one first, then by the
// estimated round-trip time between the two datacenters' servers (the
// median over every pair, whole milliseconds), then by name. Every server of
// one datacenter sees the same WAN coordinates and so the same order.
func (r *Router) Datacenters() []string {
	byDC := r.servers()
	byDC[r.cfg.Datacenter] = append(byDC[r.cfg.Datacenter], Server{})
	var coords map[string]*coordinate.Coordinate
	if r.cfg.Coordinates != nil {
		coords = r.cfg.Coordinates()
	}
	local := byDC[r.cfg.Datacenter]
	type entry struct {
		dc  string
		rtt time.Duration
	}
	var list []entry
	for dc, srvs := range byDC {
		rtt := time.Duration(0)
		if dc != r.cfg.Datacenter {
			rtt = medianRTT(local, srvs, coords)
		}
		list = append(list, entry{dc, rtt.Truncate(time.Millisecond)})
	}
	sort.Slice(list, func(i, j int) bool {
		a, b := list[i], list[j]
		if (a.dc == r.cfg.Datacenter) != (b.dc == r.cfg.Datacenter) {
			return a.dc == r.cfg.Datacenter
		}
		if a.rtt != b.rtt {
			return a.rtt < b.rtt
		}
		return a.dc < b.dc
	})
	out := make([]string, len(list))
	for i, e := range list {
		out[i] = e.dc
	}
	return out
}

// unknownRTT ranks a datacenter without coordinates after every measured one.
const unknownRTT = time.Hour

// medianRTT is the median estimated round trip between the servers of two
// datacenters, unknownRTT when no pair has coordinates.
func medianRTT(a, b []Server, coords map[string]*coordinate.Coordinate) time.Duration {
	var rtts []time.Duration
	for _, x := range a {
		cx := coords[x.Name]
		if cx == nil {
			continue
		}
		for _, y := range b {
			cy := coords[y.Name]
			if cy == nil || !cx.IsCompatibleWith(cy) {
				continue
			}
			rtts = append(rtts, cx.DistanceTo(cy))
		}
	}
	if len(rtts) == 0 {
		return unknownRTT
	}
	sort.Slice(rtts, func(i, j int) bool { return rtts[i] < rtts[j] })
	return rtts[len(rtts)/2]
}

// Coordinate is one server's WAN coordinate (/v1/coordinate/datacenters).
type Coordinate struct {
	Node  string
	Coord *coordinate.Coordinate
}

// DatacenterCoordinates is one datacenter's servers' WAN coordinates, in
// Consul's /v1/coordinate/datacenters shape.
type DatacenterCoordinates struct {
	Datacenter  string
	AreaID      string
	Coordinates []Coordinate
}

// Coordinates returns the WAN coordinates of every datacenter's servers,
// datacenters in Datacenters' order and servers by node name. A server
// whose coordinate is not known yet is left out.
func (r *Router) Coordinates() []DatacenterCoordinates {
	byDC := r.servers()
	var coords map[string]*coordinate.Coordinate
	if r.cfg.Coordinates != nil {
		coords = r.cfg.Coordinates()
	}
	var out []DatacenterCoordinates
	for _, dc := range r.Datacenters() {
		d := DatacenterCoordinates{Datacenter: dc, AreaID: "wan", Coordinates: []Coordinate{}}
		srvs := byDC[dc]
		sort.Slice(srvs, func(i, j int) bool { return srvs[i].Node < srvs[j].Node })
		for _, s := range srvs {
			if c := coords[s.Name]; c != nil {
				d.Coordinates = append(d.Coordinates, Coordinate{Node: s.Node, Coord: c})
			}
		}
		out = append(out, d)
	}
	return out
}

// AllServers returns every server the WAN pool knows in dc, alive or not,
// sorted by name (replication status, debugging).
func (r *Router) AllServers(dc string) []Server {
	srvs := r.servers()[dc]
	sort.Slice(srvs, func(i, j int) bool { return srvs[i].Name < srvs[j].Name })
	return srvs
}

// MaxFailoverDatacenters bounds the datacenters one prepared query
// execution asks.
const MaxFailoverDatacenters = 32

// FailoverOrder lists the datacenters a prepared query fails over to from
// dc, as Consul orders them: the NearestN first of known (nearest first,
// dc itself skipped), then the query's Datacenters and the targets naming a
// datacenter, each once, at most MaxFailoverDatacenters.
func FailoverOrder(dc string, known []string, f catalog.QueryFailoverOptions) []string {
	seen := map[string]bool{dc: true}
	var out []string
	add := func(d string) {
		if d != "" && !seen[d] && len(out) < MaxFailoverDatacenters {
			seen[d] = true
			out = append(out, d)
		}
	}
	n := 0
	for _, d := range known {
		if n >= f.NearestN {
			break
		}
		if d != dc {
			add(d)
			n++
		}
	}
	for _, d := range f.Datacenters {
		add(d)
	}
	for _, t := range f.Targets {
		add(t.Datacenter)
	}
	return out
}
