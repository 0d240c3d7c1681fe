package httpapi

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/hashicorp/go-bexpr"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/catalog"
)

// catalogService is one element of /v1/catalog/service/<name>: a service
// instance flattened with its node, as Consul's CatalogService.
type catalogService struct {
	ID                       string
	Node                     string
	Address                  string
	Datacenter               string
	TaggedAddresses          map[string]string
	NodeMeta                 map[string]string
	ServiceKind              string
	ServiceID                string
	ServiceName              string
	ServiceTags              []string
	ServiceAddress           string
	ServiceTaggedAddresses   map[string]catalog.ServiceAddress `json:",omitempty"`
	ServiceWeights           catalog.Weights
	ServiceMeta              map[string]string
	ServicePort              int
	ServiceEnableTagOverride bool
	// ServiceProxy and ServiceConnect are values, as in Consul's
	// ServiceNode: always present, so filters on their fields work on
	// instances without them.
	ServiceProxy      catalog.ConnectProxyConfig
	ServiceConnect    catalog.ServiceConnect
	ServiceSocketPath string            `json:",omitempty"`
	ServiceLocality   *catalog.Locality `json:",omitempty" bexpr:"-"`
	CreateIndex       uint64
	ModifyIndex       uint64
}

// catalogNode is /v1/catalog/node/<node>: services keyed by ID.
type catalogNode struct {
	Node     *catalog.Node
	Services map[string]*catalog.Service
}

func (h *Handler) catalogRegister(w http.ResponseWriter, r *http.Request) (any, error) {
	var req catalog.RegisterRequest
	if err := decodeBody(r, &req); err != nil {
		return nil, err
	}
	if req.Node == "" {
		return nil, badRequest("Missing node name")
	}
	if req.Address == "" && !req.SkipNodeUpdate {
		return nil, badRequest("Missing node address")
	}
	if req.Service != nil && req.Service.Service == "" {
		return nil, badRequest("Missing service name")
	}
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	if authz.NodeWrite(req.Node) != acl.Allow {
		return nil, errPermissionDenied
	}
	if req.Service != nil && authz.ServiceWrite(req.Service.Service) != acl.Allow {
		return nil, errPermissionDenied
	}
	if req.Datacenter == "" {
		req.Datacenter = h.agent.cfg.Datacenter
	}
	setCheckType(req.Check)
	for _, c := range req.Checks {
		setCheckType(c)
	}
	if _, err := h.apply(r.Context(), catalog.CmdRegister, &req); err != nil {
		return nil, err
	}
	return true, nil
}

// setCheckType names the type of a check registered through the catalog
// without one from the probe its definition describes, as Consul shows it,
// and gives a check with only a name that name as its ID.
func setCheckType(c *catalog.HealthCheck) {
	if c == nil {
		return
	}
	if c.CheckID == "" {
		// As Consul does, a check given only a name is known by it.
		c.CheckID = c.Name
	}
	if c.Type != "" {
		return
	}
	d := c.Definition
	switch {
	case d.HTTP != "":
		c.Type = "http"
	case d.TCP != "":
		c.Type = "tcp"
	case d.UDP != "":
		c.Type = "udp"
	case d.GRPC != "":
		c.Type = "grpc"
	}
}

func (h *Handler) catalogDeregister(w http.ResponseWriter, r *http.Request) (any, error) {
	var req catalog.DeregisterRequest
	if err := decodeBody(r, &req); err != nil {
		return nil, err
	}
	if req.Node == "" {
		return nil, badRequest("Missing node name")
	}
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	if authz.NodeWrite(req.Node) != acl.Allow {
		return nil, errPermissionDenied
	}
	if _, err := h.apply(r.Context(), catalog.CmdDeregister, &req); err != nil {
		return nil, err
	}
	return true, nil
}

func (h *Handler) catalogDatacenters(w http.ResponseWriter, r *http.Request) (any, error) {
	if h.agent.fed != nil {
		return h.agent.fed.Datacenters(r.Context())
	}
	return []string{h.agent.cfg.Datacenter}, nil
}

