package httpapi

import (
	"net/http"

	"github.com/tribune-mesh/tribune/server"
)

// aclReplication serves GET /v1/acl/replication: the state of this
// datacenter's replication of ACLs from the primary, as its leader knows
// it. In the primary (or without federation) it is not enabled.
func (h *Handler) aclReplication(w http.ResponseWriter, r *http.Request) (any, error) {
	if !h.agent.cfg.ACL.Enabled {
		return nil, errACLDisabled
	}
	if h.agent.fed == nil {
		return server.ReplicationStatus{}, nil
	}
	st, err := h.agent.fed.ReplicationStatus(r.Context())
	if err != nil {
		return nil, err
	}
	return st, nil
}
