package acl

import (
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
