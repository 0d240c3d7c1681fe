package httpapi

import (
	"context"
	"net/http"
	"net/url"
)

// reqState is what the API works out once for a request and its handlers
// read many times: the parsed query string (a read used to parse it a
// dozen times: the token, the consistency mode, the blocking parameters,
// ?cached, ?node-meta...) and the record of the ACL checks it was denied.
// It lives in the request's context (reqStateKey).
type reqState struct {
	// url is the URL query was parsed from: a request cloned with
	// another URL (or made up by a handler) parses its own.
	url   *url.URL
	query url.Values
	// denial records the checks the request's Authorizer denied.
	denial denialRecord
}

type reqStateKey struct{}

// withReqState returns ctx holding a fresh state for r.
func withReqState(ctx context.Context, r *http.Request) (context.Context, *reqState) {
	st := &reqState{url: r.URL, query: r.URL.Query()}
	st.denial.url = r.URL
	return context.WithValue(ctx, reqStateKey{}, st), st
}

// queryOf returns r's query values, parsed once per request when r went
// through Handler.ServeHTTP. The values are shared by every caller: they
// must not be modified.
func queryOf(r *http.Request) url.Values {
	if st, ok := r.Context().Value(reqStateKey{}).(*reqState); ok && st.url == r.URL {
		return st.query
	}
	return r.URL.Query()
}
