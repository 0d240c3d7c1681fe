package httpapi

import (
	"encoding/json"
	"net/http"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/server"
)

// operator serves the operator endpoints backed by one operator call.
func (h *Handler) operator(op string, write bool) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) (any, error) {
		authz, err := h.authorize(r)
		if err != nil {
			return nil, err
		}
		allowed := authz.OperatorRead()
		if write {
			allowed = authz.OperatorWrite()
		}
		if allowed != acl.Allow {
			return nil, errPermissionDenied
		}
		req := &server.OperatorRequest{Op: op}
		if op == server.OpRemovePeer {
			q := r.URL.Query()
			req.Arg = q.Get("id")
			if req.Arg == "" {
				req.Arg = q.Get("address")
			}
			if req.Arg == "" {
				return nil, badRequest("Must specify either ?id with the server's ID or ?address with IP:port of peer to remove")
			}
		}
		if op == server.OpTransferLeader {
			req.Arg = r.URL.Query().Get("id")
		}
		res, err := h.agent.backend.Operator(r.Context(), req)
		if err != nil {
			return nil, err
		}
		if op == server.OpRemovePeer {
			return nil, nil
		}
		if op == server.OpAutopilotHealth {
			var health server.AutopilotHealth
			if err := json.Unmarshal(res, &health); err == nil && !health.Healthy {
				w.WriteHeader(http.StatusTooManyRequests)
			}
		}
		return json.RawMessage(res), nil
	}
}
