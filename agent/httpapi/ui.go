package httpapi

import (
	"maps"
	"net/http"
	"slices"
	"sort"
	"strings"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/ui"
)

// The web UI's summary endpoints, in the shape Consul's UI reads. Each is one
// catalog dump read (a blocking query when ?index= is set, woken by any
// node, service or check change), filtered by the caller's token exactly as
// the public endpoints filter: a node the token cannot read is left out, and
// so is a service it cannot read.

// uiServiceSummary is one entry of /v1/internal/ui/services.
type uiServiceSummary struct {
	Kind                 string `json:",omitempty"`
	Name                 string
	Datacenter           string
	Tags                 []string
	Nodes                []string
	ExternalSources      []string
	InstanceCount        int
	ChecksPassing        int
	ChecksWarning        int
	ChecksCritical       int
	GatewayConfig        struct{}
	TransparentProxy     bool
	ConnectNative        bool
	ConnectedWithProxy   bool
	ConnectedWithGateway bool
}

// uiNodeInfo is one entry of /v1/internal/ui/nodes and the answer of
// /v1/internal/ui/node/<name>.
type uiNodeInfo struct {
	ID              string
	Node            string
	Address         string
	Datacenter      string
	TaggedAddresses map[string]string
	Meta            map[string]string
	Services        []*catalog.Service
	Checks          []*catalog.HealthCheck
}

// uiDump reads the catalog dump and drops what authz may not read.
func (h *Handler) uiDump(w http.ResponseWriter, r *http.Request) (*catalog.ReadResponse, acl.Authorizer, error) {
	authz, err := h.authorize(r)
	if err != nil {
		return nil, nil, err
	}
	resp, err := h.read(w, r, &catalog.ReadRequest{Op: catalog.ReadCatalogDump})
	if err != nil {
		return nil, nil, err
	}
	return resp, authz, nil
}

