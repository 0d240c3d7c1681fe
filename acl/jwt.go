package acl

import (
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// JWTConfig is the Config of an auth method of type "jwt", with Consul's
// key names. Tribune validates tokens against keys given in the config
// (JWTValidationPubKeys); it fetches nothing from the network.
type JWTConfig struct {
	JWTValidationPubKeys []string
	BoundIssuer          string
	BoundAudiences       []string
	// ClaimMappings maps a claim (a name, or a JSON pointer such as
	// /kubernetes.io/namespace) to a selectable value.<name>.
	ClaimMappings map[string]string
	// ListClaimMappings maps a list claim to a selectable list.<name>.
	ListClaimMappings map[string]string
	JWTSupportedAlgs  []string
	ExpirationLeeway  time.Duration
	NotBeforeLeeway   time.Duration
	ClockSkewLeeway   time.Duration
}

// Limits on what a login may send and what a method may hold.
const (
	// MaxJWTBytes bounds a bearer token presented to /v1/acl/login.
	MaxJWTBytes = 16 << 10
	// MaxClaimMappings bounds the mappings of one method.
	MaxClaimMappings = 64
	// MaxValidationKeys bounds JWTValidationPubKeys.
	MaxValidationKeys = 32
)

// ParseJWTConfig reads an auth method's Config map (as decoded from JSON)
// and checks it.
func ParseJWTConfig(raw map[string]any) (*JWTConfig, error) {
	for _, unsupported := range []string{"JWKSURL", "OIDCDiscoveryURL"} {
		if v, ok := raw[unsupported]; ok && v != "" {
			return nil, fmt.Errorf("auth method config: %s is not supported; give the keys in JWTValidationPubKeys", unsupported)
		}
	}
	buf, err := json.Marshal(raw)
	if err != nil {
		return nil, fmt.Errorf("auth method config: %w", err)
	}
	// Durations arrive as strings ("30s") or nanoseconds.
	var wire struct {
		JWTConfig
		ExpirationLeeway, NotBeforeLeeway, ClockSkewLeeway any
	}
	dec := json.NewDecoder(strings.NewReader(string(buf)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&wire); err != nil {
		return nil, fmt.Errorf("auth method config: %w", err)
	}
	cfg := wire.JWTConfig
	for _, d := range []struct {
		name string
		in   any
		out  *time.Duration
	}{{"ExpirationLeeway", wire.ExpirationLeeway, &cfg.ExpirationLeeway},
		{"NotBeforeLeeway", wire.NotBeforeLeeway, &cfg.NotBeforeLeeway},
		{"ClockSkewLeeway", wire.ClockSkewLeeway, &cfg.ClockSkewLeeway}} {
		v, err := durationOf(d.in)
		if err != nil || v < 0 || v > time.Hour {
			return nil, fmt.Errorf("auth method config: %s must be a duration between 0 and 1h", d.name)
		}
		*d.out = v
	}
	if len(cfg.JWTValidationPubKeys) == 0 {
		return nil, errors.New("auth method config: JWTValidationPubKeys must hold at least one PEM public key")
	}
	if len(cfg.JWTValidationPubKeys) > MaxValidationKeys {
		return nil, fmt.Errorf("auth method config: more than %d JWTValidationPubKeys", MaxValidationKeys)
	}
	if len(cfg.ClaimMappings)+len(cfg.ListClaimMappings) > MaxClaimMappings {
		return nil, fmt.Errorf("auth method config: more than %d claim mappings", MaxClaimMappings)
	}
	seen := map[string]bool{}
	for _, m := range []map[string]string{cfg.ClaimMappings, cfg.ListClaimMappings} {
		for claim, name := range m {
			if claim == "" || !validSelectableName(name) {
				return nil, fmt.Errorf("auth method config: claim mapping %q -> %q: names are letters, digits, _ and -", claim, name)
			}
			if seen[name] {
				return nil, fmt.Errorf("auth method config: %q is mapped twice", name)
			}
			seen[name] = true
		}
	}
	if _, err := cfg.algorithms(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

func durationOf(v any) (time.Duration, error) {
	switch x := v.(type) {
	case nil:
		return 0, nil
	case string:
		if x == "" {
			return 0, nil
		}
		return time.ParseDuration(x)
	case float64:
		return time.Duration(x), nil
	}
	return 0, fmt.Errorf("not a duration: %v", v)
}

func validSelectableName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, r := range s {
		if !(r == '_' || r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

func (c *JWTConfig) algorithms() ([]jose.SignatureAlgorithm, error) {
	if len(c.JWTSupportedAlgs) == 0 {
		return []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.ES256, jose.ES384, jose.ES512,
			jose.PS256, jose.PS384, jose.PS512, jose.EdDSA}, nil
	}
	var out []jose.SignatureAlgorithm
	for _, a := range c.JWTSupportedAlgs {
		switch alg := jose.SignatureAlgorithm(a); alg {
		case jose.RS256, jose.RS384, jose.RS512, jose.ES256, jose.ES384, jose.ES512, jose.PS256, jose.PS384, jose.PS512, jose.EdDSA:
			out = append(out, alg)
		default:
			return nil, fmt.Errorf("auth method config: JWTSupportedAlgs: %q is not an asymmetric signature algorithm", a)
		}
	}
	return out, nil
}

// JWTValidator checks bearer tokens for one jwt auth method.
type JWTValidator struct {
	cfg  *JWTConfig
	keys []crypto.PublicKey
	algs []jose.SignatureAlgorithm
}

// NewJWTValidator parses the method's public keys.
func NewJWTValidator(cfg *JWTConfig) (*JWTValidator, error) {
	v := &JWTValidator{cfg: cfg}
	var err error
	if v.algs, err = cfg.algorithms(); err != nil {
		return nil, err
	}
	for i, p := range cfg.JWTValidationPubKeys {
		b, _ := pem.Decode([]byte(p))
		if b == nil {
			return nil, fmt.Errorf("JWTValidationPubKeys[%d]: no PEM block", i)
		}
		k, err := x509.ParsePKIXPublicKey(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("JWTValidationPubKeys[%d]: %w", i, err)
		}
		v.keys = append(v.keys, k)
	}
	return v, nil
}

// Identity is what a verified login contributes to binding rules: the
// selectable fields value.<name> and list.<name>.
type Identity struct {
	Values map[string]string
	Lists  map[string][]string
}

// ErrLoginRefused is returned (wrapped) for a bearer token that is not valid
// for the method. Handlers answer 403.
var ErrLoginRefused = errors.New("Permission denied")

// Validate verifies token's signature against the method's keys and its
// issuer, audience and times at now, and maps its claims.
func (v *JWTValidator) Validate(token string, now time.Time) (*Identity, error) {
	if len(token) > MaxJWTBytes {
		return nil, fmt.Errorf("%w: bearer token longer than %d bytes", ErrLoginRefused, MaxJWTBytes)
	}
	tok, err := jwt.ParseSigned(token, v.algs)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrLoginRefused, err)
	}
	var std jwt.Claims
	var all map[string]any
	verified := false
	for _, k := range v.keys {
		if err := tok.Claims(k, &std, &all); err == nil {
			verified = true
			break
		}
	}
	if !verified {
		return nil, fmt.Errorf("%w: no validation key verifies the token's signature", ErrLoginRefused)
	}
	if err := v.checkTimes(std, now); err != nil {
		return nil, err
	}
	if v.cfg.BoundIssuer != "" && std.Issuer != v.cfg.BoundIssuer {
		return nil, fmt.Errorf("%w: issuer %q is not the bound issuer", ErrLoginRefused, std.Issuer)
	}
	if len(v.cfg.BoundAudiences) > 0 {
		ok := false
		for _, a := range v.cfg.BoundAudiences {
			if std.Audience.Contains(a) {
				ok = true
				break
			}
		}
		if !ok {
			return nil, fmt.Errorf("%w: audience %v matches no bound audience", ErrLoginRefused, []string(std.Audience))
		}
	}
	id := &Identity{Values: map[string]string{}, Lists: map[string][]string{}}
	for claim, name := range v.cfg.ClaimMappings {
		raw, ok := lookupClaim(all, claim)
		if !ok {
			continue
		}
		s, ok := scalarString(raw)
		if !ok {
			return nil, fmt.Errorf("%w: claim %q is not a string, number or boolean", ErrLoginRefused, claim)
		}
		id.Values[name] = s
	}
	for claim, name := range v.cfg.ListClaimMappings {
		raw, ok := lookupClaim(all, claim)
		if !ok {
			continue
		}
		list, ok := raw.([]any)
		if !ok {
			return nil, fmt.Errorf("%w: claim %q is not a list", ErrLoginRefused, claim)
		}
		var out []string
		for _, item := range list {
			s, ok := scalarString(item)
			if !ok {
				return nil, fmt.Errorf("%w: claim %q holds a non-scalar item", ErrLoginRefused, claim)
			}
			out = append(out, s)
		}
		id.Lists[name] = out
	}
	return id, nil
}

func (v *JWTValidator) checkTimes(c jwt.Claims, now time.Time) error {
	skew := v.cfg.ClockSkewLeeway
	if skew == 0 {
		skew = time.Minute
	}
	if c.Expiry != nil && now.After(c.Expiry.Time().Add(skew+v.cfg.ExpirationLeeway)) {
		return fmt.Errorf("%w: token expired", ErrLoginRefused)
	}
	if c.NotBefore != nil && now.Before(c.NotBefore.Time().Add(-skew-v.cfg.NotBeforeLeeway)) {
		return fmt.Errorf("%w: token not valid yet", ErrLoginRefused)
	}
	if c.IssuedAt != nil && now.Before(c.IssuedAt.Time().Add(-skew)) {
		return fmt.Errorf("%w: token issued in the future", ErrLoginRefused)
	}
	return nil
}

// lookupClaim finds a claim by name, or by JSON pointer (/a/b) in nested
// objects.
func lookupClaim(all map[string]any, claim string) (any, bool) {
	if !strings.HasPrefix(claim, "/") {
		v, ok := all[claim]
		return v, ok
	}
	var cur any = all
	for _, part := range strings.Split(claim[1:], "/") {
		part = strings.ReplaceAll(strings.ReplaceAll(part, "~1", "/"), "~0", "~")
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[part]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func scalarString(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case bool:
		return strconv.FormatBool(x), true
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), true
	case json.Number:
		return x.String(), true
	}
	return "", false
}
