package agent

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-bexpr"

	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/discoverychain"
	"github.com/tribune-mesh/tribune/xds"
)

// A sidecar's upstreams are built from their compiled discovery chains: the
// config entries chains compile from are read through one shared view per
// kind (every proxy of the agent reads the same ones), decoded and compiled
// once per view result and request, and each chain target's instances come
// from a health view of the target's service in the target's datacenter
// (?dc= through the agent's backend for another datacenter). Without mesh
// gateways (Consul's default mesh_gateway mode "none"), another
// datacenter's endpoints are its instances' own addresses.

// xdsRemoteRetry is how soon a proxy reads again the instances of another
// datacenter's target that could not be read.
const xdsRemoteRetry = 5 * time.Second

// chainKinds are the kinds of config entries chains compile from.
var chainKinds = []string{
	catalog.KindServiceRouter, catalog.KindServiceSplitter, catalog.KindServiceResolver,
	catalog.KindServiceDefaults, catalog.KindProxyDefaults,
}

// Bounds of the chain cache: past them, it starts over.
const (
	maxChainEntrySets = 256
	maxChainsPerSet   = 4096
	maxSubsetFilters  = 1024
)

// chainCache shares decoded entries, compiled chains and subset filters
// between the proxies of an agent. Results are immutable once cached.
type chainCache struct {
	mu sync.Mutex
	// sets are keyed by what identifies the view results the entries
	// were decoded from (setKey).
	sets    map[string]*chainSet
	filters map[string]*bexpr.Evaluator
}

// setKey identifies the content of a set of view results: per kind, the
// count, last change and sum of changes of its entries when no token
// filtered them (proxies with different tokens share the set, and an
// index moved by another kind's write keeps it), else the results
// themselves (shared by the readers of one view, never modified).
func setKey(rs []*catalog.ReadResponse) string {
	filtered := false
	for _, r := range rs {
		filtered = filtered || r.Meta.ResultsFilteredByACLs
	}
	key := make([]byte, 0, 24*len(rs))
	for _, r := range rs {
		if filtered {
			key = fmt.Appendf(key, "%p,", r)
			continue
		}
		var last, sum uint64
		for _, e := range r.ConfigEntries {
			last, sum = max(last, e.ModifyIndex), sum+e.ModifyIndex
		}
		key = strconv.AppendInt(key, int64(len(r.ConfigEntries)), 36)
		key = append(key, '/')
		key = strconv.AppendUint(key, last, 36)
		key = append(key, '/')
		key = strconv.AppendUint(key, sum, 36)
		key = append(key, ',')
	}
	return string(key)
}

// chainSet is the entries of one set of view results and the chains
// compiled from them.
type chainSet struct {
	entries *discoverychain.Entries
	mu      sync.Mutex
	chains  map[discoverychain.Request]*compiledChain
}

// compiledChain is one compilation's result.
type compiledChain struct {
	chain *discoverychain.Chain
	key   string // xds.ChainKey(chain)
	err   error
}

// chainEntries reads the config entries chains compile from, one view
// per kind, and returns them decoded (once per set of results).
func (x *xdsService) chainEntries(ctx context.Context, in *proxyInputs, opts catalog.QueryOptions) (*chainSet, error) {
	resps := make([]*catalog.ReadResponse, len(chainKinds))
	for i, kind := range chainKinds {
		resp, err := x.view(ctx, in, &catalog.ReadRequest{Op: catalog.ReadConfigEntries, Key: kind, Options: opts})
		if err != nil {
			return nil, fmt.Errorf("%s config entries: %w", kind, err)
		}
		resps[i] = resp
	}
	key := setKey(resps)
	c := &x.chains
	c.mu.Lock()
	set := c.sets[key]
	c.mu.Unlock()
	if set != nil {
		return set, nil
	}
	var all []*catalog.ConfigEntry
	for _, r := range resps {
		all = append(all, r.ConfigEntries...)
	}
	entries, err := discoverychain.FromConfigEntries(all)
	if err != nil {
		return nil, fmt.Errorf("decode config entries: %w", err)
	}
	set = &chainSet{entries: entries, chains: map[discoverychain.Request]*compiledChain{}}
	c.mu.Lock()
	if c.sets == nil || len(c.sets) >= maxChainEntrySets {
		c.sets = map[string]*chainSet{}
	}
	c.sets[key] = set
	c.mu.Unlock()
	return set, nil
}

// compile returns the chain req asks for, compiled once per set.
func (s *chainSet) compile(req discoverychain.Request) *compiledChain {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cc := s.chains[req]; cc != nil {
		return cc
	}
	ch, err := discoverychain.CompileRequest(s.entries, req)
	cc := &compiledChain{chain: ch, err: err}
	if err == nil {
		cc.key = xds.ChainKey(ch)
	}
	if len(s.chains) >= maxChainsPerSet {
		clear(s.chains)
	}
	s.chains[req] = cc
	return cc
}

// subsetFilter returns the compiled bexpr filter of a resolver subset.
func (c *chainCache) subsetFilter(expr string) (*bexpr.Evaluator, error) {
	c.mu.Lock()
	ev := c.filters[expr]
	c.mu.Unlock()
	if ev != nil {
		return ev, nil
	}
	ev, err := bexpr.CreateEvaluator(expr)
	if err != nil {
		return nil, fmt.Errorf("subset filter %q: %w", expr, err)
	}
	c.mu.Lock()
	if c.filters == nil || len(c.filters) >= maxSubsetFilters {
		c.filters = map[string]*bexpr.Evaluator{}
	}
	c.filters[expr] = ev
	c.mu.Unlock()
	return ev, nil
}

