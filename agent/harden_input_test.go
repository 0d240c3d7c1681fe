package agent_test

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/consul/api"
)

// pctEncode percent-encodes every byte of s, so that the agent receives
// exactly those bytes as the path.
func pctEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		fmt.Fprintf(&b, "%%%02X", s[i])
	}
	return b.String()
}

// keySequences is every single byte, every pair made of bytes at the edges
// of UTF-8's ranges, and longer sequences: overlong forms, surrogates,
// code points past U+10FFFF, truncated and valid multi-byte characters.
func keySequences() []string {
	var out []string
	for b := 0; b < 256; b++ {
		out = append(out, string([]byte{byte(b)}))
	}
	firsts := []byte{0x00, 0x2F, 0x7F, 0x80, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xED, 0xEF, 0xF0, 0xF4, 0xF5, 0xFE, 0xFF}
	seconds := []byte{0x00, 0x2F, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xFF}
	for _, a := range firsts {
		for _, b := range seconds {
			out = append(out, string([]byte{a, b}))
		}
	}
	for _, s := range [][]byte{
		{0xC0, 0x80}, {0xE0, 0x80, 0x80}, {0xF0, 0x80, 0x80, 0x80}, // overlong
		{0xED, 0xA0, 0x80}, {0xED, 0xBF, 0xBF}, // UTF-16 surrogates
		{0xF4, 0x90, 0x80, 0x80}, {0xF7, 0xBF, 0xBF, 0xBF}, // past U+10FFFF
		{0xE2, 0x82}, {0xF0, 0x9D, 0x84}, // truncated
		{0xE2, 0x82, 0xAC}, {0xF0, 0x9D, 0x84, 0x9E}, {0xEF, 0xBF, 0xBD}, // €, 𝄞, U+FFFD itself
		{0xFF, 0xFE}, {0x80, 0x81}, // the pair
		[]byte("a/../b"), []byte("./"), []byte("%41"), []byte("?x=1#y"), []byte(" \t\r\n"),
	} {
		out = append(out, string(s))
	}
	return out
}

// Issue 10 #5: every byte sequence a client can send as a KV key either
// round-trips exactly (PUT, GET, list, DELETE) or is refused with 400; no
// key is stored under another name and no two keys collide.
func TestHarden_KVKeysRoundTripOrRefused(t *testing.T) {
	t.Parallel()
	a, c := startAPI(t)
	accepted := map[string]bool{}
	for _, seq := range keySequences() {
		key := "u/" + seq
		path := "/v1/kv/" + pctEncode(key)
		val := hex.EncodeToString([]byte(seq))
		put := httpString(t, a, "PUT", path, val)
		switch put.code {
		case http.StatusOK:
			if strings.TrimSpace(put.body) != "true" {
				t.Fatalf("PUT %q = %q", key, put.body)
			}
			accepted[key] = true
			get := httpString(t, a, "GET", path, "")
			var got []struct {
				Key   string
				Value []byte
			}
			if get.code != http.StatusOK || json.Unmarshal([]byte(get.body), &got) != nil || len(got) != 1 {
				t.Errorf("GET %q after PUT = %d %q", key, get.code, get.body)
				continue
			}
			if got[0].Key != key || string(got[0].Value) != val {
				t.Errorf("key %q round-tripped as %q = %q", key, got[0].Key, got[0].Value)
			}
		case http.StatusBadRequest:
			if utf8.ValidString(key) {
				t.Errorf("valid UTF-8 key %q refused: %q", key, put.body)
			}
			for _, m := range []string{"GET", "DELETE"} {
				if r := httpString(t, a, m, path, ""); r.code != http.StatusBadRequest {
					t.Errorf("%s of refused key %q = %d %q, want 400", m, key, r.code, r.body)
				}
			}
		default:
			t.Fatalf("PUT %q = %d %q", key, put.code, put.body)
		}
	}
	if len(accepted) < 150 {
		t.Fatalf("only %d keys accepted", len(accepted))
	}
	// The listing holds exactly the accepted keys: nothing rewritten,
	// nothing collided.
	keys, _, err := c.KV().Keys("u/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for k := range accepted {
		want = append(want, k)
	}
	slices.Sort(want)
	slices.Sort(keys)
	if !slices.Equal(keys, want) {
		t.Errorf("listed %d keys, accepted %d", len(keys), len(want))
		for _, k := range keys {
			if !accepted[k] {
				t.Errorf("listed key %q was never written", k)
			}
		}
	}
	// Each deletes exactly its own key.
	for k := range accepted {
		if r := httpString(t, a, "DELETE", "/v1/kv/"+pctEncode(k), ""); r.code != http.StatusOK {
			t.Errorf("DELETE %q = %d %q", k, r.code, r.body)
		}
	}
	if keys, _, err := c.KV().Keys("u/", "", nil); err != nil || len(keys) != 0 {
		t.Errorf("after deleting every key: %q %v", keys, err)
	}
}

