package catalog_test

import (
	"errors"
	"sort"
	"testing"

	"github.com/tribune-mesh/tribune/catalog"
)

func TestKVSetGetIndexes(t *testing.T) {
	s := newStore(t)

	// Empty store: a missing key reports the KV table index, 0.
	if idx, e := kvGet(t, s, "foo"); e != nil || idx != 0 {
		t.Fatalf("empty store: KVGet = (%d, %v), want (0, nil)", idx, e)
	}

	if !kvApply(t, s, 3, catalog.KVSet, catalog.KVEntry{Key: "foo", Value: []byte("v1"), Flags: 42}) {
		t.Fatal("set returned false")
	}
	idx, e := kvGet(t, s, "foo")
	if e == nil {
		t.Fatal("foo missing after set")
	}
	if string(e.Value) != "v1" || e.Flags != 42 || e.CreateIndex != 3 || e.ModifyIndex != 3 || e.LockIndex != 0 || e.Session != "" {
		t.Fatalf("after first set: %+v", e)
	}
	if idx != 3 {
		t.Fatalf("KVGet index = %d, want ModifyIndex 3", idx)
	}

	kvSet(t, s, 7, "foo", "v2")
	idx, e = kvGet(t, s, "foo")
	if string(e.Value) != "v2" || e.CreateIndex != 3 || e.ModifyIndex != 7 || e.Flags != 0 {
		t.Fatalf("after second set: %+v", e)
	}
	if idx != 7 {
		t.Fatalf("KVGet index = %d, want 7", idx)
	}

	// Writing another key moves the table index; a missing key reports it,
	// and an existing key keeps reporting its own ModifyIndex.
	kvSet(t, s, 9, "bar", "x")
	if idx, e := kvGet(t, s, "missing"); e != nil || idx != 9 {
		t.Fatalf("missing key: KVGet = (%d, %v), want (9, nil)", idx, e)
	}
	if idx, _ := kvGet(t, s, "foo"); idx != 7 {
		t.Fatalf("foo index = %d after unrelated write, want 7", idx)
	}

	// A delete moves the table index too.
	kvApply(t, s, 11, catalog.KVDelete, catalog.KVEntry{Key: "bar"})
	if idx, e := kvGet(t, s, "bar"); e != nil || idx != 11 {
		t.Fatalf("deleted key: KVGet = (%d, %v), want (11, nil)", idx, e)
	}
	if got := s.LastIndex(); got != 11 {
		t.Fatalf("LastIndex = %d, want 11", got)
	}

	// Keys are case-sensitive.
	if _, e := kvGet(t, s, "FOO"); e != nil {
		t.Fatalf("KVGet(FOO) = %+v, want nil (keys are case-sensitive)", e)
	}
}

func TestKVListAndKeys(t *testing.T) {
	s := newStore(t)
	keys := []string{"a", "a/b", "a/b/c", "a/b/d", "a/c", "a.b", "ab", "b/x", "b/y/z"}
	for i, k := range keys {
		kvSet(t, s, uint64(i+1), k, "val-"+k)
	}
	last := uint64(len(keys))

	cases := []struct {
		prefix, sep string
		want        []string
	}{
		{"", "", []string{"a", "a.b", "a/b", "a/b/c", "a/b/d", "a/c", "ab", "b/x", "b/y/z"}},
		{"", "/", []string{"a", "a.b", "a/", "ab", "b/"}},
		{"a", "", []string{"a", "a.b", "a/b", "a/b/c", "a/b/d", "a/c", "ab"}},
		{"a/", "/", []string{"a/b", "a/b/", "a/c"}},
		{"a/b/", "/", []string{"a/b/c", "a/b/d"}},
		{"a/b", "/", []string{"a/b", "a/b/"}},
		{"b/", "/", []string{"b/x", "b/y/"}},
		{"b/", "", []string{"b/x", "b/y/z"}},
		{"a/", "b", []string{"a/b", "a/c"}},
		{"zz", "/", []string{}},
	}
	for _, tc := range cases {
		t.Run("keys prefix="+tc.prefix+" sep="+tc.sep, func(t *testing.T) {
			idx, got, err := s.KVKeys(ws(), tc.prefix, tc.sep)
			if err != nil {
				t.Fatal(err)
			}
			if got == nil {
				t.Fatal("KVKeys returned nil slice, want non-nil")
			}
			if !equalStrings(got, tc.want) {
				t.Fatalf("KVKeys(%q, %q) = %q, want %q", tc.prefix, tc.sep, got, tc.want)
			}
			if idx != last {
				t.Fatalf("index = %d, want %d", idx, last)
			}
		})
	}

	listCases := []struct {
		prefix string
		want   []string
	}{
		{"a/b", []string{"a/b", "a/b/c", "a/b/d"}},
		{"b/", []string{"b/x", "b/y/z"}},
		{"", keysSorted(keys)},
		{"nope", nil},
	}
	for _, tc := range listCases {
		t.Run("list prefix="+tc.prefix, func(t *testing.T) {
			idx, entries, err := s.KVList(ws(), tc.prefix)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range entries {
				got = append(got, e.Key)
				if string(e.Value) != "val-"+e.Key {
					t.Errorf("entry %q value = %q", e.Key, e.Value)
				}
			}
			if !equalStrings(got, tc.want) {
				t.Fatalf("KVList(%q) = %q, want %q", tc.prefix, got, tc.want)
			}
			if idx != last {
				t.Fatalf("index = %d, want %d", idx, last)
			}
		})
	}
}

