package httpapi

import (
	"net/http"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/catalog"
)

func (h *Handler) registerVirtualIPRoutes() {
	h.handle("/v1/internal/service-virtual-ip", methodsPut, h.assignServiceVirtualIP)
}

// peeredServiceName is Consul's PeeredServiceName.
type peeredServiceName struct {
	ServiceName struct{ Name string }
	Peer        string `json:",omitempty"`
}

// assignServiceVirtualIP serves PUT /v1/internal/service-virtual-ip: the
// manual virtual IPs of a service that has a virtual IP, taken from the
// services that held them.
func (h *Handler) assignServiceVirtualIP(w http.ResponseWriter, r *http.Request) (any, error) {
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	var req catalog.VirtualIPRequest
	if err := decodeBody(r, &req); err != nil {
		return nil, err
	}
	if req.Service == "" {
		return nil, badRequest("Must specify a service name")
	}
	if err := req.Validate(); err != nil {
		return nil, badRequest("%v", err)
	}
	if authz.ServiceWrite(req.Service) != acl.Allow {
		return nil, errPermissionDenied
	}
	res, err := h.apply(r.Context(), catalog.CmdServiceVirtualIP, &req)
	if err != nil {
		return nil, err
	}
	vr, _ := res.(catalog.VirtualIPResult)
	if vr.Err != nil {
		return nil, vr.Err
	}
	out := struct {
		Found          bool
		UnassignedFrom []peeredServiceName
	}{Found: vr.Found, UnassignedFrom: []peeredServiceName{}}
	for _, s := range vr.UnassignedFrom {
		var p peeredServiceName
		p.ServiceName.Name = s
		out.UnassignedFrom = append(out.UnassignedFrom, p)
	}
	return out, nil
}