func (h *Handler) catalogNodes(w http.ResponseWriter, r *http.Request) (any, error) {
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	resp, err := h.read(w, r, &catalog.ReadRequest{Op: catalog.ReadNodes})
	if err != nil {
		return nil, err
	}
	out, err := filter(queryOf(r).Get("filter"), resp.Nodes)
	if err != nil {
		return nil, err
	}
	out = aclKeep(w, r, out, func(n *catalog.Node) bool { return authz.NodeRead(n.Node) == acl.Allow })
	sortNear(h.nearSorter(r.Context(), r), out, func(n *catalog.Node) string { return n.Node })
	return out, nil
}

func (h *Handler) catalogServices(w http.ResponseWriter, r *http.Request) (any, error) {
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	expr := queryOf(r).Get("filter")
	var ev *bexpr.Filter
	if expr != "" {
		// Refuse a bad expression before any read, blocking or not.
		if ev, err = bexpr.CreateFilter(expr); err != nil {
			return nil, badRequest("Failed to create boolean expression evaluator: %v", err)
		}
	}
	resp, err := h.read(w, r, &catalog.ReadRequest{Op: catalog.ReadServices})
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for name, tags := range resp.Services {
		if authz.ServiceRead(name) != acl.Allow {
			// ?filter= runs first: the service counts as filtered by
			// ACLs only when the filter would have listed it.
			if ev == nil {
				markFiltered(w, r)
			} else if matched, err := h.matchingInstances(r, acl.AllowAll(), name, resp.Meta.Index, ev); err == nil && len(matched) > 0 {
				markFiltered(w, r)
			}
			continue
		}
		if ev == nil {
			out[name] = tags
			continue
		}
		// As Consul does, the filter runs over the service's instances
		// (the fields of /v1/catalog/service/<name>); a service is listed
		// when one of them matches, with the tags of those that match.
		matched, err := h.matchingInstances(r, authz, name, resp.Meta.Index, ev)
		if err != nil {
			return nil, err
		}
		if len(matched) == 0 {
			continue
		}
		seen := map[string]bool{}
		tags := []string{}
		for _, m := range matched {
			for _, t := range m.ServiceTags {
				if !seen[t] {
					seen[t] = true
					tags = append(tags, t)
				}
			}
		}
		out[name] = tags
	}
	return out, nil
}

// matchingInstances returns the instances of a service that ev selects, read
// at least at index (the services read's), without blocking.
func (h *Handler) matchingInstances(r *http.Request, authz acl.Authorizer, name string, index uint64, ev *bexpr.Filter) ([]*catalogService, error) {
	opts, err := h.parseQueryOptions(r)
	if err != nil {
		return nil, err
	}
	opts.MinQueryIndex, opts.MaxQueryTime, opts.Filter = 0, 0, ""
	meta, err := parseNodeMeta(r)
	if err != nil {
		return nil, err
	}
	resp, err := h.agent.backend.Read(r.Context(), &catalog.ReadRequest{Op: catalog.ReadServiceInstances, Name: name, NodeMeta: meta, Options: opts})
	if err != nil {
		return nil, err
	}
	all := make([]*catalogService, 0, len(resp.Instances))
	for _, in := range resp.Instances {
		if authz.NodeRead(in.Node.Node) == acl.Allow {
			all = append(all, catalogServiceOf(in))
		}
	}
	res, err := ev.Execute(all)
	if err != nil {
		return nil, badRequest("Failed to apply filter: %v", err)
	}
	matched, _ := res.([]*catalogService)
	return matched, nil
}

// catalogServiceOf is an instance as /v1/catalog/service/<name> shows it.
func catalogServiceOf(in *catalog.CheckServiceNode) *catalogService {
	n, s := in.Node, in.Service
	out := &catalogService{
		ID: n.ID, Node: n.Node, Address: n.Address, Datacenter: n.Datacenter,
		TaggedAddresses: n.TaggedAddresses, NodeMeta: n.Meta, ServiceKind: s.Kind,
		ServiceID: s.ID, ServiceName: s.Service, ServiceTags: nonNil(s.Tags), ServiceAddress: s.Address,
		ServiceTaggedAddresses: s.TaggedAddresses, ServiceWeights: s.Weights, ServiceMeta: s.Meta,
		ServicePort: s.Port, ServiceEnableTagOverride: s.EnableTagOverride,
		ServiceSocketPath: s.SocketPath, ServiceLocality: s.Locality,
		CreateIndex: s.CreateIndex, ModifyIndex: s.ModifyIndex,
	}
	if s.Proxy != nil {
		out.ServiceProxy = *s.Proxy
	}
	if s.Connect != nil {
		out.ServiceConnect = *s.Connect
	}
	return out
}

