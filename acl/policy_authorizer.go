package acl

import (
	iradix "github.com/hashicorp/go-immutable-radix"
)

// ruleTree holds the merged levels of one resource's rules: exact names and
// prefixes, each in a radix tree so that a lookup costs one walk of the name.
type ruleTree struct {
	exact  *iradix.Tree
	prefix *iradix.Tree
}

func newRuleTree() *ruleTree {
	return &ruleTree{exact: iradix.New(), prefix: iradix.New()}
}

func (t *ruleTree) add(name string, prefix bool, lvl Level) {
	if lvl == LevelNone {
		return
	}
	tr := &t.exact
	if prefix {
		tr = &t.prefix
	}
	k := []byte(name)
	if old, ok := (*tr).Get(k); ok {
		lvl = merge(old.(Level), lvl)
	}
	*tr, _, _ = (*tr).Insert(k, lvl)
}

// lookup returns the level of the rule that governs name: its exact rule if
// there is one, else the longest prefix rule, else LevelNone.
func (t *ruleTree) lookup(name string) Level {
	if t == nil {
		return LevelNone
	}
	if v, ok := t.exact.Get([]byte(name)); ok {
		return v.(Level)
	}
	if _, v, ok := t.prefix.Root().LongestPrefix([]byte(name)); ok {
		return v.(Level)
	}
	return LevelNone
}

// anyBelow reports whether a rule on prefix or on a name beneath it grants
// less than want.
func (t *ruleTree) anyBelow(prefix string, want Level) bool {
	if t == nil {
		return false
	}
	found := false
	walk := func(_ []byte, v any) bool {
		if v.(Level) != want {
			found = true
		}
		return found
	}
	t.exact.Root().WalkPrefix([]byte(prefix), walk)
	if !found {
		t.prefix.Root().WalkPrefix([]byte(prefix), walk)
	}
	return found
}

// PolicyAuthorizer answers from the merged rules of one token's policies (and
// its service and node identities). Where no rule matches, default_policy
// decides. It is immutable and safe for concurrent use.
//
// Precedence, as Consul documents it: an exact rule beats the longest
// matching prefix; where several policies set the same rule, deny wins, then
// write > list > read.
type PolicyAuthorizer struct {
	named        map[Resource]*ruleTree
	intentions   *ruleTree
	scalars      map[Resource]Level
	defaultAllow bool
	keyList      bool
}

// PolicyOptions are the agent settings that change how rules are read.
type PolicyOptions struct {
	// DefaultAllow is acl.default_policy = "allow".
	DefaultAllow bool
	// EnableKeyList is acl.enable_key_list_policy: listing keys needs "list"
	// (or "write") rather than "read".
	EnableKeyList bool
}

// NewPolicyAuthorizer merges rules into one Authorizer.
func NewPolicyAuthorizer(rules []*Rules, opts PolicyOptions) *PolicyAuthorizer {
	a := &PolicyAuthorizer{
		named:        map[Resource]*ruleTree{},
		intentions:   newRuleTree(),
		scalars:      map[Resource]Level{},
		defaultAllow: opts.DefaultAllow,
		keyList:      opts.EnableKeyList,
	}
	for _, rs := range rules {
		if rs == nil {
			continue
		}
		for res, lvl := range rs.Scalars {
			a.scalars[res] = merge(a.scalars[res], lvl)
		}
		for _, r := range rs.Named {
			t := a.named[r.Resource]
			if t == nil {
				t = newRuleTree()
				a.named[r.Resource] = t
			}
			t.add(r.Name, r.Prefix, r.Level)
			if r.Resource == ResourceService {
				in := r.Intentions
				if in == LevelNone {
					// service:read or service:write implies intentions:read
					// on that service; service deny implies intentions deny.
					switch r.Level {
					case LevelRead, LevelWrite:
						in = LevelRead
					case LevelDeny:
						in = LevelDeny
					}
				}
				a.intentions.add(r.Name, r.Prefix, in)
			}
		}
	}
	return a
}

func (a *PolicyAuthorizer) dflt() Decision {
	if a.defaultAllow {
		return Allow
	}
	return Deny
}

func (a *PolicyAuthorizer) read(lvl Level) Decision {
	switch lvl {
	case LevelNone:
		return a.dflt()
	case LevelRead, LevelList, LevelWrite:
		return Allow
	}
	return Deny
}

func (a *PolicyAuthorizer) write(lvl Level) Decision {
	switch lvl {
	case LevelNone:
		return a.dflt()
	case LevelWrite:
		return Allow
	}
	return Deny
}

func (a *PolicyAuthorizer) lookup(res Resource, name string) Level {
	return a.named[res].lookup(name)
}

func (a *PolicyAuthorizer) scalar(res Resource) Level {
	lvl := a.scalars[res]
	if lvl == LevelNone && (res == ResourceMesh || res == ResourcePeering) {
		// mesh and peering fall back to the operator rule when unset.
		lvl = a.scalars[ResourceOperator]
	}
	return lvl
}

// KeyRead implements Authorizer.
func (a *PolicyAuthorizer) KeyRead(key string) Decision { return a.read(a.lookup(ResourceKey, key)) }

// KeyWrite implements Authorizer.
func (a *PolicyAuthorizer) KeyWrite(key string) Decision {
	return a.write(a.lookup(ResourceKey, key))
}

