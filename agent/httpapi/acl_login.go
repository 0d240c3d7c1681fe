package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/go-uuid"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/catalog"
)

// registerACLLoginRoutes lists the auth method, binding rule, login and
// replication status endpoints.
func (h *Handler) registerACLLoginRoutes() {
	h.handle("/v1/acl/auth-method", methodsPut, h.aclAuthMethodCreate)
	h.handle("/v1/acl/auth-method/", methodsGetPutDel, h.aclAuthMethod)
	h.handle("/v1/acl/auth-methods", methodsGet, h.aclAuthMethodList)
	h.handle("/v1/acl/binding-rule", methodsPut, h.aclBindingRuleCreate)
	h.handle("/v1/acl/binding-rule/", methodsGetPutDel, h.aclBindingRule)
	h.handle("/v1/acl/binding-rules", methodsGet, h.aclBindingRuleList)
	h.handle("/v1/acl/login", []string{http.MethodPost}, h.aclLogin)
	h.handle("/v1/acl/logout", []string{http.MethodPost}, h.aclLogout)
	h.handle("/v1/acl/replication", methodsGet, h.aclReplication)
}

// ---- auth methods ----

// authMethodWire is an auth method as Consul's API shows it: MaxTokenTTL
// is a duration string. Incoming, it may also be nanoseconds.
type authMethodWire struct {
	Name          string
	Type          string
	DisplayName   string          `json:",omitempty"`
	Description   string          `json:",omitempty"`
	MaxTokenTTL   json.RawMessage `json:",omitempty"`
	TokenLocality string          `json:",omitempty"`
	Config        map[string]any  `json:",omitempty"`
	CreateIndex   uint64
	ModifyIndex   uint64
}

func authMethodOut(m *catalog.ACLAuthMethod, withConfig bool) *authMethodWire {
	out := &authMethodWire{Name: m.Name, Type: m.Type, DisplayName: m.DisplayName, Description: m.Description,
		TokenLocality: m.TokenLocality, CreateIndex: m.CreateIndex, ModifyIndex: m.ModifyIndex}
	if m.MaxTokenTTL != 0 {
		out.MaxTokenTTL, _ = json.Marshal(m.MaxTokenTTL.String())
	}
	if withConfig {
		out.Config = m.Config
	}
	return out
}

func (h *Handler) aclAuthMethodCreate(w http.ResponseWriter, r *http.Request) (any, error) {
	return h.writeAuthMethod(w, r, "")
}

// writeAuthMethod creates (name "") or updates the method a request body
// describes.
func (h *Handler) writeAuthMethod(w http.ResponseWriter, r *http.Request, name string) (any, error) {
	if _, err := h.aclAuthz(r, true); err != nil {
		return nil, err
	}
	var body authMethodWire
	if err := decodeBody(r, &body); err != nil {
		return nil, err
	}
	if name != "" {
		if body.Name != "" && body.Name != name {
			return nil, badRequest("Auth Method name in URL and payload do not match")
		}
		body.Name = name
		old, err := h.authMethod(r, name)
		if err != nil {
			return nil, err
		}
		if old == nil {
			return nil, notFound("Cannot find auth method %q", name)
		}
	}
	if !aclNamePattern.MatchString(body.Name) {
		return nil, badRequest("Invalid Auth Method: invalid Name %q: only alphanumeric characters, '-' and '_' are allowed, up to 128", body.Name)
	}
	for _, s := range []string{body.DisplayName, body.Description} {
		if len(s) > catalog.MaxACLTextSize {
			return nil, badRequest("Invalid Auth Method: a field is %d bytes, max %d", len(s), catalog.MaxACLTextSize)
		}
	}
	ttl, err := parseDurationJSON(body.MaxTokenTTL)
	if err != nil {
		return nil, badRequest("Invalid Auth Method: MaxTokenTTL: %v", err)
	}
	m := &catalog.ACLAuthMethod{Name: body.Name, Type: body.Type, DisplayName: body.DisplayName, Description: body.Description,
		MaxTokenTTL: ttl, TokenLocality: body.TokenLocality, Config: body.Config}
	if err := acl.ValidateAuthMethod(m); err != nil {
		return nil, badRequest("Invalid Auth Method: %v", err)
	}
	if _, err := h.apply(r.Context(), catalog.CmdACLAuthMethod, &catalog.ACLAuthMethodRequest{Op: catalog.ACLOpSet, Method: m}); err != nil {
		return nil, err
	}
	resp, err := h.read(w, r, &catalog.ReadRequest{Op: catalog.ReadACLAuthMethod, Name: m.Name})
	if err != nil {
		return nil, err
	}
	if len(resp.ACLAuthMethods) == 0 {
		return nil, errACLNotFound
	}
	return authMethodOut(resp.ACLAuthMethods[0], true), nil
}