// readUpstream compiles an upstream's chain and reads the instances of
// each of its targets. An upstream whose chain cannot be served (the
// entries make an invalid chain, or it reaches a cluster peer) is left
// out, with a warning, rather than holding back the proxy's whole
// configuration: nil, nil; a change of the entries rebuilds it.
func (x *xdsService) readUpstream(ctx context.Context, in *proxyInputs, opts catalog.QueryOptions, set *chainSet, u *catalog.Upstream, trustDomain string) (*xds.Upstream, error) {
	local := x.a.cfg.Datacenter
	req := discoverychain.Request{Service: u.DestinationName, Datacenter: u.Datacenter, TrustDomain: trustDomain}
	if req.Datacenter == "" {
		req.Datacenter = local
	}
	if p, ok := u.Config["protocol"].(string); ok {
		req.OverrideProtocol = p
	}
	if ms, ok := u.Config["connect_timeout_ms"].(float64); ok && ms > 0 {
		req.OverrideConnectTimeout = time.Duration(ms) * time.Millisecond
	}
	cc := set.compile(req)
	skip := cc.err
	if skip == nil {
		for id, t := range cc.chain.Targets {
			if t.External {
				skip = fmt.Errorf("target %s is a cluster peer's, which Tribune does not serve", id)
			}
		}
	}
	if skip != nil {
		x.a.logger.Named("xds").Warn("leaving out an upstream whose discovery chain cannot be served",
			"upstream", u.DestinationName, "datacenter", req.Datacenter, "error", skip)
		return nil, nil
	}
	eps, err := x.readTargets(ctx, in, opts, cc.chain, catalog.ReadHealthConnect)
	if err != nil {
		return nil, err
	}
	return &xds.Upstream{
		DestinationName: u.DestinationName, Datacenter: u.Datacenter,
		LocalBindAddress: u.LocalBindAddress, LocalBindPort: u.LocalBindPort,
		Chain: cc.chain, ChainKey: cc.key, TargetEndpoints: eps,
	}, nil
}

// readTargets reads the healthy instances of each target of a chain with
// op (ReadHealthConnect: the targets' sidecars; ReadHealthService: the
// instances themselves, for proxyless clients), by target ID.
func (x *xdsService) readTargets(ctx context.Context, in *proxyInputs, opts catalog.QueryOptions, ch *discoverychain.Chain, op catalog.ReadOp) (map[string][]xds.Endpoint, error) {
	local := x.a.cfg.Datacenter
	out := make(map[string][]xds.Endpoint, len(ch.Targets))
	for id, t := range ch.Targets {
		o := opts
		if t.Datacenter != local {
			o.Datacenter = t.Datacenter
		}
		resp, err := x.view(ctx, in, &catalog.ReadRequest{Op: op, Name: t.Service, Options: o})
		if err != nil && t.Datacenter != local && ctx.Err() == nil {
			// Another datacenter that does not answer must not hold
			// back the proxy's configuration: its target has no
			// endpoints (a failover skips it) until a retry reads it.
			x.a.logger.Named("xds").Warn("instances of another datacenter's target unreadable; serving it without endpoints",
				"service", t.Service, "datacenter", t.Datacenter, "error", err, "retry_in", xdsRemoteRetry)
			in.retryRemote = true
			out[id] = nil
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("instances of %s in %s: %w", t.Service, t.Datacenter, err)
		}
		eps, err := x.targetEndpoints(resp.Instances, t.Subset)
		if err != nil {
			return nil, err
		}
		out[id] = eps
	}
	return out, nil
}

// targetEndpoints are the instances of a target's subset: those its filter
// selects, healthy when passing (or warning, unless OnlyPassing).
func (x *xdsService) targetEndpoints(instances []*catalog.CheckServiceNode, subset catalog.ServiceResolverSubset) ([]xds.Endpoint, error) {
	if subset.Filter != "" {
		ev, err := x.chains.subsetFilter(subset.Filter)
		if err != nil {
			return nil, err
		}
		kept := make([]*catalog.CheckServiceNode, 0, len(instances))
		for _, in := range instances {
			// An instance the filter cannot evaluate (a missing field)
			// is not in the subset.
			if ok, err := ev.Evaluate(in); err == nil && ok {
				kept = append(kept, in)
			}
		}
		instances = kept
	}
	eps := meshEndpoints(instances)
	if subset.OnlyPassing {
		for i, in := range instances {
			if catalog.AggregatedStatus(in.Checks) != catalog.HealthPassing {
				eps[i].Healthy = false
			}
		}
	}
	return eps, nil
}

// serviceProtocol is the protocol of the service a sidecar fronts: the
// proxy's own config, else service-defaults, else proxy-defaults.
func serviceProtocol(svc *catalog.Service, set *chainSet) string {
	if p, ok := svc.Proxy.Config["protocol"].(string); ok && p != "" {
		return strings.ToLower(p)
	}
	return set.entries.Protocol(svc.Proxy.DestinationServiceName)
}
