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
	st := server.ReplicationStatus{}
	if h.agent.fed != nil {
		var err error
		if st, err = h.agent.fed.ReplicationStatus(r.Context()); err != nil {
			return nil, err
		}
	}
	if st.SourceDatacenter == "" {
		// As Consul: the primary, which is this datacenter when it
		// does not replicate.
		st.SourceDatacenter = h.agent.cfg.PrimaryDatacenter
		if st.SourceDatacenter == "" {
			st.SourceDatacenter = h.agent.cfg.Datacenter
		}
	}
	return st, nil
}
