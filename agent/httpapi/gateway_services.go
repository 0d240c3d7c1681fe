package httpapi

import (
	"net/http"
	"strings"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/catalog"
)

// catalogGatewayServices is /v1/catalog/gateway-services/<gateway>: the
// services an ingress or terminating gateway routes to, from its config
// entry. It needs service:read on the gateway; the services listed are
// those the token may read. A blocking query wakes on a change of the
// entry (or, with a wildcard, of the services registered).
func (h *Handler) catalogGatewayServices(w http.ResponseWriter, r *http.Request) (any, error) {
	gateway := strings.TrimPrefix(r.URL.Path, "/v1/catalog/gateway-services/")
	if gateway == "" {
		return nil, badRequest("Missing gateway name")
	}
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	if authz.ServiceRead(gateway) != acl.Allow {
		return nil, errPermissionDenied
	}
	resp, err := h.read(w, r, &catalog.ReadRequest{Op: catalog.ReadGatewayServices, Name: gateway})
	if err != nil {
		return nil, err
	}
	out, err := filter(queryOf(r).Get("filter"), resp.GatewayServices)
	if err != nil {
		return nil, err
	}
	return aclKeep(w, r, out, func(g *catalog.GatewayService) bool { return authz.ServiceRead(g.Service.Name) == acl.Allow }), nil
}

// healthIngress is /v1/health/ingress/<service>: the instances of the
// ingress gateways that route to the service, with their checks.
func (h *Handler) healthIngress(w http.ResponseWriter, r *http.Request) (any, error) {
	return h.healthInstances(w, r, catalog.ReadHealthIngress, "/v1/health/ingress/")
}