// authMethod reads a method by name, nil when there is none.
func (h *Handler) authMethod(r *http.Request, name string) (*catalog.ACLAuthMethod, error) {
	resp, err := h.agent.backend.Read(r.Context(), &catalog.ReadRequest{Op: catalog.ReadACLAuthMethod, Name: name})
	if err != nil {
		return nil, err
	}
	if len(resp.ACLAuthMethods) == 0 {
		return nil, nil
	}
	return resp.ACLAuthMethods[0], nil
}

// /v1/acl/auth-method/<name>.
func (h *Handler) aclAuthMethod(w http.ResponseWriter, r *http.Request) (any, error) {
	name := strings.TrimPrefix(r.URL.Path, "/v1/acl/auth-method/")
	if name == "" || strings.Contains(name, "/") {
		return nil, badRequest("Missing or invalid auth method name in the URL: %q", name)
	}
	switch r.Method {
	case http.MethodGet:
		if _, err := h.aclAuthz(r, false); err != nil {
			return nil, err
		}
		resp, err := h.read(w, r, &catalog.ReadRequest{Op: catalog.ReadACLAuthMethod, Name: name})
		if err != nil {
			return nil, err
		}
		if len(resp.ACLAuthMethods) == 0 {
			return nil, errACLObjectNotFound
		}
		return authMethodOut(resp.ACLAuthMethods[0], true), nil
	case http.MethodPut:
		return h.writeAuthMethod(w, r, name)
	default:
		if _, err := h.aclAuthz(r, true); err != nil {
			return nil, err
		}
		if _, err := h.apply(r.Context(), catalog.CmdACLAuthMethod, &catalog.ACLAuthMethodRequest{Op: catalog.ACLOpDelete, Name: name}); err != nil {
			return nil, err
		}
		return true, nil
	}
}

func (h *Handler) aclAuthMethodList(w http.ResponseWriter, r *http.Request) (any, error) {
	if _, err := h.aclAuthz(r, false); err != nil {
		return nil, err
	}
	resp, err := h.read(w, r, &catalog.ReadRequest{Op: catalog.ReadACLAuthMethods})
	if err != nil {
		return nil, err
	}
	out := make([]*authMethodWire, 0, len(resp.ACLAuthMethods))
	for _, m := range resp.ACLAuthMethods {
		out = append(out, authMethodOut(m, false))
	}
	return filter(r.URL.Query().Get("filter"), out)
}

// ---- binding rules ----

// bindingRuleBody is a binding rule as a client sends it.
type bindingRuleBody struct {
	ID          string
	Description string
	AuthMethod  string
	Selector    string
	BindType    string
	BindName    string
}

func (h *Handler) aclBindingRuleCreate(w http.ResponseWriter, r *http.Request) (any, error) {
	return h.writeBindingRule(w, r, "")
}

// writeBindingRule creates (id "") or updates the rule a request body
// describes.
func (h *Handler) writeBindingRule(w http.ResponseWriter, r *http.Request, id string) (any, error) {
	if _, err := h.aclAuthz(r, true); err != nil {
		return nil, err
	}
	var body bindingRuleBody
	if err := decodeBody(r, &body); err != nil {
		return nil, err
	}
	if id == "" {
		if body.ID != "" {
			return nil, badRequest("Cannot specify an ID when creating a binding rule")
		}
		var err error
		if id, err = uuid.GenerateUUID(); err != nil {
			return nil, err
		}
	} else {
		if body.ID != "" && body.ID != id {
			return nil, badRequest("Binding Rule ID in URL and payload do not match")
		}
		resp, err := h.agent.backend.Read(r.Context(), &catalog.ReadRequest{Op: catalog.ReadACLBindingRule, Name: id})
		if err != nil {
			return nil, err
		}
		if len(resp.ACLBindingRules) == 0 {
			return nil, notFound("Cannot find binding rule %q", id)
		}
		if body.AuthMethod == "" {
			body.AuthMethod = resp.ACLBindingRules[0].AuthMethod
		}
	}
	rule := &catalog.ACLBindingRule{ID: id, Description: body.Description, AuthMethod: body.AuthMethod,
		Selector: body.Selector, BindType: body.BindType, BindName: body.BindName}
	if len(rule.Description) > catalog.MaxACLTextSize || len(rule.BindName) > catalog.MaxACLTextSize {
		return nil, badRequest("Invalid Binding Rule: a field is longer than %d bytes", catalog.MaxACLTextSize)
	}
	if err := acl.ValidateBindingRule(rule); err != nil {
		return nil, badRequest("Invalid Binding Rule: %v", err)
	}
	if _, err := h.apply(r.Context(), catalog.CmdACLBindingRule, &catalog.ACLBindingRuleRequest{Op: catalog.ACLOpSet, Rule: rule}); err != nil {
		return nil, err
	}
	return h.readBindingRule(w, r, id)
}

