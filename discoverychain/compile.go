package discoverychain

import (
	"fmt"
	"hash/fnv"
	"strings"
	"time"

	"github.com/tribune-mesh/tribune/catalog"
)

// compiler holds the state of one compilation.
type compiler struct {
	e        *Entries
	req      Request
	protocol string
	nodes    map[string]*Node
	targets  map[string]*Target
	// advanced is set once a router or splitter node is made: every
	// service the chain reaches must then speak the chain's L7 protocol.
	advanced bool
	services map[string]bool
}

// CompileRequest compiles the chain req asks for.
func CompileRequest(entries *Entries, req Request) (*Chain, error) {
	if req.Service == "" {
		return nil, invalid("service name is required")
	}
	if req.Datacenter == "" {
		return nil, invalid("datacenter is required")
	}
	if entries == nil {
		entries = &Entries{}
	}
	c := &compiler{e: entries, req: req, nodes: map[string]*Node{}, targets: map[string]*Target{}, services: map[string]bool{}}
	c.protocol = entries.Protocol(req.Service)
	if req.OverrideProtocol != "" {
		c.protocol = strings.ToLower(req.OverrideProtocol)
	}
	start, err := c.routerOrNext(req.Service)
	if err != nil {
		return nil, err
	}
	if c.advanced {
		if !catalog.IsHTTPProtocol(c.protocol) {
			return nil, invalid("discovery chain %q uses a protocol %q that does not permit advanced routing or splitting behavior", req.Service, c.protocol)
		}
		for svc := range c.services {
			if p := entries.Protocol(svc); req.OverrideProtocol == "" && p != c.protocol {
				return nil, invalid("discovery chain %q uses inconsistent protocols: %q is %q, %q is %q", req.Service, req.Service, c.protocol, svc, p)
			}
		}
	}
	chain := &Chain{
		ServiceName: req.Service,
		Namespace:   defaultNamespace,
		Datacenter:  req.Datacenter,
		Protocol:    c.protocol,
		ServiceMeta: entries.Defaults[req.Service].Meta,
		StartNode:   start,
		Nodes:       c.nodes,
		Targets:     c.targets,
	}
	if req.OverrideProtocol != "" || req.OverrideConnectTimeout > 0 || req.OverrideMeshGateway != "" {
		chain.CustomizationHash = customizationHash(req.OverrideMeshGateway, req.OverrideProtocol, req.OverrideConnectTimeout)
	}
	chain.Default = c.isDefault(start)
	return chain, nil
}

// isDefault reports whether the chain is what a service without any
// entries gets: one default resolver for the service itself.
func (c *compiler) isDefault(start string) bool {
	n := c.nodes[start]
	if n == nil || n.Type != NodeTypeResolver || !n.Resolver.Default {
		return false
	}
	t := c.targets[n.Resolver.Target]
	return t != nil && t.Service == c.req.Service && t.ServiceSubset == "" && t.Peer == ""
}

// routerOrNext returns the node requests for service start at: its router,
// else its splitter, else its resolver.
func (c *compiler) routerOrNext(service string) (string, error) {
	router := c.e.Routers[service]
	if router == nil {
		return c.splitterOrResolver(service, "", nil)
	}
	c.advanced = true
	c.services[service] = true
	name := service + "." + defaultNamespace + "." + defaultPartition
	key := NodeTypeRouter + ":" + name
	if _, ok := c.nodes[key]; ok {
		return key, nil
	}
	node := &Node{Type: NodeTypeRouter, Name: name}
	c.nodes[key] = node
	routes := append([]catalog.ServiceRoute(nil), router.Routes...)
	// Requests no route matches go to the service itself.
	routes = append(routes, catalog.ServiceRoute{
		Match:       &catalog.ServiceRouteMatch{HTTP: &catalog.ServiceRouteHTTPMatch{PathPrefix: "/"}},
		Destination: &catalog.ServiceRouteDestination{Service: service, Namespace: defaultNamespace},
	})
	for i := range routes {
		def := routes[i]
		dest := catalog.ServiceRouteDestination{}
		if def.Destination != nil {
			dest = *def.Destination
		}
		if dest.Service == "" {
			dest.Service = service
		}
		if dest.Namespace == "" {
			dest.Namespace = defaultNamespace
		}
		def.Destination = &dest
		if m := def.Match; m != nil && m.HTTP != nil && len(m.HTTP.Methods) > 0 {
			// Upper-case a copy: the entries are shared between compilations.
			hm := *m.HTTP
			hm.Methods = make([]string, len(m.HTTP.Methods))
			for j, meth := range m.HTTP.Methods {
				hm.Methods[j] = strings.ToUpper(meth)
			}
			def.Match = &catalog.ServiceRouteMatch{HTTP: &hm}
		}
		next, err := c.splitterOrResolver(dest.Service, dest.ServiceSubset, nil)
		if err != nil {
			return "", err
		}
		node.Routes = append(node.Routes, &Route{Definition: &def, NextNode: next})
	}
	return key, nil
}

