package httpapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tribune-mesh/tribune/acl"
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
//   - The request's token is checked by the handler as before, and again
//     when a shared result answers it (recheck); the view reads with the
//     same token the direct read would carry; views, and so shared
//     answers, are never shared between tokens.
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
//
// With answer set, a query that has to wait may instead be parked without
// its goroutine (park): readShared then returns errParked and the handler
// must write nothing.
//
// allowed is the handler's ACL check of the read: a shared result is
// answered only after the caller's token, resolved again when the query
// wakes, still passes it (a token deleted or changed while its query
// waited is refused).
func (h *Handler) readShared(w http.ResponseWriter, r *http.Request, req *catalog.ReadRequest, allowed func(acl.Authorizer) bool, answer *parkedAnswer) (*catalog.ReadResponse, *viewcache.Memo, error) {
	opts, err := h.parseQueryOptions(r)
	if err != nil {
		return nil, nil, err
	}
	q := queryOf(r)
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
		if answer != nil && h.park(w, r, &view, req, allowed, answer) {
			return nil, nil, errParked
		}
		shared, memo, err := h.agent.cache.Shared(r.Context(), &view)
		if err == nil && shared != nil && shared.Meta.Index > minIndex {
			if err := h.recheck(r.Context(), memo, token(r), req, allowed); err != nil {
				return nil, nil, err
			}
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

// recheck authorizes the caller of a shared result when it is answered: its
// token (secret) is resolved again and checked with allowed, and the
// servers read direct with it (they refuse a token deleted since; the
// view's own read was authorized when it began). The callers of one result
// with the same token share the outcome, through memo.
func (h *Handler) recheck(ctx context.Context, memo *viewcache.Memo, secret string, direct *catalog.ReadRequest, allowed func(acl.Authorizer) bool) error {
	return memo.Do(authzMemo{secret}, func() any {
		// Not bound to the caller that happens to compute it: the
		// others share the outcome.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), parkedReadTimeout)
		defer cancel()
		authz, err := h.resolve(ctx, secret)
		switch {
		case errors.Is(err, acl.ErrNotFound):
			return authzResult{errACLNotFound}
		case err != nil:
			return authzResult{fmt.Errorf("resolve token: %w", err)}
		case !allowed(authz):
			return authzResult{errPermissionDenied}
		}
		_, err = h.agent.backend.Read(ctx, direct)
		return authzResult{err}
	}).(authzResult).err
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
// memoKVGetParked is the whole HTTP response of that answer to parked
// queries (parkedShape).
const (
	memoKVGetJSON memoKey = iota
	memoKVGetParked
)

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
	enc := memoJSON(memo, key, out)
	if enc.err != nil {
		return out // let writeJSON report it
	}
	w.Header()["Content-Type"] = headerJSON
	_, _ = w.Write(enc.body)
	return nil
}

// memoJSON returns out encoded as writeJSON does, once per memo.
func memoJSON(memo *viewcache.Memo, key memoKey, out any) encodedAnswer {
	return memo.Do(key, func() any {
		b, err := encodeJSON(new(bytes.Buffer), out, false)
		return encodedAnswer{body: b, err: err}
	}).(encodedAnswer)
}

// Parked connections.
//
// A goroutine and the buffers net/http keeps for a request in progress (two
// goroutines: the handler's and its background read; a 4 KiB reader and
// writer) were most of the memory of thousands of waiting watchers, and the
// net/http write path, deadline resets and goroutine wake-ups half of the
// agent's work to wake them. A parked query instead hijacks its
// connection and leaves it with the view (viewcache.Cache.Park), which calls
// back with the answer: it is written straight to the connection, which is
// then handed back to the server for its next request (keep-alive;
// httpguard.Reinjectable). Only plain HTTP/1.1 GET and HEAD requests
// without a body are parked this way; a client that closes a parked
// connection is noticed when the answer is written (the wait bounds it, as
// http_max_conns_per_client still counts it).

// errParked tells a handler that its request was parked: it is answered
// later, on a hijacked connection, and the handler must write nothing.
var errParked = errors.New("request parked")

// parkedAnswer is how a handler answers its parked queries.
type parkedAnswer struct {
	// key names, in a result's Memo, the whole HTTP responses (status
	// line, headers, body) of this answer (parkedShape): one per kind of
	// answer.
	key memoKey
	// render renders the answer from a result (memo nil when the result
	// was read for this caller alone): its status, its Content-Type (nil
	// for none) and its body.
	render func(resp *catalog.ReadResponse, memo *viewcache.Memo) (int, []string, []byte)
}

// parkedShape is what a parked query's answer depends on besides the
// result. Thousands of parked queries of one result usually have one
// shape: their answers are then the same bytes, rendered once (with the
// result's Memo, under the shape) and written to each connection as they
// are.
type parkedShape struct {
	answer memoKey
	// pre is the headers set before the hijack (configured ones), in
	// their wire form.
	pre string
	// head: a HEAD request (no body); keepAlive: the connection is kept
	// (else Connection: close); token: the request carried a token (a
	// result filtered by ACLs says so only then).
	head, keepAlive, token bool
}

// parkedResponses holds the rendered response of a shape for a result; it
// is rendered again in a new second, so that its Date stays current.
type parkedResponses struct {
	cur atomic.Pointer[parkedResponse]
}

type parkedResponse struct {
	sec int64 // the Unix second of its Date
	b   []byte
}

// response returns the whole HTTP response of resp to a parked query of
// shape (boxed in key, its Memo key) whose own headers are hdr: the one
// shared through memo when it has one rendered this second, else one it
// renders (and shares). hdr may be modified.
func (a *parkedAnswer) response(memo *viewcache.Memo, key any, shape parkedShape, hdr http.Header, resp *catalog.ReadResponse) []byte {
	now := time.Now()
	if memo == nil {
		return a.renderHTTP(hdr, shape, resp, nil, now)
	}
	rs := memo.Do(key, func() any { return new(parkedResponses) }).(*parkedResponses)
	if r := rs.cur.Load(); r != nil && r.sec == now.Unix() {
		return r.b
	}
	b := a.renderHTTP(hdr, shape, resp, memo, now)
	rs.cur.Store(&parkedResponse{sec: now.Unix(), b: b})
	return b
}

// renderHTTP renders the whole HTTP response of resp to a parked query of
// shape with headers hdr (modified), dated now.
func (a *parkedAnswer) renderHTTP(hdr http.Header, shape parkedShape, resp *catalog.ReadResponse, memo *viewcache.Memo, now time.Time) []byte {
	setMetaHeader(hdr, resp.Meta)
	if resp.Meta.ResultsFilteredByACLs && shape.token {
		hdr.Set(headerFilteredByACLs, "true")
	}
	code, ctype, body := a.render(resp, memo)
	if ctype != nil {
		hdr["Content-Type"] = ctype
	}
	return renderParked(hdr, code, body, shape.head, shape.keepAlive, now)
}

// Bounds on the work of answering a parked query.
const (
	// parkedWriteTimeout bounds the write of an answer; a connection that
	// cannot take a small answer in that time is closed.
	parkedWriteTimeout = 10 * time.Second
	// parkedReadTimeout bounds the read of the servers when the wait ends
	// with nothing new or the view fails.
	parkedReadTimeout = 30 * time.Second
)

// authzMemo keys the outcome of stillAllowed for a token in a result's
// Memo; authzResult is that outcome.
type (
	authzMemo   struct{ secret string }
	authzResult struct{ err error }
)

// reinjecter is a connection that can be handed back to the server that
// accepted it (httpguard.Reinjectable).
type reinjecter interface{ Reinject() bool }

// park hijacks r's connection and parks view, answering it with answer when
// it wakes, or with a read of direct when the wait ends with nothing new
// or the view fails. It reports false, having done nothing, when r cannot
// be parked this way.
func (h *Handler) park(w http.ResponseWriter, r *http.Request, view, direct *catalog.ReadRequest, allowed func(acl.Authorizer) bool, answer *parkedAnswer) bool {
	if r.TLS != nil || r.ProtoMajor != 1 || r.ProtoMinor < 1 || r.Close || r.ContentLength != 0 ||
		(r.Method != http.MethodGet && r.Method != http.MethodHead) {
		return false
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		return false
	}
	// The headers set so far (configured ones) are the answer's too.
	hdr := w.Header().Clone()
	conn, rw, err := hj.Hijack()
	if err != nil {
		return false
	}
	_ = conn.SetDeadline(time.Time{})
	rc, keepAlive := conn.(reinjecter)
	// Bytes of a pipelined next request already read cannot be handed
	// back: such a connection is answered and closed.
	keepAlive = keepAlive && rw.Reader.Buffered() == 0
	head := r.Method == http.MethodHead
	secret := token(r)
	ctx := context.WithoutCancel(r.Context())
	minIndex := view.Options.MinQueryIndex
	raw := socketOf(conn)
	shape := parkedShape{answer: answer.key, pre: wireHeader(hdr), head: head, keepAlive: keepAlive, token: secret != ""}
	var shapeKey any = shape // boxed once, not at each wake
	h.agent.cache.Park(view, func(resp *catalog.ReadResponse, memo *viewcache.Memo, err error) {
		if errors.Is(err, viewcache.ErrClosed) {
			// The agent is stopping.
			conn.Close()
			return
		}
		if err == nil && resp != nil && resp.Meta.Index > minIndex {
			err = h.recheck(ctx, memo, secret, direct, allowed)
		} else {
			rctx, cancel := context.WithTimeout(ctx, parkedReadTimeout)
			resp, err = h.agent.backend.Read(rctx, direct)
			cancel()
			memo = nil
		}
		if err != nil {
			code, msg := errorStatus(err)
			hdr["Content-Type"] = []string{"text/plain; charset=utf-8"}
			hdr["X-Content-Type-Options"] = []string{"nosniff"}
			writeParked(conn, raw, renderParked(hdr, code, []byte(msg+"\n"), head, keepAlive, time.Now()), keepAlive, rc)
			return
		}
		writeParked(conn, raw, answer.response(memo, shapeKey, shape, hdr, resp), keepAlive, rc)
	})
	return true
}

// wireHeader returns h as it is written on the wire.
func wireHeader(h http.Header) string {
	if len(h) == 0 {
		return ""
	}
	var b strings.Builder
	_ = h.Write(&b)
	return b.String()
}

// renderParked renders a whole HTTP/1.1 response to a parked query: status
// code, headers hdr (modified: the framing ones are added), and body
// (only its length for a HEAD request), dated now.
func renderParked(hdr http.Header, code int, body []byte, head, keepAlive bool, now time.Time) []byte {
	hdr["Content-Length"] = []string{strconv.Itoa(len(body))}
	hdr["Date"] = []string{now.UTC().Format(http.TimeFormat)}
	if !keepAlive {
		hdr["Connection"] = []string{"close"}
	}
	var b bytes.Buffer
	b.Grow(512 + len(body))
	b.WriteString("HTTP/1.1 ")
	b.WriteString(strconv.Itoa(code))
	b.WriteByte(' ')
	b.WriteString(http.StatusText(code))
	b.WriteString("\r\n")
	_ = hdr.Write(&b)
	b.WriteString("\r\n")
	if !head {
		b.Write(body)
	}
	return b.Bytes()
}

// writeParked writes a parked query's whole answer b (renderParked) to its
// connection, then hands the connection back for its next request, or
// closes it. The answers of a change are written one after the other by a
// few goroutines (viewcache.ParkFunc), so the write first goes straight to
// the socket (raw, when conn has one), without arming a deadline: a small
// answer to a client that reads its connection always fits. Only when the
// socket cannot take it all is the rest written with a deadline.
func writeParked(conn net.Conn, raw syscall.RawConn, b []byte, keepAlive bool, rc reinjecter) {
	var err error
	if raw != nil {
		var n int
		n, err = writeNow(raw, b)
		b = b[n:]
	}
	if err == nil && len(b) > 0 {
		_ = conn.SetWriteDeadline(time.Now().Add(parkedWriteTimeout))
		_, err = conn.Write(b)
		_ = conn.SetWriteDeadline(time.Time{})
	}
	if err == nil && keepAlive && rc.Reinject() {
		return
	}
	conn.Close()
}

// socketOf returns the socket under conn and the wrappers it is in
// (httpguard's: they implement NetConn, as tls.Conn does), nil when there
// is none. The HTTP API's wrappers change nothing of what is written; a
// TLS connection does, so there is no socket to write to under it (TLS
// requests are not parked; this keeps it so should they ever be).
func socketOf(conn net.Conn) syscall.RawConn {
	for range 8 {
		if _, ok := conn.(*tls.Conn); ok {
			return nil
		}
		if sc, ok := conn.(syscall.Conn); ok {
			raw, err := sc.SyscallConn()
			if err != nil {
				return nil
			}
			return raw
		}
		u, ok := conn.(interface{ NetConn() net.Conn })
		if !ok {
			return nil
		}
		conn = u.NetConn()
	}
	return nil
}
