package catalog_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tribune-mesh/tribune/catalog"
)

// sessionFixture registers node n1 with a passing node check "nc", a critical
// node check "bad", and service web with a passing check "wc".
func sessionFixture(t *testing.T, s *catalog.Store) {
	t.Helper()
	register(t, s, 1, &catalog.RegisterRequest{
		Node:    "n1",
		Address: "10.0.0.1",
		Service: &catalog.Service{ID: "web1", Service: "web", Port: 80},
		Checks: []*catalog.HealthCheck{
			{CheckID: "nc", Name: "node", Status: catalog.HealthPassing},
			{CheckID: "bad", Name: "bad", Status: catalog.HealthCritical},
			{CheckID: "wc", Name: "web", Status: catalog.HealthPassing, ServiceID: "web1"},
			{CheckID: "warn", Name: "warn", Status: catalog.HealthWarning},
		},
	})
}

func TestSessionCreate(t *testing.T) {
	cases := []struct {
		name    string
		sess    catalog.Session
		wantErr error // nil: must succeed; errAny: any error
	}{
		{"plain", catalog.Session{ID: "s", Node: "n1"}, nil},
		{"node case-insensitive", catalog.Session{ID: "s", Node: "N1"}, nil},
		{"passing node check", catalog.Session{ID: "s", Node: "n1", NodeChecks: []string{"nc"}}, nil},
		{"warning node check", catalog.Session{ID: "s", Node: "n1", NodeChecks: []string{"warn"}}, nil},
		{"passing service check", catalog.Session{ID: "s", Node: "n1", ServiceChecks: []catalog.ServiceCheck{{ID: "wc"}}}, nil},
		{"delete behaviour", catalog.Session{ID: "s", Node: "n1", Behavior: catalog.SessionBehaviorDelete}, nil},
		{"missing node", catalog.Session{ID: "s", Node: "nope"}, catalog.ErrMissingNode},
		{"missing id", catalog.Session{Node: "n1"}, catalog.ErrInvalidRequest},
		{"critical node check", catalog.Session{ID: "s", Node: "n1", NodeChecks: []string{"nc", "bad"}}, errAny},
		{"missing node check", catalog.Session{ID: "s", Node: "n1", NodeChecks: []string{"ghost"}}, errAny},
		{"missing service check", catalog.Session{ID: "s", Node: "n1", ServiceChecks: []catalog.ServiceCheck{{ID: "ghost"}}}, errAny},
		{"critical service check", catalog.Session{ID: "s", Node: "n1", ServiceChecks: []catalog.ServiceCheck{{ID: "bad"}}}, errAny},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			sessionFixture(t, s)
			before := dump(t, s)
			err := s.SessionApply(5, &catalog.SessionRequest{Op: catalog.SessionCreate, Session: tc.sess})
			if tc.wantErr != nil {
				if err == nil {
					t.Fatal("create succeeded, want error")
				}
				if tc.wantErr != errAny && !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				if string(dump(t, s)) != string(before) {
					t.Fatal("failed create changed the store")
				}
				if sess := getSession(t, s, tc.sess.ID); tc.sess.ID != "" && sess != nil {
					t.Fatalf("session stored despite error: %+v", sess)
				}
				return
			}
			if err != nil {
				t.Fatalf("create: %v", err)
			}
			sess := getSession(t, s, "s")
			if sess == nil {
				t.Fatal("session missing")
			}
			if sess.CreateIndex != 5 || sess.ModifyIndex != 5 {
				t.Fatalf("session indexes %+v, want 5/5", sess.RaftIndex)
			}
			wantB := tc.sess.Behavior
			if wantB == "" {
				wantB = catalog.SessionBehaviorRelease
			}
			if sess.Behavior != wantB {
				t.Fatalf("behavior = %q, want %q", sess.Behavior, wantB)
			}
			idx, list, err := s.SessionList(ws(), "n1")
			if err != nil || len(list) != 1 || idx != 5 {
				t.Fatalf("SessionList(n1) = (%d, %d sessions, %v)", idx, len(list), err)
			}
		})
	}
}

var errAny = errors.New("any error")

