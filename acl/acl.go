// Package acl owns authorization: the Authorizer every read and write path
// consults, the rules language, the compilation of tokens into
// Authorizers, and the agent's caching token resolver (resolver.go). With
// ACLs disabled the Authorizer is AllowAll.
//
// The package must not import agent or server.
package acl

import "errors"

// ErrPermissionDenied is returned (wrapped) when an Authorizer refuses an
// action. HTTP handlers map it to 403.
var ErrPermissionDenied = errors.New("Permission denied")

// Decision is the result of one authorization check.
type Decision int

const (
	// Deny refuses the action.
	Deny Decision = iota
	// Allow permits the action.
	Allow
)

// Authorizer answers whether a resolved token may perform an action on a
// resource. Implementations must be safe for concurrent use and must not block.
type Authorizer interface {
	// KeyRead reports whether the KV key may be read.
	KeyRead(key string) Decision
	// KeyWrite reports whether the KV key may be written.
	KeyWrite(key string) Decision
	// KeyList reports whether keys under the prefix may be listed.
	KeyList(prefix string) Decision
	// NodeRead reports whether the node may be read.
	NodeRead(node string) Decision
	// NodeWrite reports whether the node may be registered or changed.
	NodeWrite(node string) Decision
	// ServiceRead reports whether the service may be read.
	ServiceRead(service string) Decision
	// ServiceWrite reports whether the service may be registered or changed.
	ServiceWrite(service string) Decision
	// SessionRead reports whether sessions on the node may be read.
	SessionRead(node string) Decision
	// SessionWrite reports whether sessions on the node may be written.
	SessionWrite(node string) Decision
	// AgentRead reports whether the agent on the node may be read.
	AgentRead(node string) Decision
	// AgentWrite reports whether the agent on the node may be changed.
	AgentWrite(node string) Decision
	// OperatorRead reports whether cluster-level state may be read.
	OperatorRead() Decision
	// OperatorWrite reports whether cluster-level state may be changed.
	OperatorWrite() Decision
	// EventWrite reports whether a user event with this name may be fired.
	EventWrite(name string) Decision
	// QueryWrite reports whether a prepared query with this name may be written.
	QueryWrite(name string) Decision
}

// AllowAll returns the Authorizer used when ACLs are disabled: every action is
// allowed.
func AllowAll() Authorizer { return allowAll{} }

type allowAll struct{}

func (allowAll) KeyRead(string) Decision      { return Allow }
func (allowAll) KeyWrite(string) Decision     { return Allow }
func (allowAll) KeyList(string) Decision      { return Allow }
func (allowAll) NodeRead(string) Decision     { return Allow }
func (allowAll) NodeWrite(string) Decision    { return Allow }
func (allowAll) ServiceRead(string) Decision  { return Allow }
func (allowAll) ServiceWrite(string) Decision { return Allow }
func (allowAll) SessionRead(string) Decision  { return Allow }
func (allowAll) SessionWrite(string) Decision { return Allow }
func (allowAll) AgentRead(string) Decision    { return Allow }
func (allowAll) AgentWrite(string) Decision   { return Allow }
func (allowAll) OperatorRead() Decision       { return Allow }
func (allowAll) OperatorWrite() Decision      { return Allow }
func (allowAll) EventWrite(string) Decision   { return Allow }
func (allowAll) QueryWrite(string) Decision   { return Allow }

// DenyAll returns an Authorizer that refuses every action: what a token
// without any policy gets once ACLs are enforced with a deny default. Tests
// use it to show that every path authorizes before it acts.
func DenyAll() Authorizer { return denyAll{} }

type denyAll struct{}

func (denyAll) KeyRead(string) Decision      { return Deny }
func (denyAll) KeyWrite(string) Decision     { return Deny }
func (denyAll) KeyList(string) Decision      { return Deny }
func (denyAll) NodeRead(string) Decision     { return Deny }
func (denyAll) NodeWrite(string) Decision    { return Deny }
func (denyAll) ServiceRead(string) Decision  { return Deny }
func (denyAll) ServiceWrite(string) Decision { return Deny }
func (denyAll) SessionRead(string) Decision  { return Deny }
func (denyAll) SessionWrite(string) Decision { return Deny }
func (denyAll) AgentRead(string) Decision    { return Deny }
func (denyAll) AgentWrite(string) Decision   { return Deny }
func (denyAll) OperatorRead() Decision       { return Deny }
func (denyAll) OperatorWrite() Decision      { return Deny }
func (denyAll) EventWrite(string) Decision   { return Deny }
func (denyAll) QueryWrite(string) Decision   { return Deny }

// Resolver turns a request's secret token into an Authorizer.
type Resolver interface {
	// Resolve returns the Authorizer for token. An unknown token is an error
	// wrapping ErrNotFound.
	Resolve(token string) (Authorizer, error)
}

// ErrNotFound is returned when a token does not exist.
var ErrNotFound = errors.New("ACL not found")

// StaticResolver resolves every token to the same Authorizer. With ACLs
// disabled the agent uses StaticResolver{AllowAll()}.
type StaticResolver struct {
	// Authorizer is returned for every token.
	Authorizer Authorizer
}

// Resolve implements Resolver.
func (r StaticResolver) Resolve(string) (Authorizer, error) { return r.Authorizer, nil }
