package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"github.com/hashicorp/go-uuid"
	"io"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/catalog"
)

// Session limits, as Consul documents them.
const (
	// defaultLockDelay is the lock delay of a session that names none.
	defaultLockDelay = 15 * time.Second
	// maxLockDelay is the longest lock delay a session may ask for.
	maxLockDelay = 60 * time.Second
	// lockDelaySecondsBelow: a numeric LockDelay under this many
	// nanoseconds is taken as seconds, as Consul does, because clients
	// send "LockDelay": 15 meaning 15s.
	lockDelaySecondsBelow = 1000
	// minSessionTTL and maxSessionTTL bound a session's TTL.
	minSessionTTL = 10 * time.Second
	maxSessionTTL = 86400 * time.Second
)

// sessionCreateBody is the body of PUT /v1/session/create. The check lists
// are pointers so that an absent list (the default serfHealth applies) is
// told apart from an empty one (CreateNoChecks sends "NodeChecks": []).
type sessionCreateBody struct {
	Name          string
	Node          string
	LockDelay     json.RawMessage
	Behavior      string
	TTL           string
	Checks        *[]string
	NodeChecks    *[]string
	ServiceChecks *[]catalog.ServiceCheck
}

// sessionJSON is a session as the HTTP API returns it (Consul's
// SessionEntry): LockDelay in nanoseconds, TTL as given. The deprecated
// Checks list is an input only: node checks are answered in NodeChecks, as
// Consul 1.16 answers (its own client's tests compare Checks with nil).
type sessionJSON struct {
	*catalog.Session
}

func toSessionJSON(in []*catalog.Session) []sessionJSON {
	out := make([]sessionJSON, 0, len(in))
	for _, s := range in {
		out = append(out, sessionJSON{Session: s})
	}
	return out
}

// uuidPattern matches the session IDs the agent hands out.
var uuidPattern = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// checkWriteDC refuses a request for another datacenter when the agent has
// no way there (no federation); otherwise the servers forward it.
func (h *Handler) checkWriteDC(r *http.Request) error {
	if h.remoteDC(queryOf(r).Get("dc")) && h.agent.fed == nil {
		return errNoPathToDC
	}
	return nil
}

// sessionCreate serves PUT /v1/session/create. The agent draws the session
// ID, so that every server's FSM applies the same one.
func (h *Handler) sessionCreate(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := h.checkWriteDC(r); err != nil {
		return nil, err
	}
	sess, err := h.decodeSessionCreate(r)
	if err != nil {
		return nil, err
	}
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	if authz.SessionWrite(sess.Node) != acl.Allow {
		return nil, errPermissionDenied
	}
	id, err := uuid.GenerateUUID()
	if err != nil {
		return nil, err
	}
	sess.ID = id
	if _, err := h.apply(r.Context(), catalog.CmdSession, &catalog.SessionRequest{Op: catalog.SessionCreate, Session: *sess}); err != nil {
		return nil, err
	}
	return struct{ ID string }{id}, nil
}

