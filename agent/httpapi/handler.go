// Package httpapi is the agent's HTTP API (/v1/...), Consul's wire format:
// one handler per endpoint, each of which resolves the request's token and
// authorizes before it acts. Handlers reach the rest of the agent only
// through Parts: a Backend for catalog, KV, session and operator calls, the
// local state for the agent's own services and checks, the gossip pool, the
// user event log, and Control for the agent's own life.
//
// It must not import the agent package, start goroutines of its own or keep
// state beyond its routes: every request is answered from its Parts.
package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	metrics "github.com/armon/go-metrics"
	"github.com/hashicorp/go-bexpr"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/agent/local"
	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/server"
)

// Request limits.
const (
	// maxJSONBody bounds every JSON request body that is not a KV value.
	maxJSONBody = 4 << 20
	// maxTxnOps is Consul's limit on operations in one transaction.
	maxTxnOps = 64
)

// httpError is an error with the HTTP status it answers with.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &httpError{code: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

func notFound(format string, args ...any) error {
	return &httpError{code: http.StatusNotFound, msg: fmt.Sprintf(format, args...)}
}

func tooLarge(format string, args ...any) error {
	return &httpError{code: http.StatusRequestEntityTooLarge, msg: fmt.Sprintf(format, args...)}
}

// errNoPathToDC answers a request for a datacenter this agent cannot reach,
// with Consul's status and message.
var errNoPathToDC = &httpError{code: http.StatusInternalServerError, msg: "No path to datacenter"}

var errPermissionDenied = &httpError{code: http.StatusForbidden, msg: acl.ErrPermissionDenied.Error()}

// apiHTTPMetric times every request to a known endpoint, labelled by method
// and endpoint family (api.http, as Consul names it).
var apiHTTPMetric = []string{"api", "http"}

// handlerFunc is the shape of every endpoint: it returns the value to encode
// as JSON (nil for none) or an error mapped to a status.
type handlerFunc func(w http.ResponseWriter, r *http.Request) (any, error)

// route is one registered endpoint.
type route struct {
	pattern string
	prefix  bool
	methods []string
	fn      handlerFunc
	// labels are the api.http metric's labels but the method: the
	// endpoint's family as Consul names it ("/v1/kv/" -> "v1_kv_"), never
	// the raw path, so that the label set stays bounded.
	path string
	// labels holds the api.http metric's labels of each method, made
	// once: a request allocates none.
	labels map[string][]metrics.Label
}

// metricLabels returns the api.http labels of a request to r.
func (r *route) metricLabels(method string) []metrics.Label {
	if l, ok := r.labels[method]; ok {
		return l
	}
	return []metrics.Label{{Name: "method", Value: method}, {Name: "path", Value: r.path}}
}

// Handler is the agent's HTTP API: an http.Handler for every /v1 endpoint.
type Handler struct {
	// agent is what the handlers act through: the agent, as far as its
	// API sees it.
	agent  *parts
	exact  map[string]*route
	prefix []*route
	// restoreMu lets one PUT /v1/snapshot read its upload at a time.
	restoreMu sync.Mutex
	// ui serves the web UI under ui_config.content_path; nil when the UI
	// is off.
	ui     http.Handler
	uiPath string
}

// New returns the API over the agent's parts.
func New(p Parts) *Handler {
	h := &Handler{exact: map[string]*route{}, agent: &parts{
		cfg: p.Config, version: p.Version, acls: p.ACL, backend: p.Backend, local: p.Local,
		gossip: p.Gossip, events: p.Events, control: p.Control, metrics: p.Metrics,
		ca: p.CA, leaves: p.Leaves, cache: p.Cache, wan: p.WAN, fed: p.Federation,
		xds: p.XDS,
	}}
	h.registerRoutes()
	h.mountUI()
	return h
}

