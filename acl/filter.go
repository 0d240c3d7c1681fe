package acl

import (
	"strings"

	"github.com/tribune-mesh/tribune/catalog"
)

// Optional checks an Authorizer may offer beyond the interface. The helpers
// below fall back to the nearest check of the interface, so that AllowAll,
// DenyAll and wrappers answer sensibly.

// KeyWritePrefix reports whether every key under prefix may be deleted at
// once (a recursive delete): write on the prefix and on every rule beneath
// it. Authorizers without the check answer KeyWrite on the prefix.
func KeyWritePrefix(a Authorizer, prefix string) Decision {
	if x, ok := a.(interface{ KeyWritePrefix(string) Decision }); ok {
		return x.KeyWritePrefix(prefix)
	}
	return a.KeyWrite(prefix)
}

// QueryRead reports whether a prepared query with this name may be read.
// Authorizers without the check answer QueryWrite.
func QueryRead(a Authorizer, name string) Decision {
	if x, ok := a.(interface{ QueryRead(string) Decision }); ok {
		return x.QueryRead(name)
	}
	return a.QueryWrite(name)
}

// EventRead reports whether user events with this name may be read.
// Authorizers without the check answer EventWrite.
func EventRead(a Authorizer, name string) Decision {
	if x, ok := a.(interface{ EventRead(string) Decision }); ok {
		return x.EventRead(name)
	}
	return a.EventWrite(name)
}

// ConfigEntryAllowed reports whether a config entry may be read (write
// false) or written: the kinds named for a service ("service-defaults",
// "service-intentions", "service-router", ...) need that service's
// permission; every other kind is global and needs operator:write to be
// written, nothing to be read.
func ConfigEntryAllowed(a Authorizer, kind, name string, write bool) Decision {
	if strings.HasPrefix(kind, "service-") {
		if write {
			return a.ServiceWrite(name)
		}
		return a.ServiceRead(name)
	}
	if write {
		return a.OperatorWrite()
	}
	return Allow
}

// FilterRead drops from resp every row that a may not read and reports
// whether it dropped any. It is the one place where read results are
// filtered by ACLs: the servers apply it to every read an RPC asks for (the
// agent's HTTP API reads through them), and the agent to answers it serves
// from its own views (DNS, ?cached).
//
// Rules, as Consul's: a node needs node:read; a service instance or a
// check of a service needs service:read on the service and node:read on
// its node; KV entries and keys need key:read; sessions session:read on
// their node; coordinates node:read; prepared queries query:read on their
// name, their Token hidden without acl:write; config entries the right of
// their kind. ACL tables are not
// filtered: reading them needs acl:read as a whole.
func FilterRead(a Authorizer, resp *catalog.ReadResponse) bool {
	if resp == nil {
		return false
	}
	dropped := false
	if resp.KV != nil && a.KeyRead(resp.KV.Key) != Allow {
		resp.KV, dropped = nil, true
	}
	resp.KVs, dropped = keep(resp.KVs, dropped, func(e *catalog.KVEntry) bool { return a.KeyRead(e.Key) == Allow })
	resp.Keys, dropped = keep(resp.Keys, dropped, func(k string) bool { return a.KeyRead(k) == Allow })
	resp.Nodes, dropped = keep(resp.Nodes, dropped, func(n *catalog.Node) bool { return a.NodeRead(n.Node) == Allow })
	if resp.Node != nil && a.NodeRead(resp.Node.Node) != Allow {
		resp.Node, dropped = nil, true
	}
	for name := range resp.Services {
		if a.ServiceRead(name) != Allow {
			// The map may be shared: filter a copy.
			out := make(map[string][]string, len(resp.Services))
			for n, tags := range resp.Services {
				if a.ServiceRead(n) == Allow {
					out[n] = tags
				}
			}
			resp.Services, dropped = out, true
			break
		}
	}
	resp.Instances, dropped = keep(resp.Instances, dropped, func(in *catalog.CheckServiceNode) bool {
		return (in.Service == nil || a.ServiceRead(in.Service.Service) == Allow) && (in.Node == nil || a.NodeRead(in.Node.Node) == Allow)
	})
	if ns := resp.NodeServices; ns != nil {
		if ns.Node != nil && a.NodeRead(ns.Node.Node) != Allow {
			resp.NodeServices, dropped = nil, true
		} else if svcs, d := keep(ns.Services, false, func(s *catalog.Service) bool { return a.ServiceRead(s.Service) == Allow }); d {
			resp.NodeServices, dropped = &catalog.NodeServices{Node: ns.Node, Services: svcs}, true
		}
	}
	resp.GatewayServices, dropped = keep(resp.GatewayServices, dropped, func(g *catalog.GatewayService) bool {
		return a.ServiceRead(g.Service.Name) == Allow
	})
	resp.Checks, dropped = keep(resp.Checks, dropped, func(c *catalog.HealthCheck) bool {
		return a.NodeRead(c.Node) == Allow && (c.ServiceName == "" || a.ServiceRead(c.ServiceName) == Allow)
	})
	resp.Sessions, dropped = keep(resp.Sessions, dropped, func(s *catalog.Session) bool { return a.SessionRead(s.Node) == Allow })
	resp.Coordinates, dropped = keep(resp.Coordinates, dropped, func(c *catalog.CoordinateEntry) bool { return a.NodeRead(c.Node) == Allow })
	if len(resp.PreparedQueries) > 0 {
		resp.PreparedQueries, dropped = keep(resp.PreparedQueries, dropped, func(q *catalog.PreparedQuery) bool {
			// An unnamed query is found by its ID only: knowing the
			// ID is the right to read it (listing is another matter,
			// see the callers).
			return q.Name == "" || QueryRead(a, q.Name) == Allow
		})
		resp.PreparedQueries = RedactQueryTokens(a, resp.PreparedQueries)
	}
	resp.VirtualIPs, dropped = keep(resp.VirtualIPs, dropped, func(v *catalog.ServiceVirtualIP) bool { return a.ServiceRead(v.Service) == Allow })
	resp.ConfigEntries, dropped = keep(resp.ConfigEntries, dropped, func(e *catalog.ConfigEntry) bool {
		return ConfigEntryAllowed(a, e.Kind, e.Name, false) == Allow
	})
	return dropped
}

// RedactedToken replaces a prepared query's token for readers without
// acl:write, as Consul does.
const RedactedToken = "<hidden>"

// RedactQueryTokens returns qs with their tokens hidden unless a has
// acl:write; qs is not modified.
func RedactQueryTokens(a Authorizer, qs []*catalog.PreparedQuery) []*catalog.PreparedQuery {
	if len(qs) == 0 || ACLWrite(a) == Allow {
		return qs
	}
	out := make([]*catalog.PreparedQuery, len(qs))
	for i, q := range qs {
		out[i] = q
		if q.Token != "" {
			c := *q
			c.Token = RedactedToken
			out[i] = &c
		}
	}
	return out
}

// keep returns the elements of in that ok accepts and whether any was
// dropped (or dropped already was). in is never modified (a result may be
// shared between readers): a new slice is made once something is dropped.
func keep[T any](in []T, dropped bool, ok func(T) bool) ([]T, bool) {
	for i, v := range in {
		if ok(v) {
			continue
		}
		out := append(make([]T, 0, len(in)-1), in[:i]...)
		for _, w := range in[i+1:] {
			if ok(w) {
				out = append(out, w)
			}
		}
		return out, true
	}
	return in, dropped
}