// splitterOrResolver returns the node for service: its splitter when no
// subset is asked for and it has one, else the resolver node of its
// target. seen guards against splitters that split into each other.
func (c *compiler) splitterOrResolver(service, subset string, seen map[string]bool) (string, error) {
	c.services[service] = true
	splitter := c.e.Splitters[service]
	if subset != "" || splitter == nil {
		return c.resolverNode(service, subset, c.req.Datacenter, "")
	}
	c.advanced = true
	name := service + "." + defaultNamespace + "." + defaultPartition
	key := NodeTypeSplitter + ":" + name
	if _, ok := c.nodes[key]; ok {
		return key, nil
	}
	if seen == nil {
		seen = map[string]bool{}
	}
	if seen[service] {
		return "", invalid("detected circular reference between service-splitters of %q", service)
	}
	seen[service] = true
	node := &Node{Type: NodeTypeSplitter, Name: name}
	splits, err := c.flatten(service, splitter, 1, seen)
	if err != nil {
		return "", err
	}
	node.Splits = splits
	c.nodes[key] = node
	return key, nil
}

// flatten turns the splits of a splitter into splits that each end at a
// resolver: a split to another service's splitter is replaced by that
// splitter's splits, weights multiplied, as Consul does.
func (c *compiler) flatten(service string, splitter *catalog.ServiceSplitterEntry, scale float32, seen map[string]bool) ([]*Split, error) {
	var out []*Split
	for i := range splitter.Splits {
		def := splitter.Splits[i]
		if def.Service == "" {
			def.Service = service
		}
		if def.Namespace == "" {
			def.Namespace = defaultNamespace
		}
		c.services[def.Service] = true
		weight := def.Weight * scale
		if inner := c.e.Splitters[def.Service]; inner != nil && def.Service != service && def.ServiceSubset == "" {
			if seen[def.Service] {
				return nil, invalid("detected circular reference between service-splitters of %q and %q", service, def.Service)
			}
			seen[def.Service] = true
			sub, err := c.flatten(def.Service, inner, weight/100, seen)
			if err != nil {
				return nil, err
			}
			delete(seen, def.Service)
			out = append(out, sub...)
			continue
		}
		next, err := c.resolverNode(def.Service, def.ServiceSubset, c.req.Datacenter, "")
		if err != nil {
			return nil, err
		}
		d := def
		out = append(out, &Split{Definition: &d, Weight: weight, NextNode: next})
	}
	return out, nil
}

// resolved is where a request for a service lands once redirects are
// followed.
type resolved struct {
	service, subset, dc, peer string
	resolver                  *catalog.ServiceResolverEntry
}

// resolve follows resolver redirects from service/subset in dc and picks
// the default subset. A redirect to the service itself (another
// datacenter or peer) is applied once: the same resolver would redirect
// again.
func (c *compiler) resolve(service, subset, dc, peer string) (resolved, error) {
	for i := 0; ; i++ {
		if i > maxRedirects {
			return resolved{}, invalid("detected circular resolver redirect for %q", c.req.Service)
		}
		r := c.e.Resolvers[service]
		if r == nil || r.Redirect == nil || peer != "" {
			return c.settle(service, subset, dc, peer, r)
		}
		rd := r.Redirect
		if rd.Datacenter != "" {
			dc = rd.Datacenter
		}
		if rd.Peer != "" {
			peer = rd.Peer
		}
		if rd.Service == "" || rd.Service == service {
			if rd.ServiceSubset != "" {
				subset = rd.ServiceSubset
			}
			return c.settle(service, subset, dc, peer, r)
		}
		service, subset = rd.Service, rd.ServiceSubset
		c.services[service] = true
	}
}

// settle picks the default subset of a resolved destination and checks
// that its subset exists.
func (c *compiler) settle(service, subset, dc, peer string, r *catalog.ServiceResolverEntry) (resolved, error) {
	if r != nil && subset == "" {
		subset = r.DefaultSubset
	}
	if subset != "" && peer == "" {
		if r == nil {
			return resolved{}, invalid("service %q does not have a subset named %q", service, subset)
		}
		if _, ok := r.Subsets[subset]; !ok {
			return resolved{}, invalid("service %q does not have a subset named %q", service, subset)
		}
	}
	return resolved{service: service, subset: subset, dc: dc, peer: peer, resolver: r}, nil
}

// resolverNode returns the resolver node for a request for service/subset
// in dc, making it and its targets (failover included).
func (c *compiler) resolverNode(service, subset, dc, peer string) (string, error) {
	res, err := c.resolve(service, subset, dc, peer)
	if err != nil {
		return "", err
	}
	target := c.target(res)
	key := NodeTypeResolver + ":" + target.ID
	if _, ok := c.nodes[key]; ok {
		return key, nil
	}
	node := &Node{Type: NodeTypeResolver, Name: target.ID, Resolver: &Resolver{
		Default: res.resolver == nil, ConnectTimeout: target.ConnectTimeout, Target: target.ID,
	}}
	if r := res.resolver; r != nil {
		node.Resolver.RequestTimeout = r.RequestTimeout
		node.LoadBalancer = r.LoadBalancer
		f, ok := r.Failover[res.subset]
		if !ok {
			f, ok = r.Failover["*"]
		}
		if ok {
			fo, err := c.failover(res, f)
			if err != nil {
				return "", err
			}
			node.Resolver.Failover = fo
		}
	}
	c.nodes[key] = node
	return key, nil
}

