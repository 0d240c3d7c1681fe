package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tribune-mesh/tribune/agent/agenttest"
)

func TestACLCommands(t *testing.T) {
	c := agenttest.Config(t)
	c.ACL.Enabled = true
	c.ACL.DefaultPolicy = "deny"
	a := agenttest.Start(t, c)
	addr := "-http-addr=" + a.HTTPAddr()

	// Bootstrap (retried until the leader created the built-ins).
	var r result
	waitFor(t, 10*time.Second, func() (bool, string) {
		r = runCmd(runACLBootstrap, addr, "-format=json")
		return r.code == 0, r.String()
	})
	var boot struct{ AccessorID, SecretID string }
	if err := json.Unmarshal([]byte(r.stdout), &boot); err != nil || boot.SecretID == "" {
		t.Fatalf("bootstrap output %q: %v", r.stdout, err)
	}
	r = runCmd(runACLBootstrap, addr)
	if r.code != 1 || !strings.Contains(r.stderr, "ACL bootstrap no longer allowed") {
		t.Fatalf("second bootstrap: %v", r)
	}
	tok := "-token=" + boot.SecretID

	rules := filepath.Join(t.TempDir(), "rules.hcl")
	if err := os.WriteFile(rules, []byte(`key_prefix "app/" { policy = "write" }`), 0o600); err != nil {
		t.Fatal(err)
	}
	r = mustExec(t, runACLPolicyCreate, addr, tok, "-name=app", "-description=app keys", "-rules=@"+rules)
	assertContains(t, "policy create", r.stdout, "Name:         app")
	r = mustExec(t, runACLPolicyRead, addr, tok, "-name=app")
	assertContains(t, "policy read", r.stdout, `key_prefix "app/"`)
	r = mustExec(t, runACLPolicyList, addr, tok)
	assertContains(t, "policy list", r.stdout, "global-management:")
	if r := runCmd(runACLPolicyCreate, addr, tok, "-name=bad", "-rules=key {"); r.code != 1 || !strings.Contains(r.stderr, "Failed to parse ACL rules") {
		t.Fatalf("bad rules: %v", r)
	}

	r = mustExec(t, runACLTokenCreate, addr, tok, "-description=app writer", "-policy-name=app", "-format=json")
	var created struct{ AccessorID, SecretID string }
	if err := json.Unmarshal([]byte(r.stdout), &created); err != nil {
		t.Fatal(err)
	}
	r = mustExec(t, runACLTokenRead, addr, tok, "-id="+created.AccessorID)
	assertContains(t, "token read", r.stdout, "app writer")
	assertContains(t, "token read", r.stdout, " - app")
	r = mustExec(t, runACLTokenRead, addr, "-token="+created.SecretID, "-self")
	assertContains(t, "token read -self", r.stdout, created.AccessorID)
	r = mustExec(t, runACLTokenList, addr, tok)
	assertContains(t, "token list", r.stdout, created.AccessorID)

	// The new token writes app/ and is refused elsewhere.
	mustExec(t, kvPutCommand(strings.NewReader("")), addr, "-token="+created.SecretID, "app/x", "1")
	if r := runCmd(kvPutCommand(strings.NewReader("")), addr, "-token="+created.SecretID, "other", "1"); r.code == 0 || !strings.Contains(r.stderr, "Permission denied") {
		t.Fatalf("write outside the policy: %v", r)
	}
	// Update, clone and policy update.
	r = mustExec(t, runACLTokenUpdate, addr, tok, "-id="+created.AccessorID, "-description=app writer 2", "-service-identity=web", "-node-identity=n1:dc1")
	assertContains(t, "token update", r.stdout, "app writer 2")
	assertContains(t, "token update keeps policies", r.stdout, " - app")
	assertContains(t, "token update", r.stdout, "web (Datacenters: all)")
	assertContains(t, "token update", r.stdout, "n1 (Datacenter: dc1)")
	r = mustExec(t, runACLTokenClone, addr, tok, "-id="+created.AccessorID, "-description=copy")
	assertContains(t, "token clone", r.stdout, "Description:      copy")
	assertContains(t, "token clone", r.stdout, " - app")
	r = mustExec(t, runACLPolicyUpdate, addr, tok, "-name=app", "-description=all app keys")
	assertContains(t, "policy update", r.stdout, "all app keys")
	assertContains(t, "policy update keeps rules", r.stdout, `key_prefix "app/"`)
	mustExec(t, runACLTokenDelete, addr, tok, "-id="+created.AccessorID)
	waitFor(t, time.Second, func() (bool, string) {
		r := runCmd(kvPutCommand(strings.NewReader("")), addr, "-token="+created.SecretID, "app/x", "2")
		return r.code != 0 && strings.Contains(r.stderr, "ACL not found"), r.String()
	})
	mustExec(t, runACLPolicyDelete, addr, tok, "-name=app")
}