// handle registers fn for an exact path, or for a path prefix when pattern
// ends in '/'.
func (h *Handler) handle(pattern string, methods []string, fn handlerFunc) {
	r := &route{pattern: pattern, methods: methods, fn: fn, path: strings.ReplaceAll(strings.TrimPrefix(pattern, "/"), "/", "_")}
	r.labels = map[string][]metrics.Label{}
	for _, m := range append([]string{http.MethodHead}, methods...) {
		r.labels[m] = []metrics.Label{{Name: "method", Value: m}, {Name: "path", Value: r.path}}
	}
	if strings.HasSuffix(pattern, "/") {
		r.prefix = true
		h.prefix = append(h.prefix, r)
		return
	}
	h.exact[pattern] = r
}

var (
	methodsGet       = []string{http.MethodGet}
	methodsPut       = []string{http.MethodPut}
	methodsGetPut    = []string{http.MethodGet, http.MethodPut}
	methodsKV        = []string{http.MethodGet, http.MethodPut, http.MethodDelete}
	methodsGetPutDel = []string{http.MethodGet, http.MethodPut, http.MethodDelete}
)

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if h.serveUI(w, req) {
		return
	}
	rt := h.exact[req.URL.Path]
	if rt == nil {
		best := 0
		for _, p := range h.prefix {
			if strings.HasPrefix(req.URL.Path, p.pattern) && len(p.pattern) > best {
				rt, best = p, len(p.pattern)
			}
		}
	}
	if rt == nil {
		http.Error(w, fmt.Sprintf("Invalid URL path: not a recognized HTTP API endpoint: %q", req.URL.Path), http.StatusNotFound)
		return
	}
	allowed := false
	for _, m := range rt.methods {
		if req.Method == m || (req.Method == http.MethodHead && m == http.MethodGet) {
			allowed = true
			break
		}
	}
	if req.Method == http.MethodOptions {
		w.Header().Set("Allow", strings.Join(rt.methods, ","))
		w.WriteHeader(http.StatusOK)
		return
	}
	if !allowed {
		w.Header().Set("Allow", strings.Join(rt.methods, ","))
		http.Error(w, fmt.Sprintf("method %s not allowed", req.Method), http.StatusMethodNotAllowed)
		return
	}
	for k, v := range h.agent.cfg.HTTP.ResponseHeaders {
		w.Header().Set(k, v)
	}
	defer metrics.MeasureSinceWithLabels(apiHTTPMetric, time.Now(), rt.metricLabels(req.Method))
	ctx, st := withReqState(req.Context(), req)
	if dc := st.query.Get("dc"); h.remoteDC(dc) {
		// The request's writes are for that datacenter (its reads say
		// so in their options).
		ctx = server.WithDatacenter(ctx, dc)
	}
	// The servers check the caller's token, not the agent's: every call
	// the request makes carries it (the default token when it has none).
	ctx = server.WithToken(ctx, h.rpcTokenOf(req, st.query))
	req = req.WithContext(ctx)
	out, err := rt.fn(w, req)
	if err != nil {
		writeError(w, st.denial.explain(err))
		return
	}
	if out == nil {
		return
	}
	writeJSON(w, req, out)
}

// jsonBufs recycles the buffers answers are encoded into.
var jsonBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooledJSON bounds the buffers put back in jsonBufs, so that one huge
// answer does not stay pinned in memory.
const maxPooledJSON = 64 << 10

func writeJSON(w http.ResponseWriter, req *http.Request, out any) {
	if b, ok := out.(bool); ok {
		// The answer of every KV and session write, without encoding.
		w.Header()["Content-Type"] = headerJSON
		_, _ = io.WriteString(w, boolJSON(b, wantsPretty(req)))
		return
	}
	buf := jsonBufs.Get().(*bytes.Buffer)
	buf.Reset()
	defer func() {
		if buf.Cap() <= maxPooledJSON {
			jsonBufs.Put(buf)
		}
	}()
	b, err := encodeJSON(buf, out, wantsPretty(req))
	if err != nil {
		http.Error(w, fmt.Sprintf("encode response: %v", err), http.StatusInternalServerError)
		return
	}
	w.Header()["Content-Type"] = headerJSON
	_, _ = w.Write(b)
}

