package acl

import (
	"errors"
	"strings"
	"testing"
)

func mustParse(t *testing.T, src string) *Rules {
	t.Helper()
	r, err := ParseRules(src)
	if err != nil {
		t.Fatalf("ParseRules(%q): %v", src, err)
	}
	return r
}

func authz(t *testing.T, opts PolicyOptions, srcs ...string) *PolicyAuthorizer {
	t.Helper()
	var rs []*Rules
	for _, s := range srcs {
		rs = append(rs, mustParse(t, s))
	}
	return NewPolicyAuthorizer(rs, opts)
}

func TestPolicyPrecedence(t *testing.T) {
	deny := PolicyOptions{}
	allow := PolicyOptions{DefaultAllow: true}
	cases := []struct {
		name     string
		opts     PolicyOptions
		policies []string
		check    func(a *PolicyAuthorizer) Decision
		want     Decision
	}{
		{"no rule, default deny", deny, nil, func(a *PolicyAuthorizer) Decision { return a.KeyRead("x") }, Deny},
		{"no rule, default allow", allow, nil, func(a *PolicyAuthorizer) Decision { return a.KeyWrite("x") }, Allow},
		{"exact beats longer prefix", deny,
			[]string{`key_prefix "app/db" { policy = "write" }
key "app/db/pass" { policy = "deny" }`},
			func(a *PolicyAuthorizer) Decision { return a.KeyRead("app/db/pass") }, Deny},
		{"exact beats prefix the other way", deny,
			[]string{`key_prefix "" { policy = "deny" }
key "app/x" { policy = "read" }`},
			func(a *PolicyAuthorizer) Decision { return a.KeyRead("app/x") }, Allow},
		{"longest prefix wins", deny,
			[]string{`key_prefix "app/" { policy = "write" }
key_prefix "app/secret/" { policy = "deny" }`},
			func(a *PolicyAuthorizer) Decision { return a.KeyRead("app/secret/k") }, Deny},
		{"shorter prefix applies outside the longer", deny,
			[]string{`key_prefix "app/" { policy = "write" }
key_prefix "app/secret/" { policy = "deny" }`},
			func(a *PolicyAuthorizer) Decision { return a.KeyWrite("app/public") }, Allow},
		{"read rule refuses write even with default allow", allow,
			[]string{`key "k" { policy = "read" }`},
			func(a *PolicyAuthorizer) Decision { return a.KeyWrite("k") }, Deny},
		{"deny wins across policies", deny,
			[]string{`service "web" { policy = "write" }`, `service "web" { policy = "deny" }`},
			func(a *PolicyAuthorizer) Decision { return a.ServiceRead("web") }, Deny},
		{"write beats read across policies", deny,
			[]string{`service "web" { policy = "read" }`, `service "web" { policy = "write" }`},
			func(a *PolicyAuthorizer) Decision { return a.ServiceWrite("web") }, Allow},
		{"same prefix merged across policies", deny,
			[]string{`node_prefix "" { policy = "read" }`, `node_prefix "" { policy = "write" }`},
			func(a *PolicyAuthorizer) Decision { return a.NodeWrite("n1") }, Allow},
		{"exact from one policy beats prefix of another", deny,
			[]string{`node_prefix "" { policy = "write" }`, `node "db1" { policy = "read" }`},
			func(a *PolicyAuthorizer) Decision { return a.NodeWrite("db1") }, Deny},
		{"list needs list with key list policy", PolicyOptions{EnableKeyList: true},
			[]string{`key_prefix "a/" { policy = "read" }`},
			func(a *PolicyAuthorizer) Decision { return a.KeyList("a/") }, Deny},
		{"list rule grants list", PolicyOptions{EnableKeyList: true},
			[]string{`key_prefix "a/" { policy = "list" }`},
			func(a *PolicyAuthorizer) Decision { return a.KeyList("a/") }, Allow},
		{"list rule grants read", PolicyOptions{EnableKeyList: true},
			[]string{`key_prefix "a/" { policy = "list" }`},
			func(a *PolicyAuthorizer) Decision { return a.KeyRead("a/b") }, Allow},
		{"list rule does not grant write", PolicyOptions{EnableKeyList: true},
			[]string{`key_prefix "a/" { policy = "list" }`},
			func(a *PolicyAuthorizer) Decision { return a.KeyWrite("a/b") }, Deny},
		{"without key list policy read lists", deny,
			[]string{`key_prefix "a/" { policy = "read" }`},
			func(a *PolicyAuthorizer) Decision { return a.KeyList("a/") }, Allow},
		{"recursive delete needs write beneath", deny,
			[]string{`key_prefix "a/" { policy = "write" }
key "a/locked" { policy = "read" }`},
			func(a *PolicyAuthorizer) Decision { return a.KeyWritePrefix("a/") }, Deny},
		{"recursive delete with write everywhere", deny,
			[]string{`key_prefix "a/" { policy = "write" }
key "a/b" { policy = "write" }`},
			func(a *PolicyAuthorizer) Decision { return a.KeyWritePrefix("a/") }, Allow},
		{"recursive delete needs write on the prefix itself", deny,
			[]string{`key "a/b" { policy = "write" }`},
			func(a *PolicyAuthorizer) Decision { return a.KeyWritePrefix("a/") }, Deny},
		{"service read implies intentions read", deny,
			[]string{`service "db" { policy = "read" }`},
			func(a *PolicyAuthorizer) Decision { return a.IntentionRead("db") }, Allow},
		{"service write does not imply intentions write", deny,
			[]string{`service "db" { policy = "write" }`},
			func(a *PolicyAuthorizer) Decision { return a.IntentionWrite("db") }, Deny},
		{"intentions field grants intentions write", deny,
			[]string{`service_prefix "" { policy = "read" intentions = "write" }`},
			func(a *PolicyAuthorizer) Decision { return a.IntentionWrite("db") }, Allow},
		{"intentions deny", allow,
			[]string{`service "db" { policy = "write" intentions = "deny" }`},
			func(a *PolicyAuthorizer) Decision { return a.IntentionRead("db") }, Deny},
		{"operator scalar", deny, []string{`operator = "read"`},
			func(a *PolicyAuthorizer) Decision { return a.OperatorWrite() }, Deny},
		{"mesh falls back to operator", deny, []string{`operator = "write"`},
			func(a *PolicyAuthorizer) Decision { return a.MeshWrite() }, Allow},
		{"mesh set overrides operator", deny, []string{`operator = "write"
mesh = "read"`},
			func(a *PolicyAuthorizer) Decision { return a.MeshWrite() }, Deny},
		{"acl scalar deny across policies", allow, []string{`acl = "write"`, `acl = "deny"`},
			func(a *PolicyAuthorizer) Decision { return a.ACLRead() }, Deny},
		{"json form", deny,
			[]string{`{"key_prefix": {"": {"policy": "read"}}, "service": {"web": {"policy": "write"}}, "keyring": "write"}`},
			func(a *PolicyAuthorizer) Decision {
				if a.KeyRead("any") != Allow || a.ServiceWrite("web") != Allow || a.KeyringWrite() != Allow {
					return Deny
				}
				return a.KeyWrite("any")
			}, Deny},
		{"session, event, query, agent prefixes", deny,
			[]string{`session_prefix "" { policy = "write" }
event_prefix "deploy-" { policy = "write" }
query "q1" { policy = "read" }
agent_prefix "node-" { policy = "read" }`},
			func(a *PolicyAuthorizer) Decision {
				if a.SessionWrite("n") != Allow || a.EventWrite("deploy-x") != Allow || a.EventWrite("other") != Deny ||
					a.QueryRead("q1") != Allow || a.QueryWrite("q1") != Deny || a.AgentRead("node-1") != Allow {
					return Deny
				}
				return a.AgentWrite("node-1")
			}, Deny},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := authz(t, c.opts, c.policies...)
			if got := c.check(a); got != c.want {
				t.Fatalf("got %v, want %v", got, c.want)
			}
		})
	}
}

