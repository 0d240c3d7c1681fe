package agent_test

import (
	"crypto/ecdsa"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/acl/acltest"
	"github.com/tribune-mesh/tribune/agent/agenttest"
	"github.com/tribune-mesh/tribune/test/wait"
)

// jwtKey is a test signing key and its public half in PEM.
func jwtKey(t *testing.T) (*ecdsa.PrivateKey, string) { return acltest.Key(t) }

// k8sJWT signs a token shaped like a Kubernetes projected service-account
// token.
func k8sJWT(t *testing.T, k *ecdsa.PrivateKey, issuer, audience, namespace, sa string) string {
	t.Helper()
	now := time.Now()
	std := jwt.Claims{Issuer: issuer, Audience: jwt.Audience{audience}, Subject: "system:serviceaccount:" + namespace + ":" + sa,
		IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(time.Hour))}
	return acltest.Sign(t, k, std, map[string]any{"kubernetes.io": map[string]any{"namespace": namespace, "serviceaccount": map[string]any{"name": sa}}})
}

const k8sIssuer = "https://kubernetes.default.svc"

func TestACLLoginWithJWTAuthMethod(t *testing.T) {
	a := agenttest.Start(t, aclConfig(agenttest.Config(t)))
	root := tokenClient(t, a, rootSecret)
	waitManagement(t, root)
	acls := root.ACL()
	key, pub := jwtKey(t)

	if _, _, err := acls.PolicyCreate(&api.ACLPolicy{Name: "app-read", Rules: `key_prefix "app/" { policy = "read" }`}, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := acls.RoleCreate(&api.ACLRole{Name: "ops", Policies: []*api.ACLRolePolicyLink{{Name: "app-read"}}}, nil); err != nil {
		t.Fatal(err)
	}
	// Bad configs are refused with 400.
	for _, cfg := range []map[string]any{
		{"BoundIssuer": k8sIssuer},                                     // no keys
		{"JWTValidationPubKeys": []string{"not pem"}},                  // bad key
		{"JWTValidationPubKeys": []string{pub}, "JWKSURL": "http://x"}, // fetching keys is not supported
	} {
		_, _, err := acls.AuthMethodCreate(&api.ACLAuthMethod{Name: "bad", Type: "jwt", Config: cfg}, nil)
		if statusOf(err) != http.StatusBadRequest {
			t.Fatalf("bad config %v: %v", cfg, err)
		}
	}
	method, _, err := acls.AuthMethodCreate(&api.ACLAuthMethod{
		Name: "k8s", Type: "jwt", Description: "pods", MaxTokenTTL: time.Hour, TokenLocality: "global",
		Config: map[string]any{
			"JWTValidationPubKeys": []string{pub},
			"BoundIssuer":          k8sIssuer,
			"BoundAudiences":       []string{"tribune"},
			"ClaimMappings": map[string]string{
				"/kubernetes.io/serviceaccount/name": "service_account",
				"/kubernetes.io/namespace":           "namespace",
			},
		},
	}, nil)
	if err != nil || method.Name != "k8s" || method.MaxTokenTTL != time.Hour || method.CreateIndex == 0 {
		t.Fatalf("auth method create: %+v, %v", method, err)
	}
	rules := []*api.ACLBindingRule{
		{AuthMethod: "k8s", Selector: `value.namespace == "default"`, BindType: api.BindingRuleBindTypeService, BindName: "${value.service_account}"},
		{AuthMethod: "k8s", Selector: `value.namespace == "default"`, BindType: api.BindingRuleBindTypeRole, BindName: "ops"},
		{AuthMethod: "k8s", Selector: `value.namespace == "default"`, BindType: api.BindingRuleBindTypeRole, BindName: "no-such-role"},
		{AuthMethod: "k8s", Selector: `value.namespace == "default"`, BindType: api.BindingRuleBindTypePolicy, BindName: "app-read"},
		{AuthMethod: "k8s", Selector: `value.service_account == "node-agent"`, BindType: api.BindingRuleBindTypeNode, BindName: "node-${value.namespace}"},
	}
	for _, r := range rules {
		got, _, err := acls.BindingRuleCreate(r, nil)
		if err != nil || got.ID == "" {
			t.Fatalf("binding rule create %+v: %+v, %v", r, got, err)
		}
		r.ID = got.ID
	}
	if _, _, err := acls.BindingRuleCreate(&api.ACLBindingRule{AuthMethod: "nope", BindType: "service", BindName: "x"}, nil); statusOf(err) != http.StatusBadRequest {
		t.Fatalf("rule of an unknown method: %v", err)
	}
	if _, _, err := acls.BindingRuleCreate(&api.ACLBindingRule{AuthMethod: "k8s", BindType: "service", BindName: "${claims.x}"}, nil); statusOf(err) != http.StatusBadRequest {
		t.Fatalf("rule with a bad reference: %v", err)
	}
	if got, _, err := acls.BindingRuleList("k8s", nil); err != nil || len(got) != len(rules) {
		t.Fatalf("binding rules of k8s: %d, %v", len(got), err)
	}
	if got, _, err := acls.AuthMethodList(nil); err != nil || len(got) != 1 || got[0].MaxTokenTTL != time.Hour {
		t.Fatalf("auth methods: %+v, %v", got, err)
	}

	// A good token logs in, with no ACL token of its own.
	anon := tokenClient(t, a, "")
	tok, _, err := anon.ACL().Login(&api.ACLLoginParams{AuthMethod: "k8s",
		BearerToken: k8sJWT(t, key, k8sIssuer, "tribune", "default", "web"), Meta: map[string]string{"pod": "web-1"}}, nil)
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	if tok.AuthMethod != "k8s" || tok.Local || tok.SecretID == "" || len(tok.ServiceIdentities) != 1 || tok.ServiceIdentities[0].ServiceName != "web" ||
		len(tok.Roles) != 1 || tok.Roles[0].Name != "ops" || len(tok.Policies) != 1 || tok.Policies[0].Name != "app-read" ||
		len(tok.NodeIdentities) != 0 || tok.ExpirationTime == nil || !strings.Contains(tok.Description, `"pod":"web-1"`) {
		t.Fatalf("login token = %+v", tok)
	}
	// What it grants works, and only that.
	user := tokenClient(t, a, tok.SecretID)
	if _, _, err := user.KV().Get("app/x", nil); err != nil {
		t.Fatalf("read with login token: %v", err)
	}
	if _, err := user.KV().Put(&api.KVPair{Key: "app/x", Value: []byte("v")}, nil); statusOf(err) != http.StatusForbidden {
		t.Fatalf("write with login token: %v", err)
	}
	if err := user.Agent().ServiceRegister(&api.AgentServiceRegistration{Name: "web", Port: 80}); err != nil {
		t.Fatalf("service identity does not allow registering web: %v", err)
	}
	node, _, err := anon.ACL().Login(&api.ACLLoginParams{AuthMethod: "k8s", BearerToken: k8sJWT(t, key, k8sIssuer, "tribune", "kube-system", "node-agent")}, nil)
	if err != nil || len(node.NodeIdentities) != 1 || node.NodeIdentities[0].NodeName != "node-kube-system" || node.NodeIdentities[0].Datacenter != "dc1" {
		t.Fatalf("node identity login: %+v, %v", node, err)
	}
	byMethod, _, err := acls.TokenListFiltered(api.ACLTokenFilterOptions{AuthMethod: "k8s"}, nil)
	if err != nil || len(byMethod) != 2 {
		t.Fatalf("tokens of k8s: %d, %v", len(byMethod), err)
	}

	// Refusals: 403 for a bad bearer token or no matching rule, 400 for
	// a malformed request, "ACL not found" for an unknown method.
	other, _ := jwtKey(t)
	for name, c := range map[string]struct {
		params *api.ACLLoginParams
		code   int
	}{
		"wrong key":      {&api.ACLLoginParams{AuthMethod: "k8s", BearerToken: k8sJWT(t, other, k8sIssuer, "tribune", "default", "web")}, 403},
		"wrong issuer":   {&api.ACLLoginParams{AuthMethod: "k8s", BearerToken: k8sJWT(t, key, "https://evil", "tribune", "default", "web")}, 403},
		"wrong audience": {&api.ACLLoginParams{AuthMethod: "k8s", BearerToken: k8sJWT(t, key, k8sIssuer, "other", "default", "web")}, 403},
		"no rule":        {&api.ACLLoginParams{AuthMethod: "k8s", BearerToken: k8sJWT(t, key, k8sIssuer, "tribune", "prod", "web")}, 403},
		"garbage":        {&api.ACLLoginParams{AuthMethod: "k8s", BearerToken: "not.a.jwt"}, 403},
		"unknown method": {&api.ACLLoginParams{AuthMethod: "nope", BearerToken: "x"}, 403},
		"no method":      {&api.ACLLoginParams{BearerToken: "x"}, 400},
		"no bearer":      {&api.ACLLoginParams{AuthMethod: "k8s"}, 400},
	} {
		if _, _, err := anon.ACL().Login(c.params, nil); statusOf(err) != c.code {
			t.Errorf("%s: got %v, want %d", name, err, c.code)
		}
	}

	// Logout deletes the login token, and only login tokens.
	if _, err := root.ACL().Logout(nil); statusOf(err) != http.StatusForbidden {
		t.Fatalf("logout of the management token: %v", err)
	}
	if _, err := user.ACL().Logout(nil); err != nil {
		t.Fatalf("logout: %v", err)
	}
	if got, _, _ := acls.TokenRead(tok.AccessorID, nil); got != nil {
		t.Fatalf("token after logout: %+v", got)
	}
	// The agent's token cache learns of the delete within a second.
	wait.For(t, 5*time.Second, func() error {
		if _, _, err := user.KV().Get("app/x", nil); statusOf(err) != http.StatusForbidden {
			return fmt.Errorf("read after logout: %v", err)
		}
		return nil
	})

	// A kubernetes method is stored, but its logins are refused.
	if _, _, err := acls.AuthMethodCreate(&api.ACLAuthMethod{Name: "kube", Type: "kubernetes", Config: map[string]any{
		"Host": "https://192.0.2.42:8443", "CACert": "pem", "ServiceAccountJWT": "jwt"}}, nil); err != nil {
		t.Fatalf("kubernetes method: %v", err)
	}
	if _, _, err := anon.ACL().Login(&api.ACLLoginParams{AuthMethod: "kube", BearerToken: "x"}, nil); statusOf(err) != http.StatusBadRequest {
		t.Fatalf("kubernetes login: %v", err)
	}

	// Update keeps the name; delete takes the rules and the login tokens.
	method.Description = "pods (updated)"
	if got, _, err := acls.AuthMethodUpdate(method, nil); err != nil || got.Description != method.Description {
		t.Fatalf("auth method update: %+v, %v", got, err)
	}
	rules[0].BindName = "svc-${value.service_account}"
	if got, _, err := acls.BindingRuleUpdate(rules[0], nil); err != nil || got.BindName != rules[0].BindName {
		t.Fatalf("binding rule update: %+v, %v", got, err)
	}
	if _, err := acls.AuthMethodDelete("k8s", nil); err != nil {
		t.Fatal(err)
	}
	if got, _, err := acls.BindingRuleList("", nil); err != nil || len(got) != 0 {
		t.Fatalf("rules after method delete: %d, %v", len(got), err)
	}
	if got, _, _ := acls.TokenRead(node.AccessorID, nil); got != nil {
		t.Fatalf("login token after method delete: %+v", got)
	}
	if m, _, err := acls.AuthMethodRead("k8s", nil); m != nil || err != nil {
		t.Fatalf("read deleted method: %+v, %v", m, err)
	}
}

// TestACLLoginThroughClientAgent logs in and out through a client agent:
// the leader verifies the bearer token, and its refusals cross the RPC.
func TestACLLoginThroughClientAgent(t *testing.T) {
	srv, _, client := aclCluster(t)
	key, pub := jwtKey(t)
	acls := srv.ACL()
	if _, _, err := acls.AuthMethodCreate(&api.ACLAuthMethod{Name: "k8s", Type: "jwt", Config: map[string]any{
		"JWTValidationPubKeys": []string{pub}, "BoundIssuer": k8sIssuer,
		"ClaimMappings": map[string]string{"/kubernetes.io/serviceaccount/name": "sa"}}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := acls.BindingRuleCreate(&api.ACLBindingRule{AuthMethod: "k8s", BindType: api.BindingRuleBindTypeService, BindName: "${value.sa}"}, nil); err != nil {
		t.Fatal(err)
	}
	anon := tokenClient(t, client, "")
	tok, _, err := anon.ACL().Login(&api.ACLLoginParams{AuthMethod: "k8s", BearerToken: k8sJWT(t, key, k8sIssuer, "x", "default", "api")}, nil)
	if err != nil || len(tok.ServiceIdentities) != 1 || tok.ServiceIdentities[0].ServiceName != "api" || !tok.Local {
		t.Fatalf("login through the client agent: %+v, %v", tok, err)
	}
	other, _ := jwtKey(t)
	_, _, err = anon.ACL().Login(&api.ACLLoginParams{AuthMethod: "k8s", BearerToken: k8sJWT(t, other, k8sIssuer, "x", "default", "api")}, nil)
	if statusOf(err) != http.StatusForbidden || !strings.Contains(err.Error(), "Permission denied: no validation key verifies") {
		t.Fatalf("bad signature through the client agent: %v", err)
	}
	if _, _, err := anon.ACL().Login(&api.ACLLoginParams{AuthMethod: "nope", BearerToken: "x"}, nil); statusOf(err) != http.StatusForbidden {
		t.Fatalf("unknown method through the client agent: %v", err)
	}
	if _, err := tokenClient(t, client, rootSecret).ACL().Logout(nil); statusOf(err) != http.StatusForbidden {
		t.Fatalf("logout of a non-login token: %v", err)
	}
	if _, err := tokenClient(t, client, tok.SecretID).ACL().Logout(nil); err != nil {
		t.Fatalf("logout through the client agent: %v", err)
	}
	if got, _, _ := acls.TokenRead(tok.AccessorID, nil); got != nil {
		t.Fatalf("token after logout: %+v", got)
	}
}