// Issue 10 #5 and #8: /v1/txn applies the same key validation as /v1/kv:
// a key over the size limit, invalid UTF-8 bytes in the JSON body, or a
// lone surrogate escape is refused with 400 and nothing is written; a valid
// key round-trips.
func TestHarden_TxnKeyValidation(t *testing.T) {
	t.Parallel()
	a, c := startAPI(t)
	v := base64.StdEncoding.EncodeToString([]byte("v"))
	op := func(key string) string {
		return `[{"KV":{"Verb":"set","Key":"t/ok","Value":"` + v + `"}},{"KV":{"Verb":"set","Key":"` + key + `","Value":"` + v + `"}}]`
	}
	for name, body := range map[string]string{
		"key of 400 KB":       op(strings.Repeat("k", 400<<10)),
		"key of 4097 bytes":   op(strings.Repeat("k", 4097)),
		"raw invalid UTF-8":   op("t/\xff\xfe"),
		"raw surrogate bytes": op("t/\xed\xa0\x80"),
		"lone high surrogate": op(`t/\ud800`),
		"lone low surrogate":  op(`t/\udc00x`),
		"reversed pair":       op(`t/\udc00\ud800`),
	} {
		r := httpString(t, a, "PUT", "/v1/txn", body)
		if r.code != http.StatusBadRequest && r.code != http.StatusRequestEntityTooLarge {
			t.Errorf("%s: %d %.200q, want 400", name, r.code, r.body)
		}
	}
	if p, _, err := c.KV().Get("t/ok", nil); err != nil || p != nil {
		t.Fatalf("a refused txn wrote t/ok: %+v %v", p, err)
	}
	// The same key length /v1/kv refuses.
	if r := httpString(t, a, "PUT", "/v1/kv/"+strings.Repeat("k", 4097), "v"); r.code != http.StatusBadRequest {
		t.Errorf("kv key of 4097 bytes: %d", r.code)
	}
	// A valid pair and escapes round-trip.
	key := "t/\U0001D11E\\u00e9"
	r := httpString(t, a, "PUT", "/v1/txn", op(`t/\ud834\udd1e\u00e9`))
	if r.code != http.StatusOK {
		t.Fatalf("valid txn: %d %q", r.code, r.body)
	}
	if p, _, err := c.KV().Get("t/\U0001D11E\u00e9", nil); err != nil || p == nil || string(p.Value) != "v" {
		t.Fatalf("key %q after txn: %+v %v", key, p, err)
	}
}

// Issue 10 #7: wait= and index= are parsed with overflow checks: a wait
// that overflows a Duration is capped (the query blocks) instead of
// wrapping to a fraction of a second; bad values are 400.
func TestHarden_WaitAndIndexOverflow(t *testing.T) {
	t.Parallel()
	a, c := startAPI(t)
	if _, err := c.KV().Put(&api.KVPair{Key: "w", Value: []byte("1")}, nil); err != nil {
		t.Fatal(err)
	}
	_, meta, err := c.KV().Get("w", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"18446744074", "99999999999999999999999", "2562047h"} {
		client := &http.Client{Timeout: 1500 * time.Millisecond}
		url := fmt.Sprintf("http://%s/v1/kv/w?index=%d&wait=%s", a.HTTPAddr(), meta.LastIndex, w)
		start := time.Now()
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			t.Errorf("wait=%s answered %d after %v, want it to block", w, resp.StatusCode, time.Since(start))
		}
	}
	for _, q := range []string{
		"index=18446744073709551616", "index=-1", "index=1&wait=-1s", "index=1&wait=9223372036854775808ns", "index=1&wait=1x",
	} {
		if r := httpString(t, a, "GET", "/v1/kv/w?"+q, ""); r.code != http.StatusBadRequest {
			t.Errorf("?%s = %d %q, want 400", q, r.code, r.body)
		}
	}
}