// failover makes the targets of one failover definition.
func (c *compiler) failover(res resolved, f catalog.ServiceResolverFailover) (*Failover, error) {
	var wants []resolved
	switch {
	case len(f.Targets) > 0:
		for _, t := range f.Targets {
			w := resolved{service: res.service, subset: res.subset, dc: res.dc}
			if t.Service != "" {
				w.service, w.subset = t.Service, ""
			}
			if t.ServiceSubset != "" {
				w.subset = t.ServiceSubset
			}
			if t.Datacenter != "" {
				w.dc = t.Datacenter
			}
			if t.Peer != "" {
				w.peer, w.dc = t.Peer, ""
			}
			wants = append(wants, w)
		}
	case len(f.Datacenters) > 0:
		for _, dc := range f.Datacenters {
			svc := res.service
			if f.Service != "" {
				svc = f.Service
			}
			sub := res.subset
			if f.ServiceSubset != "" || f.Service != "" {
				sub = f.ServiceSubset
			}
			wants = append(wants, resolved{service: svc, subset: sub, dc: dc})
		}
	default:
		w := resolved{service: res.service, subset: res.subset, dc: res.dc}
		if f.Service != "" {
			w.service, w.subset = f.Service, ""
		}
		if f.ServiceSubset != "" {
			w.subset = f.ServiceSubset
		}
		wants = append(wants, w)
	}
	primary := c.target(res).ID
	out := &Failover{Policy: f.Policy}
	for _, w := range wants {
		w.resolver = c.e.Resolvers[w.service]
		if w.subset == "" && w.resolver != nil && w.peer == "" {
			w.subset = w.resolver.DefaultSubset
		}
		t := c.target(w)
		if t.ID == primary {
			continue
		}
		out.Targets = append(out.Targets, t.ID)
	}
	if len(out.Targets) == 0 {
		return nil, nil
	}
	return out, nil
}

// target returns the target for a resolved destination, making it once.
func (c *compiler) target(res resolved) *Target {
	id := targetID(res.service, res.subset, res.dc, res.peer)
	if t, ok := c.targets[id]; ok {
		return t
	}
	t := &Target{
		ID: id, Service: res.service, ServiceSubset: res.subset, Namespace: defaultNamespace,
		Datacenter: res.dc, Peer: res.peer, ConnectTimeout: catalog.Duration(DefaultConnectTimeout),
	}
	if res.resolver != nil {
		if res.resolver.ConnectTimeout > 0 {
			t.ConnectTimeout = res.resolver.ConnectTimeout
		}
		if res.subset != "" {
			t.Subset = res.resolver.Subsets[res.subset]
		}
	}
	if c.req.OverrideConnectTimeout > 0 {
		t.ConnectTimeout = catalog.Duration(c.req.OverrideConnectTimeout)
	}
	t.MeshGateway.Mode = c.e.meshGatewayMode(res.service)
	if c.req.OverrideMeshGateway != "" {
		t.MeshGateway.Mode = c.req.OverrideMeshGateway
	}
	if res.peer != "" {
		t.External = true
	} else {
		t.SNI = ServiceSNI(res.service, res.subset, res.dc, c.req.TrustDomain)
		t.Name = t.SNI
	}
	c.targets[id] = t
	return t
}

// targetID is Consul's target ID: [subset.]service.namespace.partition.dc,
// or service.namespace.partition.external.peer for a peer's service.
func targetID(service, subset, dc, peer string) string {
	if peer != "" {
		return fmt.Sprintf("%s.%s.%s.external.%s", service, defaultNamespace, defaultPartition, peer)
	}
	id := fmt.Sprintf("%s.%s.%s.%s", service, defaultNamespace, defaultPartition, dc)
	if subset != "" {
		id = subset + "." + id
	}
	return id
}

// ServiceSNI is the SNI name of a service's upstream cluster:
// [subset.]service.namespace.dc.internal.<trust domain>.
func ServiceSNI(service, subset, dc, trustDomain string) string {
	sni := fmt.Sprintf("%s.%s.%s.internal.%s", service, defaultNamespace, dc, trustDomain)
	if subset != "" {
		sni = subset + "." + sni
	}
	return sni
}

// customizationHash names a chain compiled with overrides, so that
// callers caching chains keep them apart.
func customizationHash(meshGateway, protocol string, connectTimeout time.Duration) string {
	return fmt.Sprintf("%08x", hashOverrides(meshGateway, protocol, connectTimeout))[:8]
}

// hashOverrides hashes the overrides of a request (FNV-64a).
func hashOverrides(meshGateway, protocol string, connectTimeout time.Duration) uint64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s\x00%s\x00%d", meshGateway, protocol, int64(connectTimeout))
	return h.Sum64()
}
