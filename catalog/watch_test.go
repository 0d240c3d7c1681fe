package catalog_test

import (
	"testing"
	"time"

	"github.com/hashicorp/go-memdb"

	"github.com/tribune-mesh/tribune/catalog"
)

const (
	fireWait   = time.Second            // a watch that must fire gets this long
	noFireWait = 100 * time.Millisecond // a watch that must not fire is given this long
)

func TestKVGetWatch(t *testing.T) {
	cases := []struct {
		name  string
		write func(t *testing.T, s *catalog.Store)
		fire  bool
	}{
		{"set a", func(t *testing.T, s *catalog.Store) { kvSet(t, s, 10, "a", "new") }, true},
		{"delete a", func(t *testing.T, s *catalog.Store) { kvApply(t, s, 10, catalog.KVDelete, catalog.KVEntry{Key: "a"}) }, true},
		{"delete-tree covering a", func(t *testing.T, s *catalog.Store) {
			kvApply(t, s, 10, catalog.KVDeleteTree, catalog.KVEntry{Key: ""})
		}, true},
		{"txn set a", func(t *testing.T, s *catalog.Store) {
			if r := s.Txn(10, []catalog.TxnOp{kvOp(catalog.KVSet, "a", "x")}); len(r.Errors) != 0 {
				t.Fatal(r.Errors)
			}
		}, true},
		{"lock a", func(t *testing.T, s *catalog.Store) {
			if !kvApply(t, s, 10, catalog.KVLock, catalog.KVEntry{Key: "a", Session: "s1"}) {
				t.Fatal("lock failed")
			}
		}, true},
		{"new unrelated key", func(t *testing.T, s *catalog.Store) { kvSet(t, s, 10, "zzz/other", "x") }, false},
		{"update unrelated key", func(t *testing.T, s *catalog.Store) { kvSet(t, s, 10, "b", "x") }, false},
		{"delete unrelated key", func(t *testing.T, s *catalog.Store) { kvApply(t, s, 10, catalog.KVDelete, catalog.KVEntry{Key: "b"}) }, false},
		{"delete-tree elsewhere", func(t *testing.T, s *catalog.Store) {
			kvApply(t, s, 10, catalog.KVDeleteTree, catalog.KVEntry{Key: "zzz/"})
		}, false},
		{"failed cas on a", func(t *testing.T, s *catalog.Store) {
			if kvApply(t, s, 10, catalog.KVCAS, catalog.KVEntry{Key: "a", RaftIndex: catalog.RaftIndex{ModifyIndex: 1}}) {
				t.Fatal("cas succeeded")
			}
		}, false},
		{"failed txn touching a", func(t *testing.T, s *catalog.Store) {
			r := s.Txn(10, []catalog.TxnOp{kvOp(catalog.KVSet, "a", "x"), kvOp(catalog.KVGet, "missing", "")})
			if len(r.Errors) == 0 {
				t.Fatal("txn succeeded")
			}
		}, false},
		{"catalog write", func(t *testing.T, s *catalog.Store) { registerNode(t, s, 10, "n2") }, false},
		{"session created", func(t *testing.T, s *catalog.Store) {
			createSession(t, s, 10, catalog.Session{ID: "s2", Node: "n1"})
		}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newStore(t)
			registerNode(t, s, 1, "n1")
			createSession(t, s, 2, catalog.Session{ID: "s1", Node: "n1"})
			kvSet(t, s, 3, "a", "old")
			kvSet(t, s, 4, "b", "b")
			kvSet(t, s, 5, "zzz/existing", "z")

			w := memdb.NewWatchSet()
			if _, e, err := s.KVGet(w, "a"); err != nil || e == nil {
				t.Fatalf("KVGet(a) = %v, %v", e, err)
			}
			tc.write(t, s)
			wait := noFireWait
			if tc.fire {
				wait = fireWait
			}
			if got := fired(w, wait); got != tc.fire {
				t.Fatalf("watch fired = %v, want %v", got, tc.fire)
			}
		})
	}
}

func TestKVListWatch(t *testing.T) {
	s := newStore(t)
	kvSet(t, s, 1, "app/a", "1")
	kvSet(t, s, 2, "other/b", "2")

	w := memdb.NewWatchSet()
	if _, _, err := s.KVList(w, "app/"); err != nil {
		t.Fatal(err)
	}
	kvSet(t, s, 3, "other/c", "3")
	if fired(w, noFireWait) {
		t.Fatal("list watch on app/ fired for a write to other/")
	}
	kvSet(t, s, 4, "app/new", "4")
	if !fired(w, fireWait) {
		t.Fatal("list watch on app/ did not fire for a new key under it")
	}
}

// healthFixture: n1 runs web1 (check chk-web1), n2 runs db1 (check chk-db1).
func healthFixture(t *testing.T) *catalog.Store {
	t.Helper()
	s := newStore(t)
	register(t, s, 1, webRegistration("n1", "10.0.0.1", "web1", []string{"a"}, 80, catalog.HealthPassing))
	register(t, s, 2, dbRegistration(catalog.HealthPassing))
	return s
}