func TestSessionApplyUnknownOp(t *testing.T) {
	s := newStore(t)
	err := s.SessionApply(1, &catalog.SessionRequest{Op: "renew", Session: catalog.Session{ID: "x"}})
	if !errors.Is(err, catalog.ErrInvalidRequest) {
		t.Fatalf("err = %v, want ErrInvalidRequest", err)
	}
	// Destroying a session that does not exist is not an error.
	destroySession(t, s, 2, "never-existed")
}

func TestLockLifecycle(t *testing.T) {
	s := newStore(t)
	registerNode(t, s, 1, "n1")
	createSession(t, s, 2, catalog.Session{ID: "s1", Node: "n1"})
	createSession(t, s, 3, catalog.Session{ID: "s2", Node: "n1"})

	type step struct {
		name     string
		op       catalog.KVOp
		session  string
		value    string
		wantOK   bool
		wantSess string
		wantLock uint64
		wantVal  string
		wantMI   uint64
	}
	steps := []step{
		{"s1 acquires", catalog.KVLock, "s1", "a", true, "s1", 1, "a", 10},
		{"s2 cannot acquire", catalog.KVLock, "s2", "b", false, "s1", 1, "a", 10},
		{"s1 re-acquires keeping LockIndex", catalog.KVLock, "s1", "c", true, "s1", 1, "c", 12},
		{"s2 cannot release s1's lock", catalog.KVUnlock, "s2", "d", false, "s1", 1, "c", 12},
		{"s1 releases", catalog.KVUnlock, "s1", "e", true, "", 1, "e", 14},
		{"s1 cannot release twice", catalog.KVUnlock, "s1", "f", false, "", 1, "e", 14},
		{"s2 acquires, LockIndex increments", catalog.KVLock, "s2", "g", true, "s2", 2, "g", 16},
		{"s2 releases", catalog.KVUnlock, "s2", "h", true, "", 2, "h", 17},
		{"s1 acquires again", catalog.KVLock, "s1", "i", true, "s1", 3, "i", 18},
	}
	idx := uint64(10)
	for _, st := range steps {
		ok := kvApply(t, s, idx, st.op, catalog.KVEntry{Key: "k", Value: []byte(st.value), Session: st.session})
		if ok != st.wantOK {
			t.Fatalf("%s: ok = %v, want %v", st.name, ok, st.wantOK)
		}
		e := mustKV(t, s, "k")
		if e.Session != st.wantSess || e.LockIndex != st.wantLock || string(e.Value) != st.wantVal || e.ModifyIndex != st.wantMI || e.CreateIndex != 10 {
			t.Fatalf("%s: entry = %+v value %q; want session %q lock %d value %q MI %d CI 10",
				st.name, e, e.Value, st.wantSess, st.wantLock, st.wantVal, st.wantMI)
		}
		idx++
	}
}

func TestLockErrors(t *testing.T) {
	s := newStore(t)
	registerNode(t, s, 1, "n1")
	createSession(t, s, 2, catalog.Session{ID: "s1", Node: "n1"})
	kvSet(t, s, 3, "plain", "v")
	before := dump(t, s)

	cases := []struct {
		name    string
		op      catalog.KVOp
		key     string
		session string
		wantOK  bool
		wantErr error
	}{
		{"lock without session", catalog.KVLock, "k", "", false, catalog.ErrInvalidRequest},
		{"lock with unknown session", catalog.KVLock, "k", "ghost", false, catalog.ErrSessionNotFound},
		{"unlock missing key", catalog.KVUnlock, "nope", "s1", false, nil},
		{"unlock unlocked key", catalog.KVUnlock, "plain", "s1", false, nil},
		{"unlock without session", catalog.KVUnlock, "plain", "", false, catalog.ErrInvalidRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ok, err := s.KVApply(4, &catalog.KVRequest{Op: tc.op, Entry: catalog.KVEntry{Key: tc.key, Value: []byte("x"), Session: tc.session}})
			if ok != tc.wantOK {
				t.Fatalf("ok = %v, want %v", ok, tc.wantOK)
			}
			if tc.wantErr == nil && err != nil {
				t.Fatalf("err = %v, want nil", err)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if string(dump(t, s)) != string(before) {
				t.Fatal("store changed")
			}
		})
	}
}

