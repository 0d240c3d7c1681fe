package catalog

import (
	"encoding/json"
	"fmt"

	"github.com/hashicorp/go-memdb"
)

// Auth methods and binding rules: what /v1/acl/login trades a bearer token
// against. Login tokens are ordinary tokens (CmdACLTokenSet) whose
// AuthMethod names the method; deleting the method deletes them.

// Tables of auth methods and binding rules.
const (
	tableACLAuthMethods  = "acl_auth_methods"
	tableACLBindingRules = "acl_binding_rules"
)

// Command types of auth methods and binding rules.
const (
	// CmdACLAuthMethod sets or deletes an auth method (body:
	// ACLAuthMethodRequest).
	CmdACLAuthMethod CommandType = 27
	// CmdACLBindingRule sets or deletes a binding rule (body:
	// ACLBindingRuleRequest).
	CmdACLBindingRule CommandType = 28
	// CmdACLLogin asks the leader for a login or a logout (body:
	// ACLLoginRequest). The leader verifies it against its own state and
	// proposes the CmdACLTokenSet or CmdACLTokenDelete it amounts to, so
	// that a bearer token or a secret never reaches the log; the FSM
	// refuses a CmdACLLogin entry.
	CmdACLLogin CommandType = 29
)

// Operations of CmdACLLogin.
const (
	ACLLoginOp  = "login"
	ACLLogoutOp = "logout"
)

// Bounds of a login request.
const (
	// MaxLoginBearerSize bounds a bearer token.
	MaxLoginBearerSize = 16 << 10
	// MaxLoginMeta bounds the meta pairs of a login.
	MaxLoginMeta = 64
	// MaxLoginMetaSize bounds a meta key or value.
	MaxLoginMetaSize = 512
)

// ACLLoginRequest is a login through AuthMethod with BearerToken, creating
// a token with AccessorID and SecretID (chosen by the caller, UUIDs) and
// Meta in its description; or a logout, deleting the login token whose
// secret is SecretID.
type ACLLoginRequest struct {
	Op          string
	AuthMethod  string            `json:",omitempty"`
	BearerToken string            `json:",omitempty"`
	Meta        map[string]string `json:",omitempty"`
	AccessorID  string            `json:",omitempty"`
	SecretID    string
}

// Operations of CmdACLAuthMethod and CmdACLBindingRule.
const (
	ACLOpSet    = "set"
	ACLOpDelete = "delete"
)

// MaxAuthMethodConfigSize bounds an auth method's Config, encoded.
const MaxAuthMethodConfigSize = 256 << 10

// ACLAuthMethodRequest sets Method (Op set) or deletes the method named Name
// with its binding rules and its login tokens (Op delete).
type ACLAuthMethodRequest struct {
	Op     string
	Method *ACLAuthMethod `json:",omitempty"`
	Name   string         `json:",omitempty"`
}

// ACLBindingRuleRequest sets Rule (Op set) or deletes the rule with ID (Op
// delete). A rule's auth method must exist.
type ACLBindingRuleRequest struct {
	Op   string
	Rule *ACLBindingRule `json:",omitempty"`
	ID   string          `json:",omitempty"`
}

// Reads of auth methods and binding rules.
const (
	// ReadACLAuthMethod reads the auth method named Name.
	ReadACLAuthMethod ReadOp = "acl.authmethod"
	// ReadACLAuthMethods lists every auth method, by name.
	ReadACLAuthMethods ReadOp = "acl.authmethods"
	// ReadACLBindingRule reads the binding rule whose ID is Name.
	ReadACLBindingRule ReadOp = "acl.bindingrule"
	// ReadACLBindingRules lists binding rules, those of the auth method
	// named Name when it is set.
	ReadACLBindingRules ReadOp = "acl.bindingrules"
)

