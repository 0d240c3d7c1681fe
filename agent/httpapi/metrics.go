package httpapi

import (
	"net/http"

	"github.com/tribune-mesh/tribune/acl"
)

// agentMetrics serves GET /v1/agent/metrics: Consul's JSON, or the
// Prometheus text with ?format=prometheus. It needs agent:read on this
// node, as in Consul.
func (h *Handler) agentMetrics(w http.ResponseWriter, r *http.Request) (any, error) {
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	if authz.AgentRead(h.agent.cfg.NodeName) != acl.Allow {
		return nil, errPermissionDenied
	}
	if h.agent.metrics == nil {
		return nil, notFound("Metrics are not collected by this agent")
	}
	h.agent.metrics.ServeHTTP(w, r)
	return nil, nil
}
