package xds

import (
	"fmt"
	"slices"
	"strings"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// Snapshot is one proxy's configuration: for each resource type, its
// resources in name order with their versions (a hash of each resource's
// encoding), and the type's version. It is immutable once built.
//
// It is go-control-plane's cache.ResourceSnapshot (the state-of-the-world
// server reads it through that interface), held as sorted slices rather
// than go-control-plane's Snapshot with a map of resources and a map of
// versions per type: an agent holds one per proxy, and for a sidecar's
// twenty resources the two maps of each type cost more than the entries.
type Snapshot struct {
	sets [len(snapshotTypes)]typeSet
}

// snapshotTypes are the resource types of a Snapshot, by index.
var snapshotTypes = [...]resource.Type{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType, resource.SecretType}

// typeSet is one type of a Snapshot.
type typeSet struct {
	version string
	entries []snapEntry // by name
}

// snapEntry is one resource of a Snapshot, with its version.
type snapEntry struct {
	name string
	*memoEntry
}

// typeIndex returns the index of url in snapshotTypes, -1 for another.
func typeIndex(url string) int {
	for i, t := range snapshotTypes {
		if t == url {
			return i
		}
	}
	return -1
}

// set returns the resources of url (nil for a type a Snapshot never has).
func (s *Snapshot) set(url string) *typeSet {
	if i := typeIndex(url); i >= 0 {
		return &s.sets[i]
	}
	return nil
}

// find returns the entry named name, or nil.
func (ts *typeSet) find(name string) *snapEntry {
	if ts == nil {
		return nil
	}
	i, ok := slices.BinarySearchFunc(ts.entries, name, func(e snapEntry, n string) int { return strings.Compare(e.name, n) })
	if !ok {
		return nil
	}
	return &ts.entries[i]
}

// GetVersion returns the version of the resources of typeURL.
func (s *Snapshot) GetVersion(typeURL string) string {
	if ts := s.set(typeURL); ts != nil {
		return ts.version
	}
	return ""
}

// GetResources returns the resources of typeURL by name, in a new map.
func (s *Snapshot) GetResources(typeURL string) map[string]types.Resource {
	ts := s.set(typeURL)
	if ts == nil {
		return nil
	}
	out := make(map[string]types.Resource, len(ts.entries))
	for _, e := range ts.entries {
		out[e.name] = e.res
	}
	return out
}

// GetResourcesAndTTL is GetResources as go-control-plane's cache reads it
// (no TTLs here).
func (s *Snapshot) GetResourcesAndTTL(typeURL string) map[string]types.ResourceWithTTL {
	ts := s.set(typeURL)
	if ts == nil {
		return nil
	}
	out := make(map[string]types.ResourceWithTTL, len(ts.entries))
	for _, e := range ts.entries {
		out[e.name] = types.ResourceWithTTL{Resource: e.res}
	}
	return out
}

// ConstructVersionMap does nothing: a Snapshot has its versions.
func (s *Snapshot) ConstructVersionMap() error { return nil }

// GetVersionMap returns the version of each resource of typeURL by name, in
// a new map.
func (s *Snapshot) GetVersionMap(typeURL string) map[string]string {
	ts := s.set(typeURL)
	if ts == nil {
		return nil
	}
	out := make(map[string]string, len(ts.entries))
	for _, e := range ts.entries {
		out[e.name] = e.version
	}
	return out
}

// Cache returns the snapshot as go-control-plane's Snapshot (its
// Consistent check, tests).
func (s *Snapshot) Cache() (*cachev3.Snapshot, error) {
	res := map[resource.Type][]types.Resource{}
	for i, typ := range snapshotTypes {
		for _, e := range s.sets[i].entries {
			res[typ] = append(res[typ], e.res)
		}
	}
	snap, err := cachev3.NewSnapshot("", res)
	if err != nil {
		return nil, fmt.Errorf("xds: snapshot: %w", err)
	}
	for i, typ := range snapshotTypes {
		if rt := cachev3.GetResponseType(typ); rt != types.UnknownType {
			snap.Resources[rt].Version = s.sets[i].version
		}
	}
	snap.VersionMap = map[string]map[string]string{}
	for _, typ := range snapshotTypes {
		snap.VersionMap[typ] = s.GetVersionMap(typ)
	}
	return snap, nil
}

// Consistent is go-control-plane's check of the snapshot: every EDS
// cluster has its endpoints and every route configuration a listener
// names is there, with no others.
func (s *Snapshot) Consistent() error {
	c, err := s.Cache()
	if err != nil {
		return err
	}
	return c.Consistent()
}

// snapshotOf returns rs as a Snapshot: itself, or a copy of one made
// elsewhere (a proxyless client's, tests').
func snapshotOf(rs cachev3.ResourceSnapshot) (*Snapshot, error) {
	if s, ok := rs.(*Snapshot); ok {
		return s, nil
	}
	if err := rs.ConstructVersionMap(); err != nil {
		return nil, fmt.Errorf("xds: versions of a snapshot: %w", err)
	}
	s := &Snapshot{}
	for i, typ := range snapshotTypes {
		res := rs.GetResourcesAndTTL(typ)
		versions := rs.GetVersionMap(typ)
		ts := &s.sets[i]
		ts.version = rs.GetVersion(typ)
		ts.entries = make([]snapEntry, 0, len(res))
		for name, r := range res {
			ts.entries = append(ts.entries, snapEntry{name: name, memoEntry: &memoEntry{res: r.Resource, version: versions[name]}})
		}
		slices.SortFunc(ts.entries, func(a, b snapEntry) int { return strings.Compare(a.name, b.name) })
	}
	return s, nil
}
