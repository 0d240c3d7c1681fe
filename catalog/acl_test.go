package catalog_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/hashicorp/raft"

	"github.com/tribune-mesh/tribune/catalog"
)

// applyCmd runs one encoded command through the FSM, as Raft would.
func applyCmd(t *testing.T, f *catalog.FSM, idx uint64, ct catalog.CommandType, body any) any {
	t.Helper()
	buf, err := catalog.Encode(ct, body)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := catalog.ValidateCommand(buf); err != nil {
		t.Fatalf("ValidateCommand(%d): %v", ct, err)
	}
	return f.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: buf})
}

func mustApply(t *testing.T, f *catalog.FSM, idx uint64, ct catalog.CommandType, body any) {
	t.Helper()
	if res := applyCmd(t, f, idx, ct, body); res != nil {
		t.Fatalf("apply %d at %d: %v", ct, idx, res)
	}
}

func TestACLStoreTokensPoliciesRoles(t *testing.T) {
	s := newStore(t)
	f := catalog.NewFSM(s, nil)
	mustApply(t, f, 1, catalog.CmdACLPolicySet, &catalog.ACLPolicy{ID: "p1", Name: "readers", Rules: `key_prefix "" { policy = "read" }`})
	mustApply(t, f, 2, catalog.CmdACLRoleSet, &catalog.ACLRole{ID: "r1", Name: "ops", Policies: []catalog.ACLLink{{Name: "READERS"}}})

	// Unknown links are refused with an invalid-request error.
	for _, tok := range []*catalog.ACLToken{
		{AccessorID: "a0", SecretID: "s0", Policies: []catalog.ACLLink{{ID: "nope"}}},
		{AccessorID: "a0", SecretID: "s0", Roles: []catalog.ACLLink{{Name: "nope"}}},
	} {
		err, _ := applyCmd(t, f, 3, catalog.CmdACLTokenSet, tok).(error)
		if !errors.Is(err, catalog.ErrInvalidRequest) {
			t.Fatalf("token with unknown link: got %v, want ErrInvalidRequest", err)
		}
	}
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	mustApply(t, f, 4, catalog.CmdACLTokenSet, &catalog.ACLToken{AccessorID: "a1", SecretID: "s1", CreateTime: created,
		Policies: []catalog.ACLLink{{ID: "p1"}, {Name: "readers"}}, Roles: []catalog.ACLLink{{ID: "r1"}}})
	mustApply(t, f, 5, catalog.CmdACLTokenSet, &catalog.ACLToken{AccessorID: "a2", SecretID: "s2", Roles: []catalog.ACLLink{{ID: "r1"}}})

	idx, tok, err := s.ACLTokenGet(memdb.NewWatchSet(), "s1", true)
	if err != nil || tok == nil {
		t.Fatalf("token by secret: %v %v", tok, err)
	}
	if idx != 5 || tok.AccessorID != "a1" || len(tok.Policies) != 1 || tok.Policies[0].Name != "readers" || tok.Roles[0].Name != "ops" || tok.CreateIndex != 4 {
		t.Fatalf("token = %+v at %d", tok, idx)
	}
	// A secret cannot be reused or changed.
	if err, _ := applyCmd(t, f, 6, catalog.CmdACLTokenSet, &catalog.ACLToken{AccessorID: "a3", SecretID: "s1"}).(error); !errors.Is(err, catalog.ErrInvalidRequest) {
		t.Fatalf("reused secret: %v", err)
	}
	if err, _ := applyCmd(t, f, 6, catalog.CmdACLTokenSet, &catalog.ACLToken{AccessorID: "a1", SecretID: "other"}).(error); !errors.Is(err, catalog.ErrInvalidRequest) {
		t.Fatalf("changed secret: %v", err)
	}
	// An update keeps the creation index and time.
	mustApply(t, f, 7, catalog.CmdACLTokenSet, &catalog.ACLToken{AccessorID: "a1", SecretID: "s1", Description: "updated"})
	_, tok, _ = s.ACLTokenGet(nil, "a1", false)
	if tok.CreateIndex != 4 || tok.ModifyIndex != 7 || !tok.CreateTime.Equal(created) || tok.Description != "updated" || len(tok.Policies) != 0 {
		t.Fatalf("updated token = %+v", tok)
	}

	_, byRole, _ := s.ACLTokenList(nil, "", "r1")
	_, all, _ := s.ACLTokenList(nil, "", "")
	_, roles, _ := s.ACLRoleList(nil, "p1")
	if len(byRole) != 1 || len(all) != 2 || len(roles) != 1 {
		t.Fatalf("lists: byRole=%d all=%d roles by policy=%d", len(byRole), len(all), len(roles))
	}

	// Names are unique, case-insensitively.
	if err, _ := applyCmd(t, f, 8, catalog.CmdACLPolicySet, &catalog.ACLPolicy{ID: "p2", Name: "Readers"}).(error); !errors.Is(err, catalog.ErrInvalidRequest) {
		t.Fatalf("duplicate policy name: %v", err)
	}

	// Resolution returns the token and what it links, through its roles.
	_, rt, pols, rls, err := s.ACLResolve(nil, "s2")
	if err != nil || rt == nil || len(pols) != 1 || pols[0].ID != "p1" || len(rls) != 1 {
		t.Fatalf("resolve: %v %d policies %d roles %v", rt, len(pols), len(rls), err)
	}

	// A blocking reader of the ACL index wakes on a delete.
	w := memdb.NewWatchSet()
	before := mustIndex(t, s, w)
	mustApply(t, f, 9, catalog.CmdACLTokenDelete, &catalog.ACLDeleteRequest{ID: "a2"})
	if w.Watch(time.After(time.Second)) {
		t.Fatal("ACL index watch did not fire on token delete")
	}
	if after := mustIndex(t, s, nil); after != 9 || before != 7 {
		t.Fatalf("ACL index %d -> %d, want 7 -> 9", before, after)
	}
	if _, tok, _ := s.ACLTokenGet(nil, "s2", true); tok != nil {
		t.Fatal("deleted token still found")
	}
	// A deleted policy disappears from the links of reads.
	mustApply(t, f, 10, catalog.CmdACLPolicyDelete, &catalog.ACLDeleteRequest{ID: "p1"})
	if _, r, _ := s.ACLRoleGet(nil, "ops", true); r == nil || len(r.Policies) != 0 {
		t.Fatalf("role after policy delete = %+v", r)
	}
}

