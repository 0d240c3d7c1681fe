package catalog_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/tribune-mesh/tribune/catalog"
)

func TestACLAuthMethodsBindingRulesAndLoginTokens(t *testing.T) {
	s := newStore(t)
	f := catalog.NewFSM(s, nil)
	method := &catalog.ACLAuthMethod{Name: "k8s", Type: "jwt", MaxTokenTTL: 3600e9, Config: map[string]any{"BoundIssuer": "me"}}
	mustApply(t, f, 1, catalog.CmdACLAuthMethod, &catalog.ACLAuthMethodRequest{Op: catalog.ACLOpSet, Method: method})
	mustApply(t, f, 2, catalog.CmdACLAuthMethod, &catalog.ACLAuthMethodRequest{Op: catalog.ACLOpSet,
		Method: &catalog.ACLAuthMethod{Name: "other", Type: "jwt"}})

	// A rule of an unknown method is refused; a method's Type is fixed.
	for _, c := range []struct {
		ct   catalog.CommandType
		body any
	}{
		{catalog.CmdACLBindingRule, &catalog.ACLBindingRuleRequest{Op: catalog.ACLOpSet, Rule: &catalog.ACLBindingRule{ID: "r0", AuthMethod: "nope", BindType: "service", BindName: "x"}}},
		{catalog.CmdACLAuthMethod, &catalog.ACLAuthMethodRequest{Op: catalog.ACLOpSet, Method: &catalog.ACLAuthMethod{Name: "k8s", Type: "kubernetes"}}},
		{catalog.CmdACLTokenSet, &catalog.ACLToken{AccessorID: "l0", SecretID: "ls0", AuthMethod: "nope"}},
	} {
		if err, _ := applyCmd(t, f, 3, c.ct, c.body).(error); !errors.Is(err, catalog.ErrInvalidRequest) {
			t.Fatalf("command %d: got %v, want ErrInvalidRequest", c.ct, err)
		}
	}
	mustApply(t, f, 4, catalog.CmdACLBindingRule, &catalog.ACLBindingRuleRequest{Op: catalog.ACLOpSet,
		Rule: &catalog.ACLBindingRule{ID: "r1", AuthMethod: "k8s", BindType: "service", BindName: "${value.name}"}})
	mustApply(t, f, 5, catalog.CmdACLBindingRule, &catalog.ACLBindingRuleRequest{Op: catalog.ACLOpSet,
		Rule: &catalog.ACLBindingRule{ID: "r2", AuthMethod: "other", BindType: "role", BindName: "ops"}})
	mustApply(t, f, 6, catalog.CmdACLTokenSet, &catalog.ACLToken{AccessorID: "l1", SecretID: "ls1", AuthMethod: "k8s"})
	mustApply(t, f, 7, catalog.CmdACLTokenSet, &catalog.ACLToken{AccessorID: "l2", SecretID: "ls2", AuthMethod: "other"})
	// An update of a method keeps its creation index.
	mustApply(t, f, 8, catalog.CmdACLAuthMethod, &catalog.ACLAuthMethodRequest{Op: catalog.ACLOpSet,
		Method: &catalog.ACLAuthMethod{Name: "k8s", Type: "jwt", Description: "updated"}})

	idx, resp, err := s.Execute(nil, &catalog.ReadRequest{Op: catalog.ReadACLAuthMethod, Name: "k8s"})
	if err != nil || idx != 8 || len(resp.ACLAuthMethods) != 1 {
		t.Fatalf("method read at %d: %+v, %v", idx, resp, err)
	}
	_, rresp, err := s.Execute(nil, &catalog.ReadRequest{Op: catalog.ReadACLBindingRules, Name: "k8s"})
	if err != nil || len(rresp.ACLBindingRules) != 1 || rresp.ACLBindingRules[0].ID != "r1" {
		t.Fatalf("rules of k8s: %+v, %v", rresp, err)
	}
	if m := resp.ACLAuthMethods[0]; m.CreateIndex != 1 || m.ModifyIndex != 8 || m.Description != "updated" {
		t.Fatalf("updated method = %+v", m)
	}
	_, all, _ := s.ACLBindingRuleList(nil, "")
	_, methods, _ := s.ACLAuthMethodList(nil)
	if len(all) != 2 || len(methods) != 2 || methods[0].Name != "k8s" {
		t.Fatalf("%d rules, %d methods", len(all), len(methods))
	}

	// A snapshot carries methods and rules.
	var buf bytes.Buffer
	if err := s.Dump(&buf); err != nil {
		t.Fatal(err)
	}
	s2 := newStore(t)
	if err := s2.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	if _, r, _ := s2.ACLBindingRuleGet(nil, "r1"); r == nil || r.BindName != "${value.name}" {
		t.Fatalf("restored rule = %+v", r)
	}

	// Deleting a method deletes its rules and its login tokens, nothing
	// else.
	mustApply(t, f, 9, catalog.CmdACLAuthMethod, &catalog.ACLAuthMethodRequest{Op: catalog.ACLOpDelete, Name: "k8s"})
	if _, m, _ := s.ACLAuthMethodGet(nil, "k8s"); m != nil {
		t.Fatal("deleted method still found")
	}
	if _, r, _ := s.ACLBindingRuleGet(nil, "r1"); r != nil {
		t.Fatal("rule of a deleted method still found")
	}
	if _, tok, _ := s.ACLTokenGet(nil, "l1", false); tok != nil {
		t.Fatal("login token of a deleted method still found")
	}
	if _, tok, _ := s.ACLTokenGet(nil, "l2", false); tok == nil {
		t.Fatal("login token of another method deleted")
	}
	if got := mustIndex(t, s, nil); got != 9 {
		t.Fatalf("ACL index after method delete = %d, want 9", got)
	}
	mustApply(t, f, 10, catalog.CmdACLBindingRule, &catalog.ACLBindingRuleRequest{Op: catalog.ACLOpDelete, ID: "r2"})
	if _, all, _ := s.ACLBindingRuleList(nil, "other"); len(all) != 0 {
		t.Fatalf("rules after delete: %d", len(all))
	}

	// Malformed requests never reach the store.
	for _, body := range []any{
		&catalog.ACLAuthMethodRequest{Op: catalog.ACLOpSet},
		&catalog.ACLAuthMethodRequest{Op: "upsert", Name: "x"},
	} {
		buf, _ := catalog.Encode(catalog.CmdACLAuthMethod, body)
		if _, err := catalog.ValidateCommand(buf); !errors.Is(err, catalog.ErrBadCommand) {
			t.Fatalf("%+v: %v", body, err)
		}
	}
	// A login request decodes but is never applied: the leader turns it
	// into a token write before proposing.
	login := &catalog.ACLLoginRequest{Op: catalog.ACLLoginOp, AuthMethod: "other", BearerToken: "x.y.z", AccessorID: "a", SecretID: "s"}
	if err, _ := applyCmd(t, f, 11, catalog.CmdACLLogin, login).(error); !errors.Is(err, catalog.ErrInvalidRequest) {
		t.Fatalf("login entry applied: %v", err)
	}
	for _, bad := range []*catalog.ACLLoginRequest{{Op: catalog.ACLLoginOp, SecretID: "s"}, {Op: "x", SecretID: "s"}, {Op: catalog.ACLLogoutOp}} {
		b, _ := catalog.Encode(catalog.CmdACLLogin, bad)
		if _, err := catalog.ValidateCommand(b); !errors.Is(err, catalog.ErrBadCommand) {
			t.Fatalf("login request %+v: %v", bad, err)
		}
	}
	buf2, _ := catalog.Encode(catalog.CmdACLBindingRule, &catalog.ACLBindingRuleRequest{Op: catalog.ACLOpSet})
	if _, err := catalog.ValidateCommand(buf2); !errors.Is(err, catalog.ErrBadCommand) {
		t.Fatalf("rule set without a rule: %v", err)
	}
}

