package httpapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/agent/config"
	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/gossip"
)

// decodeMap reads a JSON object body.
func decodeMap(r *http.Request) (map[string]any, error) {
	var m map[string]any
	if err := decodeBody(r, &m); err != nil {
		return nil, err
	}
	if m == nil {
		return nil, badRequest("Request decode failed: body must be a JSON object")
	}
	return m, nil
}

func (h *Handler) agentServiceRegister(w http.ResponseWriter, r *http.Request) (any, error) {
	m, err := decodeMap(r)
	if err != nil {
		return nil, err
	}
	def, err := config.DecodeServiceDefinition(m)
	if err != nil {
		return nil, badRequest("Invalid service definition: %v", err)
	}
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	if authz.ServiceWrite(def.Name) != acl.Allow {
		return nil, errPermissionDenied
	}
	rv, replace := queryOf(r)["replace-existing-checks"]
	if replace && len(rv) > 0 && rv[0] != "" {
		on, err := strconv.ParseBool(rv[0])
		if err != nil {
			return nil, badRequest("Invalid value for replace-existing-checks: %q", rv[0])
		}
		replace = on
	}
	// Anti-entropy syncs the service with the token it was registered
	// with (kept in the data dir, never shown), as Consul does; a request
	// without one leaves it to the agent's token.
	def.Token = token(r)
	if err := h.agent.local.RegisterService(m, def, replace); err != nil {
		return nil, err
	}
	h.waitSync(r)
	return nil, nil
}

// syncWait bounds how long a registration waits for the catalog to show it.
const syncWait = 2 * time.Second

// waitSync waits, at most syncWait, until the local changes made so far
// have reached the catalog, so that a client reading the catalog right after
// a registration sees it (the official client's tests do). When the servers
// do not answer in time the change stays queued for anti-entropy and the
// request still succeeds, as the agent owns the registration either way.
func (h *Handler) waitSync(r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), syncWait)
	defer cancel()
	_ = h.agent.local.WaitSync(ctx)
}

func (h *Handler) agentServiceDeregister(w http.ResponseWriter, r *http.Request) (any, error) {
	id := strings.TrimPrefix(r.URL.Path, "/v1/agent/service/deregister/")
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	s := h.agent.local.Service(id)
	if s == nil {
		return nil, notFound("Unknown service ID %q. Ensure that the service ID is passed, not the service name.", id)
	}
	if authz.ServiceWrite(s.Service) != acl.Allow {
		return nil, errPermissionDenied
	}
	h.agent.local.RemoveServiceWithToken(id, token(r))
	h.waitSync(r)
	return nil, nil
}

func (h *Handler) agentServices(w http.ResponseWriter, r *http.Request) (any, error) {
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	svcs := h.agent.local.Services()
	list, err := filter(queryOf(r).Get("filter"), slices.Collect(maps.Values(svcs)))
	if err != nil {
		return nil, err
	}
	list = aclKeep(w, r, list, func(s *catalog.Service) bool { return authz.ServiceRead(s.Service) == acl.Allow })
	out := make(map[string]*catalog.Service, len(list))
	for _, s := range list {
		out[s.ID] = s
	}
	return out, nil
}

// Hash-based blocking on the agent's own state, which has no Raft index.
const (
	// defaultHashWait and maxHashWait bound a ?hash= wait as Consul's
	// blocking queries are bounded.
	defaultHashWait = 5 * time.Minute
	maxHashWait     = 10 * time.Minute
)

// contentHash is the X-Consul-ContentHash of a value: a hash of its JSON.
func contentHash(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("hash response: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8]), nil
}

// agentServiceJSON is /v1/agent/service/<id>'s answer: the service with the
// hash a watch blocks on (the client's agent_service watch reads it from the
// body, not the header).
type agentServiceJSON struct {
	*catalog.Service
	ContentHash string
}

// agentService serves GET /v1/agent/service/<id>, blocking with ?hash= (and
// ?wait=) until the service's definition hashes differently, as Consul does
// for agent-local state. X-Consul-ContentHash carries the hash.
func (h *Handler) agentService(w http.ResponseWriter, r *http.Request) (any, error) {
	id := strings.TrimPrefix(r.URL.Path, "/v1/agent/service/")
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	q := queryOf(r)
	wait := defaultHashWait
	if v := q.Get("wait"); v != "" {
		if wait, err = parseWait(v); err != nil {
			return nil, badRequest("Invalid wait time: %q", v)
		}
		wait = min(wait, maxHashWait)
	}
	want := q.Get("hash")
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		changed := h.agent.local.Changed()
		s := h.agent.local.Service(id)
		if s == nil {
			return nil, notFound("unknown service ID: %s", id)
		}
		if authz.ServiceRead(s.Service) != acl.Allow {
			return nil, errPermissionDenied
		}
		sum, err := contentHash(s)
		if err != nil {
			return nil, err
		}
		if want == "" || sum != want {
			w.Header().Set("X-Consul-ContentHash", sum)
			return agentServiceJSON{Service: s, ContentHash: sum}, nil
		}
		select {
		case <-changed:
		case <-timer.C:
			w.Header().Set("X-Consul-ContentHash", sum)
			return agentServiceJSON{Service: s, ContentHash: sum}, nil
		case <-r.Context().Done():
			return nil, fmt.Errorf("wait for service %s: %w", id, r.Context().Err())
		}
	}
}

