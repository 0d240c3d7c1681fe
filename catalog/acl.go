package catalog

import (
	"errors"
	"fmt"
	"strings"

	"github.com/hashicorp/go-memdb"
)

// ACL tables: tokens, policies and roles.
const (
	tableACLTokens   = "acl_tokens"
	tableACLPolicies = "acl_policies"
	tableACLRoles    = "acl_roles"
	// aclBootstrapKey is the index-table row that records the index at
	// which ACLs were bootstrapped; its presence forbids a second one.
	aclBootstrapKey = "acl-token-bootstrap"
)

// ACL command types (20-29 are reserved for ACLs).
const (
	// CmdACLTokenSet creates or updates a token (body: ACLToken).
	CmdACLTokenSet CommandType = 20
	// CmdACLTokenDelete deletes a token (body: ACLDeleteRequest).
	CmdACLTokenDelete CommandType = 21
	// CmdACLPolicySet creates or updates a policy (body: ACLPolicy).
	CmdACLPolicySet CommandType = 22
	// CmdACLPolicyDelete deletes a policy (body: ACLDeleteRequest).
	CmdACLPolicyDelete CommandType = 23
	// CmdACLRoleSet creates or updates a role (body: ACLRole).
	CmdACLRoleSet CommandType = 24
	// CmdACLRoleDelete deletes a role (body: ACLDeleteRequest).
	CmdACLRoleDelete CommandType = 25
	// CmdACLBootstrap creates the first management token, once (body:
	// ACLToken).
	CmdACLBootstrap CommandType = 26
)

// Bounds of ACL commands, checked before they are proposed.
const (
	// MaxACLLinks bounds the policies, roles and identities of one token
	// or role.
	MaxACLLinks = 256
	// MaxACLRulesSize bounds a policy's rules text.
	MaxACLRulesSize = 256 << 10
	// MaxACLTextSize bounds names, IDs and descriptions.
	MaxACLTextSize = 4 << 10
)

// ErrACLBootstrapped is returned by a bootstrap after the first one.
var ErrACLBootstrapped = errors.New("ACL bootstrap no longer allowed")

// ACLDeleteRequest names the token (AccessorID), policy or role to delete.
type ACLDeleteRequest struct {
	ID string
}

// ACL read operations.
const (
	// ReadACLToken reads the token whose AccessorID is Name.
	ReadACLToken ReadOp = "acl.token"
	// ReadACLTokenSecret reads the token whose SecretID is Name.
	ReadACLTokenSecret ReadOp = "acl.token.secret"
	// ReadACLTokens lists tokens, filtered by ACLPolicyID and ACLRoleID.
	ReadACLTokens ReadOp = "acl.tokens"
	// ReadACLPolicy reads the policy whose ID is Name.
	ReadACLPolicy ReadOp = "acl.policy"
	// ReadACLPolicyByName reads the policy named Name.
	ReadACLPolicyByName ReadOp = "acl.policy.name"
	// ReadACLPolicies lists every policy.
	ReadACLPolicies ReadOp = "acl.policies"
	// ReadACLRole reads the role whose ID is Name.
	ReadACLRole ReadOp = "acl.role"
	// ReadACLRoleByName reads the role named Name.
	ReadACLRoleByName ReadOp = "acl.role.name"
	// ReadACLRoles lists roles, filtered by ACLPolicyID.
	ReadACLRoles ReadOp = "acl.roles"
	// ReadACLResolve reads the token whose SecretID is Name together with
	// every policy and role it links to (directly or through its roles),
	// at the index of the ACL tables as a whole: what an agent needs to
	// compile the token, in one round trip.
	ReadACLResolve ReadOp = "acl.resolve"
	// ReadACLIndex returns only the index of the ACL tables: agents block
	// on it to learn that any token, policy or role changed.
	ReadACLIndex ReadOp = "acl.index"
	// ReadACLBootstrap returns the index at which ACLs were bootstrapped
	// in ACLBootstrapIndex (0 when they were not).
	ReadACLBootstrap ReadOp = "acl.bootstrap"
)