// decodeSessionCreate reads and validates a create body, filling Consul's
// defaults. A missing body means every default.
func (h *Handler) decodeSessionCreate(r *http.Request) (*catalog.Session, error) {
	var in sessionCreateBody
	body, err := io.ReadAll(io.LimitReader(r.Body, maxJSONBody+1))
	if err != nil {
		return nil, badRequest("Request decode failed: %v", err)
	}
	if len(body) > maxJSONBody {
		return nil, tooLarge("Request body too large, max size: %d bytes", maxJSONBody)
	}
	if trimmed := bytes.TrimSpace(body); len(trimmed) > 0 && !bytes.Equal(trimmed, []byte("null")) {
		if err := json.Unmarshal(trimmed, &in); err != nil {
			return nil, badRequest("Request decode failed: %v", err)
		}
	}
	sess := &catalog.Session{Name: in.Name, Node: in.Node, Behavior: in.Behavior, TTL: in.TTL}
	if sess.Node == "" {
		sess.Node = h.agent.cfg.NodeName
	}
	switch sess.Behavior {
	case "":
		sess.Behavior = catalog.SessionBehaviorRelease
	case catalog.SessionBehaviorRelease, catalog.SessionBehaviorDelete:
	default:
		return nil, badRequest("Invalid Behavior setting '%s', must be %q or %q", sess.Behavior,
			catalog.SessionBehaviorRelease, catalog.SessionBehaviorDelete)
	}
	if sess.LockDelay, err = parseLockDelay(in.LockDelay); err != nil {
		return nil, err
	}
	if sess.TTL != "" {
		ttl, err := time.ParseDuration(sess.TTL)
		if err != nil {
			return nil, badRequest("Session TTL '%s' invalid: %v", sess.TTL, err)
		}
		if ttl != 0 && (ttl < minSessionTTL || ttl > maxSessionTTL) {
			return nil, badRequest("Invalid Session TTL '%s', must be between [%v=%v]", sess.TTL, minSessionTTL, maxSessionTTL)
		}
		if ttl == 0 {
			sess.TTL = ""
		}
	}
	// Checks (deprecated) and NodeChecks both name node checks; giving
	// either replaces the default serfHealth.
	if in.Checks == nil && in.NodeChecks == nil {
		sess.NodeChecks = []string{catalog.SerfCheckID}
	} else {
		sess.NodeChecks = []string{}
		seen := map[string]bool{}
		for _, list := range []*[]string{in.NodeChecks, in.Checks} {
			if list == nil {
				continue
			}
			for _, id := range *list {
				if id == "" {
					return nil, badRequest("Invalid check: empty check ID")
				}
				if !seen[id] {
					seen[id] = true
					sess.NodeChecks = append(sess.NodeChecks, id)
				}
			}
		}
	}
	if in.ServiceChecks != nil {
		for _, sc := range *in.ServiceChecks {
			if sc.ID == "" {
				return nil, badRequest("Invalid service check: missing ID")
			}
			sess.ServiceChecks = append(sess.ServiceChecks, sc)
		}
	}
	return sess, nil
}

// parseLockDelay reads a LockDelay given as a duration string ("15s") or
// a number of nanoseconds; numbers under lockDelaySecondsBelow are seconds.
func parseLockDelay(raw json.RawMessage) (time.Duration, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return defaultLockDelay, nil
	}
	var d time.Duration
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, badRequest("Invalid LockDelay: %v", err)
		}
		if s == "" {
			return defaultLockDelay, nil
		}
		v, err := time.ParseDuration(s)
		if err != nil {
			return 0, badRequest("Invalid LockDelay %q: %v", s, err)
		}
		d = v
	} else {
		var n json.Number
		if err := json.Unmarshal(raw, &n); err != nil {
			return 0, badRequest("Invalid LockDelay %s: want a duration string or a number of nanoseconds", raw)
		}
		v, err := n.Int64()
		if err != nil {
			f, ferr := n.Float64()
			if ferr != nil {
				return 0, badRequest("Invalid LockDelay %s: %v", raw, err)
			}
			v = int64(f)
		}
		d = time.Duration(v)
		if v >= 0 && v < lockDelaySecondsBelow {
			d = time.Duration(v) * time.Second
		}
	}
	if d < 0 || d > maxLockDelay {
		return 0, badRequest("Invalid LockDelay '%v', must be between 0s and %v", d, maxLockDelay)
	}
	return d, nil
}

// sessionID takes the session ID from the end of a path, refusing an empty
// one.
func sessionID(r *http.Request, prefix string) (string, error) {
	id := strings.TrimPrefix(r.URL.Path, prefix)
	if id == "" {
		return "", badRequest("Missing session")
	}
	return id, nil
}

