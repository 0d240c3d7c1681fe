package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-uuid"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/catalog"
)

// registerACLRoutes lists the /v1/acl endpoints.
func (h *Handler) registerACLRoutes() {
	h.handle("/v1/acl/bootstrap", methodsPut, h.aclBootstrap)
	h.handle("/v1/acl/token", methodsPut, h.aclTokenCreate)
	h.handle("/v1/acl/token/", methodsGetPutDel, h.aclToken)
	h.handle("/v1/acl/tokens", methodsGet, h.aclTokenList)
	h.handle("/v1/acl/policy", methodsPut, h.aclPolicyCreate)
	h.handle("/v1/acl/policy/", methodsGetPutDel, h.aclPolicy)
	h.handle("/v1/acl/policies", methodsGet, h.aclPolicyList)
	h.handle("/v1/acl/role", methodsPut, h.aclRoleCreate)
	h.handle("/v1/acl/role/", methodsGetPutDel, h.aclRole)
	h.handle("/v1/acl/roles", methodsGet, h.aclRoleList)
	h.handle("/v1/agent/token/", methodsPut, h.agentToken)
	h.registerACLLoginRoutes()
}

// tokenSetter is the part of Control that changes the agent's own tokens;
// the agent implements it.
type tokenSetter interface {
	SetACLToken(kind, secret string) error
}

// agentToken is PUT /v1/agent/token/<kind> with {"Token": "..."}: it sets
// one of the agent's tokens (persisted with enable_token_persistence). It
// needs acl:write, as Consul's does.
func (h *Handler) agentToken(w http.ResponseWriter, r *http.Request) (any, error) {
	if _, err := h.aclAuthz(r, true); err != nil {
		return nil, err
	}
	kind := strings.TrimPrefix(r.URL.Path, "/v1/agent/token/")
	var body struct{ Token string }
	if err := decodeBody(r, &body); err != nil {
		return nil, err
	}
	if len(body.Token) > 256 || strings.ContainsAny(body.Token, " \t\r\n") {
		return nil, badRequest("Invalid token: no whitespace, at most 256 characters")
	}
	ts, ok := h.agent.control.(tokenSetter)
	if !ok {
		return nil, errACLDisabled
	}
	if err := ts.SetACLToken(kind, body.Token); err != nil {
		if strings.Contains(err.Error(), "unknown token kind") {
			return nil, notFound("Token %q is unknown", kind)
		}
		return nil, err
	}
	return nil, nil
}

// defaultToken is the token of requests without one.
func (h *Handler) defaultToken() string {
	if d, ok := h.agent.acls.(interface{ DefaultToken() string }); ok {
		return d.DefaultToken()
	}
	return h.agent.cfg.ACL.Tokens.Default
}

// errACLNotBootstrapped answers an unknown token before ACLs were
// bootstrapped, in Consul's words.
var errACLNotBootstrapped = &httpError{code: http.StatusForbidden,
	msg: "ACL system must be bootstrapped before making any requests that require authorization: " + acl.ErrNotFound.Error()}

// notFoundError is the 403 for a token that does not exist: it says so,
// and says that ACLs are not bootstrapped yet when that is why.
func (h *Handler) notFoundError(r *http.Request) error {
	resp, err := h.agent.backend.Read(r.Context(), &catalog.ReadRequest{Op: catalog.ReadACLBootstrap,
		Options: catalog.QueryOptions{AllowStale: true}})
	if err == nil && resp.ACLBootstrapIndex == 0 {
		return errACLNotBootstrapped
	}
	return errACLNotFound
}

// hiddenSecret replaces a SecretID shown to a token without acl:write.
const hiddenSecret = "<hidden>"