func addACLLoginTables(tables map[string]*memdb.TableSchema) {
	tables[tableACLAuthMethods] = &memdb.TableSchema{Name: tableACLAuthMethods, Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Name"}},
	}}
	tables[tableACLBindingRules] = &memdb.TableSchema{Name: tableACLBindingRules, Indexes: map[string]*memdb.IndexSchema{
		"id":         {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
		"authmethod": {Name: "authmethod", Indexer: &memdb.StringFieldIndex{Field: "AuthMethod"}},
	}}
}

// checkLoginShape refuses a request the store could not apply.
func (c *Command) checkLoginShape() error {
	switch {
	case c.ACLAuthMethod != nil:
		r := c.ACLAuthMethod
		switch {
		case r.Op == ACLOpSet && r.Method == nil:
			return fmt.Errorf("auth method set without a method")
		case r.Op != ACLOpSet && r.Op != ACLOpDelete:
			return fmt.Errorf("unknown auth method operation %q", r.Op)
		}
	case c.ACLBindingRule != nil:
		r := c.ACLBindingRule
		switch {
		case r.Op == ACLOpSet && r.Rule == nil:
			return fmt.Errorf("binding rule set without a rule")
		case r.Op != ACLOpSet && r.Op != ACLOpDelete:
			return fmt.Errorf("unknown binding rule operation %q", r.Op)
		}
	case c.ACLLogin != nil:
		r := c.ACLLogin
		switch {
		case r.Op != ACLLoginOp && r.Op != ACLLogoutOp:
			return fmt.Errorf("unknown login operation %q", r.Op)
		case r.SecretID == "":
			return fmt.Errorf("login request without a SecretID")
		case r.Op == ACLLoginOp && (r.AuthMethod == "" || r.BearerToken == "" || r.AccessorID == ""):
			return fmt.Errorf("login request needs an AuthMethod, a BearerToken and an AccessorID")
		}
	}
	return nil
}

// checkLoginLimits bounds an auth method or binding rule command.
func (c *Command) checkLoginLimits() error {
	var texts []string
	switch {
	case c.ACLAuthMethod != nil:
		r := c.ACLAuthMethod
		texts = append(texts, r.Name)
		if m := r.Method; m != nil {
			texts = append(texts, m.Name, m.Type, m.DisplayName, m.Description, m.TokenLocality)
			b, err := json.Marshal(m.Config)
			if err != nil {
				return fmt.Errorf("auth method config: %v", err)
			}
			if len(b) > MaxAuthMethodConfigSize {
				return fmt.Errorf("auth method config is %d bytes, max %d", len(b), MaxAuthMethodConfigSize)
			}
		}
	case c.ACLLogin != nil:
		r := c.ACLLogin
		if len(r.BearerToken) > MaxLoginBearerSize {
			return fmt.Errorf("bearer token is %d bytes, max %d", len(r.BearerToken), MaxLoginBearerSize)
		}
		if len(r.Meta) > MaxLoginMeta {
			return fmt.Errorf("%d meta pairs, max %d", len(r.Meta), MaxLoginMeta)
		}
		for k, v := range r.Meta {
			if len(k) > MaxLoginMetaSize || len(v) > MaxLoginMetaSize {
				return fmt.Errorf("meta keys and values are at most %d bytes", MaxLoginMetaSize)
			}
		}
		texts = append(texts, r.AuthMethod, r.AccessorID, r.SecretID)
	case c.ACLBindingRule != nil:
		r := c.ACLBindingRule
		texts = append(texts, r.ID)
		if b := r.Rule; b != nil {
			texts = append(texts, b.ID, b.Description, b.AuthMethod, b.Selector, b.BindType, b.BindName)
		}
	}
	for _, s := range texts {
		if len(s) > MaxACLTextSize {
			return fmt.Errorf("field is %d bytes, max %d", len(s), MaxACLTextSize)
		}
	}
	return nil
}

// ACLAuthMethodApply applies a CmdACLAuthMethod at idx.
func (s *Store) ACLAuthMethodApply(idx uint64, req *ACLAuthMethodRequest) error {
	txn := s.mem().Txn(true)
	defer txn.Abort()
	var err error
	if req.Op == ACLOpSet {
		err = authMethodSetTxn(txn, idx, req.Method)
	} else {
		err = authMethodDeleteTxn(txn, idx, req.Name)
	}
	if err != nil {
		return err
	}
	txn.Commit()
	return nil
}

