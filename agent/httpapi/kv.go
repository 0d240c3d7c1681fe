package httpapi

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/agent/viewcache"
	"github.com/tribune-mesh/tribune/catalog"
)

// maxKeyLength bounds a KV key's length.
const maxKeyLength = 4096

// checkKey is the one validation of a KV key, for every path that reads or
// writes one (/v1/kv, /v1/txn): bounded in size, and valid UTF-8. The Raft
// log encodes commands as JSON, which would rewrite invalid UTF-8 to U+FFFD
// and so store a key other than the one sent (and make distinct keys
// collide): such a key is refused rather than corrupted.
func checkKey(key string) error {
	if len(key) > maxKeyLength {
		return badRequest("Key too long (%d bytes, max %d)", len(key), maxKeyLength)
	}
	if !utf8.ValidString(key) {
		return badRequest("Key is not valid UTF-8: %q", key)
	}
	return nil
}

func (h *Handler) kvValueLimit() int {
	if n := h.agent.cfg.Limits.KVMaxValueSize; n > 0 {
		return n
	}
	return 512 * 1024
}

// kv serves /v1/kv/<key>.
func (h *Handler) kv(w http.ResponseWriter, r *http.Request) (any, error) {
	key := strings.TrimPrefix(r.URL.Path, "/v1/kv/")
	if err := checkKey(key); err != nil {
		return nil, err
	}
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		return h.kvGet(w, r, authz, key)
	case http.MethodPut:
		return h.kvPut(w, r, authz, key)
	default:
		return h.kvDelete(w, r, authz, key)
	}
}

func (h *Handler) kvGet(w http.ResponseWriter, r *http.Request, authz acl.Authorizer, key string) (any, error) {
	q := queryOf(r)
	_, recurse := q["recurse"]
	_, keys := q["keys"]
	_, raw := q["raw"]
	switch {
	case keys:
		if authz.KeyList(key) != acl.Allow {
			return nil, errPermissionDenied
		}
		resp, _, err := h.readShared(w, r, &catalog.ReadRequest{Op: catalog.ReadKVKeys, Key: key, Separator: q.Get("separator")}, listAllowed(key), nil)
		if err != nil {
			return nil, err
		}
		out := aclKeep(w, r, resp.Keys, func(k string) bool { return authz.KeyRead(k) == acl.Allow })
		if len(out) == 0 {
			w.WriteHeader(http.StatusNotFound)
			return nil, nil
		}
		return out, nil
	case recurse:
		if authz.KeyList(key) != acl.Allow {
			return nil, errPermissionDenied
		}
		resp, _, err := h.readShared(w, r, &catalog.ReadRequest{Op: catalog.ReadKVList, Key: key}, listAllowed(key), nil)
		if err != nil {
			return nil, err
		}
		out := aclKeep(w, r, resp.KVs, func(e *catalog.KVEntry) bool { return authz.KeyRead(e.Key) == acl.Allow })
		if len(out) == 0 {
			w.WriteHeader(http.StatusNotFound)
			return nil, nil
		}
		return out, nil
	}
	if authz.KeyRead(key) != acl.Allow {
		return nil, errPermissionDenied
	}
	// Lists and key lists above are filtered for each caller, so only
	// their wait is shared; a key's answer is the same for every caller
	// allowed to read it, so it is also encoded once.
	var answer *parkedAnswer
	if !raw && !wantsPretty(r) {
		answer = kvGetParked
	}
	readAllowed := func(a acl.Authorizer) bool { return a.KeyRead(key) == acl.Allow }
	resp, memo, err := h.readShared(w, r, &catalog.ReadRequest{Op: catalog.ReadKVGet, Key: key}, readAllowed, answer)
	if errors.Is(err, errParked) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if resp.KV == nil {
		w.WriteHeader(http.StatusNotFound)
		return nil, nil
	}
	if raw {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		_, _ = w.Write(resp.KV.Value)
		return nil, nil
	}
	return writeMemoJSON(w, r, memo, memoKVGetJSON, []*catalog.KVEntry{resp.KV}), nil
}

// listAllowed is the ACL check of a list or key list of prefix.
func listAllowed(prefix string) func(acl.Authorizer) bool {
	return func(a acl.Authorizer) bool { return a.KeyList(prefix) == acl.Allow }
}

// kvGetParked answers parked GET /v1/kv/<key> queries (JSON, not ?pretty).
var kvGetParked = &parkedAnswer{key: memoKVGetParked, render: kvGetAnswer}

// kvGetAnswer is the answer of GET /v1/kv/<key> (JSON, not ?pretty) to a
// parked query.
func kvGetAnswer(resp *catalog.ReadResponse, memo *viewcache.Memo) (int, []string, []byte) {
	if resp.KV == nil {
		return http.StatusNotFound, nil, nil
	}
	enc := memoJSON(memo, memoKVGetJSON, []*catalog.KVEntry{resp.KV})
	if enc.err != nil {
		return http.StatusInternalServerError, []string{"text/plain; charset=utf-8"}, []byte("encode response: " + enc.err.Error() + "\n")
	}
	return http.StatusOK, headerJSON, enc.body
}

