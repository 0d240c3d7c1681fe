package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/tribune-mesh/tribune/acl/acltest"
	"github.com/tribune-mesh/tribune/agent/agenttest"
)

// TestACLRoleAuthMethodLoginCommands drives roles, auth methods, binding
// rules, set-agent-token, login and logout through the CLI, with tokens
// from -token, -token-file, CONSUL_HTTP_TOKEN and CONSUL_HTTP_TOKEN_FILE.
func TestACLRoleAuthMethodLoginCommands(t *testing.T) {
	c := agenttest.Config(t)
	c.ACL.Enabled, c.ACL.DefaultPolicy = true, "deny"
	a := agenttest.Start(t, c)
	addr := "-http-addr=" + a.HTTPAddr()
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}

	// Bootstrap with an operator-chosen SecretID read from a file.
	const chosen = "0e5a1c2b-0000-4000-8000-0000000b0075"
	var r result
	waitFor(t, 10*time.Second, func() (bool, string) {
		r = runCmd(runACLBootstrap, addr, "-format=json", file("secret", chosen+"\n"))
		return r.code == 0, r.String()
	})
	var boot struct{ SecretID string }
	if err := json.Unmarshal([]byte(r.stdout), &boot); err != nil || boot.SecretID != chosen {
		t.Fatalf("bootstrap with a chosen secret: %v %v", r, err)
	}
	// The management token from the environment, for every command below
	// that gives none.
	t.Setenv("CONSUL_HTTP_TOKEN", boot.SecretID)

	mustExec(t, runACLPolicyCreate, addr, "-name=app", "-rules="+`key_prefix "app/" { policy = "write" }`)
	r = mustExec(t, runACLRoleCreate, addr, "-name=ops", "-policy-name=app", "-service-identity=web:dc1", "-node-identity=n1:dc1", "-format=json")
	var role struct{ ID string }
	if err := json.Unmarshal([]byte(r.stdout), &role); err != nil || role.ID == "" {
		t.Fatalf("role create: %v %v", r, err)
	}
	r = mustExec(t, runACLRoleRead, addr, "-name=ops")
	assertContains(t, "role read", r.stdout, " - app")
	assertContains(t, "role read", r.stdout, "n1 (Datacenter: dc1)")
	r = mustExec(t, runACLRoleUpdate, addr, "-id="+role.ID, "-description=operators")
	assertContains(t, "role update", r.stdout, "Description:  operators")
	assertContains(t, "role update keeps links", r.stdout, " - app")
	r = mustExec(t, runACLRoleList, addr)
	assertContains(t, "role list", r.stdout, "Name:         ops")
	if r := runCmd(runACLRoleCreate, addr, "-name=bad", "-node-identity=nodc"); r.code != 1 {
		t.Fatalf("malformed node identity: %v", r)
	}

	key, pub := acltest.Key(t)
	cfg, _ := json.Marshal(map[string]any{"JWTValidationPubKeys": []string{pub}, "BoundIssuer": "https://issuer",
		"ClaimMappings": map[string]string{"ns": "ns"}})
	r = mustExec(t, runACLAuthMethodCreate, addr, "-type=jwt", "-name=k8s", "-max-token-ttl=1h", "-token-locality=global",
		"-config=@"+file("method.json", string(cfg)))
	assertContains(t, "auth-method create", r.stdout, "MaxTokenTTL:   1h0m0s")
	r = mustExec(t, runACLAuthMethodUpdate, addr, "-name=k8s", "-description=pods")
	assertContains(t, "auth-method update", r.stdout, "Description:   pods")
	assertContains(t, "auth-method update keeps config", r.stdout, "BoundIssuer")
	r = mustExec(t, runACLAuthMethodList, addr)
	assertContains(t, "auth-method list", r.stdout, "k8s:")
	mustExec(t, runACLAuthMethodRead, addr, "-name=k8s")

	r = mustExec(t, runACLBindingRuleCreate, addr, "-method=k8s", "-bind-type=role", "-bind-name=ops", `-selector=value.ns == "default"`, "-format=json")
	var rule struct{ ID string }
	if err := json.Unmarshal([]byte(r.stdout), &rule); err != nil || rule.ID == "" {
		t.Fatalf("binding rule create: %v %v", r, err)
	}
	r = mustExec(t, runACLBindingRuleUpdate, addr, "-id="+rule.ID, "-description=default namespace")
	assertContains(t, "binding-rule update", r.stdout, "BindName:     ops")
	r = mustExec(t, runACLBindingRuleList, addr, "-method=k8s")
	assertContains(t, "binding-rule list", r.stdout, rule.ID)
	mustExec(t, runACLBindingRuleRead, addr, "-id="+rule.ID)

	// Login needs no token; the sink file gets the secret.
	jwtText := acltest.Sign(t, key, jwt.Claims{Issuer: "https://issuer", Expiry: jwt.NewNumericDate(time.Now().Add(time.Hour))},
		map[string]any{"ns": "default"})
	sink := filepath.Join(dir, "token")
	t.Setenv("CONSUL_HTTP_TOKEN", "")
	mustExec(t, runLogin, addr, "-method=k8s", "-bearer-token-file="+file("jwt", jwtText+"\n"), "-token-sink-file="+sink, "-meta=pod=web-1")
	secret, err := os.ReadFile(sink)
	if err != nil || len(secret) != 36 {
		t.Fatalf("sink file: %q, %v", secret, err)
	}
	if st, _ := os.Stat(sink); st.Mode().Perm() != 0o600 {
		t.Fatalf("sink file mode %v", st.Mode())
	}
	// The login token writes app/ through its role, given by -token-file
	// and by CONSUL_HTTP_TOKEN_FILE.
	mustExec(t, kvPutCommand(strings.NewReader("")), addr, "-token-file="+sink, "app/x", "1")
	t.Setenv("CONSUL_HTTP_TOKEN_FILE", sink)
	mustExec(t, kvPutCommand(strings.NewReader("")), addr, "app/y", "1")
	mustExec(t, runLogout, addr)
	t.Setenv("CONSUL_HTTP_TOKEN_FILE", "")
	// The agent's token cache learns of the delete within a second.
	waitFor(t, 5*time.Second, func() (bool, string) {
		r := runCmd(kvPutCommand(strings.NewReader("")), addr, "-token="+string(secret), "app/x", "2")
		return r.code != 0 && strings.Contains(r.stderr, "ACL not found"), r.String()
	})
	if r := runCmd(runLogin, addr, "-method=k8s", "-bearer-token-file="+file("bad", "x.y.z"), "-token-sink-file="+sink); r.code != 1 ||
		!strings.Contains(r.stderr, "403") {
		t.Fatalf("login with a bad JWT: %v", r)
	}

	tok := "-token=" + boot.SecretID
	r = mustExec(t, runACLSetAgentToken, addr, tok, "agent", boot.SecretID)
	assertContains(t, "set-agent-token", r.stdout, "ACL token set successfully")
	if r := runCmd(runACLSetAgentToken, addr, tok, "nope", "x"); r.code != 1 {
		t.Fatalf("unknown token type: %v", r)
	}
	mustExec(t, runACLBindingRuleDelete, addr, tok, "-id="+rule.ID)
	mustExec(t, runACLAuthMethodDelete, addr, tok, "-name=k8s")
	mustExec(t, runACLRoleDelete, addr, tok, "-name=ops")
	if r := runCmd(runACLRoleRead, addr, tok, "-name=ops"); r.code != 1 || !strings.Contains(r.stderr, "role not found") {
		t.Fatalf("read deleted role: %v", r)
	}
}