func TestSessionDestroyBehavior(t *testing.T) {
	for _, behavior := range []string{"", catalog.SessionBehaviorRelease, catalog.SessionBehaviorDelete} {
		name := behavior
		if name == "" {
			name = "default"
		}
		t.Run(name, func(t *testing.T) {
			s := newStore(t)
			registerNode(t, s, 1, "n1")
			createSession(t, s, 2, catalog.Session{ID: "s1", Node: "n1", Behavior: behavior})
			createSession(t, s, 3, catalog.Session{ID: "other", Node: "n1"})
			for i, k := range []string{"held/a", "held/b"} {
				if !kvApply(t, s, uint64(10+i), catalog.KVLock, catalog.KVEntry{Key: k, Value: []byte("v"), Session: "s1"}) {
					t.Fatalf("lock %s failed", k)
				}
			}
			if !kvApply(t, s, 12, catalog.KVLock, catalog.KVEntry{Key: "theirs", Value: []byte("t"), Session: "other"}) {
				t.Fatal("lock theirs failed")
			}
			kvSet(t, s, 13, "free", "f")

			destroySession(t, s, 20, "s1")

			if sess := getSession(t, s, "s1"); sess != nil {
				t.Fatalf("session survives destroy: %+v", sess)
			}
			if sess := getSession(t, s, "other"); sess == nil {
				t.Fatal("unrelated session destroyed")
			}
			for _, k := range []string{"held/a", "held/b"} {
				_, e := kvGet(t, s, k)
				if behavior == catalog.SessionBehaviorDelete {
					if e != nil {
						t.Fatalf("%s survives a delete-behaviour session: %+v", k, e)
					}
					continue
				}
				if e == nil {
					t.Fatalf("%s deleted by a release-behaviour session", k)
				}
				if e.Session != "" || e.LockIndex != 1 || string(e.Value) != "v" || e.ModifyIndex != 20 {
					t.Fatalf("%s after release: %+v", k, e)
				}
			}
			if e := mustKV(t, s, "theirs"); e.Session != "other" || e.ModifyIndex != 12 {
				t.Fatalf("key held by another session changed: %+v", e)
			}
			if e := mustKV(t, s, "free"); e.ModifyIndex != 13 {
				t.Fatalf("unlocked key changed: %+v", e)
			}
			// The released key can be acquired by another session (no lock delay set).
			if !kvApply(t, s, 21, catalog.KVLock, catalog.KVEntry{Key: "held/a", Session: "other"}) {
				t.Fatal("re-acquire after destroy failed")
			}
			wantLI := uint64(2)
			if behavior == catalog.SessionBehaviorDelete {
				wantLI = 1
			}
			if e := mustKV(t, s, "held/a"); e.LockIndex != wantLI {
				t.Fatalf("LockIndex after re-acquire = %d, want %d", e.LockIndex, wantLI)
			}
		})
	}
}

func TestLockDelay(t *testing.T) {
	cases := []struct {
		name       string
		delay      time.Duration
		advance    time.Duration
		wantLocked bool
	}{
		{"no delay", 0, 0, true},
		{"within delay", 10 * time.Second, 0, false},
		{"just before expiry", 10 * time.Second, 10*time.Second - time.Nanosecond, false},
		{"at expiry", 10 * time.Second, 10 * time.Second, true},
		{"after expiry", 10 * time.Second, time.Minute, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clk := newFakeClock()
			s := catalog.NewStore(clk)
			registerNode(t, s, 1, "n1")
			createSession(t, s, 2, catalog.Session{ID: "s1", Node: "n1", LockDelay: tc.delay})
			createSession(t, s, 3, catalog.Session{ID: "s2", Node: "n1"})
			if !kvApply(t, s, 4, catalog.KVLock, catalog.KVEntry{Key: "k", Session: "s1"}) {
				t.Fatal("lock failed")
			}
			destroySession(t, s, 5, "s1")
			clk.Advance(tc.advance)

			// The delay is per key: another key is free.
			if !kvApply(t, s, 6, catalog.KVLock, catalog.KVEntry{Key: "other", Session: "s2"}) {
				t.Fatal("lock on an unrelated key blocked by lock delay")
			}
			got := kvApply(t, s, 7, catalog.KVLock, catalog.KVEntry{Key: "k", Session: "s2"})
			if got != tc.wantLocked {
				t.Fatalf("lock after %v of a %v delay = %v, want %v", tc.advance, tc.delay, got, tc.wantLocked)
			}
			e := mustKV(t, s, "k")
			if tc.wantLocked && (e.Session != "s2" || e.LockIndex != 2 || e.ModifyIndex != 7) {
				t.Fatalf("after acquire: %+v", e)
			}
			if !tc.wantLocked {
				if e.Session != "" || e.ModifyIndex != 5 {
					t.Fatalf("blocked acquire changed the key: %+v", e)
				}
				// Once the clock passes the delay, the acquire succeeds.
				clk.Advance(tc.delay)
				if !kvApply(t, s, 8, catalog.KVLock, catalog.KVEntry{Key: "k", Session: "s2"}) {
					t.Fatal("lock still blocked after the delay passed")
				}
			}
		})
	}
}