func (h *Handler) uiServices(w http.ResponseWriter, r *http.Request) (any, error) {
	resp, authz, err := h.uiDump(w, r)
	if err != nil {
		return nil, err
	}
	byName := map[string]*uiServiceSummary{}
	proxied := map[string]bool{}
	nodesOf := map[string]map[string]bool{}
	tagsOf := map[string]map[string]bool{}
	for _, in := range resp.Instances {
		s := in.Service
		if authz.NodeRead(in.Node.Node) != acl.Allow || authz.ServiceRead(s.Service) != acl.Allow {
			continue
		}
		if s.Kind == catalog.ServiceKindConnectProxy {
			// Sidecars are shown on the service they front, as Consul's
			// UI does.
			if dest := s.ConnectTarget(); dest != "" {
				proxied[dest] = true
				continue
			}
		}
		sum := byName[s.Service]
		if sum == nil {
			sum = &uiServiceSummary{Kind: s.Kind, Name: s.Service, Datacenter: h.agent.cfg.Datacenter,
				ExternalSources: []string{}}
			byName[s.Service] = sum
			nodesOf[s.Service], tagsOf[s.Service] = map[string]bool{}, map[string]bool{}
		}
		sum.InstanceCount++
		if s.Connect != nil && s.Connect.Native {
			sum.ConnectNative = true
		}
		nodesOf[s.Service][in.Node.Node] = true
		for _, t := range s.Tags {
			tagsOf[s.Service][t] = true
		}
		for _, c := range in.Checks {
			switch c.Status {
			case catalog.HealthPassing:
				sum.ChecksPassing++
			case catalog.HealthWarning:
				sum.ChecksWarning++
			default:
				sum.ChecksCritical++
			}
		}
	}
	out := make([]*uiServiceSummary, 0, len(byName))
	for name, sum := range byName {
		sum.Nodes, sum.Tags = slices.Sorted(maps.Keys(nodesOf[name])), slices.Sorted(maps.Keys(tagsOf[name]))
		sum.ConnectedWithProxy = proxied[name]
		out = append(out, sum)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return filter(queryOf(r).Get("filter"), out)
}

// uiNodes builds the NodeInfo of every node authz may read.
func uiNodes(resp *catalog.ReadResponse, authz acl.Authorizer) []*uiNodeInfo {
	infos := map[string]*uiNodeInfo{}
	out := make([]*uiNodeInfo, 0, len(resp.Nodes))
	for _, n := range resp.Nodes {
		if authz.NodeRead(n.Node) != acl.Allow {
			continue
		}
		info := &uiNodeInfo{ID: n.ID, Node: n.Node, Address: n.Address, Datacenter: n.Datacenter,
			TaggedAddresses: n.TaggedAddresses, Meta: n.Meta,
			Services: []*catalog.Service{}, Checks: []*catalog.HealthCheck{}}
		infos[n.Node] = info
		out = append(out, info)
	}
	for _, in := range resp.Instances {
		if info := infos[in.Node.Node]; info != nil && authz.ServiceRead(in.Service.Service) == acl.Allow {
			info.Services = append(info.Services, in.Service)
		}
	}
	for _, c := range resp.Checks {
		info := infos[c.Node]
		if info == nil || (c.ServiceName != "" && authz.ServiceRead(c.ServiceName) != acl.Allow) {
			continue
		}
		c := *c
		c.ServiceTags = nonNil(c.ServiceTags)
		info.Checks = append(info.Checks, &c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out
}

func (h *Handler) uiNodesList(w http.ResponseWriter, r *http.Request) (any, error) {
	resp, authz, err := h.uiDump(w, r)
	if err != nil {
		return nil, err
	}
	return filter(queryOf(r).Get("filter"), uiNodes(resp, authz))
}

func (h *Handler) uiNode(w http.ResponseWriter, r *http.Request) (any, error) {
	name := strings.TrimPrefix(r.URL.Path, "/v1/internal/ui/node/")
	if name == "" {
		return nil, badRequest("Missing node name")
	}
	resp, authz, err := h.uiDump(w, r)
	if err != nil {
		return nil, err
	}
	if authz.NodeRead(name) != acl.Allow {
		return nil, errPermissionDenied
	}
	for _, n := range uiNodes(resp, authz) {
		if n.Node == name {
			return n, nil
		}
	}
	return nil, notFound("Node not found: %q", name)
}

// registerUIRoutes adds the UI's summary endpoints.
func (h *Handler) registerUIRoutes() {
	h.handle("/v1/internal/ui/services", methodsGet, h.uiServices)
	h.handle("/v1/internal/ui/nodes", methodsGet, h.uiNodesList)
	h.handle("/v1/internal/ui/node/", methodsGet, h.uiNode)
}

// mountUI builds the UI's file server when ui_config.enabled is set.
func (h *Handler) mountUI() {
	cfg := h.agent.cfg.UI
	if !cfg.Enabled {
		return
	}
	path := cfg.ContentPath
	if path == "" {
		path = "/ui/"
	}
	h.uiPath = path
	h.ui = ui.Handler(path, cfg.Dir, ui.Settings{Datacenter: h.agent.cfg.Datacenter, ACLsEnabled: h.agent.cfg.ACL.Enabled})
}

// serveUI answers the UI's paths and the redirect of "/" to the UI, and
// reports whether it did. API paths (/v1/...) are never the UI's.
func (h *Handler) serveUI(w http.ResponseWriter, r *http.Request) bool {
	if h.ui == nil || strings.HasPrefix(r.URL.Path, "/v1/") || strings.HasPrefix(r.URL.Path, "/debug/") {
		return false
	}
	switch {
	case r.URL.Path == "/" && h.uiPath != "/":
		http.Redirect(w, r, h.uiPath, http.StatusMovedPermanently)
		return true
	case r.URL.Path+"/" == h.uiPath:
		http.Redirect(w, r, h.uiPath, http.StatusMovedPermanently)
		return true
	case strings.HasPrefix(r.URL.Path, h.uiPath):
		h.ui.ServeHTTP(w, r)
		return true
	}
	return false
}
