package acl

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/tribune-mesh/tribune/catalog"
)

// Auth method types Tribune stores. Only jwt logins are served: a
// kubernetes method is kept (its config checked for shape) so that tools
// that create one work, but a login through it is refused, because
// verifying it needs the cluster's TokenReview API.
const (
	AuthMethodJWT        = "jwt"
	AuthMethodKubernetes = "kubernetes"
)

// ErrLoginUnsupported is returned for a login through a method type
// Tribune stores but cannot verify.
var ErrLoginUnsupported = errors.New("login through this auth method type is not supported")

// ValidateAuthMethod checks an auth method a user sent: a known type and a
// config that type accepts.
func ValidateAuthMethod(m *catalog.ACLAuthMethod) error {
	switch m.TokenLocality {
	case "", "local", "global":
	default:
		return fmt.Errorf("auth method: TokenLocality %q: want local or global", m.TokenLocality)
	}
	if m.MaxTokenTTL < 0 || m.MaxTokenTTL > 24*time.Hour {
		return errors.New("auth method: MaxTokenTTL must be between 0 and 24h")
	}
	switch m.Type {
	case AuthMethodJWT:
		cfg, err := ParseJWTConfig(m.Config)
		if err != nil {
			return err
		}
		_, err = NewJWTValidator(cfg)
		return err
	case AuthMethodKubernetes:
		for _, k := range []string{"Host", "CACert", "ServiceAccountJWT"} {
			if s, _ := m.Config[k].(string); s == "" {
				return fmt.Errorf("auth method config: %s must be set", k)
			}
		}
		return nil
	}
	return fmt.Errorf("auth method: Type %q: want %s or %s", m.Type, AuthMethodJWT, AuthMethodKubernetes)
}

// Login verifies bearer for method at now and returns what rules (the
// method's binding rules) grant it in datacenter. It returns an error
// wrapping ErrLoginRefused when the bearer token is invalid or no rule
// grants anything, and ErrLoginUnsupported for a method type it cannot
// verify.
func Login(method *catalog.ACLAuthMethod, rules []*catalog.ACLBindingRule, bearer string, now time.Time, datacenter string) (*Bindings, error) {
	if method.Type != AuthMethodJWT {
		return nil, fmt.Errorf("%w: %s", ErrLoginUnsupported, method.Type)
	}
	cfg, err := ParseJWTConfig(method.Config)
	if err != nil {
		return nil, err
	}
	v, err := NewJWTValidator(cfg)
	if err != nil {
		return nil, err
	}
	id, err := v.Validate(bearer, now)
	if err != nil {
		return nil, err
	}
	b, err := EvaluateBindingRules(rules, id, datacenter)
	if err != nil {
		return nil, err
	}
	if b.Empty() {
		return nil, fmt.Errorf("%w: no binding rule of auth method %q matches", ErrLoginRefused, method.Name)
	}
	return b, nil
}

// LoginTokenRequest is what BuildLoginToken makes a token from.
type LoginTokenRequest struct {
	Method   *catalog.ACLAuthMethod
	Bindings *Bindings
	// RoleID and PolicyID find a role or policy by name: "" when there is
	// none.
	RoleID, PolicyID func(name string) (string, error)
	Meta             map[string]string
	Now              time.Time
	// AccessorID and SecretID are the new token's.
	AccessorID, SecretID string
}

// BuildLoginToken returns the token a login's bindings grant. Roles and
// policies a rule names but that do not exist are skipped, as Consul does;
// a login left with nothing is refused (ErrLoginRefused). The token is
// global when the method says so, local otherwise, and expires after the
// method's MaxTokenTTL.
func BuildLoginToken(req *LoginTokenRequest) (*catalog.ACLToken, error) {
	m, b := req.Method, req.Bindings
	tok := &catalog.ACLToken{AccessorID: req.AccessorID, SecretID: req.SecretID, AuthMethod: m.Name,
		ServiceIdentities: b.ServiceIdentities, NodeIdentities: b.NodeIdentities,
		Local: m.TokenLocality != "global", CreateTime: req.Now.UTC(), Description: "token created via login"}
	if len(req.Meta) > 0 {
		enc, err := json.Marshal(req.Meta) // sorted keys
		if err != nil {
			return nil, fmt.Errorf("login meta: %w", err)
		}
		tok.Description += ": " + string(enc)
	}
	for _, l := range []struct {
		names []string
		find  func(string) (string, error)
		dst   *[]catalog.ACLLink
	}{{b.Roles, req.RoleID, &tok.Roles}, {b.Policies, req.PolicyID, &tok.Policies}} {
		for _, name := range l.names {
			id, err := l.find(name)
			if err != nil {
				return nil, err
			}
			if id != "" {
				*l.dst = append(*l.dst, catalog.ACLLink{ID: id})
			}
		}
	}
	n := len(tok.Roles) + len(tok.Policies) + len(tok.ServiceIdentities) + len(tok.NodeIdentities)
	switch {
	case n == 0:
		return nil, fmt.Errorf("%w: the binding rules name no existing role or policy", ErrLoginRefused)
	case n > catalog.MaxACLLinks:
		return nil, fmt.Errorf("%w: the binding rules grant %d links, max %d", ErrLoginRefused, n, catalog.MaxACLLinks)
	}
	if m.MaxTokenTTL > 0 {
		exp := tok.CreateTime.Add(m.MaxTokenTTL)
		tok.ExpirationTime, tok.ExpirationTTL = &exp, m.MaxTokenTTL
	}
	return tok, nil
}
