package catalog

import (
	"bytes"
	"testing"

	"github.com/hashicorp/go-memdb"
)

// TestStringFieldMatchesMemdb: the reflection-free indexers of the KV and
// index tables give the bytes memdb.StringFieldIndex gives (a store's
// indexes, and the lookups made against them, must not change).
func TestStringFieldMatchesMemdb(t *testing.T) {
	ours := stringField[KVEntry]{"Key", func(e *KVEntry) string { return e.Key }}
	ref := &memdb.StringFieldIndex{Field: "Key"}
	for _, key := range []string{"", "a", "bench/k0001", "Ünïcode/ключ", "with\x00nul", "trailing/"} {
		e := &KVEntry{Key: key}
		ok1, b1, err1 := ours.FromObject(e)
		ok2, b2, err2 := ref.FromObject(e)
		if ok1 != ok2 || !bytes.Equal(b1, b2) || (err1 == nil) != (err2 == nil) {
			t.Errorf("FromObject(%q) = %v %q %v, memdb %v %q %v", key, ok1, b1, err1, ok2, b2, err2)
		}
		a1, err1 := ours.FromArgs(key)
		a2, err2 := ref.FromArgs(key)
		if !bytes.Equal(a1, a2) || (err1 == nil) != (err2 == nil) {
			t.Errorf("FromArgs(%q) = %q %v, memdb %q %v", key, a1, err1, a2, err2)
		}
		p1, err1 := ours.PrefixFromArgs(key)
		p2, err2 := ref.PrefixFromArgs(key)
		if !bytes.Equal(p1, p2) || (err1 == nil) != (err2 == nil) {
			t.Errorf("PrefixFromArgs(%q) = %q %v, memdb %q %v", key, p1, err1, p2, err2)
		}
	}
	for _, args := range [][]any{nil, {1}, {"a", "b"}} {
		if _, err := ours.FromArgs(args...); err == nil {
			t.Errorf("FromArgs(%v): no error", args)
		}
	}
	if _, _, err := ours.FromObject(&indexEntry{Key: "kvs"}); err == nil {
		t.Error("FromObject of another row type: no error")
	}
}
