package acl

import (
	"encoding/json"
	"testing"

	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/tribune-mesh/tribune/acl/acltest"
	"github.com/tribune-mesh/tribune/catalog"
)

// FuzzLogin feeds arbitrary bearer tokens and method configs (what
// /v1/acl/login and /v1/acl/auth-method accept from the network) to the
// login path: it must refuse or accept, never panic, and an accepted login
// always grants something.
func FuzzLogin(f *testing.F) {
	k, pub := acltest.Key(f)
	good := acltest.Sign(f, k, jwt.Claims{Issuer: "iss", Audience: jwt.Audience{"aud"}}, map[string]any{"sa": "web"})
	cfg, _ := json.Marshal(map[string]any{"JWTValidationPubKeys": []string{pub}, "BoundIssuer": "iss",
		"ClaimMappings": map[string]string{"sa": "sa"}})
	f.Add(good, string(cfg))
	f.Add("a.b.c", `{"JWTValidationPubKeys":["x"]}`)
	f.Add("", `{"ClaimMappings":{"/a/b":"x"},"ClockSkewLeeway":"1h"}`)
	f.Fuzz(func(t *testing.T, bearer, config string) {
		var raw map[string]any
		if json.Unmarshal([]byte(config), &raw) != nil {
			return
		}
		m := &catalog.ACLAuthMethod{Name: "m", Type: AuthMethodJWT, Config: raw}
		if ValidateAuthMethod(m) != nil {
			return
		}
		rules := []*catalog.ACLBindingRule{{ID: "r", AuthMethod: "m", Selector: `value.sa == "web"`, BindType: catalog.BindTypeService, BindName: "${value.sa}"}}
		b, err := Login(m, rules, bearer, jwtNow, "dc1")
		if err == nil && b.Empty() {
			t.Fatalf("login accepted with no bindings")
		}
	})
}