func isACLRead(op ReadOp) bool { return strings.HasPrefix(string(op), "acl.") }

// aclLinkIndexer indexes the IDs of a slice of ACLLink fields (a token's or a
// role's policies or roles).
type aclLinkIndexer struct{ field string }

func (x aclLinkIndexer) links(raw any) []ACLLink {
	switch v := raw.(type) {
	case *ACLToken:
		if x.field == "Roles" {
			return v.Roles
		}
		return v.Policies
	case *ACLRole:
		return v.Policies
	}
	return nil
}

// FromObject implements memdb.MultiIndexer.
func (x aclLinkIndexer) FromObject(raw any) (bool, [][]byte, error) {
	ls := x.links(raw)
	if len(ls) == 0 {
		return false, nil, nil
	}
	out := make([][]byte, 0, len(ls))
	for _, l := range ls {
		out = append(out, []byte(l.ID+"\x00"))
	}
	return true, out, nil
}

// FromArgs implements memdb.MultiIndexer.
func (x aclLinkIndexer) FromArgs(args ...any) ([]byte, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("want one argument, got %d", len(args))
	}
	s, ok := args[0].(string)
	if !ok {
		return nil, fmt.Errorf("argument must be a string: %#v", args[0])
	}
	return []byte(s + "\x00"), nil
}

