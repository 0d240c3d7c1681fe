package agent

import (
	"context"
	"math"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/serf/coordinate"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/catalog"
)

// coordinateInterval is how often the agent sends its network coordinate to
// the servers.
func (a *Agent) coordinateInterval() time.Duration {
	if a.cfg.DevMode || a.cfg.Performance.RaftMultiplier == 1 {
		return 2 * time.Second
	}
	return 15 * time.Second
}

// syncCoordinates sends this agent's gossip coordinate to the catalog until
// stop is closed.
func (a *Agent) syncCoordinates(stop <-chan struct{}) {
	t := time.NewTicker(a.coordinateInterval())
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		c := a.gossip.Coordinate()
		if c == nil || !c.IsValid() {
			continue
		}
		ctx, cancel := context.WithTimeout(a.ctx, 10*time.Second)
		_, err := a.backend.Apply(ctx, catalog.CmdCoordinate, []*catalog.CoordinateEntry{{Node: a.cfg.NodeName, Coord: c}})
		cancel()
		if err != nil && a.ctx.Err() == nil {
			a.logger.Debug("coordinate update failed", "error", err)
		}
	}
}

// coordinates reads every node's coordinate, filtered by NodeRead.
func (h *httpHandler) coordinates(w http.ResponseWriter, r *http.Request) ([]*catalog.CoordinateEntry, error) {
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	resp, err := h.read(w, r, &catalog.ReadRequest{Op: catalog.ReadCoordinates})
	if err != nil {
		return nil, err
	}
	out := []*catalog.CoordinateEntry{}
	for _, c := range resp.Coordinates {
		if authz.NodeRead(c.Node) == acl.Allow {
			out = append(out, c)
		}
	}
	return out, nil
}

func (h *httpHandler) coordinateNodes(w http.ResponseWriter, r *http.Request) (any, error) {
	out, err := h.coordinates(w, r)
	if err != nil {
		return nil, err
	}
	return filter(r.URL.Query().Get("filter"), out)
}

func (h *httpHandler) coordinateNode(w http.ResponseWriter, r *http.Request) (any, error) {
	node := strings.TrimPrefix(r.URL.Path, "/v1/coordinate/node/")
	all, err := h.coordinates(w, r)
	if err != nil {
		return nil, err
	}
	for _, c := range all {
		if strings.EqualFold(c.Node, node) {
			return []*catalog.CoordinateEntry{c}, nil
		}
	}
	w.WriteHeader(http.StatusNotFound)
	return nil, nil
}

// wanCoordinates is one datacenter of /v1/coordinate/datacenters.
type wanCoordinates struct {
	Datacenter  string
	AreaID      string
	Coordinates []*catalog.CoordinateEntry
}

func (h *httpHandler) coordinateDatacenters(w http.ResponseWriter, r *http.Request) (any, error) {
	// Without WAN federation the only datacenter is this one; its servers'
	// LAN coordinates stand in for WAN ones.
	return []wanCoordinates{{Datacenter: h.agent.cfg.Datacenter, AreaID: "wan", Coordinates: []*catalog.CoordinateEntry{}}}, nil
}

// nearSorter orders results by estimated round-trip time from ?near=<node>
// (or _agent, this agent's node). It is nil when the request has no near.
type nearSorter struct {
	near   string
	origin *coordinate.Coordinate
	coords map[string]*coordinate.Coordinate
}

func (h *httpHandler) nearSorter(ctx context.Context, r *http.Request) *nearSorter {
	near := r.URL.Query().Get("near")
	if near == "" {
		return nil
	}
	if near == "_agent" {
		near = h.agent.cfg.NodeName
	}
	resp, err := h.agent.backend.Read(ctx, &catalog.ReadRequest{Op: catalog.ReadCoordinates, Options: catalog.QueryOptions{AllowStale: true}})
	if err != nil {
		return nil
	}
	ns := &nearSorter{near: strings.ToLower(near), coords: map[string]*coordinate.Coordinate{}}
	for _, c := range resp.Coordinates {
		ns.coords[strings.ToLower(c.Node)] = c.Coord
	}
	ns.origin = ns.coords[strings.ToLower(near)]
	if ns.origin == nil {
		return nil
	}
	return ns
}

// distance is the estimated RTT to node; unknown nodes sort last.
func (n *nearSorter) distance(node string) float64 {
	if strings.EqualFold(node, n.near) {
		return -1 // the origin itself comes first
	}
	c := n.coords[strings.ToLower(node)]
	if c == nil || !n.origin.IsCompatibleWith(c) {
		return math.Inf(1)
	}
	return n.origin.DistanceTo(c).Seconds()
}

// sortNear sorts items by their node's distance, keeping the order of equal
// distances.
func sortNear[T any](n *nearSorter, items []T, node func(T) string) {
	if n == nil {
		return
	}
	sort.SliceStable(items, func(i, j int) bool { return n.distance(node(items[i])) < n.distance(node(items[j])) })
}
