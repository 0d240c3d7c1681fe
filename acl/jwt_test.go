package acl

import (
	"crypto/ecdsa"
	"errors"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/tribune-mesh/tribune/acl/acltest"
	"github.com/tribune-mesh/tribune/catalog"
)

var jwtNow = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)

func testKey(t *testing.T) (*ecdsa.PrivateKey, string) { return acltest.Key(t) }

func signJWT(t *testing.T, k *ecdsa.PrivateKey, std jwt.Claims, extra map[string]any) string {
	return acltest.Sign(t, k, std, extra)
}

func k8sValidator(t *testing.T, pub string) *JWTValidator {
	t.Helper()
	cfg, err := ParseJWTConfig(map[string]any{
		"JWTValidationPubKeys": []any{pub},
		"BoundIssuer":          "https://kubernetes.default.svc",
		"BoundAudiences":       []any{"tribune"},
		"ClaimMappings":        map[string]any{"/kubernetes.io/serviceaccount/name": "service_account", "/kubernetes.io/namespace": "namespace"},
		"ListClaimMappings":    map[string]any{"groups": "groups"},
		"ClockSkewLeeway":      "1s",
	})
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewJWTValidator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func podClaims() (jwt.Claims, map[string]any) {
	return jwt.Claims{
			Issuer: "https://kubernetes.default.svc", Audience: jwt.Audience{"tribune"},
			Expiry: jwt.NewNumericDate(jwtNow.Add(time.Hour)), IssuedAt: jwt.NewNumericDate(jwtNow.Add(-time.Minute)),
		}, map[string]any{
			"kubernetes.io": map[string]any{"namespace": "shop", "serviceaccount": map[string]any{"name": "web"}},
			"groups":        []string{"dev", "ops"},
		}
}

func TestJWTLoginAndBindingRules(t *testing.T) {
	k, pub := testKey(t)
	v := k8sValidator(t, pub)
	std, extra := podClaims()
	id, err := v.Validate(signJWT(t, k, std, extra), jwtNow)
	if err != nil {
		t.Fatal(err)
	}
	if id.Values["service_account"] != "web" || id.Values["namespace"] != "shop" || len(id.Lists["groups"]) != 2 {
		t.Fatalf("identity %+v", id)
	}
	rules := []*catalog.ACLBindingRule{
		{ID: "r1", AuthMethod: "k8s", Selector: `value.namespace == "shop"`, BindType: "service", BindName: "${value.service_account}"},
		{ID: "r2", AuthMethod: "k8s", Selector: `"ops" in list.groups`, BindType: "role", BindName: "ops-${value.namespace}"},
		{ID: "r3", AuthMethod: "k8s", Selector: `value.namespace == "billing"`, BindType: "policy", BindName: "billing"},
		{ID: "r4", AuthMethod: "k8s", BindType: "node", BindName: "node-${value.service_account}"},
	}
	for _, r := range rules {
		if err := ValidateBindingRule(r); err != nil {
			t.Fatalf("rule %s: %v", r.ID, err)
		}
	}
	b, err := EvaluateBindingRules(rules, id, "dc1")
	if err != nil {
		t.Fatal(err)
	}
	if len(b.ServiceIdentities) != 1 || b.ServiceIdentities[0].ServiceName != "web" {
		t.Errorf("service identities %+v", b.ServiceIdentities)
	}
	if len(b.Roles) != 1 || b.Roles[0] != "ops-shop" || len(b.Policies) != 0 {
		t.Errorf("roles %v policies %v", b.Roles, b.Policies)
	}
	if len(b.NodeIdentities) != 1 || b.NodeIdentities[0].NodeName != "node-web" || b.NodeIdentities[0].Datacenter != "dc1" {
		t.Errorf("node identities %+v", b.NodeIdentities)
	}
	none, _ := EvaluateBindingRules(rules[2:3], id, "dc1")
	if !none.Empty() {
		t.Error("non-matching rule bound something")
	}
}

func TestJWTRefusals(t *testing.T) {
	k, pub := testKey(t)
	other, _ := testKey(t)
	v := k8sValidator(t, pub)
	std, extra := podClaims()
	cases := map[string]func() string{
		"signed by another key": func() string { return signJWT(t, other, std, extra) },
		"expired": func() string {
			s := std
			s.Expiry = jwt.NewNumericDate(jwtNow.Add(-time.Minute))
			return signJWT(t, k, s, extra)
		},
		"not yet valid": func() string {
			s := std
			s.NotBefore = jwt.NewNumericDate(jwtNow.Add(time.Hour))
			return signJWT(t, k, s, extra)
		},
		"wrong issuer": func() string {
			s := std
			s.Issuer = "https://evil"
			return signJWT(t, k, s, extra)
		},
		"wrong audience": func() string {
			s := std
			s.Audience = jwt.Audience{"vault"}
			return signJWT(t, k, s, extra)
		},
		"HS256 with the public key as secret": func() string {
			sig, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte(pub)}, nil)
			s, _ := jwt.Signed(sig).Claims(std).Serialize()
			return s
		},
		"unsigned": func() string {
			return "eyJhbGciOiJub25lIn0.eyJpc3MiOiJodHRwczovL2t1YmVybmV0ZXMuZGVmYXVsdC5zdmMifQ."
		},
		"oversized": func() string { return strings.Repeat("a", MaxJWTBytes+1) },
		"junk":      func() string { return "not.a.jwt" },
	}
	for name, mk := range cases {
		if _, err := v.Validate(mk(), jwtNow); !errors.Is(err, ErrLoginRefused) {
			t.Errorf("%s: %v, want ErrLoginRefused", name, err)
		}
	}
}