func TestIdentities(t *testing.T) {
	a := NewPolicyAuthorizer([]*Rules{ServiceIdentityRules("web")}, PolicyOptions{})
	for _, c := range []struct {
		got, want Decision
		what      string
	}{
		{a.ServiceWrite("web"), Allow, "service:write web"},
		{a.ServiceWrite("web-sidecar-proxy"), Allow, "service:write sidecar"},
		{a.ServiceWrite("db"), Deny, "service:write db"},
		{a.ServiceRead("db"), Allow, "service:read db"},
		{a.NodeRead("n1"), Allow, "node:read"},
		{a.NodeWrite("n1"), Deny, "node:write"},
		{a.KeyRead("k"), Deny, "key:read"},
	} {
		if c.got != c.want {
			t.Errorf("service identity %s: got %v want %v", c.what, c.got, c.want)
		}
	}
	n := NewPolicyAuthorizer([]*Rules{NodeIdentityRules("n1")}, PolicyOptions{})
	if n.NodeWrite("n1") != Allow || n.NodeWrite("n2") != Deny || n.ServiceRead("x") != Allow || n.ServiceWrite("x") != Deny {
		t.Error("node identity rules wrong")
	}
}

func TestGlobalManagementGrantsEverything(t *testing.T) {
	a := NewPolicyAuthorizer([]*Rules{mustParse(t, GlobalManagementRules)}, PolicyOptions{})
	ds := []Decision{a.KeyWritePrefix(""), a.ACLWrite(), a.OperatorWrite(), a.KeyringWrite(), a.MeshWrite(),
		a.PeeringWrite(), a.ServiceWrite("x"), a.IntentionWrite("x"), a.NodeWrite("x"), a.AgentWrite("x"),
		a.SessionWrite("x"), a.EventWrite("x"), a.QueryWrite("x")}
	for i, d := range ds {
		if d != Allow {
			t.Errorf("check %d denied for global-management", i)
		}
	}
}

