package httpapi

import "net/http"

// Results filtering by ACLs.
//
// What an HTTP caller sees is filtered here, in the handlers, after
// ?filter= ran (as Consul orders them), with the caller's Authorizer. The
// servers filter every RPC read with the same caller's token too
// (acl.FilterRead, the server port's own defence): rows they dropped are
// reported in the read's meta and count as filtered here.

// headerFilteredByACLs is set on a response whose rows were filtered.
const headerFilteredByACLs = "X-Consul-Results-Filtered-By-ACLs"

// markFiltered says that rows were dropped, when the request carried a
// token, as Consul does: an anonymous caller learns nothing from it.
func markFiltered(w http.ResponseWriter, r *http.Request) {
	if token(r) != "" {
		w.Header().Set(headerFilteredByACLs, "true")
	}
}

// aclKeep returns the rows of in that ok (the ACL check) accepts, marking
// the response when it dropped any. in is not modified.
func aclKeep[T any](w http.ResponseWriter, r *http.Request, in []T, ok func(T) bool) []T {
	out := make([]T, 0, len(in))
	for _, v := range in {
		if ok(v) {
			out = append(out, v)
		}
	}
	if len(out) < len(in) {
		markFiltered(w, r)
	}
	return out
}