func authMethodSetTxn(txn *memdb.Txn, idx uint64, in *ACLAuthMethod) error {
	if in.Name == "" || in.Type == "" {
		return invalidf("auth method needs a Name and a Type")
	}
	m := *in
	raw, err := txn.First(tableACLAuthMethods, "id", m.Name)
	if err != nil {
		return fmt.Errorf("auth method lookup: %w", err)
	}
	m.CreateIndex = idx
	if raw != nil {
		old := raw.(*ACLAuthMethod)
		if old.Type != m.Type {
			return invalidf("the Type of auth method %q cannot change", m.Name)
		}
		m.CreateIndex = old.CreateIndex
	}
	m.ModifyIndex = idx
	if err := txn.Insert(tableACLAuthMethods, &m); err != nil {
		return fmt.Errorf("insert auth method: %w", err)
	}
	return setIndex(txn, tableACLAuthMethods, idx)
}

// authMethodDeleteTxn deletes a method, its binding rules and the tokens
// logins through it created. A missing method is not an error.
func authMethodDeleteTxn(txn *memdb.Txn, idx uint64, name string) error {
	raw, err := txn.First(tableACLAuthMethods, "id", name)
	if err != nil {
		return fmt.Errorf("auth method lookup: %w", err)
	}
	if raw == nil {
		return nil
	}
	if err := txn.Delete(tableACLAuthMethods, raw); err != nil {
		return fmt.Errorf("delete auth method: %w", err)
	}
	if err := setIndex(txn, tableACLAuthMethods, idx); err != nil {
		return err
	}
	n, err := txn.DeleteAll(tableACLBindingRules, "authmethod", name)
	if err != nil {
		return fmt.Errorf("delete binding rules: %w", err)
	}
	if n > 0 {
		if err := setIndex(txn, tableACLBindingRules, idx); err != nil {
			return err
		}
	}
	it, err := txn.Get(tableACLTokens, "id")
	if err != nil {
		return fmt.Errorf("tokens: %w", err)
	}
	var doomed []any
	for t := it.Next(); t != nil; t = it.Next() {
		if t.(*ACLToken).AuthMethod == name {
			doomed = append(doomed, t)
		}
	}
	for _, t := range doomed {
		if err := txn.Delete(tableACLTokens, t); err != nil {
			return fmt.Errorf("delete login token: %w", err)
		}
	}
	if len(doomed) > 0 {
		return setIndex(txn, tableACLTokens, idx)
	}
	return nil
}