func (h *Handler) agentChecks(w http.ResponseWriter, r *http.Request) (any, error) {
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	checks := h.agent.local.Checks()
	list, err := filter(queryOf(r).Get("filter"), slices.Collect(maps.Values(checks)))
	if err != nil {
		return nil, err
	}
	list = aclKeep(w, r, list, func(c *catalog.HealthCheck) bool {
		if c.ServiceName != "" {
			return authz.ServiceRead(c.ServiceName) == acl.Allow
		}
		return authz.NodeRead(c.Node) == acl.Allow
	})
	out := make(map[string]*catalog.HealthCheck, len(list))
	for _, c := range list {
		out[c.CheckID] = c
	}
	return out, nil
}

func (h *Handler) agentCheckRegister(w http.ResponseWriter, r *http.Request) (any, error) {
	m, err := decodeMap(r)
	if err != nil {
		return nil, err
	}
	def, err := config.DecodeCheckDefinition(m)
	if err != nil {
		return nil, badRequest("Invalid check definition: %v", err)
	}
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	if err := h.checkWriteAllowed(authz, def.ServiceID); err != nil {
		return nil, err
	}
	def.Token = token(r) // synced with it, as a service's (above)
	if err := h.agent.local.RegisterCheck(m, def); err != nil {
		return nil, err
	}
	h.waitSync(r)
	return nil, nil
}

func (h *Handler) agentCheckDeregister(w http.ResponseWriter, r *http.Request) (any, error) {
	id := strings.TrimPrefix(r.URL.Path, "/v1/agent/check/deregister/")
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	svcID := ""
	if c := h.agent.local.Checks()[id]; c != nil {
		svcID = c.ServiceID
	}
	if err := h.checkWriteAllowed(authz, svcID); err != nil {
		return nil, err
	}
	if !h.agent.local.RemoveCheckWithToken(id, token(r)) {
		return nil, notFound("Unknown check ID %q. Ensure that the check ID is passed, not the check name.", id)
	}
	h.waitSync(r)
	return nil, nil
}

// checkWriteAllowed is the permission Consul asks to write a local check:
// service:write on its service when it has one, node:write on this node
// otherwise.
func (h *Handler) checkWriteAllowed(authz acl.Authorizer, serviceID string) error {
	if serviceID != "" {
		if s := h.agent.local.Service(serviceID); s != nil {
			if authz.ServiceWrite(s.Service) != acl.Allow {
				return errPermissionDenied
			}
			return nil
		}
	}
	if authz.NodeWrite(h.agent.cfg.NodeName) != acl.Allow {
		return errPermissionDenied
	}
	return nil
}

// agentCheckTTL serves /v1/agent/check/pass|warn|fail/<id>?note=.
func (h *Handler) agentCheckTTL(status string) handlerFunc {
	prefix := "/v1/agent/check/" + map[string]string{
		catalog.HealthPassing: "pass", catalog.HealthWarning: "warn", catalog.HealthCritical: "fail",
	}[status] + "/"
	return func(w http.ResponseWriter, r *http.Request) (any, error) {
		id := strings.TrimPrefix(r.URL.Path, prefix)
		authz, err := h.authorize(r)
		if err != nil {
			return nil, err
		}
		if authz.NodeWrite(h.agent.cfg.NodeName) != acl.Allow {
			return nil, errPermissionDenied
		}
		return nil, h.agent.local.UpdateCheck(id, status, queryOf(r).Get("note"))
	}
}

