package catalog_test

import (
	"strings"
	"testing"

	"github.com/tribune-mesh/tribune/catalog"
)

func kvOp(verb catalog.KVOp, key, value string) catalog.TxnOp {
	op := &catalog.TxnKVOp{Verb: verb, Key: key}
	if value != "" {
		op.Value = []byte(value)
	}
	return catalog.TxnOp{KV: op}
}

func withValue(op catalog.TxnOp, v string) catalog.TxnOp {
	op.KV.Value = []byte(v)
	return op
}

func storedValue(key, want string) func(t *testing.T, s *catalog.Store) {
	return func(t *testing.T, s *catalog.Store) {
		t.Helper()
		if e := mustKV(t, s, key); string(e.Value) != want {
			t.Fatalf("stored value of %q = %q, want %q", key, e.Value, want)
		}
	}
}

func kvOpIndex(verb catalog.KVOp, key string, index uint64) catalog.TxnOp {
	return catalog.TxnOp{KV: &catalog.TxnKVOp{Verb: verb, Key: key, Index: index}}
}

func kvOpSession(verb catalog.KVOp, key, session string) catalog.TxnOp {
	return catalog.TxnOp{KV: &catalog.TxnKVOp{Verb: verb, Key: key, Session: session}}
}

// txnFixture: "existing"=old at 5, "tree/a" and "tree/b" at 6, 7, "locked"
// held by session s1 at 8.
func txnFixture(t *testing.T) *catalog.Store {
	t.Helper()
	s := newStore(t)
	registerNode(t, s, 1, "n1")
	createSession(t, s, 2, catalog.Session{ID: "s1", Node: "n1"})
	createSession(t, s, 3, catalog.Session{ID: "s2", Node: "n1"})
	kvSet(t, s, 5, "existing", "old")
	kvSet(t, s, 6, "tree/a", "A")
	kvSet(t, s, 7, "tree/b", "B")
	if !kvApply(t, s, 8, catalog.KVLock, catalog.KVEntry{Key: "locked", Value: []byte("L"), Session: "s1"}) {
		t.Fatal("lock failed")
	}
	return s
}

func TestTxnAllOrNothing(t *testing.T) {
	cases := []struct {
		name       string
		ops        []catalog.TxnOp
		wantErrIdx []int
	}{
		{"failing check-index after sets", []catalog.TxnOp{
			kvOp(catalog.KVSet, "new/a", "1"),
			kvOp(catalog.KVSet, "existing", "changed"),
			kvOpIndex(catalog.KVCheckIndex, "existing", 4),
			kvOp(catalog.KVSet, "new/b", "2"),
		}, []int{2}},
		{"failing get of missing key", []catalog.TxnOp{
			kvOp(catalog.KVSet, "new/a", "1"),
			kvOp(catalog.KVGet, "missing", ""),
		}, []int{1}},
		{"stale cas", []catalog.TxnOp{
			kvOp(catalog.KVDelete, "existing", ""),
			kvOpIndex(catalog.KVCAS, "tree/a", 99),
		}, []int{1}},
		{"stale delete-cas", []catalog.TxnOp{
			kvOp(catalog.KVDeleteTree, "tree/", ""),
			kvOpIndex(catalog.KVDeleteCAS, "existing", 4),
		}, []int{1}},
		{"lock held by another session", []catalog.TxnOp{
			kvOpSession(catalog.KVUnlock, "locked", "s1"),
			kvOpSession(catalog.KVLock, "existing", "s2"),
			kvOpSession(catalog.KVLock, "tree/a", "s2"),
			kvOpSession(catalog.KVLock, "tree/b", "s2"),
			kvOpSession(catalog.KVLock, "existing", "s1"),
		}, []int{4}},
		{"unlock by non-holder", []catalog.TxnOp{
			kvOp(catalog.KVSet, "new/a", "1"),
			kvOpSession(catalog.KVUnlock, "locked", "s2"),
		}, []int{1}},
		{"lock with unknown session", []catalog.TxnOp{
			kvOp(catalog.KVSet, "new/a", "1"),
			kvOpSession(catalog.KVLock, "new/a", "ghost"),
		}, []int{1}},
		{"check-session mismatch", []catalog.TxnOp{
			kvOp(catalog.KVSet, "new/a", "1"),
			kvOpSession(catalog.KVCheckSession, "locked", "s2"),
		}, []int{1}},
		{"check-not-exists on existing", []catalog.TxnOp{
			kvOp(catalog.KVSet, "new/a", "1"),
			kvOp(catalog.KVCheckNotExists, "existing", ""),
		}, []int{1}},
		{"multiple errors are all reported", []catalog.TxnOp{
			kvOpIndex(catalog.KVCheckIndex, "existing", 1),
			kvOp(catalog.KVSet, "new/a", "1"),
			kvOp(catalog.KVGet, "missing", ""),
			{},
			kvOp("bogus-verb", "x", ""),
		}, []int{0, 2, 3, 4}},
		{"set then check-not-exists on the same key sees the set", []catalog.TxnOp{
			kvOp(catalog.KVSet, "new/a", "1"),
			kvOp(catalog.KVCheckNotExists, "new/a", ""),
		}, []int{1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := txnFixture(t)
			before := dump(t, s)
			lastBefore := s.LastIndex()
			resp := s.Txn(50, tc.ops)
			if resp.Results != nil {
				t.Errorf("failed txn returned results: %+v", resp.Results)
			}
			var got []int
			for _, e := range resp.Errors {
				got = append(got, e.OpIndex)
				if e.What == "" {
					t.Errorf("error for op %d has no message", e.OpIndex)
				}
			}
			if len(got) != len(tc.wantErrIdx) {
				t.Fatalf("error op indexes = %v (%+v), want %v", got, resp.Errors, tc.wantErrIdx)
			}
			for i := range got {
				if got[i] != tc.wantErrIdx[i] {
					t.Fatalf("error op indexes = %v, want %v", got, tc.wantErrIdx)
				}
			}
			if string(dump(t, s)) != string(before) {
				t.Fatal("failed txn changed the store")
			}
			if s.LastIndex() != lastBefore {
				t.Fatalf("LastIndex moved %d -> %d", lastBefore, s.LastIndex())
			}
			if _, e := kvGet(t, s, "new/a"); e != nil {
				t.Fatalf("earlier op applied: %+v", e)
			}
		})
	}
}

