package agent

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/connect"
	"github.com/tribune-mesh/tribune/discoverychain"
	"github.com/tribune-mesh/tribune/xds"
)

// proxylessNames are the services a proxyless gRPC client asked listeners
// for, the union over its streams, bounded.
type proxylessNames struct {
	mu      sync.Mutex
	names   map[string]bool
	changed chan struct{} // closed and replaced on every change
}

func newProxylessNames() *proxylessNames {
	return &proxylessNames{names: map[string]bool{}, changed: make(chan struct{})}
}

// update adds names (replacing the set when replace) and removes removed;
// names past xds.MaxProxylessServices are ignored. It reports whether the
// set changed.
func (p *proxylessNames) update(names []string, replace bool, removed []string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	next := map[string]bool{}
	if !replace {
		for n := range p.names {
			next[n] = true
		}
	}
	for _, n := range removed {
		delete(next, n)
	}
	for _, n := range names {
		if n != "" && n != "*" && len(next) < xds.MaxProxylessServices {
			next[n] = true
		}
	}
	if len(next) == len(p.names) {
		same := true
		for n := range next {
			if !p.names[n] {
				same = false
				break
			}
		}
		if same {
			return false
		}
	}
	p.names = next
	close(p.changed)
	p.changed = make(chan struct{})
	return true
}

// current returns the sorted names and a channel closed at their next
// change.
func (p *proxylessNames) current() ([]string, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]string, 0, len(p.names))
	for n := range p.names {
		out = append(out, n)
	}
	sort.Strings(out)
	return out, p.changed
}

// listenersNamed records the services a proxyless client asks for.
func (x *xdsService) listenersNamed(node string, names []string, replace bool, removed []string) {
	x.mu.Lock()
	w := x.proxies[node]
	x.mu.Unlock()
	if w != nil && w.proxyless != nil {
		if w.proxyless.update(names, replace, removed) {
			x.wake(w)
		}
	}
}

// readProxyless reads what a proxyless client's configuration is built
// from: the CA's trust domain (for cluster names) and the health of each
// service it named that its token may read.
func (x *xdsService) readProxyless(ctx context.Context, node, token string, names *proxylessNames) (*proxyInputs, error) {
	list, _ := names.current()
	in := &proxyInputs{}
	opts := catalog.QueryOptions{Token: token}
	roots, err := x.view(ctx, in, &catalog.ReadRequest{Op: catalog.ReadCARoots, Options: opts})
	if err != nil {
		return nil, fmt.Errorf("CA roots: %w", err)
	}
	if roots.CAConfig == nil || roots.CAConfig.ClusterID == "" {
		return in, nil // the CA is not initialised yet: wait for it
	}
	authz, err := x.a.acls.Resolve(token)
	if err != nil {
		return nil, fmt.Errorf("resolve the client's token: %w", err)
	}
	p := &xds.Proxyless{ID: node, Datacenter: x.a.cfg.Datacenter, TrustDomain: connect.TrustDomain(roots.CAConfig.ClusterID)}
	var set *chainSet
	if len(list) > 0 {
		if set, err = x.chainEntries(ctx, in, opts); err != nil {
			return nil, err
		}
	}
	for _, name := range list {
		if authz.ServiceRead(name) != acl.Allow {
			continue
		}
		svc, err := x.readProxylessChain(ctx, in, opts, set, name, p.TrustDomain)
		if err != nil {
			return nil, err
		}
		if svc != nil {
			p.Services = append(p.Services, *svc)
			continue
		}
		resp, err := x.view(ctx, in, &catalog.ReadRequest{Op: catalog.ReadHealthService, Name: name, Options: opts})
		if err != nil {
			return nil, fmt.Errorf("instances of %s: %w", name, err)
		}
		p.Services = append(p.Services, xds.ProxylessService{Name: name, Endpoints: meshEndpoints(resp.Instances)})
	}
	in.proxyless = p
	return in, nil
}

// readProxylessChain reads the instances of each target of the discovery
// chain of a service a proxyless client dials, when the chain routes it at
// L7 for gRPC (protocol http2 or grpc: a router's matches, a splitter's
// weights, a resolver's subsets and failover reach the client; targets in
// other datacenters are dialled directly, as the client's own instances
// are). nil, nil for a service of another protocol, or whose chain reaches
// a cluster peer (served as one cluster of its instances, as before).
func (x *xdsService) readProxylessChain(ctx context.Context, in *proxyInputs, opts catalog.QueryOptions, set *chainSet, name, trustDomain string) (*xds.ProxylessService, error) {
	cc := set.compile(discoverychain.Request{Service: name, Datacenter: x.a.cfg.Datacenter, TrustDomain: trustDomain})
	if cc.err != nil || (cc.chain.Protocol != "http2" && cc.chain.Protocol != "grpc") {
		return nil, nil
	}
	for _, t := range cc.chain.Targets {
		if t.External || t.Peer != "" {
			return nil, nil
		}
	}
	eps, err := x.readTargets(ctx, in, opts, cc.chain, catalog.ReadHealthService)
	if err != nil {
		return nil, err
	}
	return &xds.ProxylessService{Name: name, Chain: cc.chain, TargetEndpoints: eps}, nil
}