// boolJSON is the JSON of b as encodeJSON writes it.
func boolJSON(b, pretty bool) string {
	s := "false"
	if b {
		s = "true"
	}
	if pretty {
		s += "\n"
	}
	return s
}

// wantsPretty reports whether the request asks for indented JSON (?pretty).
func wantsPretty(req *http.Request) bool {
	if !strings.Contains(req.URL.RawQuery, "pretty") {
		return false
	}
	_, pretty := queryOf(req)["pretty"]
	return pretty
}

// encodeJSON encodes an answer into buf (reset by the caller) and returns
// its bytes, which live in buf: json.Marshal's bytes, or indented with a
// final newline when pretty.
func encodeJSON(buf *bytes.Buffer, out any, pretty bool) ([]byte, error) {
	if es, ok := out.([]*catalog.KVEntry); ok && !pretty {
		buf.Write(appendKVEntriesJSON(buf.AvailableBuffer(), es))
		return buf.Bytes(), nil
	}
	enc := json.NewEncoder(buf)
	if pretty {
		enc.SetIndent("", "    ")
	}
	if err := enc.Encode(out); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	if !pretty {
		// json.Marshal's bytes: Encode ends with a newline, which only
		// ?pretty answers carry.
		b = b[:len(b)-1]
	}
	return b, nil
}

// writeError maps err to its status. Errors from the state store that a
// user caused are 400s; everything unexpected is a 500 with the message, as
// Consul answers.
func writeError(w http.ResponseWriter, err error) {
	code, msg := errorStatus(err)
	http.Error(w, msg, code)
}

// errorStatus is the status and message err answers with (writeError).
func errorStatus(err error) (int, string) {
	var he *httpError
	code := http.StatusInternalServerError
	msg := err.Error()
	switch {
	case errors.As(err, &he):
		code = he.code
	case errors.Is(err, acl.ErrPermissionDenied):
		code = http.StatusForbidden
	case errors.Is(err, acl.ErrNotFound):
		code = http.StatusForbidden
	case errors.Is(err, local.ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, local.ErrInvalid):
		code = http.StatusBadRequest
	case errors.Is(err, catalog.ErrInvalidRequest):
		code = http.StatusBadRequest
	case errors.Is(err, server.ErrNoLeader):
		msg = server.ErrNoLeader.Error()
	case errors.Is(err, server.ErrNoPathToDC):
		msg = server.ErrNoPathToDC.Error()
	}
	return code, msg
}

// token returns the ACL token of a request: X-Consul-Token, the Bearer
// authorization, or ?token=.
func token(r *http.Request) string { return tokenOf(r, nil) }

// tokenOf is token with r's query values when the caller has them (nil:
// queryOf's).
func tokenOf(r *http.Request, q url.Values) string {
	if t := r.Header.Get("X-Consul-Token"); t != "" {
		return t
	}
	if a := r.Header.Get("Authorization"); strings.HasPrefix(a, "Bearer ") {
		return strings.TrimSpace(strings.TrimPrefix(a, "Bearer "))
	}
	if q == nil {
		q = queryOf(r)
	}
	return q.Get("token")
}

// rpcToken is the token the servers see for a request: its own, else the
// agent's default token ("" is the anonymous token).
func (h *Handler) rpcToken(r *http.Request) string { return h.rpcTokenOf(r, nil) }

// rpcTokenOf is rpcToken with r's query values (nil: queryOf's).
func (h *Handler) rpcTokenOf(r *http.Request, q url.Values) string {
	if t := tokenOf(r, q); t != "" {
		return t
	}
	return h.defaultToken()
}

