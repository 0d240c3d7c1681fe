package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/hashicorp/go-uuid"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/server"
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
		if body.Type == "" {
			body.Type = old.Type
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
	return filter(queryOf(r).Get("filter"), out)
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
	q := queryOf(r)
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

// aclLogin trades a bearer token for an ACL token made from the auth
// method's binding rules. It needs no ACL token of its own: the leader
// verifies the bearer token against its own state (catalog.CmdACLLogin).
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
	case len(body.BearerToken) > catalog.MaxLoginBearerSize:
		return nil, badRequest("Invalid login request: BearerToken longer than %d bytes", catalog.MaxLoginBearerSize)
	case len(body.Meta) > catalog.MaxLoginMeta:
		return nil, badRequest("Invalid login request: more than %d Meta pairs", catalog.MaxLoginMeta)
	}
	for k, v := range body.Meta {
		if len(k) > catalog.MaxLoginMetaSize || len(v) > catalog.MaxLoginMetaSize {
			return nil, badRequest("Invalid login request: Meta keys and values are at most %d bytes", catalog.MaxLoginMetaSize)
		}
	}
	req := &catalog.ACLLoginRequest{Op: catalog.ACLLoginOp, AuthMethod: body.AuthMethod, BearerToken: body.BearerToken, Meta: body.Meta}
	var err error
	if req.AccessorID, err = uuid.GenerateUUID(); err != nil {
		return nil, err
	}
	if req.SecretID, err = uuid.GenerateUUID(); err != nil {
		return nil, err
	}
	if err := h.applyLogin(r, req); err != nil {
		return nil, err
	}
	return h.readOwnToken(w, r, req.SecretID)
}

// readOwnToken answers the token whose secret is secret, read with that
// token itself (as /v1/acl/token/self is): the caller of a login or a
// bootstrap may hold no token that could read it.
func (h *Handler) readOwnToken(w http.ResponseWriter, r *http.Request, secret string) (any, error) {
	// The caller may have had no token: it reads the new one with the new one.
	own := r.Clone(server.WithToken(r.Context(), secret))
	own.Header.Set("X-Consul-Token", secret)
	return h.readToken(w, own, catalog.ReadACLTokenSecret, secret, true)
}

// applyLogin sends a login or logout to the leader and maps its refusals:
// 403 for a bearer token or token that does not qualify, 400 for a method
// whose logins Tribune cannot verify.
func (h *Handler) applyLogin(r *http.Request, req *catalog.ACLLoginRequest) error {
	_, err := h.apply(r.Context(), catalog.CmdACLLogin, req)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, acl.ErrLoginRefused):
		return &httpError{code: http.StatusForbidden, msg: fromPrefix(err.Error(), acl.ErrLoginRefused.Error())}
	case errors.Is(err, acl.ErrLoginUnsupported):
		return badRequest("%s", fromPrefix(err.Error(), acl.ErrLoginUnsupported.Error()))
	}
	return err
}

// fromPrefix returns s from the first occurrence of prefix on (all of s
// when prefix is absent): the message without the wrapping of the layers
// it crossed.
func fromPrefix(s, prefix string) string {
	if i := strings.Index(s, prefix); i > 0 {
		return s[i:]
	}
	return s
}

// aclLogout deletes the request's token, which a login must have created.
func (h *Handler) aclLogout(w http.ResponseWriter, r *http.Request) (any, error) {
	if !h.agent.cfg.ACL.Enabled {
		return nil, errACLDisabled
	}
	secret := token(r)
	if secret == "" || secret == catalog.ACLAnonymousTokenSecret {
		return nil, errACLNotFound
	}
	if err := h.applyLogin(r, &catalog.ACLLoginRequest{Op: catalog.ACLLogoutOp, SecretID: secret}); err != nil {
		return nil, err
	}
	return nil, nil
}