func TestTxnResults(t *testing.T) {
	type want struct {
		key     string
		value   string // "-" means Value must be nil
		session string
		mi      uint64
		li      uint64
	}
	cases := []struct {
		name  string
		op    catalog.TxnOp
		want  []want
		after func(t *testing.T, s *catalog.Store)
	}{
		{"get", kvOp(catalog.KVGet, "existing", ""), []want{{"existing", "old", "", 5, 0}}, nil},
		{"get-tree", kvOp(catalog.KVGetTree, "tree/", ""), []want{{"tree/a", "A", "", 6, 0}, {"tree/b", "B", "", 7, 0}}, nil},
		{"get-tree empty", kvOp(catalog.KVGetTree, "none/", ""), nil, nil},
		{"check-not-exists", kvOp(catalog.KVCheckNotExists, "nope", ""), nil, nil},
		{"check-index", kvOpIndex(catalog.KVCheckIndex, "existing", 5), []want{{"existing", "-", "", 5, 0}}, nil},
		{"check-session", kvOpSession(catalog.KVCheckSession, "locked", "s1"), []want{{"locked", "-", "s1", 8, 1}}, nil},
		{"set", kvOp(catalog.KVSet, "existing", "new"), []want{{"existing", "-", "", 50, 0}},
			func(t *testing.T, s *catalog.Store) {
				if e := mustKV(t, s, "existing"); string(e.Value) != "new" || e.CreateIndex != 5 {
					t.Fatalf("after txn set: %+v", e)
				}
			}},
		{"cas", withValue(kvOpIndex(catalog.KVCAS, "existing", 5), "cas"), []want{{"existing", "-", "", 50, 0}}, storedValue("existing", "cas")},
		{"lock", withValue(kvOpSession(catalog.KVLock, "existing", "s2"), "lock"), []want{{"existing", "-", "s2", 50, 1}}, storedValue("existing", "lock")},
		{"unlock", withValue(kvOpSession(catalog.KVUnlock, "locked", "s1"), "unlock"), []want{{"locked", "-", "", 50, 1}}, storedValue("locked", "unlock")},
		{"delete", kvOp(catalog.KVDelete, "existing", ""), nil,
			func(t *testing.T, s *catalog.Store) {
				if _, e := kvGet(t, s, "existing"); e != nil {
					t.Fatal("not deleted")
				}
			}},
		{"delete-cas", kvOpIndex(catalog.KVDeleteCAS, "existing", 5), nil,
			func(t *testing.T, s *catalog.Store) {
				if _, e := kvGet(t, s, "existing"); e != nil {
					t.Fatal("not deleted")
				}
			}},
		{"delete-tree", kvOp(catalog.KVDeleteTree, "tree/", ""), nil,
			func(t *testing.T, s *catalog.Store) {
				if got := kvKeys(t, s); !equalStrings(got, []string{"existing", "locked"}) {
					t.Fatalf("keys = %q", got)
				}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := txnFixture(t)
			resp := s.Txn(50, []catalog.TxnOp{tc.op})
			if len(resp.Errors) != 0 {
				t.Fatalf("errors: %+v", resp.Errors)
			}
			if len(resp.Results) != len(tc.want) {
				t.Fatalf("%d results, want %d: %+v", len(resp.Results), len(tc.want), resp.Results)
			}
			for i, w := range tc.want {
				kv := resp.Results[i].KV
				if kv == nil {
					t.Fatalf("result %d has no KV", i)
				}
				if kv.Key != w.key || kv.Session != w.session || kv.ModifyIndex != w.mi || kv.LockIndex != w.li {
					t.Errorf("result %d = %+v, want %+v", i, kv, w)
				}
				if w.value == "-" && kv.Value != nil {
					t.Errorf("result %d carries value %q, want none", i, kv.Value)
				}
				if w.value != "-" && string(kv.Value) != w.value {
					t.Errorf("result %d value = %q, want %q", i, kv.Value, w.value)
				}
			}
			if tc.after != nil {
				tc.after(t, s)
			}
			// Stripping the value of a result must not strip it in the store.
			for _, r := range resp.Results {
				if _, e := kvGet(t, s, r.KV.Key); e != nil && e.Value == nil {
					t.Errorf("store value of %q was stripped", r.KV.Key)
				}
			}
		})
	}
}

