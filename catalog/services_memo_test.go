package catalog_test

import (
	"bytes"
	"fmt"
	"reflect"
	"sort"
	"testing"

	"github.com/tribune-mesh/tribune/catalog"
)

// servicesOf returns Services' answer as "name:tag,tag" lines and its map.
func servicesOf(t *testing.T, s *catalog.Store) (string, map[string][]string) {
	t.Helper()
	_, svcs, err := s.Services(ws())
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for name, tags := range svcs {
		lines = append(lines, fmt.Sprintf("%s:%v", name, tags))
	}
	sort.Strings(lines)
	return fmt.Sprint(lines), svcs
}

func samePointer(a, b map[string][]string) bool {
	return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}

// TestServicesMemo: the services list is computed once per change of the
// services table, and is never stale: not after a service is added,
// changed or removed, nor after a restore to other data at the same index.
func TestServicesMemo(t *testing.T) {
	s := topology(t)
	const base = "[api:[] db:[] web:[a b c]]"
	first, m1 := servicesOf(t, s)
	if first != base {
		t.Fatalf("Services = %s, want %s", first, base)
	}
	if _, m2 := servicesOf(t, s); !samePointer(m1, m2) {
		t.Fatal("unchanged services table: the list was computed again")
	}
	// A check changing is no change of the list.
	register(t, s, 5, &catalog.RegisterRequest{Node: "n3", Address: "10.0.0.3",
		Checks: []*catalog.HealthCheck{{CheckID: "chk-db1", ServiceID: "db1", Status: catalog.HealthCritical}}})
	if got, m3 := servicesOf(t, s); got != base || !samePointer(m1, m3) {
		t.Fatalf("after a check update: %s (recomputed: %v)", got, !samePointer(m1, m3))
	}
	for _, step := range []struct {
		name string
		do   func(idx uint64) error
		want string
	}{
		{"new tag", func(idx uint64) error {
			return s.EnsureRegistration(idx, webRegistration("n3", "10.0.0.3", "web3", []string{"d"}, 80, catalog.HealthPassing))
		}, "[api:[] db:[] web:[a b c d]]"},
		{"new service", func(idx uint64) error {
			return s.EnsureRegistration(idx, &catalog.RegisterRequest{Node: "n2", Address: "10.0.0.2",
				Service: &catalog.Service{ID: "cache1", Service: "cache", Tags: []string{"x"}}})
		}, "[api:[] cache:[x] db:[] web:[a b c d]]"},
		{"renamed instance", func(idx uint64) error {
			return s.EnsureRegistration(idx, &catalog.RegisterRequest{Node: "n2", Address: "10.0.0.2",
				Service: &catalog.Service{ID: "cache1", Service: "store", Tags: []string{"y"}}})
		}, "[api:[] db:[] store:[y] web:[a b c d]]"},
		{"service removed", func(idx uint64) error {
			return s.Deregister(idx, &catalog.DeregisterRequest{Node: "n1", ServiceID: "api1"})
		}, "[db:[] store:[y] web:[a b c d]]"},
		{"node removed", func(idx uint64) error {
			return s.Deregister(idx, &catalog.DeregisterRequest{Node: "n3"})
		}, "[store:[y] web:[a b c]]"},
	} {
		idx := s.LastIndex() + 1
		if err := step.do(idx); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if got, _ := servicesOf(t, s); got != step.want {
			t.Fatalf("after %s: Services = %s, want %s", step.name, got, step.want)
		}
	}

	// Another store with other services at the same index: restored from
	// its snapshot, s lists those, not its memo.
	other := newStore(t)
	for i := uint64(1); i < s.LastIndex(); i++ {
		registerNode(t, other, i, fmt.Sprintf("o%d", i))
	}
	register(t, other, s.LastIndex(), &catalog.RegisterRequest{Node: "o1", Address: "10.0.0.9",
		Service: &catalog.Service{ID: "only", Service: "only", Tags: []string{"z"}}})
	_, before, _ := s.Services(ws())
	idxS, _, _ := s.Services(ws())
	idxO, _, _ := other.Services(ws())
	if idxS != idxO {
		t.Fatalf("indexes %d and %d: the restore case needs them equal", idxS, idxO)
	}
	if err := s.Restore(bytes.NewReader(dump(t, other))); err != nil {
		t.Fatal(err)
	}
	got, after := servicesOf(t, s)
	if got != "[only:[z]]" || samePointer(before, after) {
		t.Fatalf("after a restore at the same index: Services = %s", got)
	}
}
