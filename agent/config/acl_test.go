package config

import (
	"strings"
	"testing"
	"time"
)

func TestACLConfig(t *testing.T) {
	p := writeFile(t, t.TempDir(), "acl.hcl", `
acl {
  enabled = true
  default_policy = "deny"
  down_policy = "async-cache"
  token_ttl = "10s"
  enable_key_list_policy = true
  enable_token_persistence = true
  tokens {
    initial_management = "root"
    agent = "agent-secret"
    default = "dflt"
    agent_recovery = "recovery"
  }
}`)
	c, _ := mustLoad(t, "-data-dir", "/d", "-config-file", p)
	a := c.ACL
	if !a.Enabled || a.DefaultPolicy != "deny" || a.DownPolicy != "async-cache" || a.TokenTTL != 10*time.Second ||
		!a.EnableKeyListPolicy || !a.EnableTokenPersistence || a.Tokens.InitialManagement != "root" ||
		a.Tokens.Agent != "agent-secret" || a.Tokens.Default != "dflt" || a.Tokens.AgentRecovery != "recovery" {
		t.Fatalf("acl = %+v", a)
	}
}

func TestACLLegacyKeys(t *testing.T) {
	p := writeFile(t, t.TempDir(), "x.json", `{"acl_master_token": "root", "acl_token": "d", "acl_default_policy": "deny", "acl_ttl": "5s"}`)
	c, warnings := mustLoad(t, "-data-dir", "/d", "-config-file", p)
	if c.ACL.Tokens.InitialManagement != "root" || c.ACL.Tokens.Default != "d" || c.ACL.DefaultPolicy != "deny" || c.ACL.TokenTTL != 5*time.Second {
		t.Fatalf("acl = %+v", c.ACL)
	}
	if !containsSubstring(warnings, "acl.tokens.initial_management") {
		t.Fatalf("no deprecation warning in %q", warnings)
	}
}

func TestACLTokenValidation(t *testing.T) {
	for _, tc := range []struct{ file, want string }{
		{`{"acl": {"tokens": {"agent": "abc\n"}}}`, "acl.tokens.agent: must not contain whitespace"},
		{`{"acl": {"tokens": {"initial_management": "anonymous"}}}`, "anonymous token's secret"},
		{`{"acl": {"tokens": {"initial_management": "x", "agent_recovery": "x"}}}`, "must differ"},
		{`{"acl": {"tokens": {"default": "` + strings.Repeat("a", 300) + `"}}}`, "longer than 256"},
	} {
		p := writeFile(t, t.TempDir(), "x.json", tc.file)
		_, _, err := load("-data-dir", "/d", "-config-file", p)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.file, err, tc.want)
		}
	}
}
