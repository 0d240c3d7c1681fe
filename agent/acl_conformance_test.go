package agent_test

// The official client's ACL tests that failed against Tribune
// (TestAPI_ACLBootstrap, ACLPolicy_List, ACLToken_ListFiltered,
// AgentUpdateToken, AuthMethod_List, ACLReplication), their expectations
// checked here through the same client, plus what Consul documents around
// them (the bootstrap reset file, token persistence across a restart).

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/agent/agenttest"
	"github.com/tribune-mesh/tribune/test/wait"
)

func TestACLBootstrapMessagesAndResetFile(t *testing.T) {
	cfg := agenttest.Config(t)
	cfg.DataDir = t.TempDir()
	cfg.ACL.Enabled, cfg.ACL.DefaultPolicy = true, "deny"
	a := agenttest.Start(t, cfg)
	anon := tokenClient(t, a, "")
	acls := anon.ACL()

	// Not bootstrapped: the anonymous token is named as such, an unknown
	// token is explained.
	wait.For(t, 20*time.Second, func() error {
		_, _, err := acls.TokenList(nil)
		want := "Unexpected response code: 403 (Permission denied: anonymous token lacks permission 'acl:read'. The anonymous token is used implicitly when a request does not specify a token.)"
		if err == nil || err.Error() != want {
			return fmt.Errorf("anonymous token list: %v", err)
		}
		return nil
	})
	_, _, err := tokenClient(t, a, "root").ACL().TokenList(nil)
	if err == nil || err.Error() != "Unexpected response code: 403 (ACL system must be bootstrapped before making any requests that require authorization: ACL not found)" {
		t.Fatalf("unknown token before bootstrap: %v", err)
	}

	mgmt, _, err := acls.Bootstrap()
	if err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	// Management and anonymous (which the leader creates concurrently).
	wait.For(t, 10*time.Second, func() error {
		toks, _, err := tokenClient(t, a, mgmt.SecretID).ACL().TokenList(nil)
		if err != nil || len(toks) != 2 {
			return fmt.Errorf("tokens after bootstrap: %d, %v", len(toks), err)
		}
		return nil
	})
	if _, _, err := tokenClient(t, a, "root").ACL().TokenList(nil); err == nil || !strings.Contains(err.Error(), "(ACL not found)") {
		t.Fatalf("unknown token after bootstrap: %v", err)
	}

	// A second bootstrap is refused with the reset index; writing it to
	// the reset file allows exactly one more.
	_, _, err = acls.Bootstrap()
	m := regexp.MustCompile(`ACL bootstrap no longer allowed \(reset index: (\d+)\)`).FindStringSubmatch(fmt.Sprint(err))
	if statusOf(err) != http.StatusForbidden || m == nil {
		t.Fatalf("second bootstrap: %v", err)
	}
	resetFile := filepath.Join(cfg.DataDir, "acl-bootstrap-reset")
	if err := os.WriteFile(resetFile, []byte("1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := acls.Bootstrap(); statusOf(err) != http.StatusForbidden {
		t.Fatalf("bootstrap with a wrong reset index: %v", err)
	}
	if err := os.WriteFile(resetFile, []byte(m[1]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The reset index comes from the leader's file only, and an operator
	// may choose the new SecretID.
	const chosen = "6f1c2a3b-0000-4000-8000-00000000b007"
	again, _, err := acls.BootstrapWithToken(chosen)
	if err != nil || again.SecretID != chosen {
		t.Fatalf("bootstrap after reset: %+v, %v", again, err)
	}
	if _, err := os.Stat(resetFile); !os.IsNotExist(err) {
		t.Fatalf("reset file left behind: %v", err)
	}
	if _, _, err := acls.Bootstrap(); statusOf(err) != http.StatusForbidden {
		t.Fatalf("bootstrap after the reset was spent: %v", err)
	}
	if _, _, err := tokenClient(t, a, again.SecretID).ACL().TokenReadSelf(nil); err != nil {
		t.Fatalf("new management token: %v", err)
	}
}

func TestACLPolicyListBuiltinsAndReplication(t *testing.T) {
	a := agenttest.Start(t, aclConfig(agenttest.Config(t)))
	root := tokenClient(t, a, rootSecret)
	waitManagement(t, root)
	acls := root.ACL()

	created, _, err := acls.PolicyCreate(&api.ACLPolicy{Name: "policy1", Description: "d1", Rules: `node_prefix "" { policy = "read" }`,
		Datacenters: []string{"dc1"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pols, qm, err := acls.PolicyList(nil)
	if err != nil || len(pols) != 3 || qm.LastIndex == 0 || !qm.KnownLeader {
		t.Fatalf("policy list: %d, %+v, %v", len(pols), qm, err)
	}
	byID := map[string]*api.ACLPolicyListEntry{}
	for _, p := range pols {
		byID[p.ID] = p
	}
	if p := byID[created.ID]; p == nil || p.CreateIndex != created.CreateIndex || p.ModifyIndex != created.ModifyIndex ||
		len(p.Datacenters) != 1 || p.Description != "d1" {
		t.Fatalf("listed policy = %+v", p)
	}
	ro := byID["00000000-0000-0000-0000-000000000002"]
	if byID["00000000-0000-0000-0000-000000000001"] == nil || ro == nil || ro.Name != "builtin/global-read-only" {
		t.Fatalf("built-in policies missing: %+v", byID)
	}
	// The read-only policy reads everything and writes nothing.
	tok, _, err := acls.TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{ID: ro.ID}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	reader := tokenClient(t, a, tok.SecretID)
	if _, _, err := reader.ACL().PolicyList(nil); err != nil {
		t.Fatalf("read-only token lists policies: %v", err)
	}
	if _, err := reader.KV().Put(&api.KVPair{Key: "x", Value: []byte("1")}, nil); statusOf(err) != http.StatusForbidden {
		t.Fatalf("read-only token writes: %v", err)
	}
	if _, err := acls.PolicyDelete(ro.ID, nil); statusOf(err) != http.StatusBadRequest {
		t.Fatalf("delete the read-only policy: %v", err)
	}

	repl, qm2, err := acls.Replication(nil)
	if err != nil || repl == nil || repl.Enabled || repl.Running || repl.SourceDatacenter != "dc1" || qm2.RequestTime == 0 {
		t.Fatalf("replication status: %+v, %v", repl, err)
	}
}

func TestACLTokenListFilteredAndAuthMethodList(t *testing.T) {
	a := agenttest.Start(t, aclConfig(agenttest.Config(t)))
	root := tokenClient(t, a, rootSecret)
	waitManagement(t, root)
	acls := root.ACL()

	for _, c := range []struct {
		desc string
		svcs []string
	}{{"token1", []string{"s1"}}, {"token2", []string{"s2"}}, {"token3", []string{"s1", "s2"}}} {
		tok := &api.ACLToken{Description: c.desc}
		for _, s := range c.svcs {
			tok.ServiceIdentities = append(tok.ServiceIdentities, &api.ACLServiceIdentity{ServiceName: s})
		}
		if _, _, err := acls.TokenCreate(tok, nil); err != nil {
			t.Fatal(err)
		}
	}
	for svc, want := range map[string]string{"s1": "token1,token3", "s2": "token2,token3", "nothing": ""} {
		toks, qm, err := acls.TokenListFiltered(api.ACLTokenFilterOptions{ServiceName: svc}, nil)
		if err != nil || qm.LastIndex == 0 || !qm.KnownLeader {
			t.Fatalf("filter %s: %v", svc, err)
		}
		var got []string
		for _, tok := range toks {
			got = append(got, tok.Description)
		}
		if strings.Join(got, ",") != want && strings.Join(reverse(got), ",") != want {
			t.Fatalf("servicename=%s: %v, want %s", svc, got, want)
		}
	}
	if _, _, err := acls.TokenListFiltered(api.ACLTokenFilterOptions{ServiceName: "s", AuthMethod: "a"}, nil); err == nil ||
		!strings.Contains(err.Error(), "can only filter by one of") {
		t.Fatalf("two filters: %v", err)
	}

	// Kubernetes methods are listed in name order with their TTL and
	// locality.
	k8s := map[string]any{"Host": "https://192.0.2.42:8443", "CACert": "pem", "ServiceAccountJWT": "jwt"}
	m1, wm, err := acls.AuthMethodCreate(&api.ACLAuthMethod{Name: "test_1", Type: "kubernetes", Description: "test 1",
		MaxTokenTTL: 260 * time.Second, TokenLocality: "global", Config: k8s}, nil)
	if err != nil || m1.Name != "test_1" || wm.RequestTime == 0 {
		t.Fatalf("create: %+v, %v", m1, err)
	}
	if _, _, err := acls.AuthMethodCreate(&api.ACLAuthMethod{Name: "test_2", Type: "kubernetes", TokenLocality: "local", Config: k8s}, nil); err != nil {
		t.Fatal(err)
	}
	list, _, err := acls.AuthMethodList(nil)
	if err != nil || len(list) != 2 || list[0].Name != "test_1" || list[0].MaxTokenTTL != 260*time.Second || list[0].TokenLocality != "global" ||
		list[1].Name != "test_2" || list[1].MaxTokenTTL != 0 || list[1].TokenLocality != "local" {
		t.Fatalf("auth method list: %+v, %v", list, err)
	}
}

func reverse(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[len(s)-1-i] = v
	}
	return out
}

func TestAgentUpdateTokenPersistedAcrossRestart(t *testing.T) {
	cfg := aclConfig(agenttest.Config(t))
	cfg.DataDir = t.TempDir()
	cfg.ACL.EnableTokenPersistence = true
	a := agenttest.Start(t, cfg)
	root := tokenClient(t, a, rootSecret)
	waitManagement(t, root)
	if _, err := root.KV().Put(&api.KVPair{Key: "app/x", Value: []byte("1")}, nil); err != nil {
		t.Fatal(err)
	}
	_, reader := readerToken(t, root)

	ag := root.Agent()
	for name, set := range map[string]func(string, *api.WriteOptions) (*api.WriteMeta, error){
		"agent": ag.UpdateAgentACLToken, "agent_master": ag.UpdateAgentMasterACLToken,
		"agent_recovery": ag.UpdateAgentRecoveryACLToken, "replication": ag.UpdateReplicationACLToken,
		"config_file_service_registration": ag.UpdateConfigFileRegistrationToken,
	} {
		if _, err := set(rootSecret+"-"+name, nil); err != nil {
			t.Fatalf("set %s: %v", name, err)
		}
	}
	// The legacy paths older clients fall back to when the new ones 404.
	put := func(kind, secret, body string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPut, "http://"+a.HTTPAddr()+"/v1/agent/token/"+kind, strings.NewReader(body))
		req.Header.Set("X-Consul-Token", secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, kind := range []string{"acl_token", "acl_agent_token", "acl_agent_master_token", "acl_replication_token"} {
		if code := put(kind, rootSecret, `{"Token":"`+rootSecret+"-"+kind+`"}`); code != http.StatusOK {
			t.Fatalf("set %s: %d", kind, code)
		}
	}
	if _, err := ag.UpdateDefaultACLToken(reader, nil); err != nil {
		t.Fatal(err)
	}
	// Requests without a token now use the default token.
	anon := tokenClient(t, a, "")
	if _, _, err := anon.KV().Get("app/x", nil); err != nil {
		t.Fatalf("read with the default token: %v", err)
	}
	// Unknown kinds are 404; a denied caller gets 403.
	if code := put("nope", rootSecret, `{"Token":"x"}`); code != http.StatusNotFound {
		t.Fatalf("unknown kind: %d", code)
	}
	if _, err := anon.Agent().UpdateAgentACLToken("x", nil); statusOf(err) != http.StatusForbidden {
		t.Fatalf("set without acl:write: %v", err)
	}

	b, err := os.ReadFile(filepath.Join(cfg.DataDir, "acl-tokens.json"))
	if err != nil {
		t.Fatal(err)
	}
	var saved map[string]string
	if err := json.Unmarshal(b, &saved); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"agent": rootSecret + "-acl_agent_token", "agent_recovery": rootSecret + "-acl_agent_master_token",
		"replication": rootSecret + "-acl_replication_token", "config_file_service_registration": rootSecret + "-config_file_service_registration",
		"default": reader}
	for k, v := range want {
		// Aliases set the same token: whichever ran last wins.
		if got := saved[k]; got == "" || (k != "default" && !strings.HasPrefix(got, rootSecret+"-")) || k == "default" && got != v {
			t.Fatalf("persisted %s = %q (file %s)", k, got, b)
		}
	}

	// A restart loads the persisted tokens over the configured ones.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	a2 := agenttest.Start(t, cfg)
	wait.For(t, 20*time.Second, func() error {
		_, _, err := tokenClient(t, a2, "").KV().Get("app/x", nil)
		return err
	})
}

// TestAgentRecoveryTokenThatIsTheManagementToken is TestAPI_AgentUpdateToken
// of the official client: it sets its management token as agent_recovery
// (through agent_master) and then updates the other tokens with it, which
// needs acl:write: a secret the servers know keeps its own rights.
func TestAgentRecoveryTokenThatIsTheManagementToken(t *testing.T) {
	a := agenttest.Start(t, aclConfig(agenttest.Config(t)))
	root := tokenClient(t, a, rootSecret)
	waitManagement(t, root)
	ag := root.Agent()
	if _, err := ag.UpdateAgentMasterACLToken(rootSecret, nil); err != nil {
		t.Fatalf("set agent_master: %v", err)
	}
	for name, set := range map[string]func(string, *api.WriteOptions) (*api.WriteMeta, error){
		"agent_recovery": ag.UpdateAgentRecoveryACLToken, "replication": ag.UpdateReplicationACLToken,
		"config_file_service_registration": ag.UpdateConfigFileRegistrationToken,
	} {
		if _, err := set(rootSecret, nil); err != nil {
			t.Fatalf("set %s with the management token that is also agent_recovery: %v", name, err)
		}
	}
	if _, _, err := root.ACL().TokenList(nil); err != nil {
		t.Fatalf("token list with the management token that is also agent_recovery: %v", err)
	}
}