func TestLockDelayAfterDeleteBehaviourAndInvalidation(t *testing.T) {
	clk := newFakeClock()
	s := catalog.NewStore(clk)
	sessionFixture(t, s)
	createSession(t, s, 2, catalog.Session{ID: "s1", Node: "n1", NodeChecks: []string{"nc"}, LockDelay: 5 * time.Second, Behavior: catalog.SessionBehaviorDelete})
	createSession(t, s, 3, catalog.Session{ID: "s2", Node: "n1"})
	if !kvApply(t, s, 4, catalog.KVLock, catalog.KVEntry{Key: "k", Session: "s1"}) {
		t.Fatal("lock failed")
	}
	// The check going critical invalidates s1, deleting the key and arming
	// the lock delay.
	register(t, s, 5, &catalog.RegisterRequest{Node: "n1", Address: "10.0.0.1", SkipNodeUpdate: true,
		Check: &catalog.HealthCheck{CheckID: "nc", Name: "node", Status: catalog.HealthCritical}})
	if sess := getSession(t, s, "s1"); sess != nil {
		t.Fatal("s1 survived its check going critical")
	}
	if _, e := kvGet(t, s, "k"); e != nil {
		t.Fatalf("delete-behaviour key survived: %+v", e)
	}
	if kvApply(t, s, 6, catalog.KVLock, catalog.KVEntry{Key: "k", Session: "s2"}) {
		t.Fatal("acquire of a deleted key ignored the lock delay")
	}
	if _, e := kvGet(t, s, "k"); e != nil {
		t.Fatalf("blocked acquire created the key: %+v", e)
	}
	clk.Advance(5 * time.Second)
	if !kvApply(t, s, 7, catalog.KVLock, catalog.KVEntry{Key: "k", Session: "s2"}) {
		t.Fatal("acquire failed after the delay")
	}
	if e := mustKV(t, s, "k"); e.LockIndex != 1 || e.CreateIndex != 7 {
		t.Fatalf("recreated key: %+v", e)
	}
}

// TestLockDelaysArePruned churns sessions that each hold many keys nobody
// acquires again: the lock-delay entries of expired delays must not pile
// up (they used to go only when their key was asked about).
func TestLockDelaysArePruned(t *testing.T) {
	clk := newFakeClock()
	s := catalog.NewStore(clk)
	registerNode(t, s, 1, "n1")
	const rounds, keys = 50, 100
	idx := uint64(2)
	for r := range rounds {
		id := fmt.Sprintf("s%d", r)
		createSession(t, s, idx, catalog.Session{ID: id, Node: "n1", LockDelay: time.Second})
		idx++
		for k := range keys {
			if !kvApply(t, s, idx, catalog.KVLock, catalog.KVEntry{Key: fmt.Sprintf("r%d/k%d", r, k), Session: id}) {
				t.Fatalf("lock r%d/k%d failed", r, k)
			}
			idx++
		}
		destroySession(t, s, idx, id)
		idx++
		if n := s.LockDelays(); n > 3*keys {
			t.Fatalf("round %d: %d lock-delay entries with %d in force", r, n, keys)
		}
		clk.Advance(2 * time.Second)
	}
	// The delays in force are still honoured.
	createSession(t, s, idx, catalog.Session{ID: "last", Node: "n1"})
	if !kvApply(t, s, idx+1, catalog.KVLock, catalog.KVEntry{Key: "r0/k0", Session: "last"}) {
		t.Fatal("expired delay still refuses the acquire")
	}
}

