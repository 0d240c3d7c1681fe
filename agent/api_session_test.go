package agent_test

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/test/wait"
)

// skipWithoutSessions skips when the agent does not route /v1/session yet.
func skipWithoutSessions(t *testing.T, c *api.Client) {
	t.Helper()
	_, _, err := c.Session().List(nil)
	var se api.StatusError
	if asStatusError(err, &se) && se.Code == http.StatusNotFound {
		t.Skip("/v1/session is not routed")
	}
	if err != nil {
		t.Fatalf("session list: %v", err)
	}
}

func TestAPISession_KVLocks(t *testing.T) {
	t.Parallel()
	_, c := startAPI(t)
	skipWithoutSessions(t, c)
	sess, kv := c.Session(), c.KV()
	node := selfNode(t, c)

	s1, _, err := sess.Create(&api.SessionEntry{Name: "one", LockDelay: time.Millisecond}, nil)
	if err != nil || s1 == "" {
		t.Fatalf("create s1 = %q, %v", s1, err)
	}
	s2, _, err := sess.CreateNoChecks(&api.SessionEntry{Name: "two", LockDelay: time.Millisecond}, nil)
	if err != nil || s2 == "" || s2 == s1 {
		t.Fatalf("create s2 = %q, %v", s2, err)
	}
	info, _, err := sess.Info(s1, nil)
	if err != nil || info == nil || info.ID != s1 || info.Name != "one" || info.Node != node ||
		info.Behavior != api.SessionBehaviorRelease {
		t.Fatalf("info s1 = %+v, %v", info, err)
	}
	list, _, err := sess.List(nil)
	if err != nil || len(list) != 2 {
		t.Fatalf("list = %d sessions, %v; want 2", len(list), err)
	}
	onNode, _, err := sess.Node(node, nil)
	if err != nil || len(onNode) != 2 {
		t.Fatalf("sessions of %s = %d, %v; want 2", node, len(onNode), err)
	}

	ok, _, err := kv.Acquire(&api.KVPair{Key: "lock", Value: []byte("s1"), Session: s1}, nil)
	if err != nil || !ok {
		t.Fatalf("s1 acquire = %v, %v", ok, err)
	}
	ok, _, err = kv.Acquire(&api.KVPair{Key: "lock", Value: []byte("s2"), Session: s2}, nil)
	if err != nil || ok {
		t.Fatalf("s2 acquire of a held lock = %v, %v; want false", ok, err)
	}
	p, _, err := kv.Get("lock", nil)
	if err != nil || p == nil || p.Session != s1 || string(p.Value) != "s1" || p.LockIndex != 1 {
		t.Fatalf("held lock = %+v, %v", p, err)
	}
	ok, _, err = kv.Release(&api.KVPair{Key: "lock", Session: s2}, nil)
	if err != nil || ok {
		t.Fatalf("release by a non-holder = %v, %v; want false", ok, err)
	}
	ok, _, err = kv.Release(&api.KVPair{Key: "lock", Session: s1}, nil)
	if err != nil || !ok {
		t.Fatalf("release by the holder = %v, %v", ok, err)
	}
	if p, _, _ := kv.Get("lock", nil); p == nil || p.Session != "" {
		t.Fatalf("released lock = %+v", p)
	}
	// After the 1ms lock delay, s2 takes it; destroying s2 frees it.
	var got bool
	wait.For(t, 5*time.Second, func() error {
		got, _, err = kv.Acquire(&api.KVPair{Key: "lock", Value: []byte("s2"), Session: s2}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !got {
			return errors.New("s2 cannot acquire the released lock")
		}
		return nil
	})
	if p, _, _ := kv.Get("lock", nil); p == nil || p.Session != s2 || p.LockIndex != 2 {
		t.Fatalf("lock after s2 acquired = %+v, want LockIndex 2", p)
	}
	if _, err := sess.Destroy(s2, nil); err != nil {
		t.Fatal(err)
	}
	if p, _, _ := kv.Get("lock", nil); p == nil || p.Session != "" {
		t.Fatalf("lock after its holder's session was destroyed = %+v", p)
	}
	if info, _, err := sess.Info(s2, nil); err != nil || info != nil {
		t.Fatalf("info of destroyed session = %+v, %v", info, err)
	}
	ok, _, err = kv.Acquire(&api.KVPair{Key: "other", Session: s2}, nil)
	if err == nil && ok {
		t.Fatal("acquire with a destroyed session succeeded")
	}
}

func TestAPISession_LockHelper(t *testing.T) {
	t.Parallel()
	_, c := startAPI(t)
	skipWithoutSessions(t, c)
	lock, err := c.LockOpts(&api.LockOptions{Key: "svc/leader", Value: []byte("me"), LockWaitTime: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// Lock retries until it acquires or stop closes: bound it.
	stop := make(chan struct{})
	tm := time.AfterFunc(10*time.Second, func() { close(stop) })
	defer tm.Stop()
	lost, err := lock.Lock(stop)
	if err != nil || lost == nil {
		t.Fatalf("lock = %v, %v", lost, err)
	}
	p, _, err := c.KV().Get("svc/leader", nil)
	if err != nil || p == nil || p.Session == "" || string(p.Value) != "me" {
		t.Fatalf("held lock key = %+v, %v", p, err)
	}
	// A second contender cannot take it within its wait.
	other, err := c.LockOpts(&api.LockOptions{Key: "svc/leader", LockTryOnce: true, LockWaitTime: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if ch, err := other.Lock(stop); err != nil || ch != nil {
		t.Fatalf("second lock = %v, %v; want nil (not acquired)", ch, err)
	}
	if err := lock.Unlock(); err != nil {
		t.Fatal(err)
	}
	if p, _, _ := c.KV().Get("svc/leader", nil); p != nil && p.Session != "" {
		t.Fatalf("key still held after Unlock: %+v", p)
	}
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Fatal("lost channel not closed after Unlock")
	}
}