func (h *Handler) catalogService(w http.ResponseWriter, r *http.Request) (any, error) {
	return h.catalogInstances(w, r, catalog.ReadServiceInstances, "/v1/catalog/service/")
}

// catalogConnect is /v1/catalog/connect/<service>: the service's proxies
// and Connect-native instances.
func (h *Handler) catalogConnect(w http.ResponseWriter, r *http.Request) (any, error) {
	return h.catalogInstances(w, r, catalog.ReadConnectInstances, "/v1/catalog/connect/")
}

func (h *Handler) catalogInstances(w http.ResponseWriter, r *http.Request, op catalog.ReadOp, prefix string) (any, error) {
	name := strings.TrimPrefix(r.URL.Path, prefix)
	if name == "" {
		return nil, badRequest("Missing service name")
	}
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	if authz.ServiceRead(name) != acl.Allow {
		return nil, errPermissionDenied
	}
	resp, err := h.read(w, r, &catalog.ReadRequest{Op: op, Name: name, Tags: queryOf(r)["tag"]})
	if err != nil {
		return nil, err
	}
	all := make([]*catalogService, 0, len(resp.Instances))
	for _, in := range resp.Instances {
		all = append(all, catalogServiceOf(in))
	}
	out, err := filter(queryOf(r).Get("filter"), all)
	if err != nil {
		return nil, err
	}
	out = aclKeep(w, r, out, func(c *catalogService) bool { return authz.NodeRead(c.Node) == acl.Allow })
	sortNear(h.nearSorter(r.Context(), r), out, func(c *catalogService) string { return c.Node })
	return out, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func (h *Handler) catalogNode(w http.ResponseWriter, r *http.Request) (any, error) {
	name := strings.TrimPrefix(r.URL.Path, "/v1/catalog/node/")
	ns, err := h.nodeServices(w, r, name)
	if err != nil {
		return nil, err
	}
	if ns == nil {
		// Consul answers an unknown node with 200 and null, which the
		// official client turns into a nil node rather than an error.
		return json.RawMessage("null"), nil
	}
	svcs, err := h.nodeServicesVisible(w, r, ns.Services)
	if err != nil {
		return nil, err
	}
	out := &catalogNode{Node: ns.Node, Services: map[string]*catalog.Service{}}
	for _, s := range svcs {
		out.Services[s.ID] = s
	}
	return out, nil
}

func (h *Handler) catalogNodeServices(w http.ResponseWriter, r *http.Request) (any, error) {
	name := strings.TrimPrefix(r.URL.Path, "/v1/catalog/node-services/")
	ns, err := h.nodeServices(w, r, name)
	if err != nil {
		return nil, err
	}
	if ns == nil {
		// As Consul: 200 with a null node and no services.
		return &catalog.NodeServices{Services: []*catalog.Service{}}, nil
	}
	svcs, err := h.nodeServicesVisible(w, r, ns.Services)
	if err != nil {
		return nil, err
	}
	return &catalog.NodeServices{Node: ns.Node, Services: svcs}, nil
}

// nodeServicesVisible applies ?filter= to a node's services, then keeps
// those the token may read.
func (h *Handler) nodeServicesVisible(w http.ResponseWriter, r *http.Request, svcs []*catalog.Service) ([]*catalog.Service, error) {
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	svcs, err = filter(queryOf(r).Get("filter"), svcs)
	if err != nil {
		return nil, err
	}
	return aclKeep(w, r, svcs, func(s *catalog.Service) bool { return authz.ServiceRead(s.Service) == acl.Allow }), nil
}

// nodeServices reads a node with its services; nil when there is no such
// node.
func (h *Handler) nodeServices(w http.ResponseWriter, r *http.Request, name string) (*catalog.NodeServices, error) {
	if name == "" {
		return nil, badRequest("Missing node name")
	}
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	if authz.NodeRead(name) != acl.Allow {
		return nil, errPermissionDenied
	}
	resp, err := h.read(w, r, &catalog.ReadRequest{Op: catalog.ReadNode, Name: name})
	if err != nil {
		return nil, err
	}
	if resp.NodeServices == nil {
		return nil, nil
	}
	return resp.NodeServices, nil
}

// ---- health ----

func (h *Handler) healthChecks(w http.ResponseWriter, r *http.Request, op catalog.ReadOp, prefix string) (any, error) {
	name := strings.TrimPrefix(r.URL.Path, prefix)
	if name == "" {
		return nil, badRequest("Missing name")
	}
	if op == catalog.ReadChecksInState {
		switch name {
		case catalog.HealthAny, catalog.HealthPassing, catalog.HealthWarning, catalog.HealthCritical:
		default:
			return nil, badRequest("Invalid check state %q", name)
		}
	}
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	resp, err := h.read(w, r, &catalog.ReadRequest{Op: op, Name: name})
	if err != nil {
		return nil, err
	}
	all := make([]*catalog.HealthCheck, 0, len(resp.Checks))
	for _, c := range resp.Checks {
		c := *c
		c.ServiceTags = nonNil(c.ServiceTags)
		all = append(all, &c)
	}
	out, err := filter(queryOf(r).Get("filter"), all)
	if err != nil {
		return nil, err
	}
	return aclKeep(w, r, out, func(c *catalog.HealthCheck) bool {
		return authz.NodeRead(c.Node) == acl.Allow && (c.ServiceName == "" || authz.ServiceRead(c.ServiceName) == acl.Allow)
	}), nil
}

func (h *Handler) healthService(w http.ResponseWriter, r *http.Request) (any, error) {
	return h.healthInstances(w, r, catalog.ReadHealthService, "/v1/health/service/")
}

// healthConnect is /v1/health/connect/<service>: the service's proxies and
// Connect-native instances, with their checks.
func (h *Handler) healthConnect(w http.ResponseWriter, r *http.Request) (any, error) {
	return h.healthInstances(w, r, catalog.ReadHealthConnect, "/v1/health/connect/")
}

func (h *Handler) healthInstances(w http.ResponseWriter, r *http.Request, op catalog.ReadOp, prefix string) (any, error) {
	name := strings.TrimPrefix(r.URL.Path, prefix)
	if name == "" {
		return nil, badRequest("Missing service name")
	}
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	if authz.ServiceRead(name) != acl.Allow {
		return nil, errPermissionDenied
	}
	q := queryOf(r)
	resp, err := h.read(w, r, &catalog.ReadRequest{Op: op, Name: name, Tags: q["tag"]})
	if err != nil {
		return nil, err
	}
	_, passing := q["passing"]
	all := make([]*catalog.CheckServiceNode, 0, len(resp.Instances))
	for _, in := range resp.Instances {
		if passing && catalog.AggregatedStatus(in.Checks) != catalog.HealthPassing {
			continue
		}
		if in.Checks == nil {
			in.Checks = []*catalog.HealthCheck{}
		}
		all = append(all, in)
	}
	out, err := filter(q.Get("filter"), all)
	if err != nil {
		return nil, err
	}
	out = aclKeep(w, r, out, func(in *catalog.CheckServiceNode) bool { return authz.NodeRead(in.Node.Node) == acl.Allow })
	sortNear(h.nearSorter(r.Context(), r), out, func(c *catalog.CheckServiceNode) string { return c.Node.Node })
	return out, nil
}

// ---- status ----

// checkDC refuses a ?dc= naming another datacenter, as Consul answers when
// it has no route to it.
func (h *Handler) checkDC(r *http.Request) error {
	if dc := queryOf(r).Get("dc"); dc != "" && dc != h.agent.cfg.Datacenter {
		return &httpError{code: http.StatusInternalServerError, msg: "No path to datacenter"}
	}
	return nil
}

func (h *Handler) statusLeader(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := h.checkWriteDC(r); err != nil {
		return nil, err
	}
	leader, _, err := h.agent.status(r.Context())
	return leader, err
}

func (h *Handler) statusPeers(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := h.checkWriteDC(r); err != nil {
		return nil, err
	}
	_, peers, err := h.agent.status(r.Context())
	if err != nil {
		return nil, err
	}
	if peers == nil {
		peers = []string{}
	}
	return peers, nil
}