func (h *Handler) readBindingRule(w http.ResponseWriter, r *http.Request, id string) (any, error) {
	resp, err := h.read(w, r, &catalog.ReadRequest{Op: catalog.ReadACLBindingRule, Name: id})
	if err != nil {
		return nil, err
	}
	if len(resp.ACLBindingRules) == 0 {
		return nil, errACLObjectNotFound
	}
	return resp.ACLBindingRules[0], nil
}

// /v1/acl/binding-rule/<id>.
func (h *Handler) aclBindingRule(w http.ResponseWriter, r *http.Request) (any, error) {
	id := strings.TrimPrefix(r.URL.Path, "/v1/acl/binding-rule/")
	if id == "" || strings.Contains(id, "/") {
		return nil, badRequest("Missing or invalid binding rule ID in the URL: %q", id)
	}
	switch r.Method {
	case http.MethodGet:
		if _, err := h.aclAuthz(r, false); err != nil {
			return nil, err
		}
		return h.readBindingRule(w, r, id)
	case http.MethodPut:
		return h.writeBindingRule(w, r, id)
	default:
		if _, err := h.aclAuthz(r, true); err != nil {
			return nil, err
		}
		if _, err := h.apply(r.Context(), catalog.CmdACLBindingRule, &catalog.ACLBindingRuleRequest{Op: catalog.ACLOpDelete, ID: id}); err != nil {
			return nil, err
		}
		return true, nil
	}
}

func (h *Handler) aclBindingRuleList(w http.ResponseWriter, r *http.Request) (any, error) {
	if _, err := h.aclAuthz(r, false); err != nil {
		return nil, err
	}
	q := r.URL.Query()
	resp, err := h.read(w, r, &catalog.ReadRequest{Op: catalog.ReadACLBindingRules, Name: q.Get("authmethod")})
	if err != nil {
		return nil, err
	}
	return filter(q.Get("filter"), resp.ACLBindingRules)
}

// ---- login and logout ----

// loginBody is what POST /v1/acl/login takes.
type loginBody struct {
	AuthMethod  string
	BearerToken string
	Meta        map[string]string
}

// Bounds of a login request's meta.
const (
	maxLoginMeta    = 64
	maxLoginMetaLen = 512
)

// aclLogin trades a bearer token for an ACL token made from the auth
// method's binding rules. It needs no ACL token of its own.
func (h *Handler) aclLogin(w http.ResponseWriter, r *http.Request) (any, error) {
	if !h.agent.cfg.ACL.Enabled {
		return nil, errACLDisabled
	}
	var body loginBody
	if err := decodeBody(r, &body); err != nil {
		return nil, err
	}
	switch {
	case body.AuthMethod == "":
		return nil, badRequest("Invalid login request: AuthMethod must be set")
	case body.BearerToken == "":
		return nil, badRequest("Invalid login request: BearerToken must be set")
	case len(body.BearerToken) > acl.MaxJWTBytes:
		return nil, badRequest("Invalid login request: BearerToken longer than %d bytes", acl.MaxJWTBytes)
	case len(body.Meta) > maxLoginMeta:
		return nil, badRequest("Invalid login request: more than %d Meta pairs", maxLoginMeta)
	}
	for k, v := range body.Meta {
		if len(k) > maxLoginMetaLen || len(v) > maxLoginMetaLen {
			return nil, badRequest("Invalid login request: Meta keys and values are at most %d bytes", maxLoginMetaLen)
		}
	}
	resp, err := h.agent.backend.Read(r.Context(), &catalog.ReadRequest{Op: catalog.ReadACLLogin, Name: body.AuthMethod})
	if err != nil {
		return nil, err
	}
	if len(resp.ACLAuthMethods) == 0 {
		return nil, errACLNotFound
	}
	method := resp.ACLAuthMethods[0]
	now := time.Now()
	b, err := acl.Login(method, resp.ACLBindingRules, body.BearerToken, now, h.agent.cfg.Datacenter)
	switch {
	case errors.Is(err, acl.ErrLoginRefused):
		return nil, &httpError{code: http.StatusForbidden, msg: err.Error()}
	case errors.Is(err, acl.ErrLoginUnsupported):
		return nil, badRequest("%v", err)
	case err != nil:
		return nil, fmt.Errorf("login: %w", err)
	}
	tok, err := h.loginToken(r, method, b, body.Meta, now)
	if err != nil {
		return nil, err
	}
	if _, err := h.apply(r.Context(), catalog.CmdACLTokenSet, tok); err != nil {
		return nil, err
	}
	return h.readToken(w, r, catalog.ReadACLToken, tok.AccessorID, true)
}

