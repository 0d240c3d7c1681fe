package httpapi

import (
	"fmt"
	"net/http"

	"github.com/hashicorp/go-hclog"

	"github.com/tribune-mesh/tribune/acl"
)

// agentMonitor serves GET /v1/agent/monitor?loglevel=<level>[&logjson]: the
// agent's log lines, streamed as they are written (agent:read), until the
// client goes away or the agent stops.
func (h *Handler) agentMonitor(w http.ResponseWriter, r *http.Request) (any, error) {
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	if authz.AgentRead(h.agent.cfg.NodeName) != acl.Allow {
		return nil, errPermissionDenied
	}
	q := queryOf(r)
	level := q.Get("loglevel")
	if level == "" {
		level = "INFO"
	}
	if hclog.LevelFromString(level) == hclog.NoLevel {
		return nil, badRequest("Unknown log level: %s", level)
	}
	_, asJSON := q["logjson"]
	flusher, ok := w.(http.Flusher)
	if !ok {
		return nil, fmt.Errorf("streaming not supported by this connection")
	}
	lines, stop, err := h.agent.control.Monitor(level, asJSON)
	if err != nil {
		return nil, err
	}
	defer stop()
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusOK)
	flusher.Flush()
	for {
		select {
		case <-r.Context().Done():
			return nil, nil
		case line := <-lines:
			if _, err := w.Write(line); err != nil {
				return nil, nil
			}
			flusher.Flush()
		}
	}
}