func TestParseRulesErrorsNameTheLine(t *testing.T) {
	cases := []struct {
		src  string
		line int
		want string
	}{
		{"key \"a\" { policy = \"read\" }\nkey \"b\" { policy = \"admin\" }", 2, "invalid level"},
		{"\n\nservice \"a\" { policy = \"list\" }", 3, "only on key rules"},
		{"bogus \"a\" { policy = \"read\" }", 1, "unknown rule"},
		{"key \"a\" { polcy = \"read\" }", 1, "unknown field"},
		{"key \"a\" { }", 1, "no policy"},
		{"operator = \"sometimes\"", 1, "invalid level"},
		{"node \"a\" { intentions = \"read\" }", 1, "unknown field"},
		{"key \"a\" \"b\" { policy = \"read\" }", 1, "exactly one name"},
		{"key \"a\" = \"read\"", 1, "expected"},
		{"key = \"read\"", 1, "must be a block"},
	}
	for _, c := range cases {
		_, err := ParseRules(c.src)
		var pe *ParseError
		if !errors.As(err, &pe) {
			t.Errorf("ParseRules(%q) = %v, want a *ParseError", c.src, err)
			continue
		}
		if pe.Line != c.line || !strings.Contains(pe.Msg, c.want) {
			t.Errorf("ParseRules(%q): line %d %q, want line %d containing %q", c.src, pe.Line, pe.Msg, c.line, c.want)
		}
	}
	if _, err := ParseRules("key \"a\" {"); err == nil {
		t.Error("unterminated block parsed")
	}
	if _, err := ParseRules(strings.Repeat(" ", MaxRulesBytes+1)); err == nil {
		t.Error("rules over the size limit parsed")
	}
}

func TestParseRulesEmptyAndNestedForms(t *testing.T) {
	r := mustParse(t, "  \n")
	if len(r.Named) != 0 || len(r.Scalars) != 0 {
		t.Fatal("empty rules produced rules")
	}
	r = mustParse(t, `key { "a" { policy = "read" } "b" { policy = "write" } }`)
	if len(r.Named) != 2 {
		t.Fatalf("nested HCL form: %d rules, want 2", len(r.Named))
	}
}

func FuzzParseRules(f *testing.F) {
	f.Add(GlobalManagementRules)
	f.Add(`{"key_prefix": {"": {"policy": "read"}}}`)
	f.Add(`service "web" { policy = "read" intentions = "write" }`)
	f.Add(`key { "a" { policy = "list" } }`)
	f.Add(`operator = "read"` + "\n" + `mesh = "deny"`)
	f.Add(`{"key": [{"a": {"policy": "read"}}]}`)
	f.Fuzz(func(t *testing.T, src string) {
		r, err := ParseRules(src)
		if err != nil {
			return
		}
		a := NewPolicyAuthorizer([]*Rules{r}, PolicyOptions{EnableKeyList: true})
		for _, n := range []string{"", "a", "a/b", src} {
			_ = a.KeyRead(n) + a.KeyList(n) + a.KeyWritePrefix(n) + a.ServiceWrite(n) + a.IntentionRead(n)
		}
		_ = a.OperatorRead() + a.MeshWrite()
	})
}