func keysSorted(keys []string) []string {
	out := append([]string(nil), keys...)
	sort.Strings(out)
	return out
}

func TestKVCAS(t *testing.T) {
	cases := []struct {
		name      string
		existing  bool // "k" exists, written at index 5
		casIndex  uint64
		wantOK    bool
		wantValue string // "" means the key must not exist
		wantCI    uint64
		wantMI    uint64
	}{
		{"create-only on missing key", false, 0, true, "new", 10, 10},
		{"create-only on existing key", true, 0, false, "old", 5, 5},
		{"matching index", true, 5, true, "new", 5, 10},
		{"mismatching index lower", true, 4, false, "old", 5, 5},
		{"mismatching index higher", true, 6, false, "old", 5, 5},
		{"non-zero index on missing key", false, 5, false, "", 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			kvSet(t, s, 2, "other", "x")
			if tc.existing {
				kvSet(t, s, 5, "k", "old")
			}
			before, _ := kvGet(t, s, "missing")
			ok := kvApply(t, s, 10, catalog.KVCAS, catalog.KVEntry{Key: "k", Value: []byte("new"), RaftIndex: catalog.RaftIndex{ModifyIndex: tc.casIndex}})
			if ok != tc.wantOK {
				t.Fatalf("cas ok = %v, want %v", ok, tc.wantOK)
			}
			_, e := kvGet(t, s, "k")
			if tc.wantValue == "" {
				if e != nil {
					t.Fatalf("key exists after failed cas: %+v", e)
				}
			} else {
				if e == nil {
					t.Fatal("key missing")
				}
				if string(e.Value) != tc.wantValue || e.CreateIndex != tc.wantCI || e.ModifyIndex != tc.wantMI {
					t.Fatalf("entry = %+v (value %q), want value %q CI %d MI %d", e, e.Value, tc.wantValue, tc.wantCI, tc.wantMI)
				}
			}
			after, _ := kvGet(t, s, "missing")
			if !tc.wantOK && after != before {
				t.Fatalf("failed cas moved the KV table index %d -> %d", before, after)
			}
			if tc.wantOK && after != 10 {
				t.Fatalf("KV table index = %d after cas, want 10", after)
			}
		})
	}
}

func TestKVDelete(t *testing.T) {
	s := newStore(t)
	kvSet(t, s, 1, "a", "1")
	kvSet(t, s, 2, "b", "2")

	if !kvApply(t, s, 3, catalog.KVDelete, catalog.KVEntry{Key: "a"}) {
		t.Fatal("delete returned false")
	}
	if idx, e := kvGet(t, s, "a"); e != nil || idx != 3 {
		t.Fatalf("after delete KVGet(a) = (%d, %+v), want (3, nil)", idx, e)
	}
	if got := kvKeys(t, s); !equalStrings(got, []string{"b"}) {
		t.Fatalf("keys = %q", got)
	}
	// Deleting a missing key succeeds and changes nothing.
	if !kvApply(t, s, 4, catalog.KVDelete, catalog.KVEntry{Key: "nope"}) {
		t.Fatal("delete of a missing key returned false")
	}
	if idx, _ := kvGet(t, s, "a"); idx != 3 {
		t.Fatalf("delete of missing key moved table index to %d", idx)
	}
}

