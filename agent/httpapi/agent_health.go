package httpapi

import (
	"net/http"
	"sort"
	"strings"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/catalog"
)

// agentServiceHealth is one local service instance with its checks and
// their aggregated status, as /v1/agent/health/service/... answers.
type agentServiceHealth struct {
	AggregatedStatus string
	Service          *catalog.Service
	Checks           []*catalog.HealthCheck
}

// statusMaintenance is the aggregated status of an instance in maintenance
// mode (its service's or the node's).
const statusMaintenance = "maintenance"

// healthCode is the HTTP status the agent health endpoints answer with for
// an aggregated status, as Consul does, so that a load balancer can probe
// the agent without parsing: 200 passing, 429 warning, 503 otherwise.
func healthCode(status string) int {
	switch status {
	case catalog.HealthPassing:
		return http.StatusOK
	case catalog.HealthWarning:
		return http.StatusTooManyRequests
	default:
		return http.StatusServiceUnavailable
	}
}

// worseStatus returns the worse of two aggregated statuses.
func worseStatus(a, b string) string {
	rank := map[string]int{catalog.HealthPassing: 0, catalog.HealthWarning: 1, catalog.HealthCritical: 2, statusMaintenance: 3}
	if rank[b] > rank[a] {
		return b
	}
	return a
}

// localServiceHealth aggregates the local checks of service instance s: its
// own checks and the node's maintenance check.
func localServiceHealth(s *catalog.Service, checks map[string]*catalog.HealthCheck) *agentServiceHealth {
	out := &agentServiceHealth{AggregatedStatus: catalog.HealthPassing, Service: s, Checks: []*catalog.HealthCheck{}}
	ids := make([]string, 0, len(checks))
	for id := range checks {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		c := checks[id]
		switch {
		case id == nodeMaintCheckID || id == serviceMaintPrefix+s.ID:
			out.AggregatedStatus = statusMaintenance
		case c.ServiceID == s.ID:
		default:
			continue
		}
		out.Checks = append(out.Checks, c)
		out.AggregatedStatus = worseStatus(out.AggregatedStatus, c.Status)
	}
	return out
}

// wantsText reports whether an agent health request asked for the bare
// status word rather than JSON (?format=text, or no JSON Accept header and
// no ?format=json).
func wantsText(r *http.Request) bool {
	switch queryOf(r).Get("format") {
	case "text":
		return true
	case "json":
		return false
	}
	return !strings.Contains(r.Header.Get("Accept"), "application/json")
}

// agentHealthServiceByID serves GET /v1/agent/health/service/id/<id>.
func (h *Handler) agentHealthServiceByID(w http.ResponseWriter, r *http.Request) (any, error) {
	id := strings.TrimPrefix(r.URL.Path, "/v1/agent/health/service/id/")
	if id == "" {
		return nil, badRequest("Missing serviceID")
	}
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	s := h.agent.local.Service(id)
	if s == nil {
		return nil, notFound("ServiceId %s not found", id)
	}
	if authz.ServiceRead(s.Service) != acl.Allow {
		return nil, errPermissionDenied
	}
	res := localServiceHealth(s, h.agent.local.Checks())
	return writeHealth(w, r, res.AggregatedStatus, res)
}

// agentHealthServiceByName serves GET /v1/agent/health/service/name/<name>:
// every local instance of the service, with the worst status of them all.
func (h *Handler) agentHealthServiceByName(w http.ResponseWriter, r *http.Request) (any, error) {
	name := strings.TrimPrefix(r.URL.Path, "/v1/agent/health/service/name/")
	if name == "" {
		return nil, badRequest("Missing service Name")
	}
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	if authz.ServiceRead(name) != acl.Allow {
		return nil, errPermissionDenied
	}
	checks := h.agent.local.Checks()
	var list []*agentServiceHealth
	status := catalog.HealthPassing
	for _, s := range h.agent.local.Services() {
		if s.Service != name {
			continue
		}
		res := localServiceHealth(s, checks)
		status = worseStatus(status, res.AggregatedStatus)
		list = append(list, res)
	}
	if len(list) == 0 {
		return nil, notFound("ServiceName %s Not Found", name)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Service.ID < list[j].Service.ID })
	return writeHealth(w, r, status, list)
}

// writeHealth answers with the status code of status and either the status
// word or body as JSON.
func writeHealth(w http.ResponseWriter, r *http.Request, status string, body any) (any, error) {
	if wantsText(r) {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(healthCode(status))
		_, _ = w.Write([]byte(status))
		return nil, nil
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(healthCode(status))
	writeJSON(w, r, body)
	return nil, nil
}
