package acl

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/tribune-mesh/tribune/catalog"
)

// Limits on what one token may expand to, so that resolving a token has a
// bounded cost.
const (
	// MaxLinks bounds the policies, roles and identities of one token or role.
	MaxLinks = 256
)

// Lookup gives Compile the policies and roles a token links to. A missing one
// returns nil; the token's link to it is then ignored, as Consul does for a
// deleted policy or role.
type Lookup interface {
	// Policy returns the policy with this ID, or nil.
	Policy(id string) *catalog.ACLPolicy
	// Role returns the role with this ID, or nil.
	Role(id string) *catalog.ACLRole
}

// Compiler turns tokens into Authorizers, caching each policy's parsed rules
// by ID and ModifyIndex so that a policy shared by many tokens is parsed once.
// It is safe for concurrent use.
type Compiler struct {
	// Datacenter is the local datacenter: policies and identities scoped to
	// other datacenters do not apply here.
	Datacenter string
	// Options are default_policy and enable_key_list_policy.
	Options PolicyOptions

	mu     sync.Mutex
	parsed map[string]parsedPolicy // policy ID -> rules at ModifyIndex
}

type parsedPolicy struct {
	modify uint64
	rules  *Rules
}

// ErrTokenExpired is returned (wrapped) for a token whose ExpirationTime has
// passed; callers treat it as ErrNotFound.
var ErrTokenExpired = fmt.Errorf("%w: token expired", ErrNotFound)

// Compile returns the Authorizer for token at time now: the merged rules of
// its policies, of its roles' policies and of every service and node
// identity, with default_policy where no rule matches. The global-management
// policy compiles to write on everything.
func (c *Compiler) Compile(token *catalog.ACLToken, lookup Lookup, now time.Time) (*PolicyAuthorizer, error) {
	if token == nil {
		return nil, ErrNotFound
	}
	if token.Expired(now) {
		return nil, ErrTokenExpired
	}
	if n := len(token.Policies) + len(token.Roles) + len(token.ServiceIdentities) + len(token.NodeIdentities); n > MaxLinks {
		return nil, fmt.Errorf("token %s links %d policies, roles and identities, more than %d", token.AccessorID, n, MaxLinks)
	}
	var rules []*Rules
	seen := map[string]bool{}
	addPolicy := func(id string) error {
		if seen[id] {
			return nil
		}
		seen[id] = true
		p := lookup.Policy(id)
		if p == nil || !c.appliesHere(p.Datacenters) {
			return nil
		}
		r, err := c.rulesOf(p)
		if err != nil {
			return err
		}
		rules = append(rules, r)
		return nil
	}
	addIdentities := func(svcs []*catalog.ACLServiceIdentity, nodes []*catalog.ACLNodeIdentity) {
		for _, s := range svcs {
			if s != nil && c.appliesHere(s.Datacenters) {
				rules = append(rules, ServiceIdentityRules(s.ServiceName))
			}
		}
		for _, n := range nodes {
			if n != nil && (n.Datacenter == "" || n.Datacenter == c.Datacenter) {
				rules = append(rules, NodeIdentityRules(n.NodeName))
			}
		}
	}
	for _, l := range token.Policies {
		if err := addPolicy(l.ID); err != nil {
			return nil, err
		}
	}
	for _, l := range token.Roles {
		role := lookup.Role(l.ID)
		if role == nil {
			continue
		}
		if len(role.Policies)+len(role.ServiceIdentities)+len(role.NodeIdentities) > MaxLinks {
			return nil, fmt.Errorf("role %s links more than %d policies and identities", role.ID, MaxLinks)
		}
		for _, pl := range role.Policies {
			if err := addPolicy(pl.ID); err != nil {
				return nil, err
			}
		}
		addIdentities(role.ServiceIdentities, role.NodeIdentities)
	}
	addIdentities(token.ServiceIdentities, token.NodeIdentities)
	return NewPolicyAuthorizer(rules, c.Options), nil
}

func (c *Compiler) appliesHere(dcs []string) bool {
	return len(dcs) == 0 || slices.Contains(dcs, c.Datacenter)
}

// rulesOf parses a policy's rules, or returns them from the cache when the
// policy has not changed since.
func (c *Compiler) rulesOf(p *catalog.ACLPolicy) (*Rules, error) {
	c.mu.Lock()
	if c.parsed == nil {
		c.parsed = map[string]parsedPolicy{}
	}
	if pp, ok := c.parsed[p.ID]; ok && pp.modify == p.ModifyIndex && p.ModifyIndex != 0 {
		c.mu.Unlock()
		return pp.rules, nil
	}
	c.mu.Unlock()
	src := p.Rules
	if p.ID == catalog.ACLGlobalManagementPolicyID {
		src = GlobalManagementRules
	}
	r, err := ParseRules(src)
	if err != nil {
		return nil, fmt.Errorf("policy %s (%s): %w", p.Name, p.ID, err)
	}
	c.mu.Lock()
	c.parsed[p.ID] = parsedPolicy{modify: p.ModifyIndex, rules: r}
	c.mu.Unlock()
	return r, nil
}

// Forget drops the cached rules of a deleted policy.
func (c *Compiler) Forget(policyID string) {
	c.mu.Lock()
	delete(c.parsed, policyID)
	c.mu.Unlock()
}
