package catalog_test

import (
	"bytes"
	"sort"
	"testing"
	"time"

	"github.com/hashicorp/go-memdb"

	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/clock"
)

// newFakeClock returns the fake clock of lock-delay tests.
func newFakeClock() *clock.Fake {
	return clock.NewFake(time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC))
}

func newStore(t *testing.T) *catalog.Store {
	t.Helper()
	return catalog.NewStore(newFakeClock())
}

func ws() memdb.WatchSet { return memdb.NewWatchSet() }

// register applies a registration and fails the test on error.
func register(t *testing.T, s *catalog.Store, idx uint64, req *catalog.RegisterRequest) {
	t.Helper()
	if err := s.EnsureRegistration(idx, req); err != nil {
		t.Fatalf("EnsureRegistration(%d, %s): %v", idx, req.Node, err)
	}
}

func registerNode(t *testing.T, s *catalog.Store, idx uint64, node string) {
	t.Helper()
	register(t, s, idx, &catalog.RegisterRequest{Node: node, Address: "10.0.0.1"})
}

// kvApply applies a KV write, fails the test on error, and returns its ok.
func kvApply(t *testing.T, s *catalog.Store, idx uint64, op catalog.KVOp, e catalog.KVEntry) bool {
	t.Helper()
	ok, err := s.KVApply(idx, &catalog.KVRequest{Op: op, Entry: e})
	if err != nil {
		t.Fatalf("KVApply(%d, %s, %q): %v", idx, op, e.Key, err)
	}
	return ok
}

func kvSet(t *testing.T, s *catalog.Store, idx uint64, key, value string) {
	t.Helper()
	if !kvApply(t, s, idx, catalog.KVSet, catalog.KVEntry{Key: key, Value: []byte(value)}) {
		t.Fatalf("set %q returned false", key)
	}
}

func kvGet(t *testing.T, s *catalog.Store, key string) (uint64, *catalog.KVEntry) {
	t.Helper()
	idx, e, err := s.KVGet(ws(), key)
	if err != nil {
		t.Fatalf("KVGet(%q): %v", key, err)
	}
	return idx, e
}

func mustKV(t *testing.T, s *catalog.Store, key string) *catalog.KVEntry {
	t.Helper()
	_, e := kvGet(t, s, key)
	if e == nil {
		t.Fatalf("key %q missing", key)
	}
	return e
}

func kvKeys(t *testing.T, s *catalog.Store) []string {
	t.Helper()
	_, keys, err := s.KVKeys(ws(), "", "")
	if err != nil {
		t.Fatalf("KVKeys: %v", err)
	}
	return keys
}

func createSession(t *testing.T, s *catalog.Store, idx uint64, sess catalog.Session) {
	t.Helper()
	if err := s.SessionApply(idx, &catalog.SessionRequest{Op: catalog.SessionCreate, Session: sess}); err != nil {
		t.Fatalf("create session %q: %v", sess.ID, err)
	}
}

func destroySession(t *testing.T, s *catalog.Store, idx uint64, id string) {
	t.Helper()
	if err := s.SessionApply(idx, &catalog.SessionRequest{Op: catalog.SessionDestroy, Session: catalog.Session{ID: id}}); err != nil {
		t.Fatalf("destroy session %q: %v", id, err)
	}
}

func getSession(t *testing.T, s *catalog.Store, id string) *catalog.Session {
	t.Helper()
	_, sess, err := s.SessionGet(ws(), id)
	if err != nil {
		t.Fatalf("SessionGet(%q): %v", id, err)
	}
	return sess
}

func dump(t testing.TB, s *catalog.Store) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := s.Dump(&buf); err != nil {
		t.Fatalf("Dump: %v", err)
	}
	return buf.Bytes()
}

func checkIDs(checks []*catalog.HealthCheck) []string {
	out := make([]string, 0, len(checks))
	for _, c := range checks {
		out = append(out, c.Node+"/"+c.CheckID)
	}
	sort.Strings(out)
	return out
}

func nodeNames(csns []*catalog.CheckServiceNode) []string {
	out := make([]string, 0, len(csns))
	for _, c := range csns {
		out = append(out, c.Node.Node+"/"+c.Service.ID)
	}
	sort.Strings(out)
	return out
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// fired reports whether ws fires within d.
func fired(w memdb.WatchSet, d time.Duration) bool {
	return !w.Watch(time.After(d))
}

// abandoned reports whether ch is closed.
func abandoned(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