func TestJWTConfigAndRuleValidation(t *testing.T) {
	_, pub := testKey(t)
	for name, raw := range map[string]map[string]any{
		"no keys":        {},
		"jwks url":       {"JWKSURL": "https://x", "JWTValidationPubKeys": []any{pub}},
		"unknown key":    {"JWTValidationPubKeys": []any{pub}, "Bogus": 1},
		"symmetric alg":  {"JWTValidationPubKeys": []any{pub}, "JWTSupportedAlgs": []any{"HS256"}},
		"bad name":       {"JWTValidationPubKeys": []any{pub}, "ClaimMappings": map[string]any{"sub": "has space"}},
		"mapped twice":   {"JWTValidationPubKeys": []any{pub}, "ClaimMappings": map[string]any{"a": "x"}, "ListClaimMappings": map[string]any{"b": "x"}},
		"leeway too big": {"JWTValidationPubKeys": []any{pub}, "ClockSkewLeeway": "48h"},
	} {
		if _, err := ParseJWTConfig(raw); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	cfg, err := ParseJWTConfig(map[string]any{"JWTValidationPubKeys": []any{"not pem"}})
	if err == nil {
		if _, err := NewJWTValidator(cfg); err == nil {
			t.Error("non-PEM key accepted")
		}
	}
	for _, r := range []*catalog.ACLBindingRule{
		{AuthMethod: "m", BindType: "token", BindName: "x"},
		{AuthMethod: "m", BindType: "service", BindName: ""},
		{AuthMethod: "m", BindType: "service", BindName: "${claims.x}"},
		{AuthMethod: "m", BindType: "service", BindName: "${value.x"},
		{AuthMethod: "m", BindType: "service", BindName: "x", Selector: "value.x ==="},
		{BindType: "service", BindName: "x"},
	} {
		if err := ValidateBindingRule(r); err == nil {
			t.Errorf("ValidateBindingRule(%+v) accepted", r)
		}
	}
	// A bind name that interpolates to something invalid fails the login.
	id := &Identity{Values: map[string]string{"sa": "a b"}}
	if _, err := EvaluateBindingRules([]*catalog.ACLBindingRule{{ID: "r", BindType: "service", BindName: "${value.sa}"}}, id, "dc1"); err == nil {
		t.Error("invalid interpolated bind name accepted")
	}
}
