package agent_test

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
)

func TestAPITxn(t *testing.T) {
	t.Parallel()
	a, c := startAPI(t)
	txn := c.Txn()
	kv := c.KV()

	ok, resp, _, err := txn.Txn(api.TxnOps{
		{KV: &api.KVTxnOp{Verb: api.KVSet, Key: "t/a", Value: []byte("1")}},
		{KV: &api.KVTxnOp{Verb: api.KVSet, Key: "t/b", Value: []byte("2"), Flags: 7}},
		{KV: &api.KVTxnOp{Verb: api.KVSet, Key: "t/c/d", Value: []byte("3")}},
	}, nil)
	if err != nil || !ok {
		t.Fatalf("txn of sets = %v, %+v, %v", ok, resp, err)
	}
	if len(resp.Results) != 3 || len(resp.Errors) != 0 {
		t.Fatalf("txn results %d errors %v, want 3 and none", len(resp.Results), resp.Errors)
	}
	if r := resp.Results[1].KV; r == nil || r.Key != "t/b" || r.Flags != 7 || r.ModifyIndex == 0 {
		t.Fatalf("result 1 = %+v", r)
	}
	// All three ops committed at one index.
	if resp.Results[0].KV.ModifyIndex != resp.Results[2].KV.ModifyIndex {
		t.Fatalf("txn ops at different indexes %d and %d", resp.Results[0].KV.ModifyIndex, resp.Results[2].KV.ModifyIndex)
	}
	for k, v := range map[string]string{"t/a": "1", "t/b": "2", "t/c/d": "3"} {
		p, _, err := kv.Get(k, nil)
		if err != nil || p == nil || string(p.Value) != v {
			t.Fatalf("%s after txn = %+v, %v; want %s", k, p, err, v)
		}
	}
	pa, _, _ := kv.Get("t/a", nil)

	// Reads: get and get-tree.
	ok, resp, _, err = txn.Txn(api.TxnOps{
		{KV: &api.KVTxnOp{Verb: api.KVGet, Key: "t/b"}},
		{KV: &api.KVTxnOp{Verb: api.KVGetTree, Key: "t/"}},
		{KV: &api.KVTxnOp{Verb: api.KVCheckIndex, Key: "t/a", Index: pa.ModifyIndex}},
	}, nil)
	if err != nil || !ok {
		t.Fatalf("read txn = %v, %+v, %v", ok, resp, err)
	}
	if len(resp.Results) != 1+3+1 {
		t.Fatalf("read txn results = %d, want 5", len(resp.Results))
	}
	if r := resp.Results[0].KV; r.Key != "t/b" || string(r.Value) != "2" || r.Flags != 7 {
		t.Fatalf("get result = %+v", r)
	}
	var tree []string
	for _, r := range resp.Results[1:4] {
		tree = append(tree, r.KV.Key+"="+string(r.KV.Value))
	}
	if got := strings.Join(tree, ","); got != "t/a=1,t/b=2,t/c/d=3" {
		t.Fatalf("get-tree = %s", got)
	}

	// A failing check-index rolls the whole txn back.
	ok, resp, _, err = txn.Txn(api.TxnOps{
		{KV: &api.KVTxnOp{Verb: api.KVSet, Key: "t/new", Value: []byte("x")}},
		{KV: &api.KVTxnOp{Verb: api.KVDelete, Key: "t/b"}},
		{KV: &api.KVTxnOp{Verb: api.KVCheckIndex, Key: "t/a", Index: pa.ModifyIndex + 100}},
		{KV: &api.KVTxnOp{Verb: api.KVSet, Key: "t/a", Value: []byte("changed")}},
	}, nil)
	if err != nil {
		t.Fatalf("failing txn transport error: %v", err)
	}
	if ok {
		t.Fatal("txn with a stale check-index committed")
	}
	if len(resp.Errors) != 1 || resp.Errors[0].OpIndex != 2 || resp.Errors[0].What == "" {
		t.Fatalf("txn errors = %+v, want one at OpIndex 2", resp.Errors)
	}
	if len(resp.Results) != 0 {
		t.Fatalf("rolled-back txn has results %+v", resp.Results)
	}
	if p, _, err := kv.Get("t/new", nil); err != nil || p != nil {
		t.Fatalf("t/new written by a rolled-back txn: %+v %v", p, err)
	}
	if p, _, err := kv.Get("t/b", nil); err != nil || p == nil {
		t.Fatalf("t/b deleted by a rolled-back txn: %v", err)
	}
	if p, _, _ := kv.Get("t/a", nil); p == nil || string(p.Value) != "1" || p.ModifyIndex != pa.ModifyIndex {
		t.Fatalf("t/a changed by a rolled-back txn: %+v", p)
	}

	// A get of a missing key also fails the txn.
	ok, resp, _, err = txn.Txn(api.TxnOps{
		{KV: &api.KVTxnOp{Verb: api.KVSet, Key: "t/z", Value: []byte("z")}},
		{KV: &api.KVTxnOp{Verb: api.KVGet, Key: "t/missing"}},
	}, nil)
	if err != nil || ok || len(resp.Errors) != 1 || resp.Errors[0].OpIndex != 1 {
		t.Fatalf("txn get missing = %v, %+v, %v", ok, resp, err)
	}
	if p, _, _ := kv.Get("t/z", nil); p != nil {
		t.Fatal("t/z written by a rolled-back txn")
	}

	// CAS and delete-cas inside a txn.
	ok, resp, _, err = txn.Txn(api.TxnOps{
		{KV: &api.KVTxnOp{Verb: api.KVCAS, Key: "t/a", Value: []byte("cas"), Index: pa.ModifyIndex}},
		{KV: &api.KVTxnOp{Verb: api.KVDeleteTree, Key: "t/c/"}},
	}, nil)
	if err != nil || !ok {
		t.Fatalf("cas txn = %v, %+v, %v", ok, resp, err)
	}
	if p, _, _ := kv.Get("t/a", nil); p == nil || string(p.Value) != "cas" {
		t.Fatalf("t/a after cas txn = %+v", p)
	}
	if p, _, _ := kv.Get("t/c/d", nil); p != nil {
		t.Fatal("t/c/d survived delete-tree in a txn")
	}

	// More than 64 operations: 413, nothing applied.
	var ops []string
	for i := 0; i < 65; i++ {
		ops = append(ops, fmt.Sprintf(`{"KV":{"Verb":"set","Key":"many/%d","Value":%q}}`, i,
			base64.StdEncoding.EncodeToString([]byte("v"))))
	}
	r := httpString(t, a, "PUT", "/v1/txn", "["+strings.Join(ops, ",")+"]")
	if r.code != http.StatusRequestEntityTooLarge {
		t.Fatalf("txn of 65 ops = %d %q, want 413", r.code, r.body)
	}
	if keys, _, _ := kv.Keys("many/", "", nil); len(keys) != 0 {
		t.Fatalf("oversized txn wrote %d keys", len(keys))
	}
	// Exactly 64 is fine.
	r = httpString(t, a, "PUT", "/v1/txn", "["+strings.Join(ops[:64], ",")+"]")
	if r.code != http.StatusOK {
		t.Fatalf("txn of 64 ops = %d %q, want 200", r.code, r.body)
	}
	if keys, _, _ := kv.Keys("many/", "", nil); len(keys) != 64 {
		t.Fatalf("64-op txn wrote %d keys", len(keys))
	}
	// An unknown verb is refused, nothing applied.
	r = httpString(t, a, "PUT", "/v1/txn", `[{"KV":{"Verb":"set","Key":"u/1"}},{"KV":{"Verb":"frobnicate","Key":"u/2"}}]`)
	if r.code != http.StatusConflict || !strings.Contains(r.body, `"OpIndex":1`) {
		t.Fatalf("txn with unknown verb = %d %q, want 409 with OpIndex 1", r.code, r.body)
	}
	if p, _, _ := kv.Get("u/1", nil); p != nil {
		t.Fatal("u/1 written by a refused txn")
	}
}