// agentCheckUpdate serves PUT /v1/agent/check/update/<id> {Status, Output}.
func (h *Handler) agentCheckUpdate(w http.ResponseWriter, r *http.Request) (any, error) {
	id := strings.TrimPrefix(r.URL.Path, "/v1/agent/check/update/")
	var body struct {
		Status string
		Output string
	}
	if err := decodeBody(r, &body); err != nil {
		return nil, err
	}
	switch body.Status {
	case catalog.HealthPassing, catalog.HealthWarning, catalog.HealthCritical:
	default:
		return nil, badRequest("Invalid check status: '%s'", body.Status)
	}
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	if authz.NodeWrite(h.agent.cfg.NodeName) != acl.Allow {
		return nil, errPermissionDenied
	}
	return nil, h.agent.local.UpdateCheck(id, body.Status, body.Output)
}

func (h *Handler) agentMembers(w http.ResponseWriter, r *http.Request) (any, error) {
	var out []Member
	switch {
	case !wanParam(r):
		out = h.agent.members()
	case h.agent.wan != nil:
		for _, m := range h.agent.wan.Members() {
			out = append(out, MemberOf(m))
		}
	}
	if out == nil {
		out = []Member{}
	}
	return filter(queryOf(r).Get("filter"), out)
}

func (h *Handler) agentLeave(w http.ResponseWriter, r *http.Request) (any, error) {
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	if authz.AgentWrite(h.agent.cfg.NodeName) != acl.Allow {
		return nil, errPermissionDenied
	}
	h.agent.requestLeave()
	return nil, nil
}

func (h *Handler) agentJoin(w http.ResponseWriter, r *http.Request) (any, error) {
	addr := strings.TrimPrefix(r.URL.Path, "/v1/agent/join/")
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	if authz.AgentWrite(h.agent.cfg.NodeName) != acl.Allow {
		return nil, errPermissionDenied
	}
	pool := h.agent.gossip
	if wanParam(r) {
		if h.agent.wan == nil {
			return nil, badRequest("Only servers join the WAN pool: this agent is not a server or its WAN port is disabled")
		}
		pool = h.agent.wan
	}
	if pool == nil {
		return nil, badRequest("gossip is disabled on this agent")
	}
	if _, err := pool.Join([]string{addr}); err != nil {
		return nil, err
	}
	return nil, nil
}

// agentForceLeave serves PUT /v1/agent/force-leave/<node>[?prune][&wan]: a
// failed member is marked left (and with ?prune dropped from the member
// list). As Consul answers, a name that is alive (this agent's own, say) or
// unknown is not an error: there is nothing to remove and the answer is 200.
// With ?wan the member is one of the WAN pool ("<node>.<dc>"); a client
// agent has none, so there is nothing to remove.
func (h *Handler) agentForceLeave(w http.ResponseWriter, r *http.Request) (any, error) {
	node := strings.TrimPrefix(r.URL.Path, "/v1/agent/force-leave/")
	if node == "" {
		return nil, badRequest("Missing node name")
	}
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	if authz.OperatorWrite() != acl.Allow {
		return nil, errPermissionDenied
	}
	q := queryOf(r)
	pool := h.agent.gossip
	if wanParam(r) {
		pool = h.agent.wan
	}
	if pool == nil {
		return nil, nil
	}
	if _, prune := q["prune"]; prune {
		pool.Prune(node)
	} else {
		pool.RemoveFailed(node)
	}
	return nil, nil
}

// agentReload serves PUT /v1/agent/reload.
func (h *Handler) agentReload(w http.ResponseWriter, r *http.Request) (any, error) {
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	if authz.AgentWrite(h.agent.cfg.NodeName) != acl.Allow {
		return nil, errPermissionDenied
	}
	if err := h.agent.Reload(); err != nil {
		return nil, err
	}
	return nil, nil
}

// wanParam reports whether a request asks for the WAN pool (?wan, ?wan=1,
// ?wan=true).
func wanParam(r *http.Request) bool {
	v, ok := queryOf(r)["wan"]
	return ok && (len(v) == 0 || v[0] == "" || v[0] == "1" || v[0] == "true")
}

// MemberOf describes a gossip member as /v1/agent/members shows it.
func MemberOf(m gossip.Member) Member {
	return Member{Name: m.Name, Addr: m.Addr.String(), Port: m.Port, Tags: m.Tags, Status: int(m.Status),
		ProtocolMin: m.PMin, ProtocolMax: m.PMax, ProtocolCur: m.PCur, DelegateMin: m.DMin, DelegateMax: m.DMax, DelegateCur: m.DCur}
}