// KeyList implements Authorizer. Without acl.enable_key_list_policy a list is
// a read.
func (a *PolicyAuthorizer) KeyList(prefix string) Decision {
	lvl := a.lookup(ResourceKey, prefix)
	if !a.keyList {
		return a.read(lvl)
	}
	switch lvl {
	case LevelNone:
		return a.dflt()
	case LevelList, LevelWrite:
		return Allow
	}
	return Deny
}

// KeyWritePrefix reports whether every key under prefix may be deleted at
// once: write on the prefix, and no rule on the prefix or beneath it that
// grants less than write.
func (a *PolicyAuthorizer) KeyWritePrefix(prefix string) Decision {
	if a.named[ResourceKey].anyBelow(prefix, LevelWrite) {
		return Deny
	}
	return a.KeyWrite(prefix)
}

// NodeRead implements Authorizer.
func (a *PolicyAuthorizer) NodeRead(n string) Decision { return a.read(a.lookup(ResourceNode, n)) }

// NodeWrite implements Authorizer.
func (a *PolicyAuthorizer) NodeWrite(n string) Decision { return a.write(a.lookup(ResourceNode, n)) }

// ServiceRead implements Authorizer.
func (a *PolicyAuthorizer) ServiceRead(s string) Decision {
	return a.read(a.lookup(ResourceService, s))
}

// ServiceWrite implements Authorizer.
func (a *PolicyAuthorizer) ServiceWrite(s string) Decision {
	return a.write(a.lookup(ResourceService, s))
}

// IntentionRead reports whether intentions whose destination is the service
// may be read.
func (a *PolicyAuthorizer) IntentionRead(s string) Decision {
	return a.read(a.intentions.lookup(s))
}

// IntentionWrite reports whether intentions whose destination is the service
// may be written.
func (a *PolicyAuthorizer) IntentionWrite(s string) Decision {
	return a.write(a.intentions.lookup(s))
}

// SessionRead implements Authorizer.
func (a *PolicyAuthorizer) SessionRead(n string) Decision {
	return a.read(a.lookup(ResourceSession, n))
}

// SessionWrite implements Authorizer.
func (a *PolicyAuthorizer) SessionWrite(n string) Decision {
	return a.write(a.lookup(ResourceSession, n))
}

// AgentRead implements Authorizer.
func (a *PolicyAuthorizer) AgentRead(n string) Decision { return a.read(a.lookup(ResourceAgent, n)) }

// AgentWrite implements Authorizer.
func (a *PolicyAuthorizer) AgentWrite(n string) Decision {
	return a.write(a.lookup(ResourceAgent, n))
}

// EventRead reports whether user events with this name may be listed.
func (a *PolicyAuthorizer) EventRead(n string) Decision { return a.read(a.lookup(ResourceEvent, n)) }

// EventWrite implements Authorizer.
func (a *PolicyAuthorizer) EventWrite(n string) Decision {
	return a.write(a.lookup(ResourceEvent, n))
}

// QueryRead reports whether the prepared query with this name may be read.
func (a *PolicyAuthorizer) QueryRead(n string) Decision { return a.read(a.lookup(ResourceQuery, n)) }

// QueryWrite implements Authorizer.
func (a *PolicyAuthorizer) QueryWrite(n string) Decision {
	return a.write(a.lookup(ResourceQuery, n))
}

// OperatorRead implements Authorizer.
func (a *PolicyAuthorizer) OperatorRead() Decision { return a.read(a.scalar(ResourceOperator)) }

// OperatorWrite implements Authorizer.
func (a *PolicyAuthorizer) OperatorWrite() Decision { return a.write(a.scalar(ResourceOperator)) }

// ACLRead reports whether ACL tokens, policies and roles may be read.
func (a *PolicyAuthorizer) ACLRead() Decision { return a.read(a.scalar(ResourceACL)) }

// ACLWrite reports whether ACL tokens, policies and roles may be changed
// (and snapshots saved or restored).
func (a *PolicyAuthorizer) ACLWrite() Decision { return a.write(a.scalar(ResourceACL)) }

// KeyringRead reports whether the gossip keyring may be listed.
func (a *PolicyAuthorizer) KeyringRead() Decision { return a.read(a.scalar(ResourceKeyring)) }

// KeyringWrite reports whether gossip keys may be installed, used or removed.
func (a *PolicyAuthorizer) KeyringWrite() Decision { return a.write(a.scalar(ResourceKeyring)) }

// MeshRead reports whether mesh-wide configuration may be read.
func (a *PolicyAuthorizer) MeshRead() Decision { return a.read(a.scalar(ResourceMesh)) }

// MeshWrite reports whether mesh-wide configuration may be changed.
func (a *PolicyAuthorizer) MeshWrite() Decision { return a.write(a.scalar(ResourceMesh)) }

// PeeringRead reports whether cluster peerings may be read.
func (a *PolicyAuthorizer) PeeringRead() Decision { return a.read(a.scalar(ResourcePeering)) }

// PeeringWrite reports whether cluster peerings may be changed.
func (a *PolicyAuthorizer) PeeringWrite() Decision { return a.write(a.scalar(ResourcePeering)) }

var _ Authorizer = (*PolicyAuthorizer)(nil)
