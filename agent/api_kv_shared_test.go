package agent_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/agent"
	"github.com/tribune-mesh/tribune/agent/agenttest"
	"github.com/tribune-mesh/tribune/test/wait"
)

// waitParked waits until at least n blocking queries wait on a's views.
func waitParked(t *testing.T, a *agent.Agent, n int) {
	t.Helper()
	wait.For(t, 20*time.Second, func() error {
		if got := a.WaitingQueries(); got < n {
			return fmt.Errorf("%d blocking queries parked, want %d", got, n)
		}
		return nil
	})
}

// rawResult is one raw HTTP answer.
type rawResult struct {
	code  int
	index string
	body  string
	err   error
}

// goGet sends GET path with token (none when empty) in a goroutine.
func goGet(a *agent.Agent, path, token string) <-chan rawResult {
	ch := make(chan rawResult, 1)
	go func() {
		req, err := http.NewRequest(http.MethodGet, "http://"+a.HTTPAddr()+path, nil)
		if err != nil {
			ch <- rawResult{err: err}
			return
		}
		if token != "" {
			req.Header.Set("X-Consul-Token", token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			ch <- rawResult{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		ch <- rawResult{code: resp.StatusCode, index: resp.Header.Get("X-Consul-Index"), body: string(b), err: err}
	}()
	return ch
}

func recvRaw(t *testing.T, ch <-chan rawResult) rawResult {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatal(r.err)
		}
		return r
	case <-time.After(20 * time.Second):
		t.Fatal("blocking query did not return within 20s")
	}
	panic("unreachable")
}

// TestAPIKV_SharedBlockingQueries parks many identical blocking queries on
// one key, in every form the API answers them: one write wakes them all
// with the new value, each in its own form, the JSON ones byte for byte the
// same as a plain read's.
func TestAPIKV_SharedBlockingQueries(t *testing.T) {
	t.Parallel()
	a, c := startAPI(t)
	kv := c.KV()
	if _, err := kv.Put(&api.KVPair{Key: "shared/k", Value: []byte("one")}, nil); err != nil {
		t.Fatal(err)
	}
	_, m, err := kv.Get("shared/k", nil)
	if err != nil {
		t.Fatal(err)
	}
	idx := strconv.FormatUint(m.LastIndex, 10)
	const n = 40
	forms := map[string]string{
		"json":   "/v1/kv/shared/k?index=" + idx + "&wait=30s",
		"stale":  "/v1/kv/shared/k?stale&index=" + idx + "&wait=30s",
		"raw":    "/v1/kv/shared/k?raw&index=" + idx + "&wait=30s",
		"pretty": "/v1/kv/shared/k?pretty&index=" + idx + "&wait=30s",
		"list":   "/v1/kv/shared/?recurse&index=" + idx + "&wait=30s",
		"keys":   "/v1/kv/shared/?keys&index=" + idx + "&wait=30s",
	}
	var plain []<-chan rawResult
	for i := 0; i < n; i++ {
		plain = append(plain, goGet(a, forms["json"], ""))
	}
	others := map[string]<-chan rawResult{}
	for name, path := range forms {
		others[name] = goGet(a, path, "")
	}
	consistent := goGet(a, "/v1/kv/shared/k?consistent&index="+idx+"&wait=30s", "")
	waitParked(t, a, n+len(forms))

	if _, err := kv.Put(&api.KVPair{Key: "shared/k", Value: []byte("two")}, nil); err != nil {
		t.Fatal(err)
	}
	want := httpString(t, a, "GET", "/v1/kv/shared/k", "")
	if want.code != http.StatusOK || !strings.Contains(want.body, `"Value":"dHdv"`) {
		t.Fatalf("plain read after the write: %d %s", want.code, want.body)
	}
	wantIndex := want.header.Get("X-Consul-Index")
	for i, ch := range plain {
		r := recvRaw(t, ch)
		if r.code != http.StatusOK || r.body != want.body || r.index != wantIndex {
			t.Fatalf("watcher %d: %d index %s %q, want 200 index %s %q", i, r.code, r.index, r.body, wantIndex, want.body)
		}
	}
	checks := map[string]func(r rawResult) bool{
		"json":   func(r rawResult) bool { return r.body == want.body },
		"stale":  func(r rawResult) bool { return r.body == want.body },
		"raw":    func(r rawResult) bool { return r.body == "two" },
		"pretty": func(r rawResult) bool { return strings.Contains(r.body, "\n    {") && strings.Contains(r.body, "dHdv") },
		"list":   func(r rawResult) bool { return strings.Contains(r.body, "dHdv") },
		"keys":   func(r rawResult) bool { return r.body == `["shared/k"]` },
	}
	for name, ch := range others {
		r := recvRaw(t, ch)
		if r.code != http.StatusOK || !checks[name](r) || r.index != wantIndex {
			t.Fatalf("%s watcher: %d index %s %q (want index %s)", name, r.code, r.index, r.body, wantIndex)
		}
	}
	if r := recvRaw(t, consistent); r.code != http.StatusOK || r.body != want.body {
		t.Fatalf("consistent watcher: %d %q", r.code, r.body)
	}

	// An index already passed answers at once, from a read of its own.
	start := time.Now()
	r := recvRaw(t, goGet(a, "/v1/kv/shared/k?index="+idx+"&wait=30s", ""))
	if r.body != want.body || time.Since(start) > 5*time.Second {
		t.Fatalf("passed index: %q after %v", r.body, time.Since(start))
	}
	// A wait that ends with nothing new answers the current value with
	// the same index.
	start = time.Now()
	r = recvRaw(t, goGet(a, "/v1/kv/shared/k?index="+wantIndex+"&wait=200ms", ""))
	if el := time.Since(start); r.code != http.StatusOK || r.index != wantIndex || r.body != want.body || el < 190*time.Millisecond {
		t.Fatalf("timed out watcher: %d index %s %q after %v", r.code, r.index, r.body, el)
	}
}

// TestAPIKV_SharedBlockingQueriesACL checks that sharing keeps every
// caller's token: a token that may not read the key is refused even with an
// index, and a parked watcher whose token is deleted gets 403 at the next
// change instead of the new value.
func TestAPIKV_SharedBlockingQueriesACL(t *testing.T) {
	t.Parallel()
	a := agenttest.Start(t, aclConfig(agenttest.Config(t)))
	root := tokenClient(t, a, rootSecret)
	waitManagement(t, root)
	if _, err := root.KV().Put(&api.KVPair{Key: "app/x", Value: []byte("one")}, nil); err != nil {
		t.Fatal(err)
	}
	_, m, err := root.KV().Get("app/x", nil)
	if err != nil {
		t.Fatal(err)
	}
	idx := strconv.FormatUint(m.LastIndex, 10)
	accessor, secret := readerToken(t, root)
	_, keep := readerToken(t, root)
	other, _, err := root.ACL().TokenCreate(&api.ACLToken{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	path := "/v1/kv/app/x?index=" + idx + "&wait=30s"
	if r := recvRaw(t, goGet(a, path, other.SecretID)); r.code != http.StatusForbidden {
		t.Fatalf("token without key read: %d %q, want 403", r.code, r.body)
	}

	doomed := goGet(a, path, secret)
	kept := goGet(a, path, keep)
	waitParked(t, a, 2)
	if _, err := root.ACL().TokenDelete(accessor, nil); err != nil {
		t.Fatal(err)
	}
	// The deletion must reach the token cache first: once a fresh
	// request with it is refused, the next change must be too.
	wait.For(t, 10*time.Second, func() error {
		if code := kvStatus(t, a.HTTPAddr(), secret); code != http.StatusForbidden {
			return fmt.Errorf("deleted token: status %d", code)
		}
		return nil
	})
	if _, err := root.KV().Put(&api.KVPair{Key: "app/x", Value: []byte("two")}, nil); err != nil {
		t.Fatal(err)
	}
	if r := recvRaw(t, doomed); r.code != http.StatusForbidden || strings.Contains(r.body, "dHdv") {
		t.Fatalf("watcher of a deleted token: %d %q, want 403", r.code, r.body)
	}
	if r := recvRaw(t, kept); r.code != http.StatusOK || !strings.Contains(r.body, "dHdv") {
		t.Fatalf("watcher of a live token: %d %q, want the new value", r.code, r.body)
	}
}

// TestAPIKV_ParkedConnectionKeepAlive checks that a parked query's
// connection (hijacked while it waits) serves the next requests after its
// answer, HEAD included, and that stopping the agent closes the
// connections still parked.
func TestAPIKV_ParkedConnectionKeepAlive(t *testing.T) {
	t.Parallel()
	a, c := startAPI(t)
	if _, err := c.KV().Put(&api.KVPair{Key: "ka", Value: []byte("one")}, nil); err != nil {
		t.Fatal(err)
	}
	_, m, err := c.KV().Get("ka", nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	var conns, reused atomic.Int64
	do := func(method, path string) (int, string, string) {
		t.Helper()
		trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
			conns.Add(1)
			if i.Reused {
				reused.Add(1)
			}
		}}
		req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), method, "http://"+a.HTTPAddr()+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, resp.Header.Get("X-Consul-Index"), string(b)
	}
	idx := m.LastIndex
	for i, method := range []string{http.MethodGet, http.MethodHead, http.MethodGet} {
		done := make(chan struct{})
		var code int
		var index, body string
		go func() {
			defer close(done)
			code, index, body = do(method, "/v1/kv/ka?index="+strconv.FormatUint(idx, 10)+"&wait=30s")
		}()
		waitParked(t, a, 1)
		value := fmt.Sprintf("v%d", i)
		if _, err := c.KV().Put(&api.KVPair{Key: "ka", Value: []byte(value)}, nil); err != nil {
			t.Fatal(err)
		}
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatalf("%s %d: parked query not answered", method, i)
		}
		n, _ := strconv.ParseUint(index, 10, 64)
		if code != http.StatusOK || n <= idx {
			t.Fatalf("%s %d: %d index %s", method, i, code, index)
		}
		if method == http.MethodGet && !strings.Contains(body, base64.StdEncoding.EncodeToString([]byte(value))) {
			t.Fatalf("%s %d: body %q, want value %s", method, i, body, value)
		}
		if method == http.MethodHead && body != "" {
			t.Fatalf("HEAD answered a body: %q", body)
		}
		idx = n
		// A plain request on the same connection after the answer.
		if code, _, body := do(http.MethodGet, "/v1/kv/ka"); code != http.StatusOK || !strings.Contains(body, base64.StdEncoding.EncodeToString([]byte(value))) {
			t.Fatalf("request after a parked answer: %d %q", code, body)
		}
	}
	if conns.Load() != 6 || reused.Load() != 5 {
		t.Fatalf("%d requests on %d new connections, want all 6 on one", conns.Load(), conns.Load()-reused.Load())
	}

	// Stopping the agent answers the parked connections by closing them.
	errc := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, "http://"+a.HTTPAddr()+"/v1/kv/ka?index="+strconv.FormatUint(idx, 10)+"&wait=5m", nil)
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			err = fmt.Errorf("answered %s", resp.Status)
		}
		errc <- err
	}()
	waitParked(t, a, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := a.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	select {
	case err := <-errc:
		if err == nil || strings.Contains(err.Error(), "answered") {
			t.Fatalf("parked query at shutdown: %v, want its connection closed", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("parked connection still open after the agent stopped")
	}
}

// TestAPIKV_ParkedAnswersOneRendering parks more plain watchers of one key
// than one goroutine answers, as GET and HEAD, on an agent with configured
// response headers: one write answers each with its own form of the one
// shared rendering (the headers of a plain read, the configured ones, the
// framing; HEAD without the body), and each connection stays usable.
func TestAPIKV_ParkedAnswersOneRendering(t *testing.T) {
	t.Parallel()
	cfg := agenttest.Config(t)
	cfg.HTTP.ResponseHeaders = map[string]string{"X-Frame-Options": "DENY"}
	a := agenttest.Start(t, cfg)
	c, err := api.NewClient(&api.Config{Address: a.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.KV().Put(&api.KVPair{Key: "one/k", Value: []byte("one")}, nil); err != nil {
		t.Fatal(err)
	}
	_, m, err := c.KV().Get("one/k", nil)
	if err != nil {
		t.Fatal(err)
	}
	// Below http_max_conns_per_client (200), above two batches of
	// viewcache's fan-out.
	const gets, heads = 110, 40
	type answer struct {
		method string
		code   int
		header http.Header
		body   string
		next   int // status of a plain read on the same connection
		err    error
	}
	results := make(chan answer, gets+heads)
	path := "http://" + a.HTTPAddr() + "/v1/kv/one/k"
	for i := 0; i < gets+heads; i++ {
		method := http.MethodGet
		if i >= gets {
			method = http.MethodHead
		}
		go func() {
			tr := &http.Transport{MaxConnsPerHost: 1}
			defer tr.CloseIdleConnections()
			hc := &http.Client{Transport: tr}
			r := answer{method: method}
			defer func() { results <- r }()
			req, _ := http.NewRequest(method, path+"?index="+strconv.FormatUint(m.LastIndex, 10)+"&wait=30s", nil)
			resp, err := hc.Do(req)
			if r.err = err; err != nil {
				return
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			r.code, r.header, r.body, r.err = resp.StatusCode, resp.Header, string(b), err
			if err != nil {
				return
			}
			if resp, err = hc.Get(path); err != nil {
				r.err = err
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			r.next = resp.StatusCode
		}()
	}
	waitParked(t, a, gets+heads)
	if _, err := c.KV().Put(&api.KVPair{Key: "one/k", Value: []byte("two")}, nil); err != nil {
		t.Fatal(err)
	}
	want := httpString(t, a, "GET", "/v1/kv/one/k", "")
	if want.code != http.StatusOK || !strings.Contains(want.body, `"Value":"dHdv"`) {
		t.Fatalf("plain read after the write: %d %s", want.code, want.body)
	}
	for i := 0; i < gets+heads; i++ {
		var r answer
		select {
		case r = <-results:
		case <-time.After(30 * time.Second):
			t.Fatalf("%d of %d watchers answered within 30s", i, gets+heads)
		}
		if r.err != nil {
			t.Fatalf("%s watcher: %v", r.method, r.err)
		}
		wantBody := want.body
		if r.method == http.MethodHead {
			wantBody = ""
		}
		h := r.header
		_, dateErr := http.ParseTime(h.Get("Date"))
		switch {
		case r.code != http.StatusOK || r.body != wantBody:
			t.Fatalf("%s watcher: %d %q, want 200 %q", r.method, r.code, r.body, wantBody)
		case h.Get("X-Consul-Index") != want.header.Get("X-Consul-Index") || h.Get("X-Consul-Knownleader") != "true":
			t.Fatalf("%s watcher: headers %v, want index %s and a known leader", r.method, h, want.header.Get("X-Consul-Index"))
		case h.Get("Content-Type") != "application/json" || h.Get("X-Frame-Options") != "DENY" || dateErr != nil:
			t.Fatalf("%s watcher: headers %v", r.method, h)
		case h.Get("Content-Length") != strconv.Itoa(len(want.body)):
			t.Fatalf("%s watcher: Content-Length %q, want %d", r.method, h.Get("Content-Length"), len(want.body))
		case r.next != http.StatusOK:
			t.Fatalf("%s watcher: the next request on its connection answered %d", r.method, r.next)
		}
	}
}