func dbRegistration(status string) *catalog.RegisterRequest {
	return &catalog.RegisterRequest{
		Node:    "n2",
		Address: "10.0.0.2",
		Service: &catalog.Service{ID: "db1", Service: "db", Port: 5432},
		Checks: []*catalog.HealthCheck{
			{CheckID: catalog.SerfCheckID, Name: "Serf Health Status", Status: catalog.HealthPassing},
			{CheckID: "chk-db1", Name: "db check", Status: status, ServiceID: "db1"},
		},
	}
}

func TestCheckServiceNodesWatch(t *testing.T) {
	cases := []struct {
		name  string
		write func(t *testing.T, s *catalog.Store)
		fire  bool
	}{
		{"web check goes critical", func(t *testing.T, s *catalog.Store) {
			register(t, s, 10, webRegistration("n1", "10.0.0.1", "web1", []string{"a"}, 80, catalog.HealthCritical))
		}, true},
		{"web node check changes", func(t *testing.T, s *catalog.Store) {
			register(t, s, 10, &catalog.RegisterRequest{Node: "n1", SkipNodeUpdate: true,
				Check: &catalog.HealthCheck{CheckID: catalog.SerfCheckID, Name: "Serf Health Status", Status: catalog.HealthCritical}})
		}, true},
		{"web node address changes", func(t *testing.T, s *catalog.Store) {
			register(t, s, 10, webRegistration("n1", "10.0.0.99", "web1", []string{"a"}, 80, catalog.HealthPassing))
		}, true},
		{"web tags change", func(t *testing.T, s *catalog.Store) {
			register(t, s, 10, webRegistration("n1", "10.0.0.1", "web1", []string{"b"}, 80, catalog.HealthPassing))
		}, true},
		{"new web instance", func(t *testing.T, s *catalog.Store) {
			register(t, s, 10, webRegistration("n3", "10.0.0.3", "web3", nil, 80, catalog.HealthPassing))
		}, true},
		{"web deregistered", func(t *testing.T, s *catalog.Store) {
			if err := s.Deregister(10, &catalog.DeregisterRequest{Node: "n1", ServiceID: "web1"}); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"web node deregistered", func(t *testing.T, s *catalog.Store) {
			if err := s.Deregister(10, &catalog.DeregisterRequest{Node: "n1"}); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"db check goes critical on another node", func(t *testing.T, s *catalog.Store) {
			register(t, s, 10, dbRegistration(catalog.HealthCritical))
		}, false},
		{"db node check changes", func(t *testing.T, s *catalog.Store) {
			register(t, s, 10, &catalog.RegisterRequest{Node: "n2", SkipNodeUpdate: true,
				Check: &catalog.HealthCheck{CheckID: catalog.SerfCheckID, Name: "Serf Health Status", Status: catalog.HealthCritical}})
		}, false},
		{"db deregistered", func(t *testing.T, s *catalog.Store) {
			if err := s.Deregister(10, &catalog.DeregisterRequest{Node: "n2", ServiceID: "db1"}); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"identical web re-registration", func(t *testing.T, s *catalog.Store) {
			register(t, s, 10, webRegistration("n1", "10.0.0.1", "web1", []string{"a"}, 80, catalog.HealthPassing))
		}, false},
		{"kv write", func(t *testing.T, s *catalog.Store) { kvSet(t, s, 10, "web", "x") }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := healthFixture(t)
			w := memdb.NewWatchSet()
			idx, csns, err := s.CheckServiceNodes(w, "web", nil)
			if err != nil || len(csns) != 1 || idx != 1 {
				t.Fatalf("CheckServiceNodes(web) = (%d, %d, %v)", idx, len(csns), err)
			}
			tc.write(t, s)
			wait := noFireWait
			if tc.fire {
				wait = fireWait
			}
			if got := fired(w, wait); got != tc.fire {
				t.Fatalf("watch fired = %v, want %v", got, tc.fire)
			}
			// Whenever the watch fired, the index must have moved past the
			// one the blocked reader saw, or the reader would block again.
			if tc.fire {
				if idx2, _, _ := s.CheckServiceNodes(memdb.NewWatchSet(), "web", nil); idx2 <= idx {
					t.Fatalf("watch fired but index stayed at %d", idx2)
				}
			}
		})
	}
}

func TestAbandonChOnRestore(t *testing.T) {
	s := healthFixture(t)
	src := newStore(t)
	kvSet(t, src, 1, "k", "v")
	var snap []byte = dump(t, src)

	ch := s.AbandonCh()
	if abandoned(ch) {
		t.Fatal("AbandonCh closed before restore")
	}
	w := memdb.NewWatchSet()
	w.Add(ch)
	if err := s.Restore(bytesReader(snap)); err != nil {
		t.Fatal(err)
	}
	if !abandoned(ch) {
		t.Fatal("AbandonCh not closed by restore")
	}
	if !fired(w, fireWait) {
		t.Fatal("WatchSet holding AbandonCh did not fire")
	}
	ch2 := s.AbandonCh()
	if ch2 == ch || abandoned(ch2) {
		t.Fatal("AbandonCh after restore must be a fresh open channel")
	}
	if err := s.Restore(bytesReader(snap)); err != nil {
		t.Fatal(err)
	}
	if !abandoned(ch2) {
		t.Fatal("second restore did not close the new AbandonCh")
	}
}
