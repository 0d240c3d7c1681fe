package catalog_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/hashicorp/go-memdb"

	"github.com/tribune-mesh/tribune/catalog"
)

// fuzzBaseStore builds the store every fuzz input is restored into.
func fuzzBaseStore(t testing.TB) *catalog.Store {
	s := catalog.NewStore(newFakeClock())
	if err := s.EnsureRegistration(1, webRegistration("n1", "10.0.0.1", "web1", []string{"a"}, 80, catalog.HealthPassing)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.KVApply(2, &catalog.KVRequest{Op: catalog.KVSet, Entry: catalog.KVEntry{Key: "keep", Value: []byte("me")}}); err != nil {
		t.Fatal(err)
	}
	return s
}

func FuzzRestore(f *testing.F) {
	src := catalog.NewStore(nil)
	fsm := catalog.NewFSM(src)
	populate(f, fsm)
	var buf bytes.Buffer
	if err := src.Dump(&buf); err != nil {
		f.Fatal(err)
	}
	valid := buf.Bytes()

	f.Add(valid)
	f.Add(valid[:len(valid)/2])
	f.Add([]byte(`"tribune-snapshot-v1"` + "\n"))
	f.Add([]byte(""))
	f.Add([]byte("garbage"))
	for _, c := range corruptSnapshots(valid) {
		f.Add(c)
	}
	f.Add([]byte(`"tribune-snapshot-v1"` + "\n" +
		`{"T":"services","S":{"Node":"n","ID":"x","Name":"","Svc":{"ID":"x","Service":""}}}` + "\n" +
		`{"T":"kvs","K":{"Key":"a\u0000b","Session":"ghost"}}` + "\n" +
		`{"T":"checks","C":{"Node":"n","CheckID":"c","Status":"","ServiceID":"x"}}` + "\n"))

	f.Fuzz(func(t *testing.T, data []byte) {
		s := fuzzBaseStore(t)
		before := dump(t, s)
		abandon := s.AbandonCh()

		err := s.Restore(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, catalog.ErrBadSnapshot) {
				t.Fatalf("error does not wrap ErrBadSnapshot: %v", err)
			}
			if got := dump(t, s); !bytes.Equal(got, before) {
				t.Fatalf("failed restore changed the store:\n%s", got)
			}
			if abandoned(abandon) {
				t.Fatal("failed restore closed AbandonCh")
			}
			return
		}
		if !abandoned(abandon) {
			t.Fatal("successful restore did not close AbandonCh")
		}

		// Whatever was accepted must be readable without panics ...
		w := memdb.NewWatchSet()
		_, _, _ = s.Nodes(w)
		_, svcs, _ := s.Services(w)
		for name := range svcs {
			_, _, _ = s.CheckServiceNodes(w, name, nil)
			_, _, _ = s.ServiceChecks(w, name)
		}
		_, _, _ = s.ChecksInState(w, catalog.HealthAny)
		_, _, _ = s.KVKeys(w, "", "/")
		_, _, _ = s.SessionList(w, "")
		_ = s.LastIndex()

		// ... and must round-trip: its dump restores to the same dump.
		first := dump(t, s)
		again := catalog.NewStore(nil)
		if err := again.Restore(bytes.NewReader(first)); err != nil {
			t.Fatalf("re-restoring a dump of an accepted snapshot failed: %v\n%s", err, first)
		}
		if second := dump(t, again); !bytes.Equal(first, second) {
			t.Fatalf("dump not stable across restore:\n%s\nvs\n%s", first, second)
		}
	})
}