// Issue 10 #9: /v1/catalog/services applies ?filter= over the services'
// instances (listing a service when one instance matches, with the tags of
// those that match), and answers 400 for an invalid expression.
func TestHarden_CatalogServicesFilter(t *testing.T) {
	t.Parallel()
	_, c := startAPI(t)
	reg := func(node, id, name string, tags []string, meta map[string]string) {
		t.Helper()
		_, err := c.Catalog().Register(&api.CatalogRegistration{
			Node: node, Address: "10.0.0.1",
			Service: &api.AgentService{ID: id, Service: name, Tags: tags, Meta: meta, Port: 80},
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
	}
	reg("n1", "web1", "web", []string{"v1"}, map[string]string{"env": "prod"})
	reg("n2", "web2", "web", []string{"v2"}, map[string]string{"env": "dev"})
	reg("n1", "db1", "db", []string{"primary"}, map[string]string{"env": "dev"})
	cases := []struct {
		filter string
		want   map[string][]string
	}{
		{`ServiceMeta.env == "prod"`, map[string][]string{"web": {"v1"}}},
		{`ServiceMeta.env == "dev"`, map[string][]string{"web": {"v2"}, "db": {"primary"}}},
		{`"primary" in ServiceTags`, map[string][]string{"db": {"primary"}}},
		{`Node == "n2"`, map[string][]string{"web": {"v2"}}},
		{`ServiceName == "none"`, map[string][]string{}},
	}
	for _, tc := range cases {
		got, _, err := c.Catalog().Services(&api.QueryOptions{Filter: tc.filter})
		if err != nil {
			t.Fatalf("filter %s: %v", tc.filter, err)
		}
		if len(got) != len(tc.want) {
			t.Errorf("filter %s = %v, want %v", tc.filter, got, tc.want)
			continue
		}
		for name, tags := range tc.want {
			if !slices.Equal(got[name], tags) {
				t.Errorf("filter %s: %s = %v, want %v", tc.filter, name, got[name], tags)
			}
		}
	}
	for _, bad := range []string{`ServiceMeta.env ==`, `Nope == "x"`, `((`} {
		_, _, err := c.Catalog().Services(&api.QueryOptions{Filter: bad})
		if err == nil || !strings.Contains(err.Error(), "400") {
			t.Errorf("filter %q: %v, want 400", bad, err)
		}
	}
	// Without a filter every service is listed.
	all, _, err := c.Catalog().Services(nil)
	if err != nil || len(all["web"]) != 2 || all["db"] == nil {
		t.Errorf("unfiltered = %v %v", all, err)
	}
}

// Issue 10 #4: ?filter= is bounded in size and nesting before it is parsed:
// 200 KB of '(' is refused with 400 at once instead of costing the parser
// hundreds of megabytes, on every endpoint that filters.
func TestHarden_FilterBounded(t *testing.T) {
	t.Parallel()
	a, _ := startAPI(t)
	for _, path := range []string{"/v1/catalog/nodes", "/v1/catalog/services", "/v1/health/service/web", "/v1/agent/services"} {
		for name, f := range map[string]string{
			"200 KB of (":  strings.Repeat("(", 200<<10),
			"4097 bytes":   `Node == "` + strings.Repeat("x", 4087) + `"`,
			"33 deep":      strings.Repeat("(", 33) + `Node == "x"` + strings.Repeat(")", 33),
			"unterminated": `Node == "x`,
		} {
			start := time.Now()
			r := httpString(t, a, "GET", path+"?filter="+url.QueryEscape(f), "")
			if r.code != http.StatusBadRequest {
				t.Errorf("%s filter %s: %d %.100q, want 400", path, name, r.code, r.body)
			}
			if el := time.Since(start); el > 2*time.Second {
				t.Errorf("%s filter %s took %v", path, name, el)
			}
		}
	}
	// Within the bounds, a filter is applied.
	f := strings.Repeat("(", 5) + `Node != "x"` + strings.Repeat(")", 5)
	for _, path := range []string{"/v1/catalog/nodes", "/v1/catalog/services"} {
		if r := httpString(t, a, "GET", path+"?filter="+url.QueryEscape(f), ""); r.code != http.StatusOK || len(r.body) < 5 {
			t.Errorf("%s filter nested 5 deep: %d %q", path, r.code, r.body)
		}
	}
}
