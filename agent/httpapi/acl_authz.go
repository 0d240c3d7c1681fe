package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/catalog"
)

// resolve turns a secret into an Authorizer, through the context-aware
// resolution when the resolver offers one.
func (h *Handler) resolve(ctx context.Context, secret string) (acl.Authorizer, error) {
	if cr, ok := h.agent.acls.(interface {
		ResolveContext(context.Context, string) (acl.Authorizer, error)
	}); ok {
		return cr.ResolveContext(ctx, secret)
	}
	return h.agent.acls.Resolve(secret)
}

// denialRecord remembers the last check a request's Authorizer denied, so
// that the 403 can say what was missing, as Consul's does.
type denialRecord struct {
	mu       sync.Mutex
	set      bool
	accessor string
	perm     string
	resource string
	scalar   bool
	// url is the request's: a resource the 403 names must appear in its
	// path and query, so that a refusal never reveals a name the sender
	// did not already know (a service's name behind its ID).
	url *url.URL
}

// explain turns the generic permission-denied error into Consul's message
// naming the token, the permission and the resource.
func (d *denialRecord) explain(err error) error {
	if d == nil || !errors.Is(err, errPermissionDenied) {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.set {
		return err
	}
	who := "provided token"
	switch d.accessor {
	case "":
	case catalog.ACLAnonymousTokenID:
		who = "anonymous token"
	default:
		who = fmt.Sprintf("token with AccessorID '%s'", d.accessor)
	}
	msg := fmt.Sprintf("%s: %s lacks permission '%s'", acl.ErrPermissionDenied, who, d.perm)
	if !d.scalar && strings.Contains(d.url.Path+"?"+d.url.RawQuery, d.resource) {
		msg += fmt.Sprintf(" on %q", d.resource)
	}
	if d.accessor == catalog.ACLAnonymousTokenID {
		// Consul's hint: the caller may not know it sent no token.
		msg += ". The anonymous token is used implicitly when a request does not specify a token."
	}
	return &httpError{code: http.StatusForbidden, msg: msg}
}

// recordDenials wraps authz so that its denials land in the request's
// record; without a record it returns authz as it is.
func recordDenials(ctx context.Context, authz acl.Authorizer) acl.Authorizer {
	st, _ := ctx.Value(reqStateKey{}).(*reqState)
	if st == nil {
		return authz
	}
	return &recorder{inner: authz, rec: &st.denial}
}

// recorder is an Authorizer that notes what it denies.
type recorder struct {
	inner acl.Authorizer
	rec   *denialRecord
}

func (r *recorder) note(dec acl.Decision, perm, resource string, scalar bool) acl.Decision {
	if dec != acl.Allow {
		r.rec.mu.Lock()
		r.rec.set, r.rec.perm, r.rec.resource, r.rec.scalar = true, perm, resource, scalar
		r.rec.accessor = acl.AccessorOf(r.inner)
		r.rec.mu.Unlock()
	}
	return dec
}

func (r *recorder) KeyRead(k string) acl.Decision {
	return r.note(r.inner.KeyRead(k), "key:read", k, false)
}
func (r *recorder) KeyWrite(k string) acl.Decision {
	return r.note(r.inner.KeyWrite(k), "key:write", k, false)
}
func (r *recorder) KeyList(k string) acl.Decision {
	return r.note(r.inner.KeyList(k), "key:list", k, false)
}
func (r *recorder) NodeRead(n string) acl.Decision {
	return r.note(r.inner.NodeRead(n), "node:read", n, false)
}
func (r *recorder) NodeWrite(n string) acl.Decision {
	return r.note(r.inner.NodeWrite(n), "node:write", n, false)
}
func (r *recorder) ServiceRead(s string) acl.Decision {
	return r.note(r.inner.ServiceRead(s), "service:read", s, false)
}
func (r *recorder) ServiceWrite(s string) acl.Decision {
	return r.note(r.inner.ServiceWrite(s), "service:write", s, false)
}
func (r *recorder) SessionRead(n string) acl.Decision {
	return r.note(r.inner.SessionRead(n), "session:read", n, false)
}
func (r *recorder) SessionWrite(n string) acl.Decision {
	return r.note(r.inner.SessionWrite(n), "session:write", n, false)
}
func (r *recorder) AgentRead(n string) acl.Decision {
	return r.note(r.inner.AgentRead(n), "agent:read", n, false)
}
func (r *recorder) AgentWrite(n string) acl.Decision {
	return r.note(r.inner.AgentWrite(n), "agent:write", n, false)
}
func (r *recorder) OperatorRead() acl.Decision {
	return r.note(r.inner.OperatorRead(), "operator:read", "", true)
}
func (r *recorder) OperatorWrite() acl.Decision {
	return r.note(r.inner.OperatorWrite(), "operator:write", "", true)
}
func (r *recorder) EventWrite(n string) acl.Decision {
	return r.note(r.inner.EventWrite(n), "event:write", n, false)
}
func (r *recorder) QueryWrite(n string) acl.Decision {
	return r.note(r.inner.QueryWrite(n), "query:write", n, false)
}

// ACLRead records the acl scalar.
func (r *recorder) ACLRead() acl.Decision { return r.note(acl.ACLRead(r.inner), "acl:read", "", true) }

// ACLWrite records the acl scalar.
func (r *recorder) ACLWrite() acl.Decision {
	return r.note(acl.ACLWrite(r.inner), "acl:write", "", true)
}

// AccessorID passes the token's accessor through.
func (r *recorder) AccessorID() string { return acl.AccessorOf(r.inner) }

// Token passes the resolved token through.
func (r *recorder) Token() *catalog.ACLToken { return acl.TokenOf(r.inner) }
