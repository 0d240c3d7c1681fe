package httpapi

import (
	"net/http"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/catalog"
)

// serviceUsage is one datacenter of /v1/operator/usage.
type serviceUsage struct {
	Nodes                              int
	Services                           int
	ServiceInstances                   int
	ConnectServiceInstances            map[string]int
	BillableServiceInstances           int
	PartitionNamespaceServices         map[string]map[string]int
	PartitionNamespaceServiceInstances map[string]map[string]int
}

// operatorUsage serves GET /v1/operator/usage (operator:read): how many
// nodes, services and instances the catalog holds, with the instances by
// mesh kind and the "billable" ones (typical services but the servers'
// own "consul"), as Consul counts them.
func (h *Handler) operatorUsage(w http.ResponseWriter, r *http.Request) (any, error) {
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	if authz.OperatorRead() != acl.Allow {
		return nil, errPermissionDenied
	}
	nodes, err := h.read(w, r, &catalog.ReadRequest{Op: catalog.ReadNodes})
	if err != nil {
		return nil, err
	}
	opts, err := h.parseQueryOptions(r)
	if err != nil {
		return nil, err
	}
	// The node read above did any blocking; the rest read once.
	opts.MinQueryIndex, opts.MaxQueryTime = 0, 0
	names, err := h.agent.backend.Read(r.Context(), &catalog.ReadRequest{Op: catalog.ReadServices, Options: opts})
	if err != nil {
		return nil, err
	}
	u := serviceUsage{Nodes: len(nodes.Nodes), Services: len(names.Services), ConnectServiceInstances: map[string]int{
		"api-gateway": 0, "connect-native": 0, "connect-proxy": 0, "ingress-gateway": 0, "mesh-gateway": 0, "terminating-gateway": 0,
	}}
	for name := range names.Services {
		resp, err := h.agent.backend.Read(r.Context(), &catalog.ReadRequest{Op: catalog.ReadServiceInstances, Name: name, Options: opts})
		if err != nil {
			return nil, err
		}
		for _, in := range resp.Instances {
			s := in.Service
			u.ServiceInstances++
			if s.Kind != "" {
				u.ConnectServiceInstances[s.Kind]++
				continue
			}
			if s.Connect != nil && s.Connect.Native {
				u.ConnectServiceInstances["connect-native"]++
			}
			if s.Service != "consul" {
				u.BillableServiceInstances++
			}
		}
	}
	u.PartitionNamespaceServices = map[string]map[string]int{"default": {"default": u.Services}}
	u.PartitionNamespaceServiceInstances = map[string]map[string]int{"default": {"default": u.ServiceInstances}}
	return map[string]any{"Usage": map[string]serviceUsage{h.agent.cfg.Datacenter: u}}, nil
}
