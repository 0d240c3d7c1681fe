package agent_test

import (
	"bytes"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

func TestAPIKV_PutGetFlags(t *testing.T) {
	t.Parallel()
	_, c := startAPI(t)
	kv := c.KV()

	if _, err := kv.Put(&api.KVPair{Key: "app/config", Value: []byte("v1"), Flags: 42}, nil); err != nil {
		t.Fatalf("put: %v", err)
	}
	p, meta, err := kv.Get("app/config", nil)
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	if p == nil {
		t.Fatal("get: nil pair for a written key")
	}
	if p.Key != "app/config" || string(p.Value) != "v1" || p.Flags != 42 {
		t.Fatalf("get = %q %q flags %d, want app/config v1 flags 42", p.Key, p.Value, p.Flags)
	}
	if p.CreateIndex == 0 || p.ModifyIndex != p.CreateIndex {
		t.Fatalf("indexes: create %d modify %d, want equal and non-zero", p.CreateIndex, p.ModifyIndex)
	}
	if meta.LastIndex != p.ModifyIndex {
		t.Fatalf("X-Consul-Index %d, want the key's ModifyIndex %d", meta.LastIndex, p.ModifyIndex)
	}
	if !meta.KnownLeader {
		t.Fatal("KnownLeader false on a single-server agent")
	}

	// Overwrite: value and flags change, CreateIndex stays.
	if _, err := kv.Put(&api.KVPair{Key: "app/config", Value: []byte("v2")}, nil); err != nil {
		t.Fatalf("put 2: %v", err)
	}
	p2, _, err := kv.Get("app/config", nil)
	if err != nil || p2 == nil {
		t.Fatalf("get 2: %v %v", p2, err)
	}
	if string(p2.Value) != "v2" || p2.Flags != 0 {
		t.Fatalf("after overwrite: %q flags %d, want v2 flags 0", p2.Value, p2.Flags)
	}
	if p2.CreateIndex != p.CreateIndex || p2.ModifyIndex <= p.ModifyIndex {
		t.Fatalf("after overwrite: create %d (was %d) modify %d (was %d)", p2.CreateIndex, p.CreateIndex, p2.ModifyIndex, p.ModifyIndex)
	}

	// Binary values survive the round trip.
	bin := []byte{0, 1, 2, 0xff, '\n', 0}
	if _, err := kv.Put(&api.KVPair{Key: "bin", Value: bin}, nil); err != nil {
		t.Fatalf("put bin: %v", err)
	}
	pb, _, err := kv.Get("bin", nil)
	if err != nil || pb == nil || !bytes.Equal(pb.Value, bin) {
		t.Fatalf("get bin = %v, %v; want %v", pb, err, bin)
	}
}

func TestAPIKV_GetMissing(t *testing.T) {
	t.Parallel()
	a, c := startAPI(t)
	p, meta, err := c.KV().Get("does/not/exist", nil)
	if err != nil {
		t.Fatalf("get missing: %v", err)
	}
	if p != nil {
		t.Fatalf("get missing = %+v, want nil", p)
	}
	if meta.LastIndex == 0 {
		t.Fatal("get missing: LastIndex 0")
	}
	r := httpString(t, a, "GET", "/v1/kv/does/not/exist", "")
	if r.code != http.StatusNotFound {
		t.Fatalf("plain GET missing = %d, want 404", r.code)
	}
	if r.header.Get("X-Consul-Index") == "" {
		t.Fatal("404 KV read has no X-Consul-Index")
	}
}

func TestAPIKV_CAS(t *testing.T) {
	t.Parallel()
	_, c := startAPI(t)
	kv := c.KV()

	// CAS with index 0 creates only when absent.
	ok, _, err := kv.CAS(&api.KVPair{Key: "cas", Value: []byte("a"), ModifyIndex: 0}, nil)
	if err != nil || !ok {
		t.Fatalf("cas create = %v, %v; want true", ok, err)
	}
	ok, _, err = kv.CAS(&api.KVPair{Key: "cas", Value: []byte("dup"), ModifyIndex: 0}, nil)
	if err != nil || ok {
		t.Fatalf("cas create on existing = %v, %v; want false", ok, err)
	}
	p, _, err := kv.Get("cas", nil)
	if err != nil || p == nil || string(p.Value) != "a" {
		t.Fatalf("get after cas = %v, %v", p, err)
	}
	stale := p.ModifyIndex

	ok, _, err = kv.CAS(&api.KVPair{Key: "cas", Value: []byte("b"), ModifyIndex: stale}, nil)
	if err != nil || !ok {
		t.Fatalf("cas with fresh index = %v, %v; want true", ok, err)
	}
	ok, _, err = kv.CAS(&api.KVPair{Key: "cas", Value: []byte("c"), ModifyIndex: stale}, nil)
	if err != nil || ok {
		t.Fatalf("cas with stale index = %v, %v; want false", ok, err)
	}
	p, _, err = kv.Get("cas", nil)
	if err != nil || p == nil || string(p.Value) != "b" {
		t.Fatalf("value after stale cas = %v, %v; want b", p, err)
	}
	if p.ModifyIndex <= stale {
		t.Fatalf("ModifyIndex %d not above %d after a successful cas", p.ModifyIndex, stale)
	}
}

func TestAPIKV_ListKeysDelete(t *testing.T) {
	t.Parallel()
	_, c := startAPI(t)
	kv := c.KV()
	for _, k := range []string{"web/a", "web/b", "web/sub/c", "web/sub/d", "webx", "other/z"} {
		if _, err := kv.Put(&api.KVPair{Key: k, Value: []byte("val-" + k)}, nil); err != nil {
			t.Fatalf("put %s: %v", k, err)
		}
	}

	pairs, _, err := kv.List("web/", nil)
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	var got []string
	for _, p := range pairs {
		got = append(got, p.Key)
		if string(p.Value) != "val-"+p.Key {
			t.Fatalf("list value of %s = %q", p.Key, p.Value)
		}
	}
	want := []string{"web/a", "web/b", "web/sub/c", "web/sub/d"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("list web/ = %v, want %v", got, want)
	}

	keys, _, err := kv.Keys("web/", "/", nil)
	if err != nil {
		t.Fatalf("keys: %v", err)
	}
	if want := []string{"web/a", "web/b", "web/sub/"}; !reflect.DeepEqual(keys, want) {
		t.Fatalf("keys web/ sep / = %v, want %v", keys, want)
	}
	keys, _, err = kv.Keys("web", "", nil)
	if err != nil {
		t.Fatalf("keys no sep: %v", err)
	}
	if want := []string{"web/a", "web/b", "web/sub/c", "web/sub/d", "webx"}; !reflect.DeepEqual(keys, want) {
		t.Fatalf("keys web = %v, want %v", keys, want)
	}
	keys, _, err = kv.Keys("", "/", nil)
	if err != nil {
		t.Fatalf("keys root: %v", err)
	}
	if want := []string{"other/", "web/", "webx"}; !reflect.DeepEqual(keys, want) {
		t.Fatalf("keys root sep / = %v, want %v", keys, want)
	}

	// Delete one key.
	if _, err := kv.Delete("web/a", nil); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if p, _, err := kv.Get("web/a", nil); err != nil || p != nil {
		t.Fatalf("get deleted = %v, %v; want nil", p, err)
	}

	// DeleteCAS: stale index refuses, fresh index deletes.
	pb, _, err := kv.Get("web/b", nil)
	if err != nil || pb == nil {
		t.Fatalf("get web/b: %v %v", pb, err)
	}
	ok, _, err := kv.DeleteCAS(&api.KVPair{Key: "web/b", ModifyIndex: pb.ModifyIndex + 1000}, nil)
	if err != nil || ok {
		t.Fatalf("delete-cas stale = %v, %v; want false", ok, err)
	}
	if p, _, _ := kv.Get("web/b", nil); p == nil {
		t.Fatal("web/b gone after a refused delete-cas")
	}
	ok, _, err = kv.DeleteCAS(&api.KVPair{Key: "web/b", ModifyIndex: pb.ModifyIndex}, nil)
	if err != nil || !ok {
		t.Fatalf("delete-cas fresh = %v, %v; want true", ok, err)
	}
	if p, _, _ := kv.Get("web/b", nil); p != nil {
		t.Fatal("web/b still there after delete-cas")
	}

	// DeleteTree removes the prefix only.
	if _, err := kv.DeleteTree("web/", nil); err != nil {
		t.Fatalf("delete tree: %v", err)
	}
	pairs, _, err = kv.List("web/", nil)
	if err != nil || len(pairs) != 0 {
		t.Fatalf("list after delete tree = %d pairs, %v; want none", len(pairs), err)
	}
	for _, k := range []string{"webx", "other/z"} {
		if p, _, err := kv.Get(k, nil); err != nil || p == nil {
			t.Fatalf("%s removed by DeleteTree(web/): %v %v", k, p, err)
		}
	}
}

func TestAPIKV_Raw(t *testing.T) {
	t.Parallel()
	a, c := startAPI(t)
	val := []byte("raw \x00 bytes\n{not json}")
	if _, err := c.KV().Put(&api.KVPair{Key: "rawkey", Value: val}, nil); err != nil {
		t.Fatalf("put: %v", err)
	}
	resp, err := http.Get("http://" + a.HTTPAddr() + "/v1/kv/rawkey?raw")
	if err != nil {
		t.Fatalf("GET raw: %v", err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("raw status %d", resp.StatusCode)
	}
	if !bytes.Equal(buf.Bytes(), val) {
		t.Fatalf("raw body = %q, want %q", buf.Bytes(), val)
	}
	if ct := resp.Header.Get("Content-Type"); strings.Contains(ct, "json") {
		t.Fatalf("raw Content-Type = %q, want not JSON", ct)
	}
}

func TestAPIKV_ValueSizeLimit(t *testing.T) {
	t.Parallel()
	a, c := startAPI(t)
	const limit = 512 * 1024

	r := doHTTP(t, a, "PUT", "/v1/kv/big", bytes.NewReader(bytes.Repeat([]byte("x"), limit+1)))
	if r.code != http.StatusRequestEntityTooLarge {
		t.Fatalf("PUT %d bytes = %d %q, want 413", limit+1, r.code, r.body)
	}
	if p, _, err := c.KV().Get("big", nil); err != nil || p != nil {
		t.Fatalf("oversized value was written: %v %v", p, err)
	}

	// Without a Content-Length (chunked) the limit still holds.
	req, _ := http.NewRequest("PUT", "http://"+a.HTTPAddr()+"/v1/kv/bigchunked",
		struct{ *bytes.Reader }{bytes.NewReader(bytes.Repeat([]byte("y"), limit+1))})
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("chunked PUT: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("chunked PUT %d bytes = %d, want 413", limit+1, resp.StatusCode)
	}
	if p, _, err := c.KV().Get("bigchunked", nil); err != nil || p != nil {
		t.Fatalf("oversized chunked value was written: %v %v", p, err)
	}

	exact := bytes.Repeat([]byte("z"), limit)
	r = doHTTP(t, a, "PUT", "/v1/kv/exact", bytes.NewReader(exact))
	if r.code != http.StatusOK || strings.TrimSpace(r.body) != "true" {
		t.Fatalf("PUT exactly %d bytes = %d %q, want 200 true", limit, r.code, r.body)
	}
	p, _, err := c.KV().Get("exact", nil)
	if err != nil || p == nil || !bytes.Equal(p.Value, exact) {
		t.Fatalf("get exact-limit value: err %v, len %d", err, len(pValue(p)))
	}
}

func pValue(p *api.KVPair) []byte {
	if p == nil {
		return nil
	}
	return p.Value
}

func TestAPIKV_Blocking(t *testing.T) {
	t.Parallel()
	_, c := startAPI(t)
	kv := c.KV()
	if _, err := kv.Put(&api.KVPair{Key: "watched", Value: []byte("one")}, nil); err != nil {
		t.Fatal(err)
	}
	p, meta, err := kv.Get("watched", nil)
	if err != nil || p == nil {
		t.Fatalf("get: %v %v", p, err)
	}
	idx := meta.LastIndex

	t.Run("wakes on write", func(t *testing.T) {
		ch := goBlock(func() (*api.KVPair, *api.QueryMeta, error) {
			return kv.Get("watched", &api.QueryOptions{WaitIndex: idx, WaitTime: 10 * time.Second})
		})
		// Give the query time to block, then check it has not returned.
		select {
		case r := <-ch:
			t.Fatalf("blocking get returned before any write: %+v", r)
		case <-time.After(150 * time.Millisecond):
		}
		writeAt := time.Now()
		if _, err := kv.Put(&api.KVPair{Key: "watched", Value: []byte("two")}, nil); err != nil {
			t.Fatal(err)
		}
		r := recvBlock(t, ch, 5*time.Second)
		if lag := time.Since(writeAt); lag > 2*time.Second {
			t.Fatalf("blocking get woke %v after the write", lag)
		}
		if r.val == nil || string(r.val.Value) != "two" {
			t.Fatalf("woken get = %+v, want value two", r.val)
		}
		if r.meta.LastIndex <= idx {
			t.Fatalf("woken LastIndex %d, want > %d", r.meta.LastIndex, idx)
		}
		idx = r.meta.LastIndex
	})

	t.Run("times out with same index", func(t *testing.T) {
		start := time.Now()
		p, m, err := kv.Get("watched", &api.QueryOptions{WaitIndex: idx, WaitTime: 300 * time.Millisecond})
		el := time.Since(start)
		if err != nil {
			t.Fatal(err)
		}
		if el < 280*time.Millisecond || el > 3*time.Second {
			t.Fatalf("wait=300ms returned after %v", el)
		}
		if m.LastIndex != idx {
			t.Fatalf("timed-out LastIndex %d, want unchanged %d", m.LastIndex, idx)
		}
		if p == nil || string(p.Value) != "two" {
			t.Fatalf("timed-out value = %+v", p)
		}
	})

	t.Run("list wakes on write under prefix only", func(t *testing.T) {
		if _, err := kv.Put(&api.KVPair{Key: "dir/a", Value: []byte("1")}, nil); err != nil {
			t.Fatal(err)
		}
		_, m, err := kv.List("dir/", nil)
		if err != nil {
			t.Fatal(err)
		}
		ch := goBlock(func() (api.KVPairs, *api.QueryMeta, error) {
			return kv.List("dir/", &api.QueryOptions{WaitIndex: m.LastIndex, WaitTime: 10 * time.Second})
		})
		time.Sleep(100 * time.Millisecond)
		if _, err := kv.Put(&api.KVPair{Key: "dir/b", Value: []byte("2")}, nil); err != nil {
			t.Fatal(err)
		}
		r := recvBlock(t, ch, 5*time.Second)
		if len(r.val) != 2 || r.meta.LastIndex <= m.LastIndex {
			t.Fatalf("woken list = %d pairs at %d (was %d)", len(r.val), r.meta.LastIndex, m.LastIndex)
		}
	})

	t.Run("wakes on delete", func(t *testing.T) {
		if _, err := kv.Put(&api.KVPair{Key: "doomed", Value: []byte("x")}, nil); err != nil {
			t.Fatal(err)
		}
		_, m, err := kv.Get("doomed", nil)
		if err != nil {
			t.Fatal(err)
		}
		ch := goBlock(func() (*api.KVPair, *api.QueryMeta, error) {
			return kv.Get("doomed", &api.QueryOptions{WaitIndex: m.LastIndex, WaitTime: 10 * time.Second})
		})
		time.Sleep(100 * time.Millisecond)
		if _, err := kv.Delete("doomed", nil); err != nil {
			t.Fatal(err)
		}
		r := recvBlock(t, ch, 5*time.Second)
		if r.val != nil || r.meta.LastIndex <= m.LastIndex {
			t.Fatalf("after delete: pair %+v index %d (was %d)", r.val, r.meta.LastIndex, m.LastIndex)
		}
	})

	t.Run("other key does not wake", func(t *testing.T) {
		ch := goBlock(func() (*api.KVPair, *api.QueryMeta, error) {
			return kv.Get("watched", &api.QueryOptions{WaitIndex: idx, WaitTime: 600 * time.Millisecond})
		})
		time.Sleep(50 * time.Millisecond)
		for i := 0; i < 5; i++ {
			if _, err := kv.Put(&api.KVPair{Key: "unrelated", Value: []byte{byte(i)}}, nil); err != nil {
				t.Fatal(err)
			}
		}
		r := recvBlock(t, ch, 5*time.Second)
		if r.elapsed < 550*time.Millisecond {
			t.Fatalf("write to another key woke the query after %v (wait 600ms)", r.elapsed)
		}
		if r.meta.LastIndex != idx {
			t.Fatalf("LastIndex %d, want unchanged %d", r.meta.LastIndex, idx)
		}
	})
}

func TestAPIKV_ConsistencyModes(t *testing.T) {
	t.Parallel()
	a, c := startAPI(t)
	if _, err := c.KV().Put(&api.KVPair{Key: "mode", Value: []byte("x")}, nil); err != nil {
		t.Fatal(err)
	}
	for name, q := range map[string]*api.QueryOptions{
		"consistent": {RequireConsistent: true},
		"stale":      {AllowStale: true},
		"default":    {},
	} {
		p, m, err := c.KV().Get("mode", q)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if p == nil || string(p.Value) != "x" {
			t.Fatalf("%s: value %+v", name, p)
		}
		if !m.KnownLeader || m.LastIndex == 0 {
			t.Fatalf("%s: KnownLeader %v LastIndex %d", name, m.KnownLeader, m.LastIndex)
		}
		nodes, m, err := c.Catalog().Nodes(q)
		if err != nil || len(nodes) == 0 || !m.KnownLeader || m.LastIndex == 0 {
			t.Fatalf("%s: catalog nodes %d, %+v, %v", name, len(nodes), m, err)
		}
	}
	r := httpString(t, a, "GET", "/v1/kv/mode?stale&consistent", "")
	if r.code != http.StatusBadRequest {
		t.Fatalf("?stale&consistent = %d %q, want 400", r.code, r.body)
	}
	r = httpString(t, a, "GET", "/v1/catalog/nodes?stale&consistent", "")
	if r.code != http.StatusBadRequest {
		t.Fatalf("catalog ?stale&consistent = %d %q, want 400", r.code, r.body)
	}
}