// addACLTables adds the ACL tables to a schema.
func addACLTables(tables map[string]*memdb.TableSchema) {
	str := func(f string) memdb.Indexer { return &memdb.StringFieldIndex{Field: f} }
	tables[tableACLTokens] = &memdb.TableSchema{Name: tableACLTokens, Indexes: map[string]*memdb.IndexSchema{
		"id":       {Name: "id", Unique: true, Indexer: str("AccessorID")},
		"secret":   {Name: "secret", Unique: true, Indexer: str("SecretID")},
		"policies": {Name: "policies", AllowMissing: true, Indexer: aclLinkIndexer{field: "Policies"}},
		"roles":    {Name: "roles", AllowMissing: true, Indexer: aclLinkIndexer{field: "Roles"}},
	}}
	tables[tableACLPolicies] = &memdb.TableSchema{Name: tableACLPolicies, Indexes: map[string]*memdb.IndexSchema{
		"id":   {Name: "id", Unique: true, Indexer: str("ID")},
		"name": {Name: "name", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Name", Lowercase: true}},
	}}
	tables[tableACLRoles] = &memdb.TableSchema{Name: tableACLRoles, Indexes: map[string]*memdb.IndexSchema{
		"id":       {Name: "id", Unique: true, Indexer: str("ID")},
		"name":     {Name: "name", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Name", Lowercase: true}},
		"policies": {Name: "policies", AllowMissing: true, Indexer: aclLinkIndexer{field: "Policies"}},
	}}
	addACLLoginTables(tables)
}

// checkACLLimits bounds an ACL command before it is proposed.
func (c *Command) checkACLLimits() error {
	text := func(what, s string) error {
		if len(s) > MaxACLTextSize {
			return fmt.Errorf("%s is %d bytes, max %d", what, len(s), MaxACLTextSize)
		}
		return nil
	}
	switch {
	case c.ACLToken != nil:
		t := c.ACLToken
		if n := len(t.Policies) + len(t.Roles) + len(t.ServiceIdentities) + len(t.NodeIdentities); n > MaxACLLinks {
			return fmt.Errorf("token links %d policies, roles and identities, max %d", n, MaxACLLinks)
		}
		for _, s := range []string{t.AccessorID, t.SecretID, t.Description} {
			if err := text("token field", s); err != nil {
				return err
			}
		}
	case c.ACLPolicy != nil:
		if len(c.ACLPolicy.Rules) > MaxACLRulesSize {
			return fmt.Errorf("policy rules are %d bytes, max %d", len(c.ACLPolicy.Rules), MaxACLRulesSize)
		}
		for _, s := range []string{c.ACLPolicy.ID, c.ACLPolicy.Name, c.ACLPolicy.Description} {
			if err := text("policy field", s); err != nil {
				return err
			}
		}
	case c.ACLRole != nil:
		r := c.ACLRole
		if n := len(r.Policies) + len(r.ServiceIdentities) + len(r.NodeIdentities); n > MaxACLLinks {
			return fmt.Errorf("role links %d policies and identities, max %d", n, MaxACLLinks)
		}
		for _, s := range []string{r.ID, r.Name, r.Description} {
			if err := text("role field", s); err != nil {
				return err
			}
		}
	case c.ACLDelete != nil:
		return text("ID", c.ACLDelete.ID)
	}
	return nil
}

// decodeACLTarget returns the body an ACL command decodes into, or nil for
// a type that is not an ACL command.
func (c *Command) decodeACLTarget() any {
	switch c.Type {
	case CmdACLTokenSet:
		c.ACLToken = new(ACLToken)
		return c.ACLToken
	case CmdACLBootstrap:
		c.ACLBootstrap = new(ACLBootstrapRequest)
		c.ACLToken = &c.ACLBootstrap.ACLToken
		return c.ACLBootstrap
	case CmdACLAuthMethod:
		c.ACLAuthMethod = new(ACLAuthMethodRequest)
		return c.ACLAuthMethod
	case CmdACLBindingRule:
		c.ACLBindingRule = new(ACLBindingRuleRequest)
		return c.ACLBindingRule
	case CmdACLLogin:
		c.ACLLogin = new(ACLLoginRequest)
		return c.ACLLogin
	case CmdACLPolicySet:
		c.ACLPolicy = new(ACLPolicy)
		return c.ACLPolicy
	case CmdACLRoleSet:
		c.ACLRole = new(ACLRole)
		return c.ACLRole
	case CmdACLTokenDelete, CmdACLPolicyDelete, CmdACLRoleDelete:
		c.ACLDelete = new(ACLDeleteRequest)
		return c.ACLDelete
	}
	return nil
}

// applyACL applies an ACL command; ok is false for other types.
func (s *Store) applyACL(idx uint64, cmd *Command) (any, bool) {
	switch cmd.Type {
	case CmdACLTokenSet:
		return s.ACLTokenSet(idx, cmd.ACLToken), true
	case CmdACLBootstrap:
		return s.ACLBootstrap(idx, cmd.ACLToken, cmd.ACLBootstrap.ResetIndex), true
	case CmdACLAuthMethod:
		return s.ACLAuthMethodApply(idx, cmd.ACLAuthMethod), true
	case CmdACLBindingRule:
		return s.ACLBindingRuleApply(idx, cmd.ACLBindingRule), true
	case CmdACLLogin:
		// The leader turns a login into the write it amounts to before
		// proposing; one in the log was proposed by something else.
		return invalidf("a login request is resolved by the leader, never applied"), true
	case CmdACLTokenDelete:
		return s.ACLTokenDelete(idx, cmd.ACLDelete.ID), true
	case CmdACLPolicySet:
		return s.ACLPolicySet(idx, cmd.ACLPolicy), true
	case CmdACLPolicyDelete:
		return s.ACLPolicyDelete(idx, cmd.ACLDelete.ID), true
	case CmdACLRoleSet:
		return s.ACLRoleSet(idx, cmd.ACLRole), true
	case CmdACLRoleDelete:
		return s.ACLRoleDelete(idx, cmd.ACLDelete.ID), true
	}
	return nil, false
}

// ---- writes ----

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidRequest, fmt.Sprintf(format, args...))
}