func (h *Handler) kvPut(w http.ResponseWriter, r *http.Request, authz acl.Authorizer, key string) (any, error) {
	if key == "" {
		return nil, badRequest("Missing key name")
	}
	if authz.KeyWrite(key) != acl.Allow {
		return nil, errPermissionDenied
	}
	q := queryOf(r)
	limit := h.kvValueLimit()
	if r.ContentLength > int64(limit) {
		return nil, tooLarge("Request body(%d bytes) too large, max size: %d bytes. See %s.", r.ContentLength, limit, "limits.kv_max_value_size")
	}
	val, err := readValue(r, limit)
	if err != nil {
		return nil, badRequest("read value: %v", err)
	}
	if len(val) > limit {
		return nil, tooLarge("Request body too large, max size: %d bytes. See %s.", limit, "limits.kv_max_value_size")
	}
	req := &catalog.KVRequest{Op: catalog.KVSet, Entry: catalog.KVEntry{Key: key, Value: val}}
	if v := q.Get("flags"); v != "" {
		f, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return nil, badRequest("Invalid flags: %q", v)
		}
		req.Entry.Flags = f
	}
	if v, ok := q["cas"]; ok {
		idx, err := strconv.ParseUint(v[0], 10, 64)
		if err != nil {
			return nil, badRequest("Invalid cas index: %q", v[0])
		}
		req.Op = catalog.KVCAS
		req.Entry.ModifyIndex = idx
	}
	if s := q.Get("acquire"); s != "" {
		req.Op = catalog.KVLock
		req.Entry.Session = s
	} else if s := q.Get("release"); s != "" {
		req.Op = catalog.KVUnlock
		req.Entry.Session = s
	}
	res, err := h.apply(r.Context(), catalog.CmdKV, req)
	if err != nil {
		return nil, err
	}
	kr, _ := res.(catalog.KVResult)
	if kr.Err != nil {
		return nil, kr.Err
	}
	return kr.OK, nil
}

// readValue reads a KV value of at most limit+1 bytes (one more tells the
// caller it is too large): in one allocation of its size when the request
// says it (Content-Length), else growing as io.ReadAll does.
func readValue(r *http.Request, limit int) ([]byte, error) {
	if n := r.ContentLength; n > 0 && n <= int64(limit) {
		val := make([]byte, n)
		if _, err := io.ReadFull(r.Body, val); err != nil {
			return nil, err
		}
		return val, nil
	}
	return io.ReadAll(io.LimitReader(r.Body, int64(limit)+1))
}

func (h *Handler) kvDelete(w http.ResponseWriter, r *http.Request, authz acl.Authorizer, key string) (any, error) {
	q := queryOf(r)
	req := &catalog.KVRequest{Op: catalog.KVDelete, Entry: catalog.KVEntry{Key: key}}
	if _, ok := q["recurse"]; ok {
		req.Op = catalog.KVDeleteTree
		if authz.KeyWrite(key) != acl.Allow || authz.KeyList(key) != acl.Allow {
			return nil, errPermissionDenied
		}
	} else {
		if key == "" {
			return nil, badRequest("Missing key name")
		}
		if authz.KeyWrite(key) != acl.Allow {
			return nil, errPermissionDenied
		}
	}
	if v, ok := q["cas"]; ok {
		idx, err := strconv.ParseUint(v[0], 10, 64)
		if err != nil {
			return nil, badRequest("Invalid cas index: %q", v[0])
		}
		if req.Op == catalog.KVDeleteTree {
			return nil, badRequest("Conflicting flags: cas with recurse")
		}
		req.Op = catalog.KVDeleteCAS
		req.Entry.ModifyIndex = idx
	}
	res, err := h.apply(r.Context(), catalog.CmdKV, req)
	if err != nil {
		return nil, err
	}
	kr, _ := res.(catalog.KVResult)
	if kr.Err != nil {
		return nil, kr.Err
	}
	return kr.OK, nil
}

// txnOpJSON is a transaction operation as the HTTP API spells it: the KV
// value arrives base64-encoded.
type txnOpJSON struct {
	KV *struct {
		Verb    string
		Key     string
		Value   string
		Flags   uint64
		Index   uint64
		Session string
	}
	Node    *catalog.TxnNodeOp
	Service *catalog.TxnServiceOp
	Check   *catalog.TxnCheckOp
	Session *catalog.TxnSessionOp
}

