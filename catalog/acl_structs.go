package catalog

import "time"

// Built-in ACL identifiers, as Consul documents them.
const (
	// ACLGlobalManagementPolicyID is the built-in policy that grants
	// everything.
	ACLGlobalManagementPolicyID = "00000000-0000-0000-0000-000000000001"
	// ACLGlobalManagementPolicyName is its name.
	ACLGlobalManagementPolicyName = "global-management"
	// ACLGlobalReadOnlyPolicyID is the built-in policy that grants read
	// on everything.
	ACLGlobalReadOnlyPolicyID = "00000000-0000-0000-0000-000000000002"
	// ACLGlobalReadOnlyPolicyName is its name.
	ACLGlobalReadOnlyPolicyName = "builtin/global-read-only"
	// ACLAnonymousTokenID is the AccessorID of the anonymous token, used for
	// requests that carry no token.
	ACLAnonymousTokenID = "00000000-0000-0000-0000-000000000002"
	// ACLAnonymousTokenSecret is the anonymous token's SecretID.
	ACLAnonymousTokenSecret = "anonymous"
)

// ACLLink names a policy or role a token or role refers to. ID is what is
// stored; Name is filled in on reads.
type ACLLink struct {
	ID   string
	Name string `json:",omitempty"`
}

// ACLServiceIdentity grants a service's templated rules: write on the
// service and its sidecar, read on services and nodes.
type ACLServiceIdentity struct {
	ServiceName string
	Datacenters []string `json:",omitempty"`
}

// ACLNodeIdentity grants a node's templated rules in one datacenter.
type ACLNodeIdentity struct {
	NodeName   string
	Datacenter string
}

// ACLToken is a token in Consul's wire form.
type ACLToken struct {
	AccessorID        string
	SecretID          string
	Description       string
	Policies          []ACLLink             `json:",omitempty"`
	Roles             []ACLLink             `json:",omitempty"`
	ServiceIdentities []*ACLServiceIdentity `json:",omitempty"`
	NodeIdentities    []*ACLNodeIdentity    `json:",omitempty"`
	Local             bool
	AuthMethod        string        `json:",omitempty"`
	ExpirationTime    *time.Time    `json:",omitempty"`
	ExpirationTTL     time.Duration `json:",omitempty"`
	CreateTime        time.Time
	Hash              []byte `json:",omitempty"`
	RaftIndex
}

// Expired reports whether the token's ExpirationTime has passed at now.
func (t *ACLToken) Expired(now time.Time) bool {
	return t.ExpirationTime != nil && !t.ExpirationTime.IsZero() && !now.Before(*t.ExpirationTime)
}

// ACLPolicy is a named set of rules.
type ACLPolicy struct {
	ID          string
	Name        string
	Description string
	Rules       string
	// Datacenters limits where the policy applies; empty means everywhere.
	Datacenters []string `json:",omitempty"`
	Hash        []byte   `json:",omitempty"`
	RaftIndex
}

// ACLRole is a named set of policies and identities that tokens link to.
type ACLRole struct {
	ID                string
	Name              string
	Description       string
	Policies          []ACLLink             `json:",omitempty"`
	ServiceIdentities []*ACLServiceIdentity `json:",omitempty"`
	NodeIdentities    []*ACLNodeIdentity    `json:",omitempty"`
	Hash              []byte                `json:",omitempty"`
	RaftIndex
}

// ACLAuthMethod is a way to trade an external credential (a JWT) for a
// token, in Consul's wire form.
type ACLAuthMethod struct {
	Name          string
	Type          string
	DisplayName   string        `json:",omitempty"`
	Description   string        `json:",omitempty"`
	MaxTokenTTL   time.Duration `json:",omitempty"`
	TokenLocality string        `json:",omitempty"`
	Config        map[string]any
	RaftIndex
}

// Binding types of a binding rule.
const (
	BindTypeService = "service"
	BindTypeNode    = "node"
	BindTypeRole    = "role"
	BindTypePolicy  = "policy"
)

// ACLBindingRule grants a service identity, node identity, role or policy to
// the tokens of a login whose verified claims match Selector.
type ACLBindingRule struct {
	ID          string
	Description string `json:",omitempty"`
	AuthMethod  string
	Selector    string `json:",omitempty"`
	BindType    string
	BindName    string
	RaftIndex
}