func TestTxnMultiOpCommit(t *testing.T) {
	s := txnFixture(t)
	resp := s.Txn(60, []catalog.TxnOp{
		kvOpIndex(catalog.KVCAS, "new", 0),
		kvOp(catalog.KVSet, "new", "v2"),
		kvOpIndex(catalog.KVCheckIndex, "new", 60),
		kvOp(catalog.KVGet, "new", ""),
		kvOp(catalog.KVCheckNotExists, "ghost", ""),
		kvOp(catalog.KVDeleteTree, "tree/", ""),
		kvOp(catalog.KVGetTree, "tree/", ""),
		withValue(kvOpSession(catalog.KVLock, "new", "s2"), "v2"),
		kvOpSession(catalog.KVCheckSession, "new", "s2"),
	})
	if len(resp.Errors) != 0 {
		t.Fatalf("errors: %+v", resp.Errors)
	}
	// cas, set, check-index, get, lock, check-session: 6 results; the
	// check-not-exists, delete-tree and empty get-tree produce none.
	if len(resp.Results) != 6 {
		t.Fatalf("%d results, want 6: %+v", len(resp.Results), resp.Results)
	}
	if got := string(resp.Results[3].KV.Value); got != "v2" {
		t.Fatalf("get inside txn = %q, want v2", got)
	}
	e := mustKV(t, s, "new")
	if string(e.Value) != "v2" || e.Session != "s2" || e.LockIndex != 1 || e.CreateIndex != 60 || e.ModifyIndex != 60 {
		t.Fatalf("after txn: %+v", e)
	}
	if got := kvKeys(t, s); !equalStrings(got, []string{"existing", "locked", "new"}) {
		t.Fatalf("keys = %q", got)
	}
	if s.LastIndex() != 60 {
		t.Fatalf("LastIndex = %d, want 60", s.LastIndex())
	}
}

func TestTxnErrorMessages(t *testing.T) {
	s := txnFixture(t)
	resp := s.Txn(9, []catalog.TxnOp{kvOpIndex(catalog.KVCheckIndex, "existing", 4)})
	if len(resp.Errors) != 1 || !strings.Contains(resp.Errors[0].What, "existing") {
		t.Fatalf("errors = %+v, want one naming the key", resp.Errors)
	}
	// An empty transaction commits nothing and reports nothing.
	before := dump(t, s)
	resp = s.Txn(10, nil)
	if len(resp.Errors) != 0 || len(resp.Results) != 0 {
		t.Fatalf("empty txn = %+v", resp)
	}
	if string(dump(t, s)) != string(before) {
		t.Fatal("empty txn changed the store")
	}
}