// catalogTxnOp authorizes and converts a Node, Service, Check or Session
// operation; ok is false when op has none of them.
func catalogTxnOp(authz acl.Authorizer, op *txnOpJSON) (catalog.TxnOp, bool, error) {
	var read bool
	switch {
	case op.Node != nil:
		read = op.Node.Verb == catalog.TxnGet
		if (read && authz.NodeRead(op.Node.Node.Node) != acl.Allow) || (!read && authz.NodeWrite(op.Node.Node.Node) != acl.Allow) {
			return catalog.TxnOp{}, true, acl.ErrPermissionDenied
		}
		return catalog.TxnOp{Node: op.Node}, true, nil
	case op.Service != nil:
		read = op.Service.Verb == catalog.TxnGet
		name := op.Service.Service.Service
		if (read && authz.ServiceRead(name) != acl.Allow) || (!read && (authz.ServiceWrite(name) != acl.Allow || authz.NodeWrite(op.Service.Node) != acl.Allow)) {
			return catalog.TxnOp{}, true, acl.ErrPermissionDenied
		}
		return catalog.TxnOp{Service: op.Service}, true, nil
	case op.Check != nil:
		read = op.Check.Verb == catalog.TxnGet
		if (read && authz.NodeRead(op.Check.Check.Node) != acl.Allow) || (!read && authz.NodeWrite(op.Check.Check.Node) != acl.Allow) {
			return catalog.TxnOp{}, true, acl.ErrPermissionDenied
		}
		return catalog.TxnOp{Check: op.Check}, true, nil
	case op.Session != nil:
		if authz.SessionWrite(op.Session.Session.Node) != acl.Allow {
			return catalog.TxnOp{}, true, acl.ErrPermissionDenied
		}
		return catalog.TxnOp{Session: op.Session}, true, nil
	}
	return catalog.TxnOp{}, false, nil
}

// txn serves PUT /v1/txn: all operations or none.
func (h *Handler) txn(w http.ResponseWriter, r *http.Request) (any, error) {
	limit := h.agent.cfg.Limits.TxnMaxReqLen
	if limit <= 0 {
		limit = 512 * 1024
	}
	if r.ContentLength > int64(limit) {
		return nil, tooLarge("Request body(%d bytes) too large, max size: %d bytes. See %s.", r.ContentLength, limit, "limits.txn_max_req_len")
	}
	r.Body = http.MaxBytesReader(w, r.Body, int64(limit))
	var in []txnOpJSON
	if err := decodeBody(r, &in); err != nil {
		if strings.Contains(err.Error(), "too large") {
			return nil, tooLarge("Request body too large, max size: %d bytes", limit)
		}
		return nil, err
	}
	if len(in) > maxTxnOps {
		return nil, tooLarge("Transaction contains too many operations (%d > %d)", len(in), maxTxnOps)
	}
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	ops := make([]catalog.TxnOp, 0, len(in))
	var errs []catalog.TxnError
	for i, op := range in {
		if op.KV == nil {
			cop, ok, err := catalogTxnOp(authz, &in[i])
			switch {
			case !ok:
				errs = append(errs, catalog.TxnError{OpIndex: i, What: "unknown operation type"})
			case err != nil:
				errs = append(errs, catalog.TxnError{OpIndex: i, What: err.Error()})
			default:
				ops = append(ops, cop)
			}
			continue
		}
		if err := checkKey(op.KV.Key); err != nil {
			return nil, badRequest("Operation %d: %v", i, err)
		}
		verb := catalog.KVOp(op.KV.Verb)
		var val []byte
		if op.KV.Value != "" {
			val, err = base64.StdEncoding.DecodeString(op.KV.Value)
			if err != nil {
				errs = append(errs, catalog.TxnError{OpIndex: i, What: fmt.Sprintf("failed to decode value: %v", err)})
				continue
			}
		}
		if len(val) > h.kvValueLimit() {
			return nil, tooLarge("Value for key %q is too large (%d > %d bytes)", op.KV.Key, len(val), h.kvValueLimit())
		}
		var allowed bool
		switch verb {
		case catalog.KVGet, catalog.KVCheckIndex, catalog.KVCheckSession, catalog.KVCheckNotExists:
			allowed = authz.KeyRead(op.KV.Key) == acl.Allow
		case catalog.KVGetTree:
			allowed = authz.KeyList(op.KV.Key) == acl.Allow
		case catalog.KVSet, catalog.KVCAS, catalog.KVLock, catalog.KVUnlock, catalog.KVDelete, catalog.KVDeleteCAS, catalog.KVDeleteTree:
			allowed = authz.KeyWrite(op.KV.Key) == acl.Allow
		default:
			errs = append(errs, catalog.TxnError{OpIndex: i, What: fmt.Sprintf("unknown KV verb %q", op.KV.Verb)})
			continue
		}
		if !allowed {
			errs = append(errs, catalog.TxnError{OpIndex: i, What: acl.ErrPermissionDenied.Error()})
			continue
		}
		ops = append(ops, catalog.TxnOp{KV: &catalog.TxnKVOp{Verb: verb, Key: op.KV.Key, Value: val,
			Flags: op.KV.Flags, Index: op.KV.Index, Session: op.KV.Session}})
	}
	if len(errs) > 0 {
		w.WriteHeader(http.StatusConflict)
		return catalog.TxnResponse{Errors: errs}, nil
	}
	res, err := h.apply(r.Context(), catalog.CmdTxn, ops)
	if err != nil {
		return nil, err
	}
	tr, _ := res.(catalog.TxnResponse)
	if len(tr.Errors) > 0 {
		w.WriteHeader(http.StatusConflict)
		tr.Results = nil
	}
	return tr, nil
}