// authorize resolves the request's token into an Authorizer. The
// Authorizer records the checks it denies, so that a 403 names the token,
// the permission and the resource.
func (h *Handler) authorize(r *http.Request) (acl.Authorizer, error) {
	authz, err := h.resolve(r.Context(), token(r))
	if errors.Is(err, acl.ErrNotFound) {
		return nil, h.notFoundError(r)
	}
	if err != nil {
		return nil, fmt.Errorf("resolve token: %w", err)
	}
	return recordDenials(r.Context(), authz), nil
}

// parseQueryOptions reads the consistency, blocking and filter parameters.
func (h *Handler) parseQueryOptions(r *http.Request) (catalog.QueryOptions, error) {
	q := queryOf(r)
	opts := catalog.QueryOptions{Token: token(r), Datacenter: q.Get("dc"), Filter: q.Get("filter")}
	if v := q.Get("index"); v != "" {
		idx, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return opts, badRequest("Invalid index: %q", v)
		}
		opts.MinQueryIndex = idx
	}
	if v := q.Get("wait"); v != "" {
		d, err := parseWait(v)
		if err != nil {
			return opts, badRequest("Invalid wait time: %q", v)
		}
		opts.MaxQueryTime = d
	}
	_, stale := q["stale"]
	_, consistent := q["consistent"]
	if stale && consistent {
		return opts, badRequest("Cannot specify ?stale with ?consistent, conflicting semantics.")
	}
	opts.AllowStale = stale
	opts.RequireConsistent = consistent
	if v := q.Get("max_stale"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return opts, badRequest("Invalid max_stale value %q", v)
		}
		opts.MaxStaleDuration = d
		opts.AllowStale = !consistent
	}
	if h.remoteDC(opts.Datacenter) && h.agent.fed == nil {
		return opts, errNoPathToDC
	}
	return opts, nil
}

// maxNodeMetaFilters bounds the ?node-meta= pairs of one request.
const maxNodeMetaFilters = 64

// parseNodeMeta reads the ?node-meta=key:value filters (every pair must
// match; a pair without a colon asks for an empty value), nil when none.
func parseNodeMeta(r *http.Request) (map[string]string, error) {
	raw := queryOf(r)["node-meta"]
	if len(raw) == 0 {
		return nil, nil
	}
	if len(raw) > maxNodeMetaFilters {
		return nil, badRequest("Too many node-meta filters: %d, at most %d", len(raw), maxNodeMetaFilters)
	}
	out := make(map[string]string, len(raw))
	for _, kv := range raw {
		k, v, _ := strings.Cut(kv, ":")
		if k == "" {
			return nil, badRequest("Invalid node-meta filter %q: want key:value", kv)
		}
		out[k] = v
	}
	return out, nil
}

// maxWait is the longest wait= a blocking query is given, as in Consul;
// longer ones are capped.
const maxWait = 10 * time.Minute

// parseWait accepts Go durations and Consul's bare-number seconds form,
// capped at maxWait. Numbers too large for a Duration are capped, not
// wrapped; a Go duration too large for a Duration is refused.
func parseWait(v string) (time.Duration, error) {
	if n, err := strconv.ParseUint(v, 10, 64); err == nil {
		if n > uint64(maxWait/time.Second) {
			return maxWait, nil
		}
		return time.Duration(n) * time.Second, nil
	} else if errors.Is(err, strconv.ErrRange) {
		return maxWait, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		// A duration too large for time.Duration is an error here too.
		return 0, fmt.Errorf("invalid wait %q", v)
	}
	return min(d, maxWait), nil
}

// read runs a catalog read with the request's query options and sets the
// response headers from its metadata.
func (h *Handler) read(w http.ResponseWriter, r *http.Request, req *catalog.ReadRequest) (*catalog.ReadResponse, error) {
	opts, err := h.parseQueryOptions(r)
	if err != nil {
		return nil, err
	}
	req.Options = opts
	if req.NodeMeta, err = parseNodeMeta(r); err != nil {
		return nil, err
	}
	if _, cached := queryOf(r)["cached"]; cached {
		if req.Options.RequireConsistent {
			return nil, badRequest("Cannot specify ?cached with ?consistent")
		}
		if h.agent.cache != nil && cacheable(req) {
			return h.cachedRead(w, r, req)
		}
	}
	resp, err := h.agent.backend.Read(r.Context(), req)
	if err != nil {
		return nil, err
	}
	setMeta(w, resp.Meta)
	if resp.Meta.ResultsFilteredByACLs {
		markFiltered(w, r)
	}
	return resp, nil
}

