package agent_test

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/agent/agenttest"
)

func TestAPIHTTP_BadInput(t *testing.T) {
	t.Parallel()
	a, c := startAPI(t)
	if _, err := c.KV().Put(&api.KVPair{Key: "x", Value: []byte("1")}, nil); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		method, path, body string
		code               int
	}{
		{"PUT", "/v1/catalog/register", `{"Node": "n1", "Address": `, http.StatusBadRequest},
		{"PUT", "/v1/catalog/register", `[1,2]`, http.StatusBadRequest},
		{"PUT", "/v1/catalog/register", ``, http.StatusBadRequest},
		{"PUT", "/v1/catalog/register", `{"Address": "10.0.0.9"}`, http.StatusBadRequest},
		{"PUT", "/v1/catalog/deregister", `{`, http.StatusBadRequest},
		{"PUT", "/v1/agent/service/register", `{"Name":`, http.StatusBadRequest},
		{"PUT", "/v1/agent/check/register", `nope`, http.StatusBadRequest},
		{"PUT", "/v1/txn", `{"not":"a list"}`, http.StatusBadRequest},
		{"GET", "/v1/kv/x?index=abc", "", http.StatusBadRequest},
		{"GET", "/v1/catalog/nodes?index=-1", "", http.StatusBadRequest},
		{"GET", "/v1/kv/x?index=1&wait=xyz", "", http.StatusBadRequest},
		{"GET", "/v1/health/service/web?wait=xyz", "", http.StatusBadRequest},
		{"GET", "/v1/nope", "", http.StatusNotFound},
		{"GET", "/v2/kv/x", "", http.StatusNotFound},
		{"POST", "/v1/kv/x", "v", http.StatusMethodNotAllowed},
		{"DELETE", "/v1/catalog/nodes", "", http.StatusMethodNotAllowed},
		{"GET", "/v1/catalog/register", "", http.StatusMethodNotAllowed},
		{"PUT", "/v1/kv/x?flags=abc", "v", http.StatusBadRequest},
		{"PUT", "/v1/kv/x?cas=abc", "v", http.StatusBadRequest},
	}
	for _, tc := range cases {
		r := httpString(t, a, tc.method, tc.path, tc.body)
		if r.code != tc.code {
			t.Errorf("%s %s %q = %d %q, want %d", tc.method, tc.path, tc.body, r.code, r.body, tc.code)
			continue
		}
		if strings.TrimSpace(r.body) == "" {
			t.Errorf("%s %s = %d with an empty body, want a message", tc.method, tc.path, r.code)
		}
	}
	// The value of x was not touched by the refused PUTs.
	p, _, err := c.KV().Get("x", nil)
	if err != nil || p == nil || string(p.Value) != "1" || p.Flags != 0 {
		t.Fatalf("x after bad PUTs = %+v, %v", p, err)
	}
	// Nothing was registered by the malformed catalog requests.
	if n, _, err := c.Catalog().Node("n1", nil); err != nil || n != nil {
		t.Fatalf("n1 registered by a malformed request: %+v %v", n, err)
	}
	// The 405 names the allowed methods.
	r := httpString(t, a, "POST", "/v1/kv/x", "v")
	if allow := r.header.Get("Allow"); !strings.Contains(allow, "PUT") || !strings.Contains(allow, "GET") {
		t.Fatalf("405 Allow header = %q", allow)
	}
}

func TestAPIHTTP_PrettyAndHeaders(t *testing.T) {
	t.Parallel()
	a, c := startAPI(t)
	if _, err := c.KV().Put(&api.KVPair{Key: "p", Value: []byte("1")}, nil); err != nil {
		t.Fatal(err)
	}
	plain := httpString(t, a, "GET", "/v1/kv/p", "")
	pretty := httpString(t, a, "GET", "/v1/kv/p?pretty", "")
	if plain.code != 200 || pretty.code != 200 {
		t.Fatalf("status %d / %d", plain.code, pretty.code)
	}
	if strings.Contains(strings.TrimSpace(plain.body), "\n") {
		t.Fatalf("plain body is indented: %q", plain.body)
	}
	if !strings.Contains(pretty.body, "\n    ") {
		t.Fatalf("?pretty body not indented: %q", pretty.body)
	}
	var a1, a2 []map[string]any
	if err := json.Unmarshal([]byte(plain.body), &a1); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(pretty.body), &a2); err != nil {
		t.Fatal(err)
	}
	if a1[0]["Key"] != "p" || a2[0]["Key"] != "p" || a1[0]["Value"] != a2[0]["Value"] {
		t.Fatalf("plain %v and pretty %v differ", a1, a2)
	}
	if ct := plain.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}

	for _, path := range []string{
		"/v1/kv/p", "/v1/kv/?recurse", "/v1/kv/?keys", "/v1/kv/missing",
		"/v1/catalog/nodes", "/v1/catalog/services", "/v1/catalog/service/none",
		"/v1/health/state/any", "/v1/health/service/none", "/v1/health/checks/none",
		"/v1/kv/p?stale", "/v1/kv/p?consistent",
	} {
		r := httpString(t, a, "GET", path, "")
		if r.code != http.StatusOK && r.code != http.StatusNotFound {
			t.Fatalf("GET %s = %d %q", path, r.code, r.body)
		}
		idx, err := strconv.ParseUint(r.header.Get("X-Consul-Index"), 10, 64)
		if err != nil || idx == 0 {
			t.Fatalf("GET %s: X-Consul-Index %q", path, r.header.Get("X-Consul-Index"))
		}
		if kl := r.header.Get("X-Consul-KnownLeader"); kl != "true" {
			t.Fatalf("GET %s: X-Consul-KnownLeader %q", path, kl)
		}
		if lc := r.header.Get("X-Consul-LastContact"); lc != "0" {
			t.Fatalf("GET %s: X-Consul-LastContact %q, want 0 on the leader", path, lc)
		}
	}
	// A write does not pretend to be a read.
	w := httpString(t, a, "PUT", "/v1/kv/p", "2")
	if w.code != 200 || strings.TrimSpace(w.body) != "true" {
		t.Fatalf("PUT = %d %q", w.code, w.body)
	}
}

// addresses.http = "unix:///path" serves the API on a Unix socket, which the
// official client reaches with a unix:// address.
func TestAPIHTTP_UnixSocket(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "tribune-sock")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "http.sock")
	cfg := agenttest.Config(t)
	cfg.Addresses.HTTP = []string{"unix://" + sock}
	a := agenttest.Start(t, cfg)
	if a.HTTPAddr() != sock {
		t.Fatalf("HTTPAddr() = %q, want %q", a.HTTPAddr(), sock)
	}
	c, err := api.NewClient(&api.Config{Address: "unix://" + sock})
	if err != nil {
		t.Fatal(err)
	}
	self, err := c.Agent().Self()
	if err != nil {
		t.Fatal(err)
	}
	if self["Config"]["NodeName"] != cfg.NodeName {
		t.Fatalf("self over the socket: %v", self["Config"])
	}
}