func TestKVDeleteCAS(t *testing.T) {
	cases := []struct {
		name      string
		existing  bool // "k" written at 5
		casIndex  uint64
		wantOK    bool
		wantExist bool
	}{
		{"matching index", true, 5, true, false},
		{"mismatching index", true, 4, false, true},
		{"zero index on existing key", true, 0, false, true},
		{"zero index on missing key", false, 0, true, false},
		{"non-zero index on missing key", false, 5, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			if tc.existing {
				kvSet(t, s, 5, "k", "v")
			}
			ok := kvApply(t, s, 9, catalog.KVDeleteCAS, catalog.KVEntry{Key: "k", RaftIndex: catalog.RaftIndex{ModifyIndex: tc.casIndex}})
			if ok != tc.wantOK {
				t.Fatalf("delete-cas ok = %v, want %v", ok, tc.wantOK)
			}
			_, e := kvGet(t, s, "k")
			if (e != nil) != tc.wantExist {
				t.Fatalf("key exists = %v, want %v", e != nil, tc.wantExist)
			}
			if e != nil && e.ModifyIndex != 5 {
				t.Fatalf("failed delete-cas modified the key: %+v", e)
			}
		})
	}
}

func TestKVDeleteTree(t *testing.T) {
	all := []string{"foo", "foo/a", "foo/b/c", "foobar", "fop", "zzz"}
	cases := []struct {
		prefix   string
		want     []string
		wantBump bool
	}{
		{"foo/", []string{"foo", "foobar", "fop", "zzz"}, true},
		{"foo", []string{"fop", "zzz"}, true},
		{"fo", []string{"zzz"}, true},
		{"foo/b/c", []string{"foo", "foo/a", "foobar", "fop", "zzz"}, true},
		{"nothing/", all, false},
		{"", []string{}, true},
	}
	for _, tc := range cases {
		t.Run("prefix="+tc.prefix, func(t *testing.T) {
			s := newStore(t)
			for i, k := range all {
				kvSet(t, s, uint64(i+1), k, "v")
			}
			if !kvApply(t, s, 100, catalog.KVDeleteTree, catalog.KVEntry{Key: tc.prefix}) {
				t.Fatal("delete-tree returned false")
			}
			if got := kvKeys(t, s); !equalStrings(got, tc.want) {
				t.Fatalf("keys after delete-tree(%q) = %q, want %q", tc.prefix, got, tc.want)
			}
			idx, _ := kvGet(t, s, "missing")
			if tc.wantBump && idx != 100 {
				t.Fatalf("table index = %d, want 100", idx)
			}
			if !tc.wantBump && idx != uint64(len(all)) {
				t.Fatalf("no-op delete-tree moved table index to %d", idx)
			}
		})
	}
}

func TestKVSetKeepsLockHolder(t *testing.T) {
	// A plain set on a locked key changes the value but, as in Consul, not
	// the lock holder or lock index.
	s := newStore(t)
	registerNode(t, s, 1, "n1")
	createSession(t, s, 2, catalog.Session{ID: "s1", Node: "n1"})
	if !kvApply(t, s, 3, catalog.KVLock, catalog.KVEntry{Key: "k", Value: []byte("locked"), Session: "s1"}) {
		t.Fatal("lock failed")
	}
	kvSet(t, s, 4, "k", "plain")
	e := mustKV(t, s, "k")
	if e.Session != "s1" || e.LockIndex != 1 || string(e.Value) != "plain" || e.ModifyIndex != 4 || e.CreateIndex != 3 {
		t.Fatalf("after set on locked key: %+v value %q", e, e.Value)
	}
	// A cas likewise keeps the holder.
	if !kvApply(t, s, 5, catalog.KVCAS, catalog.KVEntry{Key: "k", Value: []byte("cas"), RaftIndex: catalog.RaftIndex{ModifyIndex: 4}}) {
		t.Fatal("cas failed")
	}
	if e := mustKV(t, s, "k"); e.Session != "s1" || e.LockIndex != 1 {
		t.Fatalf("after cas on locked key: %+v", e)
	}
}

func TestKVApplyInvalidOps(t *testing.T) {
	for _, op := range []catalog.KVOp{"bogus", "", catalog.KVGet, catalog.KVGetTree, catalog.KVCheckIndex, catalog.KVCheckSession, catalog.KVCheckNotExists} {
		t.Run(string(op), func(t *testing.T) {
			s := newStore(t)
			kvSet(t, s, 1, "k", "v")
			before := dump(t, s)
			ok, err := s.KVApply(2, &catalog.KVRequest{Op: op, Entry: catalog.KVEntry{Key: "k", Value: []byte("x")}})
			if ok || !errors.Is(err, catalog.ErrInvalidRequest) {
				t.Fatalf("KVApply(%q) = (%v, %v), want (false, ErrInvalidRequest)", op, ok, err)
			}
			if string(dump(t, s)) != string(before) {
				t.Fatal("invalid op changed the store")
			}
		})
	}
}
