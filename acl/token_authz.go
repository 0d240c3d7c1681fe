package acl

import "github.com/tribune-mesh/tribune/catalog"

// ACLRead reports whether a may read tokens, policies and roles (acl =
// "read"). Authorizers without the ACL scalar deny.
func ACLRead(a Authorizer) Decision {
	if x, ok := a.(interface{ ACLRead() Decision }); ok {
		return x.ACLRead()
	}
	return Deny
}

// ACLWrite reports whether a may change tokens, policies and roles (acl =
// "write").
func ACLWrite(a Authorizer) Decision {
	if x, ok := a.(interface{ ACLWrite() Decision }); ok {
		return x.ACLWrite()
	}
	return Deny
}

// ACLRead implements the acl scalar: allowed.
func (allowAll) ACLRead() Decision { return Allow }

// ACLWrite implements the acl scalar: allowed.
func (allowAll) ACLWrite() Decision { return Allow }

// ACLRead implements the acl scalar: denied.
func (denyAll) ACLRead() Decision { return Deny }

// ACLWrite implements the acl scalar: denied.
func (denyAll) ACLWrite() Decision { return Deny }

// AccessorOf returns the AccessorID of the token an Authorizer was resolved
// from, "" when it does not know.
func AccessorOf(a Authorizer) string {
	if x, ok := a.(interface{ AccessorID() string }); ok {
		return x.AccessorID()
	}
	return ""
}

// TokenOf returns the token an Authorizer was resolved from, nil when it
// does not know. The token is shared: callers must not modify it.
func TokenOf(a Authorizer) *catalog.ACLToken {
	if x, ok := a.(interface{ Token() *catalog.ACLToken }); ok {
		return x.Token()
	}
	return nil
}

// TokenAuthorizer is the Authorizer of one resolved token: its compiled
// rules and the token itself.
type TokenAuthorizer struct {
	*PolicyAuthorizer
	token *catalog.ACLToken
}

// AccessorID returns the token's AccessorID.
func (t *TokenAuthorizer) AccessorID() string { return t.token.AccessorID }

// Token returns the token (shared; read only).
func (t *TokenAuthorizer) Token() *catalog.ACLToken { return t.token }
