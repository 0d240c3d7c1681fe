package agent

import (
	"context"
	"time"

	"github.com/tribune-mesh/tribune/catalog"
)

// The proxies of an agent read the same views (every sidecar of a mesh
// reads the CA roots, many share an upstream): one watch per view, not one
// per proxy, follows its changes and marks its readers dirty, so a change
// costs one blocking query and one channel send per affected proxy.

// proxyState is a proxy loop's end of the fan-out.
type proxyState struct {
	// dirty holds a token when a view the proxy read changed.
	dirty chan struct{}
	// deps are the keys of the views it is subscribed to (guarded by the
	// xdsService's mu).
	deps map[string]bool
}

func (ps *proxyState) markDirty() {
	select {
	case ps.dirty <- struct{}{}:
	default:
	}
}

// viewDep is a view a build read, at the index it read.
type viewDep struct {
	req  catalog.ReadRequest
	idx  uint64
	resp *catalog.ReadResponse
}

// viewSub is the shared watch of one view.
type viewSub struct {
	req catalog.ReadRequest
	idx uint64 // last index seen (guarded by the xdsService's mu)
	// last is the result at idx when known (guarded likewise).
	last   *catalog.ReadResponse
	subs   map[*proxyState]struct{}
	cancel context.CancelFunc
}

func viewKey(req *catalog.ReadRequest) string {
	return string(req.Op) + "\x00" + req.Key + "\x00" + req.Name + "\x00" + req.Options.Token + "\x00" + req.Options.Datacenter
}

// view reads req from the agent's views and records it as a dependency of
// the build in.
func (x *xdsService) view(ctx context.Context, in *proxyInputs, req *catalog.ReadRequest) (*catalog.ReadResponse, error) {
	resp, err := x.views.Get(ctx, req)
	if err != nil {
		return nil, err
	}
	in.deps = append(in.deps, viewDep{req: *req, idx: resp.Meta.Index, resp: resp})
	return resp, nil
}

// setDeps subscribes ps to exactly deps (none: unsubscribe), starting and
// stopping the views' watches. A view that moved past the index the build
// read marks ps dirty at once.
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
			ctx, cancel := context.WithCancel(x.ctx)
			s = &viewSub{req: d.req, idx: d.idx, last: d.resp, subs: map[*proxyState]struct{}{}, cancel: cancel}
			x.subs[k] = s
			x.wg.Add(1)
			go func() {
				defer x.wg.Done()
				x.watchView(ctx, s)
			}()
		} else if d.idx > s.idx {
			// The build read past what the watch has seen: the
			// watch's other readers may hold older data; ps does not,
			// and is not woken again when the watch catches up
			// (marking it would spin it until then).
			same := sameResult(s.req.Op, s.last, d.resp)
			s.idx, s.last = d.idx, d.resp
			for o := range s.subs {
				if o != ps && !same {
					o.markDirty()
				}
			}
		} else if d.idx < s.idx {
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

// watchView follows one view with blocking reads and marks its readers
// dirty at each change, until ctx ends.
func (x *xdsService) watchView(ctx context.Context, s *viewSub) {
	for ctx.Err() == nil {
		x.mu.Lock()
		idx := s.idx
		x.mu.Unlock()
		next := s.req
		next.Options.MinQueryIndex, next.Options.MaxQueryTime = idx, xdsReadWait
		r, err := x.views.Get(ctx, &next)
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		x.mu.Lock()
		if r.Meta.Index == s.idx {
			// No change, or one a build already read (setDeps).
			x.mu.Unlock()
			continue
		}
		same := sameResult(s.req.Op, s.last, r)
		s.idx, s.last = r.Meta.Index, r
		if same {
			// The index moved, the result did not (config entry
			// reads wake on every config entry write).
			x.mu.Unlock()
			continue
		}
		for ps := range s.subs {
			ps.markDirty()
		}
		x.mu.Unlock()
	}
}
