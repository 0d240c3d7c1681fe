package httpapi

import (
	"net/http"
	"strconv"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/telemetry"
)

// maxProfileSeconds bounds ?seconds= of a CPU profile or trace.
const maxProfileSeconds = 300

// debugPprof serves /debug/pprof/* (Go's profiles) with operator:read, when
// enable_debug is set or ACLs are on (then the token decides), as Consul
// does; otherwise the endpoints do not exist.
func (h *Handler) debugPprof(w http.ResponseWriter, r *http.Request) (any, error) {
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	if authz.OperatorRead() != acl.Allow {
		return nil, errPermissionDenied
	}
	cfg := h.agent.cfg
	if !cfg.EnableDebug && !cfg.ACL.Enabled {
		return nil, notFound("Debug endpoints are disabled: set enable_debug to serve %s", r.URL.Path)
	}
	if v := queryOf(r).Get("seconds"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > maxProfileSeconds {
			return nil, badRequest("Invalid seconds %q: want 0 to %d", v, maxProfileSeconds)
		}
	}
	telemetry.Pprof(w, r)
	return nil, nil
}
