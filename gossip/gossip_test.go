package gossip

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/tribune-mesh/tribune/clock"
	"github.com/tribune-mesh/tribune/test/freeport"
	"github.com/tribune-mesh/tribune/test/wait"
)

func freePort(t testing.TB) int {
	t.Helper()
	return freeport.One(t)
}

func newPool(t *testing.T, name string, keys [][]byte) *Pool {
	t.Helper()
	port := freePort(t)
	p, err := New(&Config{NodeName: name, BindAddr: "127.0.0.1", BindPort: port,
		Tags: map[string]string{"id": name + "-id", "dc": "dc1", "role": "node"}, Keys: keys, Fast: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Shutdown() })
	return p
}

func addr(p *Pool) string { return fmt.Sprintf("127.0.0.1:%d", p.cfg.BindPort) }

func statusOf(p *Pool, name string) Status {
	for _, m := range p.Members() {
		if m.Name == name {
			return m.Status
		}
	}
	return StatusNone
}

// waitFor fails the test unless cond holds within d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	wait.For(t, d, func() error {
		if cond() {
			return nil
		}
		return errors.New("waiting for " + what)
	})
}

func TestJoinLeaveFail(t *testing.T) {
	a, b, c := newPool(t, "a", nil), newPool(t, "b", nil), newPool(t, "c", nil)
	for _, p := range []*Pool{b, c} {
		if _, err := p.Join([]string{addr(a)}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "three alive members", func() bool {
		return statusOf(a, "b") == StatusAlive && statusOf(a, "c") == StatusAlive
	})
	if m := a.Members(); m[1].Tags["id"] != "b-id" {
		t.Fatalf("tags not gossiped: %+v", m[1])
	}
	if err := b.Leave(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	_ = b.Shutdown()
	waitFor(t, 10*time.Second, "b left", func() bool { return statusOf(a, "b") == StatusLeft })
	_ = c.Shutdown()
	waitFor(t, 45*time.Second, "c failed", func() bool { return statusOf(a, "c") == StatusFailed })
}

func TestEncryptionKeyMismatchRefused(t *testing.T) {
	k1 := []byte("0123456789abcdef")
	k2 := []byte("fedcba9876543210")
	a, b := newPool(t, "a", [][]byte{k1}), newPool(t, "b", [][]byte{k2})
	if _, err := b.Join([]string{addr(a)}); err == nil {
		t.Fatal("join with a different gossip key succeeded")
	}
	c := newPool(t, "c", [][]byte{k1})
	if _, err := c.Join([]string{addr(a)}); err != nil {
		t.Fatalf("join with the same key: %v", err)
	}
	waitFor(t, 5*time.Second, "c alive", func() bool { return statusOf(a, "c") == StatusAlive })
	if statusOf(a, "b") != StatusNone {
		t.Fatal("member with the wrong key was accepted")
	}
}

func TestDuplicateNameRefused(t *testing.T) {
	a := newPool(t, "a", nil)
	b := newPool(t, "b", nil)
	if _, err := b.Join([]string{addr(a)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "b alive", func() bool { return statusOf(a, "b") == StatusAlive })
	port := freePort(t)
	dup, err := New(&Config{NodeName: "b", BindAddr: "127.0.0.1", BindPort: port,
		Tags: map[string]string{"id": "other-id", "dc": "dc1"}, Fast: true})
	if err != nil {
		t.Fatal(err)
	}
	defer dup.Shutdown()
	if _, err := dup.Join([]string{addr(a)}); !errors.Is(err, ErrNameConflict) {
		t.Fatalf("join with a taken name: %v, want ErrNameConflict", err)
	}
	time.Sleep(500 * time.Millisecond)
	for _, m := range a.Members() {
		if m.Name == "b" && m.Tags["id"] != "b-id" {
			t.Fatalf("the duplicate name replaced the member: %+v", m)
		}
	}
}

func TestKeyringRotation(t *testing.T) {
	k1 := []byte("0123456789abcdef")
	k2 := []byte("ABCDEFGHIJKLMNOP")
	b64 := func(k []byte) string { return base64.StdEncoding.EncodeToString(k) }
	a, b, c := newPool(t, "a", [][]byte{k1}), newPool(t, "b", [][]byte{k1}), newPool(t, "c", [][]byte{k1})
	for _, p := range []*Pool{b, c} {
		if _, err := p.Join([]string{addr(a)}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "three members", func() bool { return a.NumMembers() == 3 })
	if err := a.KeyringOp(KeyInstall, b64(k2)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the new key on every member", func() bool {
		st, err := a.KeyringList()
		return err == nil && st.Keys[b64(k2)] == 3 && st.NumNodes == 3
	})
	if err := b.KeyringOp(KeyUse, b64(k2)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the new key primary everywhere", func() bool {
		st, err := c.KeyringList()
		return err == nil && st.PrimaryKeys[b64(k2)] == 3
	})
	if err := c.KeyringOp(KeyRemove, b64(k1)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the old key gone everywhere", func() bool {
		st, err := a.KeyringList()
		_, has := st.Keys[b64(k1)]
		return err == nil && !has && st.Keys[b64(k2)] == 3
	})
	// A member with only the old key can no longer join.
	old := newPool(t, "old", [][]byte{k1})
	if _, err := old.Join([]string{addr(a)}); err == nil {
		t.Fatal("a member with the removed key joined")
	}
	// Removing the primary key is refused.
	if err := a.KeyringOp(KeyRemove, b64(k2)); err == nil {
		t.Fatal("removing the primary key succeeded")
	}
	// No keyring without encryption.
	plain := newPool(t, "plain", nil)
	if _, err := plain.KeyringList(); err != ErrNoKeyring {
		t.Fatalf("keyring list without encryption: %v", err)
	}
}

func TestDepartedMembersForgotten(t *testing.T) {
	fc := clock.NewFake(time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC))
	p, err := New(&Config{NodeName: "self", BindAddr: "127.0.0.1", BindPort: freePort(t), Fast: true,
		Tags: map[string]string{"id": "self-id", "dc": "dc1"}, Clock: fc,
		ReconnectTimeout: 10 * time.Minute, TombstoneTimeout: 5 * time.Minute, MaxDeparted: 50})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Shutdown() })
	go func() { // nobody else reads the events here
		for range p.Events() {
		}
	}()
	ev := &eventDelegate{p: p}
	node := func(name string, leaving bool) *memberlist.Node {
		meta := `{"id":"` + name + `-id","dc":"dc1"}`
		if leaving {
			meta = `{"id":"` + name + `-id","dc":"dc1","leaving":"1"}`
		}
		return &memberlist.Node{Name: name, Addr: net.ParseIP("10.0.0.1"), Port: 8301, Meta: []byte(meta)}
	}
	count := func() (all, departed int) {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.members), len(p.departed)
	}
	// Churn: members join, then half fail and half leave; some come back.
	for round := range 20 {
		for i := range 10 {
			name := fmt.Sprintf("n%d-%d", round, i)
			ev.NotifyJoin(node(name, false))
			ev.NotifyLeave(node(name, i%2 == 0))
			if i == 9 {
				ev.NotifyJoin(node(name, false)) // back alive: stays
			}
		}
		fc.Advance(time.Second)
		if all, departed := count(); departed > 50 || all > 50+21 {
			t.Fatalf("round %d: %d members, %d departed; want at most 50 departed", round, all, departed)
		}
	}
	if got := statusOf(p, "n19-9"); got != StatusAlive {
		t.Fatalf("rejoined member is %v", got)
	}
	// Past the tombstone timeout the left members go, then the failed.
	// (reapLoop runs reapDeparted on a ticker of the same clock; called
	// here directly, the test does not depend on which tick it reads.)
	fc.Advance(6 * time.Minute)
	p.reapDeparted()
	if statusOf(p, "n19-0") != StatusNone || statusOf(p, "n19-1") != StatusFailed {
		t.Fatalf("after the tombstone timeout: left member %v, failed member %v", statusOf(p, "n19-0"), statusOf(p, "n19-1"))
	}
	fc.Advance(5 * time.Minute)
	p.reapDeparted()
	if all, departed := count(); departed != 0 || all != 21 { // the 20 that came back and self
		t.Fatalf("after the reconnect timeout: %d members, %d departed", all, departed)
	}
}