// lookupSession reads one session for an access decision (nil when none).
func (h *Handler) lookupSession(r *http.Request, id string) (*catalog.Session, error) {
	resp, err := h.agent.backend.Read(r.Context(), &catalog.ReadRequest{Op: catalog.ReadSession, Name: id, Options: catalog.QueryOptions{Token: token(r), Datacenter: queryOf(r).Get("dc")}})
	if err != nil {
		return nil, err
	}
	if len(resp.Sessions) == 0 {
		return nil, nil
	}
	return resp.Sessions[0], nil
}

// sessionDestroy serves PUT /v1/session/destroy/<id>. Destroying a session
// that does not exist succeeds, as Consul documents.
func (h *Handler) sessionDestroy(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := h.checkWriteDC(r); err != nil {
		return nil, err
	}
	id, err := sessionID(r, "/v1/session/destroy/")
	if err != nil {
		return nil, err
	}
	if !uuidPattern.MatchString(id) {
		return nil, badRequest("Session id '%s' invalid: not a UUID", id)
	}
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	sess, err := h.lookupSession(r, id)
	if err != nil {
		return nil, err
	}
	if sess == nil {
		return true, nil
	}
	if authz.SessionWrite(sess.Node) != acl.Allow {
		return nil, errPermissionDenied
	}
	req := &catalog.SessionRequest{Op: catalog.SessionDestroy, Session: catalog.Session{ID: id}}
	if _, err := h.apply(r.Context(), catalog.CmdSession, req); err != nil {
		return nil, err
	}
	return true, nil
}

// sessionRenew serves PUT /v1/session/renew/<id>: the leader restarts the
// session's TTL timer. An unknown session is a 404.
func (h *Handler) sessionRenew(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := h.checkWriteDC(r); err != nil {
		return nil, err
	}
	id, err := sessionID(r, "/v1/session/renew/")
	if err != nil {
		return nil, err
	}
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	// Authorize against the session's node before touching its timer.
	sess, err := h.lookupSession(r, id)
	if err != nil {
		return nil, err
	}
	if sess == nil {
		return nil, notFound("Session id '%s' not found", id)
	}
	if authz.SessionWrite(sess.Node) != acl.Allow {
		return nil, errPermissionDenied
	}
	renewed, err := h.agent.backend.SessionRenew(r.Context(), id)
	if err != nil {
		return nil, fmt.Errorf("renew session %s: %w", id, err)
	}
	if renewed == nil {
		return nil, notFound("Session id '%s' not found", id)
	}
	return toSessionJSON([]*catalog.Session{renewed}), nil
}

// sessionInfo serves GET /v1/session/info/<id>: a list of zero or one
// session. It supports blocking queries.
func (h *Handler) sessionInfo(w http.ResponseWriter, r *http.Request) (any, error) {
	id, err := sessionID(r, "/v1/session/info/")
	if err != nil {
		return nil, err
	}
	return h.sessionRead(w, r, catalog.ReadSession, id)
}

// sessionNode serves GET /v1/session/node/<node>.
func (h *Handler) sessionNode(w http.ResponseWriter, r *http.Request) (any, error) {
	node := strings.TrimPrefix(r.URL.Path, "/v1/session/node/")
	if node == "" {
		return nil, badRequest("Missing node name")
	}
	return h.sessionRead(w, r, catalog.ReadSessions, node)
}

// sessionList serves GET /v1/session/list.
func (h *Handler) sessionList(w http.ResponseWriter, r *http.Request) (any, error) {
	return h.sessionRead(w, r, catalog.ReadSessions, "")
}

// sessionRead runs a session read and keeps the sessions the token may see.
func (h *Handler) sessionRead(w http.ResponseWriter, r *http.Request, op catalog.ReadOp, name string) (any, error) {
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	resp, err := h.read(w, r, &catalog.ReadRequest{Op: op, Name: name})
	if err != nil {
		return nil, err
	}
	visible := aclKeep(w, r, resp.Sessions, func(s *catalog.Session) bool { return authz.SessionRead(s.Node) == acl.Allow })
	return toSessionJSON(visible), nil
}
