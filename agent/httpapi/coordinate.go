package httpapi

import (
	"context"
	"math"
	"net/http"
	"sort"
	"strings"

	"github.com/hashicorp/serf/coordinate"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/catalog"
)

// coordinates reads every node's coordinate, filtered by NodeRead.
func (h *Handler) coordinates(w http.ResponseWriter, r *http.Request) ([]*catalog.CoordinateEntry, error) {
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	resp, err := h.read(w, r, &catalog.ReadRequest{Op: catalog.ReadCoordinates})
	if err != nil {
		return nil, err
	}
	out, err := filter(queryOf(r).Get("filter"), resp.Coordinates)
	if err != nil {
		return nil, err
	}
	return aclKeep(w, r, out, func(c *catalog.CoordinateEntry) bool { return authz.NodeRead(c.Node) == acl.Allow }), nil
}

func (h *Handler) coordinateNodes(w http.ResponseWriter, r *http.Request) (any, error) {
	return h.coordinates(w, r)
}

func (h *Handler) coordinateNode(w http.ResponseWriter, r *http.Request) (any, error) {
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

func (h *Handler) coordinateDatacenters(w http.ResponseWriter, r *http.Request) (any, error) {
	if h.agent.fed != nil {
		dcs, err := h.agent.fed.WANCoordinates(r.Context())
		if err != nil {
			return nil, err
		}
		out := make([]wanCoordinates, 0, len(dcs))
		for _, d := range dcs {
			w := wanCoordinates{Datacenter: d.Datacenter, AreaID: d.AreaID, Coordinates: []*catalog.CoordinateEntry{}}
			for _, c := range d.Coordinates {
				w.Coordinates = append(w.Coordinates, &catalog.CoordinateEntry{Node: c.Node, Coord: c.Coord})
			}
			out = append(out, w)
		}
		return out, nil
	}
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

func (h *Handler) nearSorter(ctx context.Context, r *http.Request) *nearSorter {
	near := queryOf(r).Get("near")
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

// coordinateUpdate serves PUT /v1/coordinate/update: set a node's network
// coordinate (node:write on it). A coordinate of another dimensionality, or
// with NaN or infinite components, is refused.
func (h *Handler) coordinateUpdate(w http.ResponseWriter, r *http.Request) (any, error) {
	var entry catalog.CoordinateEntry
	if err := decodeBody(r, &entry); err != nil {
		return nil, err
	}
	if entry.Node == "" {
		return nil, badRequest("Missing node name")
	}
	if entry.Coord == nil {
		return nil, badRequest("Missing coordinate")
	}
	ref := coordinate.NewCoordinate(coordinate.DefaultConfig())
	if !entry.Coord.IsValid() || !entry.Coord.IsCompatibleWith(ref) {
		return nil, badRequest("Invalid coordinate: want %d finite dimensions", len(ref.Vec))
	}
	if err := h.checkWriteDC(r); err != nil {
		return nil, err
	}
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	if authz.NodeWrite(entry.Node) != acl.Allow {
		return nil, errPermissionDenied
	}
	if _, err := h.apply(r.Context(), catalog.CmdCoordinate, []*catalog.CoordinateEntry{&entry}); err != nil {
		return nil, err
	}
	return nil, nil
}