func TestACLBootstrapReset(t *testing.T) {
	s := newStore(t)
	f := catalog.NewFSM(s, nil)
	mustApply(t, f, 1, catalog.CmdACLPolicySet, &catalog.ACLPolicy{ID: catalog.ACLGlobalManagementPolicyID, Name: catalog.ACLGlobalManagementPolicyName})
	mustApply(t, f, 2, catalog.CmdACLBootstrap, &catalog.ACLToken{AccessorID: "m1", SecretID: "root1"})
	// A wrong reset index is refused, and the error names the right one.
	wrong := &catalog.ACLBootstrapRequest{ACLToken: catalog.ACLToken{AccessorID: "m2", SecretID: "root2"}, ResetIndex: 1}
	if err, _ := applyCmd(t, f, 3, catalog.CmdACLBootstrap, wrong).(error); !errors.Is(err, catalog.ErrACLBootstrapped) {
		t.Fatalf("wrong reset index: %v", err)
	}
	right := &catalog.ACLBootstrapRequest{ACLToken: catalog.ACLToken{AccessorID: "m2", SecretID: "root2"}, ResetIndex: 2}
	mustApply(t, f, 4, catalog.CmdACLBootstrap, right)
	if got := s.ACLBootstrapIndex(nil); got != 4 {
		t.Fatalf("bootstrap index after reset = %d, want 4", got)
	}
	// The same reset index does not work twice.
	again := &catalog.ACLBootstrapRequest{ACLToken: catalog.ACLToken{AccessorID: "m3", SecretID: "root3"}, ResetIndex: 2}
	err, _ := applyCmd(t, f, 5, catalog.CmdACLBootstrap, again).(error)
	if !errors.Is(err, catalog.ErrACLBootstrapped) || err.Error() != "ACL bootstrap no longer allowed (reset index: 4)" {
		t.Fatalf("reused reset index: %v", err)
	}
}
