package httpapi

import (
	"net/http"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/xds"
)

// agentXDSProxies serves GET /v1/agent/xds/proxies (a Tribune addition, no
// Consul endpoint): the ADS streams of the proxies connected to this agent,
// each with its start time and, per type URL, the last version sent, the
// last version the proxy ACKed and its last NACK (version, Envoy's
// error_detail message, time). It needs agent:read on this node, as the
// agent's other debug views do.
func (h *Handler) agentXDSProxies(_ http.ResponseWriter, r *http.Request) (any, error) {
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	if authz.AgentRead(h.agent.cfg.NodeName) != acl.Allow {
		return nil, errPermissionDenied
	}
	if h.agent.xds == nil {
		return []xds.StreamStatus{}, nil
	}
	srv := h.agent.xds()
	if srv == nil {
		return []xds.StreamStatus{}, nil
	}
	return srv.Streams(), nil
}