func TestSessionInvalidatedByCriticalCheck(t *testing.T) {
	cases := []struct {
		name     string
		check    *catalog.HealthCheck
		wantGone []string
	}{
		{"node check critical", &catalog.HealthCheck{CheckID: "nc", Name: "node", Status: catalog.HealthCritical}, []string{"sNode", "sBoth"}},
		{"node check warning", &catalog.HealthCheck{CheckID: "nc", Name: "node", Status: catalog.HealthWarning}, nil},
		{"node check default status (critical)", &catalog.HealthCheck{CheckID: "nc", Name: "node"}, []string{"sNode", "sBoth"}},
		{"service check critical", &catalog.HealthCheck{CheckID: "wc", Name: "web", ServiceID: "web1", Status: catalog.HealthCritical}, []string{"sSvc", "sBoth"}},
		{"service check maintenance", &catalog.HealthCheck{CheckID: "wc", Name: "web", ServiceID: "web1", Status: catalog.HealthMaint}, nil},
		{"unrelated check critical", &catalog.HealthCheck{CheckID: "warn", Name: "warn", Status: catalog.HealthCritical}, nil},
		{"new critical check", &catalog.HealthCheck{CheckID: "fresh", Name: "fresh", Status: catalog.HealthCritical}, nil},
	}
	all := []string{"sNode", "sSvc", "sBoth", "sNone"}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			sessionFixture(t, s)
			createSession(t, s, 2, catalog.Session{ID: "sNode", Node: "n1", NodeChecks: []string{"nc"}})
			createSession(t, s, 3, catalog.Session{ID: "sSvc", Node: "n1", ServiceChecks: []catalog.ServiceCheck{{ID: "wc"}}})
			createSession(t, s, 4, catalog.Session{ID: "sBoth", Node: "n1", NodeChecks: []string{"nc"}, ServiceChecks: []catalog.ServiceCheck{{ID: "wc"}}})
			createSession(t, s, 5, catalog.Session{ID: "sNone", Node: "n1"})
			for i, id := range all {
				if !kvApply(t, s, uint64(6+i), catalog.KVLock, catalog.KVEntry{Key: "lock/" + id, Session: id}) {
					t.Fatalf("lock for %s failed", id)
				}
			}

			register(t, s, 20, &catalog.RegisterRequest{Node: "n1", Address: "10.0.0.1", Check: tc.check})

			gone := map[string]bool{}
			for _, id := range tc.wantGone {
				gone[id] = true
			}
			for _, id := range all {
				sess := getSession(t, s, id)
				e := mustKV(t, s, "lock/"+id)
				if gone[id] {
					if sess != nil {
						t.Errorf("session %s survived", id)
					}
					if e.Session != "" || e.ModifyIndex != 20 {
						t.Errorf("lock/%s not released: %+v", id, e)
					}
				} else {
					if sess == nil {
						t.Errorf("session %s invalidated", id)
					}
					if e.Session != id {
						t.Errorf("lock/%s released: %+v", id, e)
					}
				}
			}
		})
	}
}

func TestSessionInvalidatedByCheckDeregister(t *testing.T) {
	s := newStore(t)
	sessionFixture(t, s)
	createSession(t, s, 2, catalog.Session{ID: "sNode", Node: "n1", NodeChecks: []string{"nc"}})
	createSession(t, s, 3, catalog.Session{ID: "sSvc", Node: "n1", ServiceChecks: []catalog.ServiceCheck{{ID: "wc"}}})

	if err := s.Deregister(4, &catalog.DeregisterRequest{Node: "n1", CheckID: "nc"}); err != nil {
		t.Fatal(err)
	}
	if getSession(t, s, "sNode") != nil {
		t.Fatal("session survived its node check being deregistered")
	}
	if getSession(t, s, "sSvc") == nil {
		t.Fatal("unrelated session destroyed")
	}
	// Deregistering the service removes its check, invalidating the session.
	if err := s.Deregister(5, &catalog.DeregisterRequest{Node: "n1", ServiceID: "web1"}); err != nil {
		t.Fatal(err)
	}
	if getSession(t, s, "sSvc") != nil {
		t.Fatal("session survived its service check being removed with the service")
	}
}