// loginToken builds the token a login's bindings grant. Roles and policies
// a rule names but that do not exist are skipped, as Consul does; a login
// left with nothing is refused.
func (h *Handler) loginToken(r *http.Request, m *catalog.ACLAuthMethod, b *acl.Bindings, meta map[string]string, now time.Time) (*catalog.ACLToken, error) {
	tok := &catalog.ACLToken{AuthMethod: m.Name, ServiceIdentities: b.ServiceIdentities, NodeIdentities: b.NodeIdentities,
		Local: m.TokenLocality != "global", CreateTime: now.UTC(), Description: "token created via login"}
	if len(meta) > 0 {
		enc, _ := json.Marshal(meta) // encoding/json sorts map keys
		tok.Description += ": " + string(enc)
	}
	for _, name := range b.Roles {
		resp, err := h.agent.backend.Read(r.Context(), &catalog.ReadRequest{Op: catalog.ReadACLRoleByName, Name: name})
		if err != nil {
			return nil, err
		}
		if len(resp.ACLRoles) > 0 {
			tok.Roles = append(tok.Roles, catalog.ACLLink{ID: resp.ACLRoles[0].ID})
		}
	}
	for _, name := range b.Policies {
		resp, err := h.agent.backend.Read(r.Context(), &catalog.ReadRequest{Op: catalog.ReadACLPolicyByName, Name: name})
		if err != nil {
			return nil, err
		}
		if len(resp.ACLPolicies) > 0 {
			tok.Policies = append(tok.Policies, catalog.ACLLink{ID: resp.ACLPolicies[0].ID})
		}
	}
	if len(tok.Roles)+len(tok.Policies)+len(tok.ServiceIdentities)+len(tok.NodeIdentities) == 0 {
		return nil, &httpError{code: http.StatusForbidden, msg: acl.ErrLoginRefused.Error() + ": the binding rules name no existing role or policy"}
	}
	if n := len(tok.Roles) + len(tok.Policies) + len(tok.ServiceIdentities) + len(tok.NodeIdentities); n > catalog.MaxACLLinks {
		return nil, &httpError{code: http.StatusForbidden, msg: fmt.Sprintf("%s: the binding rules grant %d links, max %d", acl.ErrLoginRefused, n, catalog.MaxACLLinks)}
	}
	if m.MaxTokenTTL > 0 {
		exp := tok.CreateTime.Add(m.MaxTokenTTL)
		tok.ExpirationTime, tok.ExpirationTTL = &exp, m.MaxTokenTTL
	}
	var err error
	if tok.AccessorID, err = uuid.GenerateUUID(); err != nil {
		return nil, err
	}
	if tok.SecretID, err = uuid.GenerateUUID(); err != nil {
		return nil, err
	}
	return tok, nil
}

// aclLogout deletes the request's token, which a login must have created.
func (h *Handler) aclLogout(w http.ResponseWriter, r *http.Request) (any, error) {
	if !h.agent.cfg.ACL.Enabled {
		return nil, errACLDisabled
	}
	secret := token(r)
	if secret == "" || secret == catalog.ACLAnonymousTokenSecret {
		return nil, &httpError{code: http.StatusForbidden, msg: acl.ErrNotFound.Error()}
	}
	resp, err := h.agent.backend.Read(r.Context(), &catalog.ReadRequest{Op: catalog.ReadACLTokenSecret, Name: secret})
	if err != nil {
		return nil, err
	}
	if len(resp.ACLTokens) == 0 {
		return nil, errACLNotFound
	}
	tok := resp.ACLTokens[0]
	if tok.AuthMethod == "" {
		return nil, &httpError{code: http.StatusForbidden, msg: "Permission denied: only tokens created by a login can log out"}
	}
	if _, err := h.apply(r.Context(), catalog.CmdACLTokenDelete, &catalog.ACLDeleteRequest{ID: tok.AccessorID}); err != nil {
		return nil, err
	}
	return nil, nil
}

// ---- replication ----

// aclReplicationStatus is GET /v1/acl/replication's answer, in Consul's
// shape. Tribune replicates ACLs only into secondary datacenters; in a
// primary (and until replication lands) it reports replication disabled.
type aclReplicationStatus struct {
	Enabled              bool
	Running              bool
	SourceDatacenter     string
	ReplicationType      string
	ReplicatedIndex      uint64
	ReplicatedRoleIndex  uint64
	ReplicatedTokenIndex uint64
	LastSuccess          time.Time
	LastError            time.Time
	LastErrorMessage     string
}

func (h *Handler) aclReplication(w http.ResponseWriter, r *http.Request) (any, error) {
	if !h.agent.cfg.ACL.Enabled {
		return nil, errACLDisabled
	}
	src := h.agent.cfg.PrimaryDatacenter
	if src == "" {
		src = h.agent.cfg.Datacenter
	}
	return &aclReplicationStatus{SourceDatacenter: src}, nil
}
