package agent

import (
	"context"
	"slices"

	"github.com/tribune-mesh/tribune/catalog"
)

// The proxies of an agent read the same views (every sidecar of a mesh
// reads the CA roots, many share an upstream): one subscription per view,
// not one per proxy, follows its changes and marks its readers dirty, so a
// change costs one blocking query (the view cache's) and one channel send
// per affected proxy, and no goroutine waits per view.

// proxyState is a proxy watch's end of the fan-out.
type proxyState struct {
	// wake has the proxy rebuilt (proxyWatch); it does not block.
	wake func()
	// deps are the views it is subscribed to (guarded by the
	// xdsService's mu); a dozen, so a slice.
	deps []*viewSub
}

func (ps *proxyState) markDirty() { ps.wake() }

// viewDep is a view a build read, at the index it read.
type viewDep struct {
	// req is the build's own request (never modified): a pointer keeps
	// the dozen deps of each of a thousand concurrent builds small.
	req *catalog.ReadRequest
	idx uint64
	// names, for a list of config entries, are the entries the build
	// used: only a change of one of them wakes it (nil: any change).
	names []string
}

// viewSub is the shared watch of one view. Its fields are guarded by the
// xdsService's mu.
type viewSub struct {
	req catalog.ReadRequest
	key viewID // viewKey(&req), its key in xdsService.subs
	idx uint64 // last index seen
	// subs are the proxies reading the view; names the entry names each
	// reader of a config entry list used (viewDep.names), for those that
	// used only some (a thousand proxies read a dozen views each: most
	// need no names, and a set of pointers is a quarter of the map).
	subs  map[*proxyState]struct{}
	names map[*proxyState][]string
	// entries are the modify indexes of a config entry list's entries by
	// name, as last seen (nil for other views).
	entries map[string]uint64
	// cancel ends the view cache's notifications; nil once they ended.
	cancel func()
}

// entryIndexes returns the modify index of each config entry of r by name,
// for a config entry list view (nil for another).
func entryIndexes(req *catalog.ReadRequest, r *catalog.ReadResponse) map[string]uint64 {
	if req.Op != catalog.ReadConfigEntries || r == nil {
		return nil
	}
	out := make(map[string]uint64, len(r.ConfigEntries))
	for _, e := range r.ConfigEntries {
		out[e.Name] = e.ModifyIndex
	}
	return out
}

// readsChanged reports whether a reader of the entries names (nil: all)
// is affected by the move from the entries before to after (nil: unknown,
// so affected).
func readsChanged(names []string, before, after map[string]uint64) bool {
	if names == nil || before == nil || after == nil {
		return true
	}
	for _, n := range names {
		b, inB := before[n]
		a, inA := after[n]
		if inA != inB || a != b {
			return true
		}
	}
	return false
}

// viewID identifies a view the proxies read: a comparable key made
// without allocating, whose strings are the requests' own.
type viewID struct {
	op                          catalog.ReadOp
	key, name, token, dc, query string
}

func viewKey(req *catalog.ReadRequest) viewID {
	return viewID{op: req.Op, key: req.Key, name: req.Name, token: req.Options.Token, dc: req.Options.Datacenter, query: req.PreparedQueryID}
}

// view reads req from the agent's views and records it as a dependency of
// the build in.
func (x *xdsService) view(ctx context.Context, in *proxyInputs, req *catalog.ReadRequest) (*catalog.ReadResponse, error) {
	resp, err := x.views.Get(ctx, req)
	if err != nil {
		return nil, err
	}
	in.deps = append(in.deps, viewDep{req: req, idx: resp.Meta.Index})
	return resp, nil
}

// setDeps subscribes ps to exactly deps (none: unsubscribe), following and
// unfollowing the views. A view that moved past the index the build read,
// or that cannot be followed, marks ps dirty at once.
//
// A view is followed by the view cache's notifications (Notify), called on
// the view's own goroutine: no goroutine waits per view or per proxy.
func (x *xdsService) setDeps(ps *proxyState, deps []viewDep) {
	x.mu.Lock()
	defer x.mu.Unlock()
	want := make([]*viewSub, 0, len(deps))
	for i := range deps {
		d := &deps[i]
		k := viewKey(d.req)
		s := x.subs[k]
		if s != nil && slices.Contains(want, s) {
			continue // read twice by one build
		}
		if s == nil {
			if x.ctx.Err() != nil {
				continue
			}
			s = &viewSub{req: *d.req, idx: d.idx, subs: map[*proxyState]struct{}{}}
			s.key = viewKey(&s.req)
			cur, cancel, err := x.views.Notify(&s.req, func(r *catalog.ReadResponse) { x.viewChanged(s, r) })
			if err != nil {
				// The view stopped under the build: build again.
				ps.markDirty()
				continue
			}
			s.cancel = cancel
			x.subs[s.key] = s
			s.entries = entryIndexes(&s.req, cur)
			if cur != nil && cur.Meta.Index != s.idx {
				// It moved between the build's read and now.
				s.idx = cur.Meta.Index
				ps.markDirty()
			}
		} else if s.idx != d.idx {
			ps.markDirty()
		}
		want = append(want, s)
		s.subs[ps] = struct{}{}
		if d.names != nil {
			if s.names == nil {
				s.names = map[*proxyState][]string{}
			}
			s.names[ps] = d.names
		} else {
			delete(s.names, ps)
		}
	}
	for _, s := range ps.deps {
		if slices.Contains(want, s) {
			continue
		}
		delete(s.subs, ps)
		delete(s.names, ps)
		if len(s.subs) == 0 {
			s.cancel()
			if x.subs[s.key] == s {
				delete(x.subs, s.key)
			}
		}
	}
	ps.deps = want
}

// viewChanged is the view cache's notification of a new result of s's view
// (nil: the view stopped): its readers are marked dirty when the index
// moved, and all of them when the view stopped, whose next builds follow
// it again.
func (x *xdsService) viewChanged(s *viewSub, r *catalog.ReadResponse) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if r != nil && r.Meta.Index == s.idx {
		return
	}
	if r == nil {
		if x.subs[s.key] == s {
			delete(x.subs, s.key)
		}
		s.cancel()
		for ps := range s.subs {
			ps.deps = slices.DeleteFunc(ps.deps, func(d *viewSub) bool { return d == s })
			ps.markDirty()
		}
		return
	}
	s.idx = r.Meta.Index
	before := s.entries
	s.entries = entryIndexes(&s.req, r)
	for ps := range s.subs {
		if readsChanged(s.names[ps], before, s.entries) {
			ps.markDirty()
		}
	}
}