var (
	errACLDisabled = &httpError{code: http.StatusUnauthorized, msg: "ACL support disabled"}
	errACLNotFound = &httpError{code: http.StatusForbidden, msg: acl.ErrNotFound.Error()}
	// errACLObjectNotFound answers a read of a missing role, policy (by
	// name), auth method or binding rule: 404, which the official client
	// turns into a nil result.
	errACLObjectNotFound = &httpError{code: http.StatusNotFound, msg: acl.ErrNotFound.Error()}
	// aclNamePattern is what Consul accepts as a policy or role name.
	aclNamePattern = regexp.MustCompile(`^[A-Za-z0-9\-_]{1,128}$`)
	// serviceIdentityPattern is what Consul accepts as a service
	// identity's name.
	serviceIdentityPattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9\-_]*[a-z0-9])?$`)
)

// aclAuthz checks that ACLs are enabled and that the request's token has
// acl:read (write false) or acl:write.
func (h *Handler) aclAuthz(r *http.Request, write bool) (acl.Authorizer, error) {
	if !h.agent.cfg.ACL.Enabled {
		return nil, errACLDisabled
	}
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	d := acl.ACLRead(authz)
	if write {
		d = acl.ACLWrite(authz)
	}
	if d != acl.Allow {
		return nil, errPermissionDenied
	}
	return authz, nil
}

// ---- bootstrap ----

func (h *Handler) aclBootstrap(w http.ResponseWriter, r *http.Request) (any, error) {
	if !h.agent.cfg.ACL.Enabled {
		return nil, errACLDisabled
	}
	accessor, err := uuid.GenerateUUID()
	if err != nil {
		return nil, err
	}
	// An operator may choose the SecretID, as with Consul.
	var body struct{ BootstrapSecret string }
	if r.ContentLength != 0 {
		if err := decodeBody(r, &body); err != nil {
			return nil, err
		}
	}
	secret := body.BootstrapSecret
	switch {
	case secret == "":
		if secret, err = uuid.GenerateUUID(); err != nil {
			return nil, err
		}
	case !isUUID(secret):
		return nil, badRequest("Invalid BootstrapSecret: it must be a UUID")
	}
	tok := &catalog.ACLToken{
		AccessorID: accessor, SecretID: secret, Description: "Bootstrap Token (Global Management)",
		Policies:   []catalog.ACLLink{{ID: catalog.ACLGlobalManagementPolicyID}},
		CreateTime: time.Now().UTC(),
	}
	// The leader sets the reset index from its own data_dir.
	if _, err := h.apply(r.Context(), catalog.CmdACLBootstrap, &catalog.ACLBootstrapRequest{ACLToken: *tok}); err != nil {
		if errors.Is(err, catalog.ErrACLBootstrapped) {
			return nil, &httpError{code: http.StatusForbidden, msg: "Permission denied: " + err.Error()}
		}
		return nil, err
	}
	return h.readOwnToken(w, r, secret)
}

// ---- tokens ----

// tokenBody is a token as a client sends it. ExpirationTTL is accepted as
// a Go duration string or as nanoseconds (what the official client sends).
type tokenBody struct {
	AccessorID        string
	SecretID          string
	Description       string
	Policies          []catalog.ACLLink
	Roles             []catalog.ACLLink
	ServiceIdentities []*catalog.ACLServiceIdentity
	NodeIdentities    []*catalog.ACLNodeIdentity
	Local             bool
	ExpirationTime    *time.Time
	ExpirationTTL     json.RawMessage
}

func parseDurationJSON(raw json.RawMessage) (time.Duration, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, nil
	}
	var n int64
	if err := json.Unmarshal(raw, &n); err == nil {
		return time.Duration(n), nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return 0, fmt.Errorf("not a duration: %s", raw)
	}
	if s == "" {
		return 0, nil
	}
	return time.ParseDuration(s)
}

// validateIdentities checks a token's or role's links and identities.
func validateIdentities(policies, roles []catalog.ACLLink, svcs []*catalog.ACLServiceIdentity, nodes []*catalog.ACLNodeIdentity) error {
	if n := len(policies) + len(roles) + len(svcs) + len(nodes); n > catalog.MaxACLLinks {
		return badRequest("too many policies, roles and identities: %d, max %d", n, catalog.MaxACLLinks)
	}
	for _, l := range append(append([]catalog.ACLLink(nil), policies...), roles...) {
		if l.ID == "" && l.Name == "" {
			return badRequest("a policy or role link needs an ID or a Name")
		}
	}
	for _, s := range svcs {
		if s == nil || s.ServiceName == "" {
			return badRequest("Service identity is missing the service name field on this token")
		}
		if len(s.ServiceName) > 256 || !serviceIdentityPattern.MatchString(s.ServiceName) {
			return badRequest("Service identity %q has an invalid name. Only lowercase alphanumeric characters, '-' and '_' are allowed", s.ServiceName)
		}
	}
	for _, n := range nodes {
		if n == nil || n.NodeName == "" {
			return badRequest("Node identity is missing the node name field on this token")
		}
		if n.Datacenter == "" {
			return badRequest("Node identity is missing the datacenter field on this token")
		}
	}
	return nil
}

func (h *Handler) aclTokenCreate(w http.ResponseWriter, r *http.Request) (any, error) {
	if _, err := h.aclAuthz(r, true); err != nil {
		return nil, err
	}
	var body tokenBody
	if err := decodeBody(r, &body); err != nil {
		return nil, err
	}
	return h.writeToken(w, r, &body, nil)
}

// writeToken validates a token body and creates it (existing nil) or
// updates existing with it, then answers with the stored token.
func (h *Handler) writeToken(w http.ResponseWriter, r *http.Request, body *tokenBody, existing *catalog.ACLToken) (any, error) {
	if err := validateIdentities(body.Policies, body.Roles, body.ServiceIdentities, body.NodeIdentities); err != nil {
		return nil, err
	}
	ttl, err := parseDurationJSON(body.ExpirationTTL)
	if err != nil {
		return nil, badRequest("Invalid ExpirationTTL: %v", err)
	}
	if len(body.Description) > catalog.MaxACLTextSize {
		return nil, badRequest("Description too long: %d bytes, max %d", len(body.Description), catalog.MaxACLTextSize)
	}
	tok := &catalog.ACLToken{
		AccessorID: body.AccessorID, SecretID: body.SecretID, Description: body.Description,
		Policies: body.Policies, Roles: body.Roles, ServiceIdentities: body.ServiceIdentities,
		NodeIdentities: body.NodeIdentities, Local: body.Local, CreateTime: time.Now().UTC(),
	}
	if existing == nil {
		switch {
		case ttl < 0:
			return nil, badRequest("Token Expiration TTL '%s' should be > 0", ttl)
		case ttl > 0 && body.ExpirationTime != nil:
			return nil, badRequest("Token Expiration TTL and Expiration Time cannot both be set")
		case ttl > 0:
			exp := tok.CreateTime.Add(ttl)
			tok.ExpirationTime, tok.ExpirationTTL = &exp, ttl
		case body.ExpirationTime != nil:
			if !body.ExpirationTime.After(tok.CreateTime) {
				return nil, badRequest("ExpirationTime cannot be in the past")
			}
			tok.ExpirationTime = body.ExpirationTime
		}
		for _, id := range []*string{&tok.AccessorID, &tok.SecretID} {
			if *id == "" {
				if *id, err = uuid.GenerateUUID(); err != nil {
					return nil, err
				}
			} else if !isUUID(*id) {
				return nil, badRequest("Invalid Token: AccessorID and SecretID must be UUIDs")
			}
		}
		resp, err := h.agent.backend.Read(r.Context(), &catalog.ReadRequest{Op: catalog.ReadACLToken, Name: tok.AccessorID})
		if err != nil {
			return nil, err
		}
		if len(resp.ACLTokens) > 0 {
			return nil, badRequest("Invalid Token: AccessorID is already in use")
		}
	} else {
		if tok.AccessorID != "" && tok.AccessorID != existing.AccessorID {
			return nil, badRequest("Token Accessor ID in URL and payload do not match")
		}
		if tok.SecretID != "" && tok.SecretID != existing.SecretID {
			return nil, badRequest("Changing a token's SecretID is not permitted")
		}
		if body.ExpirationTime != nil && (existing.ExpirationTime == nil || !body.ExpirationTime.Equal(*existing.ExpirationTime)) {
			return nil, badRequest("Cannot change expiration time")
		}
		tok.AccessorID, tok.SecretID = existing.AccessorID, existing.SecretID
		tok.ExpirationTime, tok.ExpirationTTL = existing.ExpirationTime, existing.ExpirationTTL
		tok.AuthMethod = existing.AuthMethod
	}
	if _, err := h.apply(r.Context(), catalog.CmdACLTokenSet, tok); err != nil {
		return nil, err
	}
	return h.readToken(w, r, catalog.ReadACLToken, tok.AccessorID, true)
}

// readToken reads a token and answers it, its SecretID hidden unless
// showSecret.
func (h *Handler) readToken(w http.ResponseWriter, r *http.Request, op catalog.ReadOp, id string, showSecret bool) (any, error) {
	resp, err := h.read(w, r, &catalog.ReadRequest{Op: op, Name: id})
	if err != nil {
		return nil, err
	}
	if len(resp.ACLTokens) == 0 {
		return nil, errACLNotFound
	}
	t := *resp.ACLTokens[0]
	if !showSecret {
		t.SecretID = hiddenSecret
	}
	return &t, nil
}

// /v1/acl/token/<accessor>, /v1/acl/token/self, /v1/acl/token/<id>/clone.
func (h *Handler) aclToken(w http.ResponseWriter, r *http.Request) (any, error) {
	rest := strings.TrimPrefix(r.URL.Path, "/v1/acl/token/")
	if rest == "self" && r.Method == http.MethodGet {
		return h.aclTokenSelf(w, r)
	}
	if id, ok := strings.CutSuffix(rest, "/clone"); ok {
		if r.Method != http.MethodPut {
			return nil, &httpError{code: http.StatusMethodNotAllowed, msg: fmt.Sprintf("method %s not allowed", r.Method)}
		}
		return h.aclTokenClone(w, r, id)
	}
	if rest == "" || strings.Contains(rest, "/") {
		return nil, badRequest("Missing or invalid token ID in the URL: %q", rest)
	}
	switch r.Method {
	case http.MethodGet:
		authz, err := h.aclAuthz(r, false)
		if err != nil {
			return nil, err
		}
		return h.readToken(w, r, catalog.ReadACLToken, rest, acl.ACLWrite(authz) == acl.Allow)
	case http.MethodPut:
		if _, err := h.aclAuthz(r, true); err != nil {
			return nil, err
		}
		var body tokenBody
		if err := decodeBody(r, &body); err != nil {
			return nil, err
		}
		existing, err := h.tokenByAccessor(r, rest)
		if err != nil {
			return nil, err
		}
		if existing == nil {
			return nil, badRequest("Cannot find token %q", rest)
		}
		return h.writeToken(w, r, &body, existing)
	default:
		if _, err := h.aclAuthz(r, true); err != nil {
			return nil, err
		}
		if _, err := h.apply(r.Context(), catalog.CmdACLTokenDelete, &catalog.ACLDeleteRequest{ID: rest}); err != nil {
			return nil, err
		}
		return true, nil
	}
}

func (h *Handler) tokenByAccessor(r *http.Request, id string) (*catalog.ACLToken, error) {
	resp, err := h.agent.backend.Read(r.Context(), &catalog.ReadRequest{Op: catalog.ReadACLToken, Name: id})
	if err != nil {
		return nil, err
	}
	if len(resp.ACLTokens) == 0 {
		return nil, nil
	}
	return resp.ACLTokens[0], nil
}

// aclTokenSelf answers the request's own token; it needs no acl:read.
func (h *Handler) aclTokenSelf(w http.ResponseWriter, r *http.Request) (any, error) {
	if !h.agent.cfg.ACL.Enabled {
		return nil, errACLDisabled
	}
	secret := token(r)
	if secret == "" {
		secret = h.defaultToken()
	}
	if secret == "" {
		secret = catalog.ACLAnonymousTokenSecret
	}
	return h.readToken(w, r, catalog.ReadACLTokenSecret, secret, true)
}

func (h *Handler) aclTokenClone(w http.ResponseWriter, r *http.Request, id string) (any, error) {
	if _, err := h.aclAuthz(r, true); err != nil {
		return nil, err
	}
	var body struct{ Description string }
	if r.ContentLength != 0 {
		if err := decodeBody(r, &body); err != nil {
			return nil, err
		}
	}
	src, err := h.tokenByAccessor(r, id)
	if err != nil {
		return nil, err
	}
	if src == nil {
		return nil, errACLNotFound
	}
	desc := src.Description
	if body.Description != "" {
		desc = body.Description
	}
	clone := &tokenBody{
		Description: desc, Policies: src.Policies, Roles: src.Roles,
		ServiceIdentities: src.ServiceIdentities, NodeIdentities: src.NodeIdentities, Local: src.Local,
		ExpirationTime: src.ExpirationTime,
	}
	if src.ExpirationTime != nil && !src.ExpirationTime.After(time.Now()) {
		return nil, badRequest("Cannot clone an expired token")
	}
	return h.writeToken(w, r, clone, nil)
}

func (h *Handler) aclTokenList(w http.ResponseWriter, r *http.Request) (any, error) {
	authz, err := h.aclAuthz(r, false)
	if err != nil {
		return nil, err
	}
	q := queryOf(r)
	n := 0
	for _, f := range []string{"policy", "role", "authmethod", "servicename"} {
		if q.Get(f) != "" {
			n++
		}
	}
	if n > 1 {
		return nil, badRequest("Invalid token list filter: can only filter by one of policy, role, authmethod or servicename")
	}
	resp, err := h.read(w, r, &catalog.ReadRequest{Op: catalog.ReadACLTokens, ACLPolicyID: q.Get("policy"), ACLRoleID: q.Get("role")})
	if err != nil {
		return nil, err
	}
	show := acl.ACLWrite(authz) == acl.Allow
	method, svc := q.Get("authmethod"), q.Get("servicename")
	out := make([]*catalog.ACLToken, 0, len(resp.ACLTokens))
	for _, t := range resp.ACLTokens {
		if method != "" && t.AuthMethod != method || svc != "" && !hasServiceIdentity(t, svc) {
			continue
		}
		c := *t
		if !show {
			c.SecretID = hiddenSecret
		}
		out = append(out, &c)
	}
	return filter(q.Get("filter"), out)
}

// hasServiceIdentity reports whether a token carries the service identity
// of svc.
func hasServiceIdentity(t *catalog.ACLToken, svc string) bool {
	for _, si := range t.ServiceIdentities {
		if si.ServiceName == svc {
			return true
		}
	}
	return false
}

// ---- policies ----

// policyBody is a policy as a client sends it.
type policyBody struct {
	ID          string
	Name        string
	Description string
	Rules       string
	Datacenters []string
}

// policyListEntry is a policy in a list: no rules, as Consul lists them.
type policyListEntry struct {
	ID          string
	Name        string
	Description string
	Datacenters []string `json:",omitempty"`
	Hash        []byte   `json:",omitempty"`
	CreateIndex uint64
	ModifyIndex uint64
}

func (h *Handler) aclPolicyCreate(w http.ResponseWriter, r *http.Request) (any, error) {
	if _, err := h.aclAuthz(r, true); err != nil {
		return nil, err
	}
	var body policyBody
	if err := decodeBody(r, &body); err != nil {
		return nil, err
	}
	if body.ID != "" {
		return nil, badRequest("Cannot specify an ID when creating a policy")
	}
	id, err := uuid.GenerateUUID()
	if err != nil {
		return nil, err
	}
	body.ID = id
	return h.writePolicy(w, r, &body)
}

func (h *Handler) writePolicy(w http.ResponseWriter, r *http.Request, body *policyBody) (any, error) {
	if !aclNamePattern.MatchString(body.Name) {
		return nil, badRequest("Invalid Policy: invalid Name %q: only alphanumeric characters, '-' and '_' are allowed, up to 128", body.Name)
	}
	if len(body.Description) > catalog.MaxACLTextSize {
		return nil, badRequest("Description too long: %d bytes, max %d", len(body.Description), catalog.MaxACLTextSize)
	}
	if body.ID != catalog.ACLGlobalManagementPolicyID {
		if _, err := acl.ParseRules(body.Rules); err != nil {
			return nil, badRequest("Invalid Policy: %v", err)
		}
	}
	p := &catalog.ACLPolicy{ID: body.ID, Name: body.Name, Description: body.Description, Rules: body.Rules, Datacenters: body.Datacenters}
	if _, err := h.apply(r.Context(), catalog.CmdACLPolicySet, p); err != nil {
		return nil, err
	}
	return h.readPolicy(w, r, catalog.ReadACLPolicy, p.ID)
}

func (h *Handler) readPolicy(w http.ResponseWriter, r *http.Request, op catalog.ReadOp, id string) (any, error) {
	resp, err := h.read(w, r, &catalog.ReadRequest{Op: op, Name: id})
	if err != nil {
		return nil, err
	}
	if len(resp.ACLPolicies) == 0 {
		if op == catalog.ReadACLPolicyByName {
			return nil, errACLObjectNotFound
		}
		return nil, errACLNotFound
	}
	return resp.ACLPolicies[0], nil
}

// /v1/acl/policy/<id> and /v1/acl/policy/name/<name>.
func (h *Handler) aclPolicy(w http.ResponseWriter, r *http.Request) (any, error) {
	rest := strings.TrimPrefix(r.URL.Path, "/v1/acl/policy/")
	if name, ok := strings.CutPrefix(rest, "name/"); ok {
		if r.Method != http.MethodGet {
			return nil, &httpError{code: http.StatusMethodNotAllowed, msg: fmt.Sprintf("method %s not allowed", r.Method)}
		}
		if _, err := h.aclAuthz(r, false); err != nil {
			return nil, err
		}
		return h.readPolicy(w, r, catalog.ReadACLPolicyByName, name)
	}
	if rest == "" || strings.Contains(rest, "/") {
		return nil, badRequest("Missing or invalid policy ID in the URL: %q", rest)
	}
	switch r.Method {
	case http.MethodGet:
		if _, err := h.aclAuthz(r, false); err != nil {
			return nil, err
		}
		return h.readPolicy(w, r, catalog.ReadACLPolicy, rest)
	case http.MethodPut:
		if _, err := h.aclAuthz(r, true); err != nil {
			return nil, err
		}
		var body policyBody
		if err := decodeBody(r, &body); err != nil {
			return nil, err
		}
		if body.ID != "" && body.ID != rest {
			return nil, badRequest("Policy ID in URL and payload do not match")
		}
		body.ID = rest
		resp, err := h.agent.backend.Read(r.Context(), &catalog.ReadRequest{Op: catalog.ReadACLPolicy, Name: rest})
		if err != nil {
			return nil, err
		}
		if len(resp.ACLPolicies) == 0 {
			return nil, badRequest("Cannot find policy %q", rest)
		}
		return h.writePolicy(w, r, &body)
	default:
		if _, err := h.aclAuthz(r, true); err != nil {
			return nil, err
		}
		if _, err := h.apply(r.Context(), catalog.CmdACLPolicyDelete, &catalog.ACLDeleteRequest{ID: rest}); err != nil {
			return nil, err
		}
		return true, nil
	}
}

func (h *Handler) aclPolicyList(w http.ResponseWriter, r *http.Request) (any, error) {
	if _, err := h.aclAuthz(r, false); err != nil {
		return nil, err
	}
	resp, err := h.read(w, r, &catalog.ReadRequest{Op: catalog.ReadACLPolicies})
	if err != nil {
		return nil, err
	}
	out := make([]*policyListEntry, 0, len(resp.ACLPolicies))
	for _, p := range resp.ACLPolicies {
		out = append(out, &policyListEntry{ID: p.ID, Name: p.Name, Description: p.Description, Datacenters: p.Datacenters,
			Hash: p.Hash, CreateIndex: p.CreateIndex, ModifyIndex: p.ModifyIndex})
	}
	return filter(queryOf(r).Get("filter"), out)
}

// ---- roles ----

// roleBody is a role as a client sends it.
type roleBody struct {
	ID                string
	Name              string
	Description       string
	Policies          []catalog.ACLLink
	ServiceIdentities []*catalog.ACLServiceIdentity
	NodeIdentities    []*catalog.ACLNodeIdentity
}

func (h *Handler) aclRoleCreate(w http.ResponseWriter, r *http.Request) (any, error) {
	if _, err := h.aclAuthz(r, true); err != nil {
		return nil, err
	}
	var body roleBody
	if err := decodeBody(r, &body); err != nil {
		return nil, err
	}
	if body.ID != "" {
		return nil, badRequest("Cannot specify an ID when creating a role")
	}
	id, err := uuid.GenerateUUID()
	if err != nil {
		return nil, err
	}
	body.ID = id
	return h.writeRole(w, r, &body)
}

func (h *Handler) writeRole(w http.ResponseWriter, r *http.Request, body *roleBody) (any, error) {
	if !aclNamePattern.MatchString(body.Name) {
		return nil, badRequest("Invalid Role: invalid Name %q: only alphanumeric characters, '-' and '_' are allowed, up to 128", body.Name)
	}
	if len(body.Description) > catalog.MaxACLTextSize {
		return nil, badRequest("Description too long: %d bytes, max %d", len(body.Description), catalog.MaxACLTextSize)
	}
	if err := validateIdentities(body.Policies, nil, body.ServiceIdentities, body.NodeIdentities); err != nil {
		return nil, err
	}
	role := &catalog.ACLRole{ID: body.ID, Name: body.Name, Description: body.Description, Policies: body.Policies,
		ServiceIdentities: body.ServiceIdentities, NodeIdentities: body.NodeIdentities}
	if _, err := h.apply(r.Context(), catalog.CmdACLRoleSet, role); err != nil {
		return nil, err
	}
	return h.readRole(w, r, catalog.ReadACLRole, role.ID)
}

func (h *Handler) readRole(w http.ResponseWriter, r *http.Request, op catalog.ReadOp, id string) (any, error) {
	resp, err := h.read(w, r, &catalog.ReadRequest{Op: op, Name: id})
	if err != nil {
		return nil, err
	}
	if len(resp.ACLRoles) == 0 {
		return nil, errACLObjectNotFound
	}
	return resp.ACLRoles[0], nil
}

// /v1/acl/role/<id> and /v1/acl/role/name/<name>.
func (h *Handler) aclRole(w http.ResponseWriter, r *http.Request) (any, error) {
	rest := strings.TrimPrefix(r.URL.Path, "/v1/acl/role/")
	if name, ok := strings.CutPrefix(rest, "name/"); ok {
		if r.Method != http.MethodGet {
			return nil, &httpError{code: http.StatusMethodNotAllowed, msg: fmt.Sprintf("method %s not allowed", r.Method)}
		}
		if _, err := h.aclAuthz(r, false); err != nil {
			return nil, err
		}
		return h.readRole(w, r, catalog.ReadACLRoleByName, name)
	}
	if rest == "" || strings.Contains(rest, "/") {
		return nil, badRequest("Missing or invalid role ID in the URL: %q", rest)
	}
	switch r.Method {
	case http.MethodGet:
		if _, err := h.aclAuthz(r, false); err != nil {
			return nil, err
		}
		return h.readRole(w, r, catalog.ReadACLRole, rest)
	case http.MethodPut:
		if _, err := h.aclAuthz(r, true); err != nil {
			return nil, err
		}
		var body roleBody
		if err := decodeBody(r, &body); err != nil {
			return nil, err
		}
		if body.ID != "" && body.ID != rest {
			return nil, badRequest("Role ID in URL and payload do not match")
		}
		body.ID = rest
		resp, err := h.agent.backend.Read(r.Context(), &catalog.ReadRequest{Op: catalog.ReadACLRole, Name: rest})
		if err != nil {
			return nil, err
		}
		if len(resp.ACLRoles) == 0 {
			return nil, badRequest("Cannot find role %q", rest)
		}
		return h.writeRole(w, r, &body)
	default:
		if _, err := h.aclAuthz(r, true); err != nil {
			return nil, err
		}
		if _, err := h.apply(r.Context(), catalog.CmdACLRoleDelete, &catalog.ACLDeleteRequest{ID: rest}); err != nil {
			return nil, err
		}
		return true, nil
	}
}

func (h *Handler) aclRoleList(w http.ResponseWriter, r *http.Request) (any, error) {
	if _, err := h.aclAuthz(r, false); err != nil {
		return nil, err
	}
	resp, err := h.read(w, r, &catalog.ReadRequest{Op: catalog.ReadACLRoles, ACLPolicyID: queryOf(r).Get("policy")})
	if err != nil {
		return nil, err
	}
	return filter(queryOf(r).Get("filter"), resp.ACLRoles)
}

// isUUID reports whether s is a UUID in its canonical text form.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if _, err := strconv.ParseUint(string(c), 16, 8); err != nil {
				return false
			}
		}
	}
	return true
}
