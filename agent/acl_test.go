package agent_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/agent"
	"github.com/tribune-mesh/tribune/agent/agenttest"
	"github.com/tribune-mesh/tribune/agent/config"
	"github.com/tribune-mesh/tribune/test/wait"
)

const rootSecret = "9a8b7c6d-0000-4000-8000-000000000001"

// aclConfig turns ACLs on with a deny default and the management token.
func aclConfig(c *config.Config) *config.Config {
	c.ACL.Enabled = true
	c.ACL.DefaultPolicy = "deny"
	c.ACL.Tokens.InitialManagement = rootSecret
	return c
}

func tokenClient(t testing.TB, a *agent.Agent, secret string) *api.Client {
	t.Helper()
	c, err := api.NewClient(&api.Config{Address: a.HTTPAddr(), Token: secret})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// waitManagement waits until the leader created the management token.
func waitManagement(t testing.TB, c *api.Client) {
	t.Helper()
	wait.For(t, 20*time.Second, func() error {
		_, _, err := c.ACL().TokenReadSelf(nil)
		return err
	})
}

// statusOf returns the HTTP status of an api error ("" for none).
func statusOf(err error) int {
	var se api.StatusError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

func TestACLAPIWithOfficialClient(t *testing.T) {
	a := agenttest.Start(t, aclConfig(agenttest.Config(t)))
	root := tokenClient(t, a, rootSecret)
	waitManagement(t, root)
	acls := root.ACL()

	self, _, err := acls.TokenReadSelf(nil)
	if err != nil || self.SecretID != rootSecret || len(self.Policies) != 1 || self.Policies[0].Name != "global-management" {
		t.Fatalf("management token = %+v, %v", self, err)
	}
	// The initial management token bootstrapped the cluster.
	if _, _, err := acls.Bootstrap(); statusOf(err) != http.StatusForbidden || !strings.Contains(err.Error(), "ACL bootstrap no longer allowed") {
		t.Fatalf("bootstrap after initial management: %v", err)
	}

	// Rules are parsed; an error names the line.
	_, _, err = acls.PolicyCreate(&api.ACLPolicy{Name: "bad", Rules: "key_prefix \"\" {\n  policy = \"sideways\"\n}"}, nil)
	if statusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("bad rules: %v", err)
	}
	pol, _, err := acls.PolicyCreate(&api.ACLPolicy{Name: "app-read", Description: "reads app/", Rules: `key_prefix "app/" { policy = "read" }`}, nil)
	if err != nil || pol.ID == "" || pol.CreateIndex == 0 {
		t.Fatalf("policy create: %+v, %v", pol, err)
	}
	if p, _, err := acls.PolicyReadByName("app-read", nil); err != nil || p.ID != pol.ID || p.Rules != pol.Rules {
		t.Fatalf("policy by name: %+v, %v", p, err)
	}
	pol.Description = "reads app/ (updated)"
	if p, _, err := acls.PolicyUpdate(pol, nil); err != nil || p.Description != pol.Description || p.ModifyIndex <= pol.CreateIndex {
		t.Fatalf("policy update: %+v, %v", p, err)
	}
	pols, _, err := acls.PolicyList(nil)
	if err != nil || len(pols) != 3 { // with the two built-ins
		t.Fatalf("policy list: %d, %v", len(pols), err)
	}

	role, _, err := acls.RoleCreate(&api.ACLRole{Name: "app-readers", Policies: []*api.ACLRolePolicyLink{{Name: "app-read"}}}, nil)
	if err != nil || len(role.Policies) != 1 || role.Policies[0].ID != pol.ID {
		t.Fatalf("role create: %+v, %v", role, err)
	}
	if r, _, err := acls.RoleReadByName("app-readers", nil); err != nil || r.ID != role.ID {
		t.Fatalf("role by name: %+v, %v", r, err)
	}

	// A token linking an unknown policy is refused.
	_, _, err = acls.TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{Name: "nope"}}}, nil)
	if statusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "cannot find policy nope") {
		t.Fatalf("token with unknown policy: %v", err)
	}
	tok, _, err := acls.TokenCreate(&api.ACLToken{Description: "app reader", Roles: []*api.ACLTokenRoleLink{{ID: role.ID}}}, nil)
	if err != nil || tok.AccessorID == "" || tok.SecretID == "" || len(tok.Roles) != 1 || tok.Roles[0].Name != "app-readers" {
		t.Fatalf("token create: %+v, %v", tok, err)
	}
	if got, _, err := acls.TokenRead(tok.AccessorID, nil); err != nil || got.Description != "app reader" {
		t.Fatalf("token read: %+v, %v", got, err)
	}
	byRole, _, err := acls.TokenListFiltered(api.ACLTokenFilterOptions{Role: role.ID}, nil)
	if err != nil || len(byRole) != 1 || byRole[0].AccessorID != tok.AccessorID {
		t.Fatalf("tokens by role: %+v, %v", byRole, err)
	}
	all, _, err := acls.TokenList(nil)
	if err != nil || len(all) != 3 { // anonymous, management, app reader
		t.Fatalf("token list: %d, %v", len(all), err)
	}
	clone, _, err := acls.TokenClone(tok.AccessorID, "the clone", nil)
	if err != nil || clone.AccessorID == tok.AccessorID || clone.SecretID == tok.SecretID || clone.Description != "the clone" || len(clone.Roles) != 1 {
		t.Fatalf("clone: %+v, %v", clone, err)
	}
	tok.Description = "app reader (updated)"
	tok.SecretID = ""
	if up, _, err := acls.TokenUpdate(tok, nil); err != nil || up.Description != tok.Description || up.SecretID == "" {
		t.Fatalf("token update: %+v, %v", up, err)
	}

	// Enforcement: the token reads app/ and nothing else.
	if _, err := root.KV().Put(&api.KVPair{Key: "app/x", Value: []byte("1")}, nil); err != nil {
		t.Fatalf("management put: %v", err)
	}
	reader := tokenClient(t, a, clone.SecretID)
	if kv, _, err := reader.KV().Get("app/x", nil); err != nil || kv == nil {
		t.Fatalf("reader get app/x: %v %v", kv, err)
	}
	_, err = reader.KV().Put(&api.KVPair{Key: "app/x", Value: []byte("2")}, nil)
	want := fmt.Sprintf(`Permission denied: token with AccessorID '%s' lacks permission 'key:write' on "app/x"`, clone.AccessorID)
	if statusOf(err) != http.StatusForbidden || !strings.Contains(err.Error(), want) {
		t.Fatalf("reader put: %v, want %q", err, want)
	}
	// The reader cannot manage ACLs.
	if _, _, err := reader.ACL().TokenList(nil); statusOf(err) != http.StatusForbidden || !strings.Contains(err.Error(), "acl:read") {
		t.Fatalf("reader token list: %v", err)
	}
	// No token: the anonymous token, default deny.
	if _, _, err := tokenClient(t, a, "").KV().Get("app/x", nil); statusOf(err) != http.StatusForbidden {
		t.Fatalf("anonymous get: %v", err)
	}
	// An unknown secret is "ACL not found".
	if _, _, err := tokenClient(t, a, "00000000-1111-4000-8000-000000000000").KV().Get("app/x", nil); statusOf(err) != http.StatusForbidden || !strings.Contains(err.Error(), "ACL not found") {
		t.Fatalf("unknown token: %v", err)
	}
	// Bearer and ?token= carry the token too.
	for _, mod := range []func(*http.Request){
		func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+clone.SecretID) },
		func(r *http.Request) { r.URL.RawQuery = "token=" + clone.SecretID },
	} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+a.HTTPAddr()+"/v1/kv/app/x", nil)
		mod(req)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("token via %v: status %d", req.Header, resp.StatusCode)
		}
	}

	// Deleting the clone revokes it at once on this agent.
	if _, err := acls.TokenDelete(clone.AccessorID, nil); err != nil {
		t.Fatal(err)
	}
	wait.For(t, time.Second, func() error {
		_, _, err := reader.KV().Get("app/x", nil)
		if statusOf(err) != http.StatusForbidden {
			return fmt.Errorf("deleted token: %v", err)
		}
		return nil
	})
	if _, err := acls.RoleDelete(role.ID, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := acls.PolicyDelete(pol.ID, nil); err != nil {
		t.Fatal(err)
	}
	pols, _, _ = acls.PolicyList(nil)
	names := []string{}
	for _, p := range pols {
		names = append(names, p.Name)
	}
	sort.Strings(names)
	if strings.Join(names, ",") != "builtin/global-read-only,global-management" {
		t.Fatalf("policies after delete: %v", names)
	}
}

