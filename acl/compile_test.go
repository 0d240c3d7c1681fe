package acl

import (
	"errors"
	"testing"
	"time"

	"github.com/tribune-mesh/tribune/catalog"
)

type mapLookup struct {
	policies map[string]*catalog.ACLPolicy
	roles    map[string]*catalog.ACLRole
}

func (m mapLookup) Policy(id string) *catalog.ACLPolicy { return m.policies[id] }
func (m mapLookup) Role(id string) *catalog.ACLRole     { return m.roles[id] }

func TestCompileExpandsPoliciesRolesAndIdentities(t *testing.T) {
	look := mapLookup{
		policies: map[string]*catalog.ACLPolicy{
			"p-kv":    {ID: "p-kv", Name: "kv", Rules: `key_prefix "app/" { policy = "write" }`, RaftIndex: catalog.RaftIndex{ModifyIndex: 5}},
			"p-other": {ID: "p-other", Name: "other-dc", Rules: `operator = "write"`, Datacenters: []string{"dc2"}},
			"p-node":  {ID: "p-node", Name: "nodes", Rules: `node_prefix "" { policy = "read" }`},
		},
		roles: map[string]*catalog.ACLRole{
			"r1": {ID: "r1", Name: "role", Policies: []catalog.ACLLink{{ID: "p-node"}},
				ServiceIdentities: []*catalog.ACLServiceIdentity{{ServiceName: "api"}}},
		},
	}
	c := &Compiler{Datacenter: "dc1"}
	tok := &catalog.ACLToken{
		AccessorID: "a", Policies: []catalog.ACLLink{{ID: "p-kv"}, {ID: "p-other"}, {ID: "gone"}},
		Roles:          []catalog.ACLLink{{ID: "r1"}, {ID: "missing-role"}},
		NodeIdentities: []*catalog.ACLNodeIdentity{{NodeName: "n1", Datacenter: "dc1"}, {NodeName: "n2", Datacenter: "dc9"}},
	}
	a, err := c.Compile(tok, look, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range []struct {
		what      string
		got, want Decision
	}{
		{"key write from policy", a.KeyWrite("app/x"), Allow},
		{"key outside", a.KeyRead("other"), Deny},
		{"policy of another dc ignored", a.OperatorWrite(), Deny},
		{"role's policy", a.NodeRead("x"), Allow},
		{"role's service identity", a.ServiceWrite("api-sidecar-proxy"), Allow},
		{"token's node identity", a.NodeWrite("n1"), Allow},
		{"node identity of another dc ignored", a.NodeWrite("n2"), Deny},
	} {
		if ch.got != ch.want {
			t.Errorf("%s: got %v want %v", ch.what, ch.got, ch.want)
		}
	}
}

func TestCompileExpiredAndBadRules(t *testing.T) {
	c := &Compiler{Datacenter: "dc1"}
	past := time.Now().Add(-time.Minute)
	_, err := c.Compile(&catalog.ACLToken{AccessorID: "x", ExpirationTime: &past}, mapLookup{}, time.Now())
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("expired token: %v, want ErrNotFound", err)
	}
	look := mapLookup{policies: map[string]*catalog.ACLPolicy{"bad": {ID: "bad", Rules: `key "a" { policy = "nope" }`}}}
	if _, err := c.Compile(&catalog.ACLToken{Policies: []catalog.ACLLink{{ID: "bad"}}}, look, time.Now()); err == nil {
		t.Fatal("policy with invalid rules compiled")
	}
}

func TestCompileGlobalManagementAndCache(t *testing.T) {
	c := &Compiler{Datacenter: "dc1"}
	look := mapLookup{policies: map[string]*catalog.ACLPolicy{
		catalog.ACLGlobalManagementPolicyID: {ID: catalog.ACLGlobalManagementPolicyID, Name: "global-management"},
		"p":                                 {ID: "p", Rules: `key "k" { policy = "read" }`, RaftIndex: catalog.RaftIndex{ModifyIndex: 1}},
	}}
	a, err := c.Compile(&catalog.ACLToken{Policies: []catalog.ACLLink{{ID: catalog.ACLGlobalManagementPolicyID}}}, look, time.Now())
	if err != nil || a.ACLWrite() != Allow || a.KeyWritePrefix("") != Allow {
		t.Fatalf("global-management: err=%v", err)
	}
	tok := &catalog.ACLToken{Policies: []catalog.ACLLink{{ID: "p"}}}
	if a, _ := c.Compile(tok, look, time.Now()); a.KeyWrite("k") != Deny {
		t.Fatal("read policy granted write")
	}
	// A changed policy (new ModifyIndex) is parsed again, not served from cache.
	look.policies["p"] = &catalog.ACLPolicy{ID: "p", Rules: `key "k" { policy = "write" }`, RaftIndex: catalog.RaftIndex{ModifyIndex: 2}}
	if a, _ := c.Compile(tok, look, time.Now()); a.KeyWrite("k") != Allow {
		t.Fatal("changed policy served from the stale cache")
	}
}
