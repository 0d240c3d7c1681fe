package httpapi

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/agent/local"
	"github.com/tribune-mesh/tribune/catalog"
)

// Check IDs of maintenance mode, as Consul names them.
const (
	nodeMaintCheckID    = "_node_maintenance"
	serviceMaintPrefix  = "_service_maintenance:"
	defaultMaintReason  = "Maintenance mode is enabled for this node, but no reason was provided. This is a default message."
	defaultSvcMaintNote = "Maintenance mode is enabled for this service, but no reason was provided. This is a default message."
)

func parseEnable(r *http.Request) (bool, error) {
	v := queryOf(r).Get("enable")
	if v == "" {
		return false, badRequest("Missing value for enable")
	}
	on, err := strconv.ParseBool(v)
	if err != nil {
		return false, badRequest("Invalid value for enable: %q", v)
	}
	return on, nil
}

// agentNodeMaint serves PUT /v1/agent/maintenance?enable=&reason=.
func (h *Handler) agentNodeMaint(w http.ResponseWriter, r *http.Request) (any, error) {
	on, err := parseEnable(r)
	if err != nil {
		return nil, err
	}
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	if authz.NodeWrite(h.agent.cfg.NodeName) != acl.Allow {
		return nil, errPermissionDenied
	}
	if !on {
		h.agent.local.RemoveCheckWithToken(nodeMaintCheckID, token(r))
		return nil, nil
	}
	reason := queryOf(r).Get("reason")
	if reason == "" {
		reason = defaultMaintReason
	}
	return nil, h.agent.local.AddCheck((&local.Check{Health: &catalog.HealthCheck{
		CheckID: nodeMaintCheckID, Name: "Node Maintenance Mode", Notes: reason, Status: catalog.HealthCritical,
		Type: "maintenance", ServiceTags: []string{},
	}}).WithToken(token(r))) // synced with the request's token, as Consul does
}

// agentServiceMaint serves PUT /v1/agent/service/maintenance/<id>?enable=&reason=.
func (h *Handler) agentServiceMaint(w http.ResponseWriter, r *http.Request) (any, error) {
	id := strings.TrimPrefix(r.URL.Path, "/v1/agent/service/maintenance/")
	if id == "" {
		return nil, badRequest("Missing service ID")
	}
	on, err := parseEnable(r)
	if err != nil {
		return nil, err
	}
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	s := h.agent.local.Service(id)
	if s == nil {
		return nil, notFound("Unknown service ID %q", id)
	}
	if authz.ServiceWrite(s.Service) != acl.Allow {
		return nil, errPermissionDenied
	}
	if !on {
		h.agent.local.RemoveCheckWithToken(serviceMaintPrefix+id, token(r))
		return nil, nil
	}
	reason := queryOf(r).Get("reason")
	if reason == "" {
		reason = defaultSvcMaintNote
	}
	return nil, h.agent.local.AddCheck((&local.Check{Health: &catalog.HealthCheck{
		CheckID: serviceMaintPrefix + id, Name: "Service Maintenance Mode", Notes: reason, ServiceID: id,
		Status: catalog.HealthCritical, Type: "maintenance", ServiceTags: []string{},
	}}).WithToken(token(r)))
}
