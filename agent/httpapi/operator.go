package httpapi

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/catalog"
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
			q := queryOf(r)
			req.Arg = q.Get("id")
			if req.Arg == "" {
				req.Arg = q.Get("address")
			}
			if req.Arg == "" {
				return nil, badRequest("Must specify either ?id with the server's ID or ?address with IP:port of peer to remove")
			}
		}
		if op == server.OpTransferLeader {
			req.Arg = queryOf(r).Get("id")
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

// autopilotConfiguration serves /v1/operator/autopilot/configuration: GET
// the effective configuration (operator:read), PUT a new one through Raft
// (operator:write), with ?cas=<ModifyIndex> only if it is unchanged since;
// a PUT answers true or false as Consul does.
func (h *Handler) autopilotConfiguration(w http.ResponseWriter, r *http.Request) (any, error) {
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	if r.Method == http.MethodGet {
		if authz.OperatorRead() != acl.Allow {
			return nil, errPermissionDenied
		}
		if err := h.checkDC(r); err != nil {
			return nil, err
		}
		res, err := h.agent.backend.Operator(r.Context(), &server.OperatorRequest{Op: server.OpAutopilotGetConfig})
		if err != nil {
			return nil, err
		}
		return json.RawMessage(res), nil
	}
	if authz.OperatorWrite() != acl.Allow {
		return nil, errPermissionDenied
	}
	var req catalog.AutopilotConfigRequest
	if err := decodeBody(r, &req.Config); err != nil {
		return nil, err
	}
	if v := queryOf(r).Get("cas"); v != "" {
		idx, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return nil, badRequest("Error parsing cas value: %v", err)
		}
		req.CAS, req.Config.ModifyIndex = true, idx
	}
	// A duration left out (null) is zero, shown as "0s" as Consul does;
	// the servers then keep their own stabilization time.
	for _, d := range []*string{&req.Config.LastContactThreshold, &req.Config.ServerStabilizationTime} {
		if *d == "" {
			*d = "0s"
		}
	}
	if err := req.Config.Validate(); err != nil {
		return nil, badRequest("Invalid autopilot configuration: %v", err)
	}
	res, err := h.apply(r.Context(), catalog.CmdAutopilotConfig, &req)
	if err != nil {
		return nil, err
	}
	kv, _ := res.(catalog.KVResult)
	if kv.Err != nil {
		return nil, kv.Err
	}
	return kv.OK, nil
}
