package agent

import (
	"context"

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
	// deps are the keys of the views it is subscribed to (guarded by the
	// xdsService's mu).
	deps map[string]bool
}

func (ps *proxyState) markDirty() { ps.wake() }

// viewDep is a view a build read, at the index it read.
type viewDep struct {
	req catalog.ReadRequest
	idx uint64
}

// viewSub is the shared watch of one view.
type viewSub struct {
	req  catalog.ReadRequest
	idx  uint64 // last index seen (guarded by the xdsService's mu)
	subs map[*proxyState]struct{}
	// cancel ends the view cache's notifications; nil once they ended.
	cancel func()
}

func viewKey(req *catalog.ReadRequest) string {
	return string(req.Op) + "\x00" + req.Key + "\x00" + req.Name + "\x00" + req.Options.Token
}

// view reads req from the agent's views and records it as a dependency of
// the build in.
func (x *xdsService) view(ctx context.Context, in *proxyInputs, req *catalog.ReadRequest) (*catalog.ReadResponse, error) {
	resp, err := x.views.Get(ctx, req)
	if err != nil {
		return nil, err
	}
	in.deps = append(in.deps, viewDep{req: *req, idx: resp.Meta.Index})
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
	want := make(map[string]bool, len(deps))
	for i := range deps {
		d := &deps[i]
		k := viewKey(&d.req)
		want[k] = true
		s := x.subs[k]
		if s == nil {
			if x.ctx.Err() != nil {
				continue
			}
			s = &viewSub{req: d.req, idx: d.idx, subs: map[*proxyState]struct{}{}}
			cur, cancel, err := x.views.Notify(&s.req, func(r *catalog.ReadResponse) { x.viewChanged(k, s, r) })
			if err != nil {
				// The view stopped under the build: build again.
				ps.markDirty()
				continue
			}
			s.cancel = cancel
			x.subs[k] = s
			if cur != nil && cur.Meta.Index != s.idx {
				// It moved between the build's read and now.
				s.idx = cur.Meta.Index
				ps.markDirty()
			}
		} else if s.idx != d.idx {
			ps.markDirty()
		}
		s.subs[ps] = struct{}{}
	}
	for k := range ps.deps {
		if want[k] {
			continue
		}
		if s := x.subs[k]; s != nil {
			delete(s.subs, ps)
			if len(s.subs) == 0 {
				s.cancel()
				delete(x.subs, k)
			}
		}
	}
	ps.deps = want
}

// viewChanged is the view cache's notification of a new result of s's view
// (nil: the view stopped): its readers are marked dirty when the index
// moved, and all of them when the view stopped, whose next builds follow
// it again.
func (x *xdsService) viewChanged(k string, s *viewSub, r *catalog.ReadResponse) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if r != nil && r.Meta.Index == s.idx {
		return
	}
	if r == nil {
		if x.subs[k] == s {
			delete(x.subs, k)
		}
		s.cancel()
		for ps := range s.subs {
			delete(ps.deps, k)
		}
	} else {
		s.idx = r.Meta.Index
	}
	for ps := range s.subs {
		ps.markDirty()
	}
}