// ACLBindingRuleApply applies a CmdACLBindingRule at idx.
func (s *Store) ACLBindingRuleApply(idx uint64, req *ACLBindingRuleRequest) error {
	if req.Op == ACLOpDelete {
		return s.aclDelete(idx, tableACLBindingRules, req.ID)
	}
	in := req.Rule
	if in.ID == "" || in.AuthMethod == "" {
		return invalidf("binding rule needs an ID and an AuthMethod")
	}
	txn := s.mem().Txn(true)
	defer txn.Abort()
	m, err := txn.First(tableACLAuthMethods, "id", in.AuthMethod)
	if err != nil {
		return fmt.Errorf("auth method lookup: %w", err)
	}
	if m == nil {
		return invalidf("Invalid Binding Rule: unknown auth method %q", in.AuthMethod)
	}
	r := *in
	r.CreateIndex = idx
	raw, err := txn.First(tableACLBindingRules, "id", r.ID)
	if err != nil {
		return fmt.Errorf("binding rule lookup: %w", err)
	}
	if raw != nil {
		old := raw.(*ACLBindingRule)
		if old.AuthMethod != r.AuthMethod {
			return invalidf("the AuthMethod of binding rule %s cannot change", r.ID)
		}
		r.CreateIndex = old.CreateIndex
	}
	r.ModifyIndex = idx
	if err := txn.Insert(tableACLBindingRules, &r); err != nil {
		return fmt.Errorf("insert binding rule: %w", err)
	}
	if err := setIndex(txn, tableACLBindingRules, idx); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

// loginIndex adds the watches of the auth method and binding rule tables to
// ws and returns the higher index.
func loginIndex(txn *memdb.Txn, ws memdb.WatchSet) uint64 {
	return max(watchIndex(txn, ws, tableACLAuthMethods), watchIndex(txn, ws, tableACLBindingRules))
}

// ACLAuthMethodGet returns the auth method named name, nil when there is
// none.
func (s *Store) ACLAuthMethodGet(ws memdb.WatchSet, name string) (uint64, *ACLAuthMethod, error) {
	txn := s.mem().Txn(false)
	idx := loginIndex(txn, ws)
	raw, err := txn.First(tableACLAuthMethods, "id", name)
	if err != nil || raw == nil {
		return idx, nil, err
	}
	return idx, raw.(*ACLAuthMethod), nil
}

// ACLAuthMethodList returns every auth method, ordered by name.
func (s *Store) ACLAuthMethodList(ws memdb.WatchSet) (uint64, []*ACLAuthMethod, error) {
	txn := s.mem().Txn(false)
	idx := loginIndex(txn, ws)
	it, err := txn.Get(tableACLAuthMethods, "id")
	if err != nil {
		return 0, nil, fmt.Errorf("auth methods: %w", err)
	}
	out := []*ACLAuthMethod{}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*ACLAuthMethod))
	}
	return idx, out, nil
}

// ACLBindingRuleGet returns the binding rule with an ID, nil when there is
// none.
func (s *Store) ACLBindingRuleGet(ws memdb.WatchSet, id string) (uint64, *ACLBindingRule, error) {
	txn := s.mem().Txn(false)
	idx := loginIndex(txn, ws)
	raw, err := txn.First(tableACLBindingRules, "id", id)
	if err != nil || raw == nil {
		return idx, nil, err
	}
	return idx, raw.(*ACLBindingRule), nil
}

// ACLBindingRuleList returns the binding rules of the auth method named
// method (every rule when it is empty), ordered by ID.
func (s *Store) ACLBindingRuleList(ws memdb.WatchSet, method string) (uint64, []*ACLBindingRule, error) {
	txn := s.mem().Txn(false)
	idx := loginIndex(txn, ws)
	var it memdb.ResultIterator
	var err error
	if method != "" {
		it, err = txn.Get(tableACLBindingRules, "authmethod", method)
	} else {
		it, err = txn.Get(tableACLBindingRules, "id")
	}
	if err != nil {
		return 0, nil, fmt.Errorf("binding rules: %w", err)
	}
	out := []*ACLBindingRule{}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*ACLBindingRule))
	}
	return idx, out, nil
}

// executeACLLogin runs the reads of this file; ok is false for other ops.
func (s *Store) executeACLLogin(ws memdb.WatchSet, req *ReadRequest, out *ReadResponse) (idx uint64, ok bool, err error) {
	switch req.Op {
	case ReadACLAuthMethod:
		var m *ACLAuthMethod
		idx, m, err = s.ACLAuthMethodGet(ws, req.Name)
		if m != nil {
			out.ACLAuthMethods = []*ACLAuthMethod{m}
		}
	case ReadACLAuthMethods:
		idx, out.ACLAuthMethods, err = s.ACLAuthMethodList(ws)
	case ReadACLBindingRule:
		var r *ACLBindingRule
		idx, r, err = s.ACLBindingRuleGet(ws, req.Name)
		if r != nil {
			out.ACLBindingRules = []*ACLBindingRule{r}
		}
	case ReadACLBindingRules:
		idx, out.ACLBindingRules, err = s.ACLBindingRuleList(ws, req.Name)
	default:
		return 0, false, nil
	}
	return idx, true, err
}