func TestACLBootstrapOnce(t *testing.T) {
	c := agenttest.Config(t)
	c.ACL.Enabled = true
	c.ACL.DefaultPolicy = "deny"
	a := agenttest.Start(t, c)
	anon := tokenClient(t, a, "")
	var boot *api.ACLToken
	wait.For(t, 20*time.Second, func() error {
		var err error
		boot, _, err = anon.ACL().Bootstrap()
		return err
	})
	if boot.SecretID == "" || len(boot.Policies) != 1 || boot.Policies[0].ID != "00000000-0000-0000-0000-000000000001" {
		t.Fatalf("bootstrap token = %+v", boot)
	}
	_, _, err := anon.ACL().Bootstrap()
	if statusOf(err) != http.StatusForbidden || !strings.Contains(err.Error(), "ACL bootstrap no longer allowed") {
		t.Fatalf("second bootstrap: %v", err)
	}
	mgmt := tokenClient(t, a, boot.SecretID)
	if _, err := mgmt.Agent().Self(); err != nil {
		t.Fatalf("management token on agent/self: %v", err)
	}
}

func TestACLExpiredTokenRefusedAndReaped(t *testing.T) {
	a := agenttest.Start(t, aclConfig(agenttest.Config(t)))
	root := tokenClient(t, a, rootSecret)
	waitManagement(t, root)
	tok, _, err := root.ACL().TokenCreate(&api.ACLToken{ExpirationTTL: 300 * time.Millisecond,
		Policies: []*api.ACLTokenPolicyLink{{ID: "00000000-0000-0000-0000-000000000001"}}}, nil)
	if err != nil || tok.ExpirationTime == nil {
		t.Fatalf("create: %+v %v", tok, err)
	}
	user := tokenClient(t, a, tok.SecretID)
	if _, err := user.Agent().Self(); err != nil && time.Now().Before(*tok.ExpirationTime) {
		t.Fatalf("fresh token refused: %v", err)
	}
	wait.For(t, 5*time.Second, func() error {
		if _, _, err := root.ACL().TokenRead(tok.AccessorID, nil); statusOf(err) != http.StatusForbidden {
			return fmt.Errorf("expired token not reaped yet (%v)", err)
		}
		return nil
	})
	if _, err := user.Agent().Self(); statusOf(err) != http.StatusForbidden || !strings.Contains(err.Error(), "ACL not found") {
		t.Fatalf("expired token: %v", err)
	}
	// A negative TTL is a bad request.
	if _, _, err := root.ACL().TokenCreate(&api.ACLToken{ExpirationTTL: -time.Second}, nil); statusOf(err) != http.StatusBadRequest {
		t.Fatalf("negative TTL: %v", err)
	}
}

