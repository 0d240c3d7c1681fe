package httpapi

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/tribune-mesh/tribune/catalog"
)

// TestKVEntriesJSONMatchesEncodingJSON: the hand-written encoding of KV
// answers gives encoding/json's bytes (what the API answered before, and
// what ?pretty still uses).
func TestKVEntriesJSONMatchesEncodingJSON(t *testing.T) {
	keys := []string{"", "a", "bench/k0001", "ünï/ключ", "<tag>&amp;", "quote\"back\\slash", "ctl\x01\t\n", "bad\xffutf8", "line\u2028sep", "~!@#$%^*()_+{}|:?"}
	var cases [][]*catalog.KVEntry
	cases = append(cases, nil, []*catalog.KVEntry{}, []*catalog.KVEntry{nil})
	for i, k := range keys {
		e := &catalog.KVEntry{Key: k, LockIndex: uint64(i), Flags: 1 << 63, RaftIndex: catalog.RaftIndex{CreateIndex: 1, ModifyIndex: uint64(i) * 1000003}}
		switch i % 3 {
		case 0:
			e.Value = []byte(k + "\x00\xff value")
		case 1:
			e.Value = []byte{}
			e.Session = k
		}
		cases = append(cases, []*catalog.KVEntry{e})
	}
	var all []*catalog.KVEntry
	for _, c := range cases[3:] {
		all = append(all, c...)
	}
	cases = append(cases, all)
	for _, es := range cases {
		got, err := encodeJSON(new(bytes.Buffer), es, false)
		if err != nil {
			t.Fatal(err)
		}
		want, err := json.Marshal(es)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("encoding of %v:\n got %s\nwant %s", es, got, want)
		}
	}
}