// ACLTokenSet creates or updates a token at idx. Every policy and role it
// links must exist; links are stored by ID only. An existing token keeps
// its SecretID, CreateIndex and CreateTime.
func (s *Store) ACLTokenSet(idx uint64, t *ACLToken) error {
	txn := s.mem().Txn(true)
	defer txn.Abort()
	if err := aclTokenSetTxn(txn, idx, t); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

// ACLBootstrapRequest is the body of CmdACLBootstrap: the management token
// to create and, to bootstrap once more, the reset index an operator wrote
// to the acl-bootstrap-reset file (0 for none). Entries written before the
// reset existed hold a bare ACLToken, which decodes the same.
type ACLBootstrapRequest struct {
	ACLToken
	ResetIndex uint64 `json:",omitempty"`
}

// ACLBootstrap creates the first management token at idx, or returns an
// error wrapping ErrACLBootstrapped when ACLs were bootstrapped already and
// reset is not the index of that bootstrap (which the error names).
func (s *Store) ACLBootstrap(idx uint64, t *ACLToken, reset uint64) error {
	txn := s.mem().Txn(true)
	defer txn.Abort()
	if done := maxIndex(txn, aclBootstrapKey); done != 0 && done != reset {
		return fmt.Errorf("%w (reset index: %d)", ErrACLBootstrapped, done)
	}
	if err := aclTokenSetTxn(txn, idx, t); err != nil {
		return err
	}
	if err := setIndex(txn, aclBootstrapKey, idx); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

func aclTokenSetTxn(txn *memdb.Txn, idx uint64, in *ACLToken) error {
	if in.AccessorID == "" || in.SecretID == "" {
		return invalidf("token needs an AccessorID and a SecretID")
	}
	t := *in
	raw, err := txn.First(tableACLTokens, "id", t.AccessorID)
	if err != nil {
		return fmt.Errorf("token lookup: %w", err)
	}
	if raw != nil {
		old := raw.(*ACLToken)
		if old.SecretID != t.SecretID {
			return invalidf("Changing a token's SecretID is not permitted")
		}
		t.CreateIndex, t.CreateTime = old.CreateIndex, old.CreateTime
	} else {
		other, err := txn.First(tableACLTokens, "secret", t.SecretID)
		if err != nil {
			return fmt.Errorf("token lookup: %w", err)
		}
		if other != nil {
			return invalidf("Invalid Token: SecretID is already in use")
		}
		t.CreateIndex = idx
	}
	if t.AuthMethod != "" && raw == nil {
		// A login racing the deletion of its method must not leave a
		// token behind that nothing deletes.
		m, err := txn.First(tableACLAuthMethods, "id", t.AuthMethod)
		if err != nil {
			return fmt.Errorf("auth method lookup: %w", err)
		}
		if m == nil {
			return invalidf("auth method %q not found", t.AuthMethod)
		}
	}
	if t.Policies, err = resolveLinks(txn, tableACLPolicies, "policy", t.Policies); err != nil {
		return err
	}
	if t.Roles, err = resolveLinks(txn, tableACLRoles, "role", t.Roles); err != nil {
		return err
	}
	t.ModifyIndex = idx
	if err := txn.Insert(tableACLTokens, &t); err != nil {
		return fmt.Errorf("insert token: %w", err)
	}
	return setIndex(txn, tableACLTokens, idx)
}

// resolveLinks checks that every link names an existing row (by ID, or by
// name when the ID is empty) and returns the links as IDs, without
// duplicates.
func resolveLinks(txn *memdb.Txn, table, what string, in []ACLLink) ([]ACLLink, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := make([]ACLLink, 0, len(in))
	seen := map[string]bool{}
	for _, l := range in {
		var raw any
		var err error
		switch {
		case l.ID != "":
			raw, err = txn.First(table, "id", l.ID)
		case l.Name != "":
			raw, err = txn.First(table, "name", l.Name)
		default:
			return nil, invalidf("%s link needs an ID or a Name", what)
		}
		if err != nil {
			return nil, fmt.Errorf("%s lookup: %w", what, err)
		}
		if raw == nil {
			ref := l.ID
			if ref == "" {
				ref = l.Name
			}
			return nil, invalidf("cannot find %s %s", what, ref)
		}
		id := rowID(raw)
		if !seen[id] {
			seen[id] = true
			out = append(out, ACLLink{ID: id})
		}
	}
	return out, nil
}

func rowID(raw any) string {
	switch v := raw.(type) {
	case *ACLPolicy:
		return v.ID
	case *ACLRole:
		return v.ID
	}
	return ""
}

// ACLTokenDelete deletes the token with an AccessorID. The anonymous token
// cannot be deleted; deleting a missing token is not an error.
func (s *Store) ACLTokenDelete(idx uint64, accessor string) error {
	if accessor == ACLAnonymousTokenID {
		return invalidf("Deletion of the builtin anonymous token is not permitted")
	}
	return s.aclDelete(idx, tableACLTokens, accessor)
}

func (s *Store) aclDelete(idx uint64, table, id string) error {
	txn := s.mem().Txn(true)
	defer txn.Abort()
	raw, err := txn.First(table, "id", id)
	if err != nil {
		return fmt.Errorf("%s lookup: %w", table, err)
	}
	if raw == nil {
		return nil
	}
	if err := txn.Delete(table, raw); err != nil {
		return fmt.Errorf("delete from %s: %w", table, err)
	}
	if err := setIndex(txn, table, idx); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

// ACLPolicySet creates or updates a policy at idx. Names are unique
// (case-insensitively); the global-management policy's rules cannot change.
func (s *Store) ACLPolicySet(idx uint64, in *ACLPolicy) error {
	if in.ID == "" || in.Name == "" {
		return invalidf("policy needs an ID and a Name")
	}
	txn := s.mem().Txn(true)
	defer txn.Abort()
	p := *in
	raw, err := txn.First(tableACLPolicies, "id", p.ID)
	if err != nil {
		return fmt.Errorf("policy lookup: %w", err)
	}
	if raw != nil {
		old := raw.(*ACLPolicy)
		if old.ID == ACLGlobalManagementPolicyID && (old.Rules != p.Rules || len(p.Datacenters) > 0) {
			return invalidf("Changing the Rules or Datacenters of the builtin global-management policy is not permitted")
		}
		if old.ID == ACLGlobalReadOnlyPolicyID && (old.Rules != p.Rules || old.Name != p.Name || len(p.Datacenters) > 0) {
			return invalidf("Changing the Name, Rules or Datacenters of the builtin global-read-only policy is not permitted")
		}
		p.CreateIndex = old.CreateIndex
	} else {
		p.CreateIndex = idx
	}
	other, err := txn.First(tableACLPolicies, "name", p.Name)
	if err != nil {
		return fmt.Errorf("policy lookup: %w", err)
	}
	if other != nil && other.(*ACLPolicy).ID != p.ID {
		return invalidf("Invalid Policy: A Policy with Name %q already exists", p.Name)
	}
	p.ModifyIndex = idx
	if err := txn.Insert(tableACLPolicies, &p); err != nil {
		return fmt.Errorf("insert policy: %w", err)
	}
	if err := setIndex(txn, tableACLPolicies, idx); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

// ACLPolicyDelete deletes a policy; the global-management policy cannot be
// deleted. Links to a deleted policy stay in tokens and roles and are
// ignored (and dropped from reads).
func (s *Store) ACLPolicyDelete(idx uint64, id string) error {
	if id == ACLGlobalManagementPolicyID {
		return invalidf("Delete of the builtin global-management policy is not permitted")
	}
	if id == ACLGlobalReadOnlyPolicyID {
		return invalidf("Delete of the builtin global-read-only policy is not permitted")
	}
	return s.aclDelete(idx, tableACLPolicies, id)
}

// ACLRoleSet creates or updates a role at idx; its policies must exist.
func (s *Store) ACLRoleSet(idx uint64, in *ACLRole) error {
	if in.ID == "" || in.Name == "" {
		return invalidf("role needs an ID and a Name")
	}
	txn := s.mem().Txn(true)
	defer txn.Abort()
	r := *in
	raw, err := txn.First(tableACLRoles, "id", r.ID)
	if err != nil {
		return fmt.Errorf("role lookup: %w", err)
	}
	if raw != nil {
		r.CreateIndex = raw.(*ACLRole).CreateIndex
	} else {
		r.CreateIndex = idx
	}
	other, err := txn.First(tableACLRoles, "name", r.Name)
	if err != nil {
		return fmt.Errorf("role lookup: %w", err)
	}
	if other != nil && other.(*ACLRole).ID != r.ID {
		return invalidf("Invalid Role: A Role with Name %q already exists", r.Name)
	}
	if r.Policies, err = resolveLinks(txn, tableACLPolicies, "policy", r.Policies); err != nil {
		return err
	}
	r.ModifyIndex = idx
	if err := txn.Insert(tableACLRoles, &r); err != nil {
		return fmt.Errorf("insert role: %w", err)
	}
	if err := setIndex(txn, tableACLRoles, idx); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

// ACLRoleDelete deletes a role.
func (s *Store) ACLRoleDelete(idx uint64, id string) error {
	return s.aclDelete(idx, tableACLRoles, id)
}

// ---- reads ----

// aclIndex adds the watches of the three ACL tables' index rows to ws and
// returns the highest.
func aclIndex(txn *memdb.Txn, ws memdb.WatchSet) uint64 {
	return max(watchIndex(txn, ws, tableACLTokens), watchIndex(txn, ws, tableACLPolicies), watchIndex(txn, ws, tableACLRoles))
}

// withNames returns a copy of links with each Name filled in, dropping links
// to rows that no longer exist.
func withNames(txn *memdb.Txn, table string, in []ACLLink) []ACLLink {
	if len(in) == 0 {
		return nil
	}
	out := make([]ACLLink, 0, len(in))
	for _, l := range in {
		raw, err := txn.First(table, "id", l.ID)
		if err != nil || raw == nil {
			continue
		}
		switch v := raw.(type) {
		case *ACLPolicy:
			out = append(out, ACLLink{ID: v.ID, Name: v.Name})
		case *ACLRole:
			out = append(out, ACLLink{ID: v.ID, Name: v.Name})
		}
	}
	return out
}

func tokenView(txn *memdb.Txn, t *ACLToken) *ACLToken {
	c := *t
	c.Policies = withNames(txn, tableACLPolicies, t.Policies)
	c.Roles = withNames(txn, tableACLRoles, t.Roles)
	return &c
}

func roleView(txn *memdb.Txn, r *ACLRole) *ACLRole {
	c := *r
	c.Policies = withNames(txn, tableACLPolicies, r.Policies)
	return &c
}

// ACLTokenGet returns the token with an AccessorID (bySecret false) or a
// SecretID, nil when there is none, with link names filled in.
func (s *Store) ACLTokenGet(ws memdb.WatchSet, id string, bySecret bool) (uint64, *ACLToken, error) {
	txn := s.mem().Txn(false)
	idx := aclIndex(txn, ws)
	index := "id"
	if bySecret {
		index = "secret"
	}
	raw, err := txn.First(tableACLTokens, index, id)
	if err != nil {
		return 0, nil, fmt.Errorf("token lookup: %w", err)
	}
	if raw == nil {
		return idx, nil, nil
	}
	return idx, tokenView(txn, raw.(*ACLToken)), nil
}

// ACLTokenList returns the tokens, ordered by AccessorID, that link the
// policy and the role given (either may be empty).
func (s *Store) ACLTokenList(ws memdb.WatchSet, policyID, roleID string) (uint64, []*ACLToken, error) {
	txn := s.mem().Txn(false)
	idx := aclIndex(txn, ws)
	var it memdb.ResultIterator
	var err error
	switch {
	case policyID != "":
		it, err = txn.Get(tableACLTokens, "policies", policyID)
	case roleID != "":
		it, err = txn.Get(tableACLTokens, "roles", roleID)
	default:
		it, err = txn.Get(tableACLTokens, "id")
	}
	if err != nil {
		return 0, nil, fmt.Errorf("tokens: %w", err)
	}
	out := []*ACLToken{}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		t := raw.(*ACLToken)
		if policyID != "" && roleID != "" && !hasLink(t.Roles, roleID) {
			continue
		}
		out = append(out, tokenView(txn, t))
	}
	return idx, out, nil
}

func hasLink(ls []ACLLink, id string) bool {
	for _, l := range ls {
		if l.ID == id {
			return true
		}
	}
	return false
}

// ACLPolicyGet returns the policy with an ID (byName false) or a name, nil
// when there is none.
func (s *Store) ACLPolicyGet(ws memdb.WatchSet, id string, byName bool) (uint64, *ACLPolicy, error) {
	txn := s.mem().Txn(false)
	idx := aclIndex(txn, ws)
	index := "id"
	if byName {
		index = "name"
	}
	raw, err := txn.First(tableACLPolicies, index, id)
	if err != nil {
		return 0, nil, fmt.Errorf("policy lookup: %w", err)
	}
	if raw == nil {
		return idx, nil, nil
	}
	return idx, raw.(*ACLPolicy), nil
}

// ACLPolicyList returns every policy, ordered by ID.
func (s *Store) ACLPolicyList(ws memdb.WatchSet) (uint64, []*ACLPolicy, error) {
	txn := s.mem().Txn(false)
	idx := aclIndex(txn, ws)
	it, err := txn.Get(tableACLPolicies, "id")
	if err != nil {
		return 0, nil, fmt.Errorf("policies: %w", err)
	}
	out := []*ACLPolicy{}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*ACLPolicy))
	}
	return idx, out, nil
}

// ACLRoleGet returns the role with an ID (byName false) or a name, nil when
// there is none, with policy names filled in.
func (s *Store) ACLRoleGet(ws memdb.WatchSet, id string, byName bool) (uint64, *ACLRole, error) {
	txn := s.mem().Txn(false)
	idx := aclIndex(txn, ws)
	index := "id"
	if byName {
		index = "name"
	}
	raw, err := txn.First(tableACLRoles, index, id)
	if err != nil {
		return 0, nil, fmt.Errorf("role lookup: %w", err)
	}
	if raw == nil {
		return idx, nil, nil
	}
	return idx, roleView(txn, raw.(*ACLRole)), nil
}

// ACLRoleList returns the roles, ordered by ID, that link policyID (every
// role when it is empty).
func (s *Store) ACLRoleList(ws memdb.WatchSet, policyID string) (uint64, []*ACLRole, error) {
	txn := s.mem().Txn(false)
	idx := aclIndex(txn, ws)
	var it memdb.ResultIterator
	var err error
	if policyID != "" {
		it, err = txn.Get(tableACLRoles, "policies", policyID)
	} else {
		it, err = txn.Get(tableACLRoles, "id")
	}
	if err != nil {
		return 0, nil, fmt.Errorf("roles: %w", err)
	}
	out := []*ACLRole{}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, roleView(txn, raw.(*ACLRole)))
	}
	return idx, out, nil
}