// cachedRead answers a ?cached read from the agent's view of it, the way
// Consul's background-refresh caching does: X-Cache says HIT when the view
// already held a result, Age how old that result is (0 while the view's
// blocking queries succeed, the time since they began to fail otherwise).
// A Cache-Control max-age=N the result is older than sends the read to the
// servers; when they fail, stale-if-error=M still lets a result up to M
// old through (Age then tells the client so), else the servers' error is
// the answer.
func (h *Handler) cachedRead(w http.ResponseWriter, r *http.Request, req *catalog.ReadRequest) (*catalog.ReadResponse, error) {
	cc, err := parseCacheControl(r.Header.Values("Cache-Control"))
	if err != nil {
		return nil, err
	}
	hit := h.agent.cache.Has(req)
	resp, err := h.agent.cache.Get(r.Context(), req)
	if err != nil {
		return nil, err
	}
	age, _ := h.agent.cache.Age(req)
	if cc.maxAge >= 0 && age > cc.maxAge {
		fresh, ferr := h.agent.backend.Read(r.Context(), req)
		switch {
		case ferr == nil:
			resp, hit, age = fresh, false, 0
		case cc.staleIfError < 0 || age > cc.staleIfError:
			return nil, ferr
		}
	}
	setMeta(w, resp.Meta)
	hd := w.Header()
	if hit {
		hd["X-Cache"] = []string{"HIT"}
	} else {
		hd["X-Cache"] = []string{"MISS"}
	}
	hd["Age"] = []string{strconv.FormatInt(int64(age/time.Second), 10)}
	return resp, nil
}

// cacheControl is what a ?cached read's Cache-Control header asks for;
// -1 for a directive that is absent.
type cacheControl struct {
	maxAge, staleIfError time.Duration
}

// parseCacheControl reads the max-age, must-revalidate (max-age=0) and
// stale-if-error directives; others are ignored, as HTTP caches do.
func parseCacheControl(values []string) (cacheControl, error) {
	cc := cacheControl{maxAge: -1, staleIfError: -1}
	for _, v := range values {
		for _, d := range strings.Split(v, ",") {
			name, arg, _ := strings.Cut(strings.TrimSpace(d), "=")
			name = strings.ToLower(name)
			var dst *time.Duration
			switch name {
			case "max-age":
				dst = &cc.maxAge
			case "stale-if-error":
				dst = &cc.staleIfError
			case "must-revalidate":
				cc.maxAge = 0
				continue
			default:
				continue
			}
			n, err := strconv.ParseUint(strings.Trim(arg, `"`), 10, 32)
			if err != nil {
				return cc, badRequest("Invalid Cache-Control %s: %q", name, arg)
			}
			*dst = time.Duration(n) * time.Second
		}
	}
	return cc, nil
}

// cacheable reports whether a read may be answered from the agent's views
// (?cached): the reads Consul's agent cache serves, not consistent ones,
// and not node-meta filtered ones (views do not key on node meta).
func cacheable(req *catalog.ReadRequest) bool {
	switch req.Op {
	case catalog.ReadServices, catalog.ReadServiceInstances, catalog.ReadHealthService:
	default:
		return false
	}
	return !req.Options.RequireConsistent && len(req.NodeMeta) == 0
}

func setMeta(w http.ResponseWriter, m catalog.QueryMeta) { setMetaHeader(w.Header(), m) }

