package local

import (
	"errors"
	"slices"

	"github.com/tribune-mesh/tribune/acl"
)

// SyncToken describes the token anti-entropy writes with, for the line
// that explains a refusal by ACLs: the setting it comes from
// ("acl.tokens.agent", "acl.tokens.default" or "anonymous") and its
// Authorizer, or the error of its resolution (one wrapping acl.ErrNotFound
// when the servers know no token with that secret). It never returns the
// secret.
type SyncToken func() (setting string, authz acl.Authorizer, err error)

// aclRefused reports whether a sync failed because of ACLs.
func aclRefused(err error) bool {
	return errors.Is(err, acl.ErrPermissionDenied) || errors.Is(err, acl.ErrNotFound)
}

// logACLRefusal explains a sync the servers refused: which token (by its
// setting and AccessorID, never the secret) and which permission it lacks
// for what this agent syncs. The message is fixed, so that the agent's
// throttled logger passes it once per window however often the sync is
// retried. Consul only says "ACL not found" here (hashicorp/consul#4406,
// #5818).
func (l *State) logACLRefusal(err error) {
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		// Several writes refused, each with its token: one line each.
		for _, e := range joined.Unwrap() {
			l.logACLRefusal(e)
		}
		return
	}
	var se *syncError
	if errors.As(err, &se) && se.token != "" {
		l.logRegistrationRefusal(se)
		return
	}
	if l.syncToken == nil {
		l.logger.Warn("anti-entropy sync refused by ACLs", "error", err)
		return
	}
	setting, authz, rerr := l.syncToken()
	args := []any{"token", setting}
	switch {
	case rerr != nil:
		args = append(args, "accessor", "unknown", "problem", "the servers know no token with this secret", "error", rerr)
	default:
		args = append(args, "accessor", acl.AccessorOf(authz))
		if perm, res := l.missingPermission(authz); perm != "" {
			args = append(args, "permission", perm, "resource", res)
		}
		args = append(args, "error", err)
	}
	l.logger.Warn("anti-entropy blocked by ACLs: set acl.tokens.agent to a token that may write this node and its services", args...)
}

// missingPermission returns the first permission authz lacks for a sync:
// node:write on this node, then service:write on each service synced with
// the agent's token (in ID order).
func (l *State) missingPermission(authz acl.Authorizer) (perm, resource string) {
	if authz.NodeWrite(l.node.Name) != acl.Allow {
		return "node:write", l.node.Name
	}
	l.mu.Lock()
	ids := make([]string, 0, len(l.services))
	names := make(map[string]string, len(l.services))
	for id, s := range l.services {
		if s.token != "" {
			continue // synced with its own token
		}
		ids = append(ids, id)
		names[id] = s.svc.Service
	}
	l.mu.Unlock()
	slices.Sort(ids)
	for _, id := range ids {
		if authz.ServiceWrite(names[id]) != acl.Allow {
			return "service:write", names[id]
		}
	}
	return "", ""
}

// logRegistrationRefusal explains a write refused with the token a service
// or check was registered with: what was written, that token's AccessorID
// (never its secret) and the permission it lacks. The message is fixed, for
// the throttled logger.
func (l *State) logRegistrationRefusal(se *syncError) {
	args := []any{"token", "registration token", "write", se.what}
	var authz acl.Authorizer
	var rerr error
	if l.resolveToken != nil {
		authz, rerr = l.resolveToken(se.token)
	}
	switch {
	case l.resolveToken == nil:
	case rerr != nil:
		args = append(args, "accessor", "unknown", "problem", "the servers know no token with this secret", "error", rerr)
	default:
		args = append(args, "accessor", acl.AccessorOf(authz))
		switch {
		case authz.NodeWrite(l.node.Name) != acl.Allow:
			args = append(args, "permission", "node:write", "resource", l.node.Name)
		case se.service != "" && authz.ServiceWrite(se.service) != acl.Allow:
			args = append(args, "permission", "service:write", "resource", se.service)
		}
	}
	if rerr == nil {
		args = append(args, "error", se.err)
	}
	l.logger.Warn("anti-entropy blocked by ACLs: the token a service or check was registered with may not write it", args...)
}