// ACLResolve returns the token with a SecretID and every policy and role it
// links to, directly or through its roles, at the ACL tables' index. The
// token is nil when there is none.
func (s *Store) ACLResolve(ws memdb.WatchSet, secret string) (uint64, *ACLToken, []*ACLPolicy, []*ACLRole, error) {
	txn := s.mem().Txn(false)
	idx := aclIndex(txn, ws)
	raw, err := txn.First(tableACLTokens, "secret", secret)
	if err != nil {
		return 0, nil, nil, nil, fmt.Errorf("token lookup: %w", err)
	}
	if raw == nil {
		return idx, nil, nil, nil, nil
	}
	tok := raw.(*ACLToken)
	var policies []*ACLPolicy
	var roles []*ACLRole
	seen := map[string]bool{}
	addPolicy := func(id string) {
		if seen[id] {
			return
		}
		seen[id] = true
		if p, err := txn.First(tableACLPolicies, "id", id); err == nil && p != nil {
			policies = append(policies, p.(*ACLPolicy))
		}
	}
	for _, l := range tok.Policies {
		addPolicy(l.ID)
	}
	for _, l := range tok.Roles {
		r, err := txn.First(tableACLRoles, "id", l.ID)
		if err != nil || r == nil {
			continue
		}
		role := r.(*ACLRole)
		roles = append(roles, role)
		for _, pl := range role.Policies {
			addPolicy(pl.ID)
		}
	}
	return idx, tok, policies, roles, nil
}