// setMetaHeader sets the read headers of m in hd.
func setMetaHeader(hd http.Header, m catalog.QueryMeta) {
	// The keys are in canonical form (what Header.Set would make of
	// X-Consul-KnownLeader), so they are stored as they are; the constant
	// values are shared: net/http only reads them.
	hd["X-Consul-Index"] = []string{strconv.FormatUint(max(m.Index, 1), 10)}
	if m.KnownLeader {
		hd["X-Consul-Knownleader"] = headerTrue
	} else {
		hd["X-Consul-Knownleader"] = headerFalse
	}
	if m.LastContact >= 0 && m.LastContact < time.Millisecond {
		hd["X-Consul-Lastcontact"] = headerZero
	} else {
		hd["X-Consul-Lastcontact"] = []string{strconv.FormatInt(m.LastContact.Milliseconds(), 10)}
	}
}

// Shared header values (see setMeta and writeJSON).
var (
	headerTrue  = []string{"true"}
	headerFalse = []string{"false"}
	headerZero  = []string{"0"}
	headerJSON  = []string{"application/json"}
)

// apply commits a command and returns the FSM's response, turning an error
// response into an error.
func (h *Handler) apply(ctx context.Context, t catalog.CommandType, body any) (any, error) {
	resp, err := h.agent.backend.Apply(ctx, t, body)
	if err != nil {
		return nil, err
	}
	if e, ok := resp.(error); ok && e != nil {
		return nil, e
	}
	return resp, nil
}

// decodeBody decodes a JSON request body into out, bounded in size.
func decodeBody(r *http.Request, out any) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxJSONBody+1))
	if err != nil {
		return badRequest("Request decode failed: %v", err)
	}
	if len(body) > maxJSONBody {
		return tooLarge("Request body too large, max size: %d bytes", maxJSONBody)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return badRequest("Request decode failed: empty body")
	}
	// encoding/json would replace invalid UTF-8 and lone surrogate escapes
	// with U+FFFD, silently storing strings (KV keys of /v1/txn, names)
	// other than those sent: refuse them instead.
	if !utf8.Valid(body) {
		return badRequest("Request decode failed: body is not valid UTF-8")
	}
	if i := loneSurrogate(body); i >= 0 {
		return badRequest("Request decode failed: lone UTF-16 surrogate escape at offset %d", i)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return badRequest("Request decode failed: %v", err)
	}
	return nil
}

// loneSurrogate returns the offset of the first \uD800-\uDFFF escape in a
// JSON text that is not half of a surrogate pair, or -1.
func loneSurrogate(b []byte) int {
	hex4 := func(i int) (rune, bool) {
		if i+6 > len(b) || b[i] != '\\' || b[i+1] != 'u' {
			return 0, false
		}
		n, err := strconv.ParseUint(string(b[i+2:i+6]), 16, 32)
		return rune(n), err == nil
	}
	for i := 0; i < len(b); i++ {
		if b[i] != '\\' {
			continue
		}
		r, ok := hex4(i)
		if !ok {
			i++ // an escape of one character: skip it
			continue
		}
		switch {
		case r >= 0xD800 && r <= 0xDBFF:
			if lo, ok := hex4(i + 6); ok && lo >= 0xDC00 && lo <= 0xDFFF {
				i += 11
				continue
			}
			return i
		case r >= 0xDC00 && r <= 0xDFFF:
			return i
		}
		i += 5
	}
	return -1
}

// filter applies a ?filter= expression (go-bexpr) to a slice of results.
func filter[T any](expr string, in []T) ([]T, error) {
	if expr == "" {
		return in, nil
	}
	ev, err := bexpr.CreateFilter(expr)
	if err != nil {
		return nil, badRequest("Failed to create boolean expression evaluator: %v", err)
	}
	out, err := ev.Execute(in)
	if err != nil {
		return nil, badRequest("Failed to apply filter: %v", err)
	}
	res, _ := out.([]T)
	if res == nil {
		res = []T{}
	}
	return res, nil
}
