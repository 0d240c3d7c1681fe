package xds

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash/maphash"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
)

// Memo keeps built resources and their hashes by the inputs they were built
// from, for BuildMemo, shared by every proxy of a Server. Resources in it
// are never modified. It forgets what no build used over two rotation
// periods. Safe for concurrent use.
type Memo struct {
	mu        sync.Mutex
	cur, prev map[string]*memoEntry
	rotated   time.Time
}

// memoEntry is a built resource and its version (a hash of its encoding),
// shared by the snapshots of every proxy that uses it.
type memoEntry struct {
	res     types.Resource
	version string
}

// memoRotateEvery is how often the memo drops what was not used.
const memoRotateEvery = 2 * time.Minute

// NewMemo returns an empty memo.
func NewMemo() *Memo {
	return &Memo{cur: map[string]*memoEntry{}, prev: map[string]*memoEntry{}, rotated: time.Now()}
}

// Len returns the number of resources held.
func (m *Memo) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.cur) + len(m.prev)
}

func (m *Memo) lookup(key string) (*memoEntry, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if time.Since(m.rotated) > memoRotateEvery {
		m.prev, m.cur, m.rotated = m.cur, map[string]*memoEntry{}, time.Now()
	}
	e, ok := m.cur[key]
	if !ok {
		if e, ok = m.prev[key]; ok {
			m.cur[key] = e
		}
	}
	return e, ok
}

func (m *Memo) store(key string, e *memoEntry) {
	m.mu.Lock()
	m.cur[key] = e
	m.mu.Unlock()
}

// builder collects one snapshot's resources with their hashes.
type builder struct {
	memo *Memo
	// sets are the resources of each type (snapshotTypes) as added;
	// names those of each, to drop a second add of one.
	sets  [len(snapshotTypes)][]snapEntry
	names [len(snapshotTypes)]map[string]bool
	// routeRefs are the route configurations the listeners name over RDS.
	routeRefs []string
	// outbound are the filter chains of the outbound listener of a
	// transparent proxy (transparent.go).
	outbound []outChain
	err      error
}

func newBuilder(m *Memo) *builder {
	return &builder{memo: m}
}

// add adds the resource built by build from inputs identified by key (the
// memo's, when it has one).
func (b *builder) add(typ resource.Type, key string, build func() (types.Resource, error)) {
	if b.err != nil {
		return
	}
	var e *memoEntry
	ok := false
	var mk string
	if b.memo != nil {
		// The memo holds a fingerprint of the inputs, not the inputs: a
		// proxy's own resources (its public listener names its service,
		// port and intentions) would otherwise keep a long key each.
		mk = fingerprint(typ, key)
		e, ok = b.memo.lookup(mk)
	}
	if !ok {
		r, err := build()
		if err != nil {
			b.err = err
			return
		}
		raw, err := cachev3.MarshalResource(r)
		if err != nil {
			b.err = fmt.Errorf("xds: encode %s: %w", cachev3.GetResourceName(r), err)
			return
		}
		e = &memoEntry{res: r, version: cachev3.HashResource(raw)}
		if b.memo != nil {
			b.memo.store(mk, e)
		}
	}
	i := typeIndex(typ)
	if i < 0 {
		b.err = fmt.Errorf("xds: resources of type %s in a snapshot", typ)
		return
	}
	if b.names[i] == nil {
		b.names[i] = map[string]bool{}
	}
	name := cachev3.GetResourceName(e.res)
	if b.names[i][name] {
		// Two upstreams (or two nodes of a chain) reach one cluster:
		// built from the same inputs, it is the same resource.
		return
	}
	b.names[i][name] = true
	b.sets[i] = append(b.sets[i], snapEntry{name: name, memoEntry: e})
}

// shared returns the part (a piece of resources, never modified) built by
// build from inputs identified by key, from the memo when it has it.
func (b *builder) shared(key string, build func() (proto.Message, error)) (proto.Message, error) {
	var mk string
	if b.memo != nil {
		mk = fingerprint("part", key)
		if e, ok := b.memo.lookup(mk); ok {
			return e.res, nil
		}
	}
	m, err := build()
	if err != nil {
		return nil, err
	}
	if b.memo != nil {
		b.memo.store(mk, &memoEntry{res: m})
	}
	return m, nil
}

// snapshot returns the snapshot of what was added, each type versioned by
// the names and hashes of its resources.
func (b *builder) snapshot() (*Snapshot, error) {
	if b.err != nil {
		return nil, b.err
	}
	snap := &Snapshot{}
	for i := range snapshotTypes {
		// Each type is versioned by its own resources, so that a state
		// of the world client is sent only the types that changed.
		// Exactly the entries: a snapshot lives as long as its proxy.
		entries := slices.Clone(b.sets[i])
		slices.SortFunc(entries, func(x, y snapEntry) int { return strings.Compare(x.name, y.name) })
		h := sha256.New()
		for _, e := range entries {
			h.Write([]byte(e.name + "\x00" + e.version + "\x00"))
		}
		snap.sets[i] = typeSet{version: hex.EncodeToString(h.Sum(nil)[:8]), entries: entries}
	}
	return snap, nil
}

// Seeds of fingerprint, random per process: keys built from what users
// write cannot be made to collide.
var fpSeed1, fpSeed2 = maphash.MakeSeed(), maphash.MakeSeed()

// consistent checks what Snapshot.Consistent checks of a sidecar's
// snapshot (every EDS cluster has its endpoints, every route configuration
// a listener names over RDS is there, and there are no others) without
// decoding the listeners again: routeRefs are the names the build's
// listeners use.
func consistent(snap *Snapshot, routeRefs []string) error {
	eds := 0
	cla := snap.set(resource.EndpointType)
	for _, e := range snap.set(resource.ClusterType).entries {
		if c, ok := e.res.(*cluster.Cluster); ok && c.GetType() == cluster.Cluster_EDS {
			eds++
			if cla.find(e.name) == nil {
				return fmt.Errorf("EDS cluster %s has no endpoints", e.name)
			}
		}
	}
	if len(cla.entries) != eds {
		return fmt.Errorf("%d endpoint sets for %d EDS clusters", len(cla.entries), eds)
	}
	routes := snap.set(resource.RouteType)
	refs := map[string]bool{}
	for _, r := range routeRefs {
		if routes.find(r) == nil {
			return fmt.Errorf("a listener names missing route configuration %q", r)
		}
		refs[r] = true
	}
	if len(refs) != len(routes.entries) {
		return fmt.Errorf("%d route configurations for %d named by listeners", len(routes.entries), len(refs))
	}
	return nil
}

// fingerprint identifies a list of strings (128 bits of two seeded hashes:
// much cheaper than a cryptographic hash of certificates on every build).
func fingerprint(parts ...string) string {
	var h1, h2 maphash.Hash
	h1.SetSeed(fpSeed1)
	h2.SetSeed(fpSeed2)
	for _, p := range parts {
		h1.WriteString(p)
		h1.WriteByte(0)
		h2.WriteString(p)
		h2.WriteByte(0)
	}
	return strconv.FormatUint(h1.Sum64(), 36) + "." + strconv.FormatUint(h2.Sum64(), 36)
}
