package httpapi

import (
	"bytes"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/tribune-mesh/tribune/agent/viewcache"
	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/server"
)

// Shared blocking queries.
//
// Thousands of clients often park the same blocking query (a KV key that
// consul-template or a leader election watches). Each one costing its own
// watch, its own read when the key changes and its own JSON encoding of the
// same answer made the wake-up of 5,000 of them take a quarter of a second.
// Instead, a blocking query that has to wait parks on the agent's view of
// that read (agent/viewcache: one blocking query to the servers per
// distinct read and token, whatever the number of waiters), and the waiters
// a change wakes answer with the one result and, where the answer does not
// depend on the caller, the one encoding of it (viewcache.Memo).
//
// What each caller sees is unchanged:
//   - The request's token is checked by the handler as before, and the view
//     reads with the same token the direct read would carry; views, and so
//     shared answers, are never shared between tokens.
//   - A query whose index is already passed is answered by a read of its
//     own, as fresh as a direct one; only a query that has to wait is
//     shared, and then answers with a result read after its wait began.
//   - When the wait ends with nothing new, or the view's reads fail, the
//     caller reads the servers itself: its answer is the current one, or
//     the servers' own error.
//   - ?consistent queries are never shared (each confirms leadership for
//     itself), nor ?cached ones (they have their own view semantics).

// readShared is read for a request that may be a blocking query (?index=),
// of a read that a view's key describes whole (KV reads: no node-meta,
// no prepared query).
// When it parks on a view and answers with the view's result it also
// returns that result's Memo; otherwise the Memo is nil. The response is
// shared with other callers: it must not be modified.
func (h *Handler) readShared(w http.ResponseWriter, r *http.Request, req *catalog.ReadRequest) (*catalog.ReadResponse, *viewcache.Memo, error) {
	opts, err := h.parseQueryOptions(r)
	if err != nil {
		return nil, nil, err
	}
	q := r.URL.Query()
	if opts.MinQueryIndex == 0 || opts.RequireConsistent || h.agent.cache == nil || q.Has("cached") || q.Has("node-meta") {
		resp, err := h.read(w, r, req)
		return resp, nil, err
	}
	minIndex := opts.MinQueryIndex
	req.Options = opts
	req.Options.MinQueryIndex = 0
	resp, err := h.agent.backend.Read(r.Context(), req)
	if err != nil {
		return nil, nil, err
	}
	if resp.Meta.Index <= minIndex {
		view := *req
		view.Options.Token = h.rpcToken(r)
		view.Options.MinQueryIndex = minIndex
		view.Options.MaxQueryTime = blockingWait(opts.MaxQueryTime)
		shared, memo, err := h.agent.cache.Shared(r.Context(), &view)
		if err == nil && shared != nil && shared.Meta.Index > minIndex {
			setSharedMeta(w, r, shared.Meta)
			return shared, memo, nil
		}
		// The wait ended with nothing new (or the view failed): answer
		// with what the servers hold now.
		if resp, err = h.agent.backend.Read(r.Context(), req); err != nil {
			return nil, nil, err
		}
	}
	setSharedMeta(w, r, resp.Meta)
	return resp, nil, nil
}

// setSharedMeta sets the read headers of m, as read does.
func setSharedMeta(w http.ResponseWriter, r *http.Request, m catalog.QueryMeta) {
	setMeta(w, m)
	if m.ResultsFilteredByACLs {
		markFiltered(w, r)
	}
}

// blockingWait is the wait of a blocking query that asked for wait (0 when
// it did not): the servers' default and cap, plus up to 1/16 of jitter so
// that watchers that started together do not all return together, as the
// servers do.
func blockingWait(wait time.Duration) time.Duration {
	if wait <= 0 {
		wait = server.DefaultQueryTime
	}
	wait = min(wait, server.MaxQueryTime)
	return wait + time.Duration(rand.Int64N(int64(wait/16)+1))
}

// MaxSharedWait is the longest wait blockingWait returns: the view cache
// behind the API must let its blocking Gets wait that long.
const MaxSharedWait = server.MaxQueryTime + server.MaxQueryTime/16

// memoKey names a value kept in a result's Memo.
type memoKey int

// memoKVGetJSON is the JSON answer of GET /v1/kv/<key> (without ?raw or
// ?pretty): the same bytes for every caller allowed to read the key.
const memoKVGetJSON memoKey = iota

// encodedAnswer is an answer encoded once for every waiter of a view.
type encodedAnswer struct {
	body []byte
	err  error
}

// writeMemoJSON writes out as writeJSON does, encoding it only once per
// memo: out must be the same for every caller that shares memo. A ?pretty
// request is encoded for itself. It returns the value for the handler to
// return (nil when written).
func writeMemoJSON(w http.ResponseWriter, r *http.Request, memo *viewcache.Memo, key memoKey, out any) any {
	if memo == nil || wantsPretty(r) {
		return out
	}
	enc := memo.Do(key, func() any {
		b, err := encodeJSON(new(bytes.Buffer), out, false)
		return encodedAnswer{body: b, err: err}
	}).(encodedAnswer)
	if enc.err != nil {
		return out // let writeJSON report it
	}
	w.Header()["Content-Type"] = headerJSON
	_, _ = w.Write(enc.body)
	return nil
}