// ACLBootstrapIndex returns the index at which ACLs were bootstrapped, 0
// when they were not.
func (s *Store) ACLBootstrapIndex(ws memdb.WatchSet) uint64 {
	return watchIndex(s.mem().Txn(false), ws, aclBootstrapKey)
}

// executeACL runs an ACL read.
func (s *Store) executeACL(ws memdb.WatchSet, req *ReadRequest, out *ReadResponse) (uint64, error) {
	var idx uint64
	var err error
	one := func(found bool, set func()) {
		if found {
			set()
		}
	}
	switch req.Op {
	case ReadACLToken, ReadACLTokenSecret:
		var t *ACLToken
		idx, t, err = s.ACLTokenGet(ws, req.Name, req.Op == ReadACLTokenSecret)
		one(t != nil, func() { out.ACLTokens = []*ACLToken{t} })
	case ReadACLTokens:
		idx, out.ACLTokens, err = s.ACLTokenList(ws, req.ACLPolicyID, req.ACLRoleID)
	case ReadACLPolicy, ReadACLPolicyByName:
		var p *ACLPolicy
		idx, p, err = s.ACLPolicyGet(ws, req.Name, req.Op == ReadACLPolicyByName)
		one(p != nil, func() { out.ACLPolicies = []*ACLPolicy{p} })
	case ReadACLPolicies:
		idx, out.ACLPolicies, err = s.ACLPolicyList(ws)
	case ReadACLRole, ReadACLRoleByName:
		var r *ACLRole
		idx, r, err = s.ACLRoleGet(ws, req.Name, req.Op == ReadACLRoleByName)
		one(r != nil, func() { out.ACLRoles = []*ACLRole{r} })
	case ReadACLRoles:
		idx, out.ACLRoles, err = s.ACLRoleList(ws, req.ACLPolicyID)
	case ReadACLResolve:
		var t *ACLToken
		idx, t, out.ACLPolicies, out.ACLRoles, err = s.ACLResolve(ws, req.Name)
		one(t != nil, func() { out.ACLTokens = []*ACLToken{t} })
	case ReadACLIndex:
		idx = aclIndex(s.mem().Txn(false), ws)
	case ReadACLBootstrap:
		out.ACLBootstrapIndex = s.ACLBootstrapIndex(ws)
		idx = max(out.ACLBootstrapIndex, aclIndex(s.mem().Txn(false), ws))
	default:
		var ok bool
		if idx, ok, err = s.executeACLLogin(ws, req, out); !ok {
			return 0, fmt.Errorf("%w: unknown read %q", ErrInvalidRequest, req.Op)
		}
	}
	return idx, err
}