func mustIndex(t *testing.T, s *catalog.Store, w memdb.WatchSet) uint64 {
	t.Helper()
	if w == nil {
		w = memdb.NewWatchSet()
	}
	idx, _, err := s.Execute(w, &catalog.ReadRequest{Op: catalog.ReadACLIndex})
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

func TestACLBootstrapOnceAndBuiltins(t *testing.T) {
	s := newStore(t)
	f := catalog.NewFSM(s, nil)
	mustApply(t, f, 1, catalog.CmdACLPolicySet, &catalog.ACLPolicy{ID: catalog.ACLGlobalManagementPolicyID, Name: catalog.ACLGlobalManagementPolicyName})
	mustApply(t, f, 2, catalog.CmdACLTokenSet, &catalog.ACLToken{AccessorID: catalog.ACLAnonymousTokenID, SecretID: catalog.ACLAnonymousTokenSecret})
	boot := &catalog.ACLToken{AccessorID: "m", SecretID: "root", Policies: []catalog.ACLLink{{ID: catalog.ACLGlobalManagementPolicyID}}}
	mustApply(t, f, 3, catalog.CmdACLBootstrap, boot)
	err, _ := applyCmd(t, f, 4, catalog.CmdACLBootstrap, &catalog.ACLToken{AccessorID: "m2", SecretID: "root2"}).(error)
	if !errors.Is(err, catalog.ErrACLBootstrapped) || err.Error() != "ACL bootstrap no longer allowed (reset index: 3)" {
		t.Fatalf("second bootstrap: %v", err)
	}
	for _, c := range []struct {
		ct   catalog.CommandType
		body any
	}{
		{catalog.CmdACLTokenDelete, &catalog.ACLDeleteRequest{ID: catalog.ACLAnonymousTokenID}},
		{catalog.CmdACLPolicyDelete, &catalog.ACLDeleteRequest{ID: catalog.ACLGlobalManagementPolicyID}},
		{catalog.CmdACLPolicySet, &catalog.ACLPolicy{ID: catalog.ACLGlobalManagementPolicyID, Name: "global-management", Rules: `key "" { policy = "deny" }`}},
	} {
		if err, _ := applyCmd(t, f, 5, c.ct, c.body).(error); !errors.Is(err, catalog.ErrInvalidRequest) {
			t.Fatalf("changing a built-in (%d): %v", c.ct, err)
		}
	}

	// A snapshot carries the ACL rows and the bootstrap mark.
	var buf bytes.Buffer
	if err := s.Dump(&buf); err != nil {
		t.Fatal(err)
	}
	s2 := newStore(t)
	if err := s2.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	if _, tok, _ := s2.ACLTokenGet(nil, "root", true); tok == nil || tok.Policies[0].Name != catalog.ACLGlobalManagementPolicyName {
		t.Fatalf("restored management token = %+v", tok)
	}
	if got := s2.ACLBootstrapIndex(nil); got != 3 {
		t.Fatalf("restored bootstrap index = %d", got)
	}
	_, pols, _ := s2.ACLPolicyList(nil)
	_, toks, _ := s2.ACLTokenList(nil, catalog.ACLGlobalManagementPolicyID, "")
	if len(pols) != 1 || len(toks) != 1 {
		t.Fatalf("restored %d policies, %d management tokens", len(pols), len(toks))
	}
}

func TestACLCommandLimits(t *testing.T) {
	links := make([]catalog.ACLLink, catalog.MaxACLLinks+1)
	buf, _ := catalog.Encode(catalog.CmdACLTokenSet, &catalog.ACLToken{AccessorID: "a", SecretID: "s", Policies: links})
	if _, err := catalog.ValidateCommand(buf); !errors.Is(err, catalog.ErrBadCommand) {
		t.Fatalf("too many links: %v", err)
	}
	buf, _ = catalog.Encode(catalog.CmdACLPolicySet, &catalog.ACLPolicy{ID: "p", Name: "p", Rules: string(make([]byte, catalog.MaxACLRulesSize+1))})
	if _, err := catalog.ValidateCommand(buf); !errors.Is(err, catalog.ErrBadCommand) {
		t.Fatalf("rules too large: %v", err)
	}
}