func TestDeleteNodeDestroysSessions(t *testing.T) {
	s := newStore(t)
	registerNode(t, s, 1, "n1")
	registerNode(t, s, 2, "n2")
	createSession(t, s, 3, catalog.Session{ID: "a1", Node: "n1"})
	createSession(t, s, 4, catalog.Session{ID: "a2", Node: "n1", Behavior: catalog.SessionBehaviorDelete})
	createSession(t, s, 5, catalog.Session{ID: "b1", Node: "n2"})
	for i, id := range []string{"a1", "a2", "b1"} {
		if !kvApply(t, s, uint64(6+i), catalog.KVLock, catalog.KVEntry{Key: "lock/" + id, Session: id}) {
			t.Fatalf("lock %s failed", id)
		}
	}

	if err := s.Deregister(10, &catalog.DeregisterRequest{Node: "n1"}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a1", "a2"} {
		if getSession(t, s, id) != nil {
			t.Errorf("session %s of deleted node survives", id)
		}
	}
	if getSession(t, s, "b1") == nil {
		t.Error("session of another node destroyed")
	}
	if e := mustKV(t, s, "lock/a1"); e.Session != "" || e.ModifyIndex != 10 {
		t.Errorf("lock/a1 not released: %+v", e)
	}
	if _, e := kvGet(t, s, "lock/a2"); e != nil {
		t.Errorf("lock/a2 of delete-behaviour session survives: %+v", e)
	}
	if e := mustKV(t, s, "lock/b1"); e.Session != "b1" {
		t.Errorf("lock/b1 released: %+v", e)
	}
	idx, list, err := s.SessionList(ws(), "")
	if err != nil || len(list) != 1 || list[0].ID != "b1" || idx != 10 {
		t.Fatalf("SessionList = (%d, %v, %v)", idx, list, err)
	}
	idx, list, err = s.SessionList(ws(), "n1")
	if err != nil || len(list) != 0 {
		t.Fatalf("SessionList(n1) = (%d, %v, %v)", idx, list, err)
	}
	// A session cannot be created on the deleted node.
	err = s.SessionApply(11, &catalog.SessionRequest{Op: catalog.SessionCreate, Session: catalog.Session{ID: "late", Node: "n1"}})
	if !errors.Is(err, catalog.ErrMissingNode) {
		t.Fatalf("create on deleted node: err = %v", err)
	}
}

func TestSessionListOrder(t *testing.T) {
	s := newStore(t)
	registerNode(t, s, 1, "n1")
	registerNode(t, s, 2, "n2")
	// IDs deliberately not in creation order.
	createSession(t, s, 3, catalog.Session{ID: "zz", Node: "n1"})
	createSession(t, s, 4, catalog.Session{ID: "aa", Node: "n2"})
	createSession(t, s, 5, catalog.Session{ID: "mm", Node: "n1"})
	idx, list, err := s.SessionList(ws(), "")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range list {
		got = append(got, s.ID)
	}
	if !equalStrings(got, []string{"zz", "aa", "mm"}) || idx != 5 {
		t.Fatalf("SessionList = (%d, %q), want (5, [zz aa mm])", idx, got)
	}
	_, list, _ = s.SessionList(ws(), "N1")
	if len(list) != 2 {
		t.Fatalf("SessionList(N1) = %d sessions, want 2", len(list))
	}
}

func TestDestroyedSessionForgetsItsChecks(t *testing.T) {
	// A destroyed session's check links must go with it: a session later
	// created under the same ID without checks must not be invalidated by
	// the old session's check.
	s := newStore(t)
	sessionFixture(t, s)
	createSession(t, s, 2, catalog.Session{ID: "s1", Node: "n1", NodeChecks: []string{"nc"}})
	destroySession(t, s, 3, "s1")
	createSession(t, s, 4, catalog.Session{ID: "s1", Node: "n1"})
	register(t, s, 5, &catalog.RegisterRequest{Node: "n1", SkipNodeUpdate: true,
		Check: &catalog.HealthCheck{CheckID: "nc", Name: "node", Status: catalog.HealthCritical}})
	if getSession(t, s, "s1") == nil {
		t.Fatal("session invalidated through a check link of its destroyed predecessor")
	}
}