func TestACLAgentTokenPersisted(t *testing.T) {
	c := aclConfig(agenttest.ClusterConfig(t, "s1", true, 1, ""))
	c.ACL.EnableTokenPersistence = true
	a := agenttest.Start(t, c)
	root := tokenClient(t, a, rootSecret)
	waitManagement(t, root)
	if _, err := root.KV().Put(&api.KVPair{Key: "app/x", Value: []byte("1")}, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := root.ACL().PolicyCreate(&api.ACLPolicy{Name: "app-read", Rules: `key_prefix "app/" { policy = "read" }`}, nil); err != nil {
		t.Fatal(err)
	}
	tok, _, err := root.ACL().TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{Name: "app-read"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	anon := tokenClient(t, a, "")
	if _, _, err := anon.KV().Get("app/x", nil); statusOf(err) != http.StatusForbidden {
		t.Fatalf("anonymous before the default token: %v", err)
	}
	if _, err := anon.Agent().UpdateDefaultACLToken(tok.SecretID, nil); statusOf(err) != http.StatusForbidden {
		t.Fatalf("setting a token needs acl:write: %v", err)
	}
	if _, err := root.Agent().UpdateDefaultACLToken(tok.SecretID, nil); err != nil {
		t.Fatalf("set default token: %v", err)
	}
	if kv, _, err := anon.KV().Get("app/x", nil); err != nil || kv == nil {
		t.Fatalf("request without a token after setting the default: %v %v", kv, err)
	}
	if self, _, err := anon.ACL().TokenReadSelf(nil); err != nil || self.AccessorID != tok.AccessorID {
		t.Fatalf("self with the default token: %+v %v", self, err)
	}

	// After a restart the persisted default token still applies.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	b := agenttest.Start(t, c)
	anon = tokenClient(t, b, "")
	wait.For(t, 10*time.Second, func() error {
		_, _, err := anon.KV().Get("app/x", nil)
		return err
	})
}

// TestACLsDoNotHoldUpTheCA: with ACLs on, the leader's token reaper runs for
// the whole leadership; the CA must still be initialised beside it (a merge
// once ran them one after the other and the CA never came).
func TestACLsDoNotHoldUpTheCA(t *testing.T) {
	a := agenttest.Start(t, aclConfig(agenttest.Config(t)))
	root := tokenClient(t, a, rootSecret)
	waitManagement(t, root)
	wait.For(t, 15*time.Second, func() error {
		roots, _, err := root.Agent().ConnectCARoots(nil)
		if err != nil {
			return err
		}
		if len(roots.Roots) == 0 || roots.ActiveRootID == "" {
			return fmt.Errorf("no CA roots yet: %+v", roots)
		}
		return nil
	})
}
