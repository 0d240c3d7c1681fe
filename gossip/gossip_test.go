package gossip

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"
)

func freePort(t testing.TB) int {
	t.Helper()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
		l.Close()
		if err == nil {
			u.Close()
			return p
		}
	}
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

func wait(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestJoinLeaveFail(t *testing.T) {
	a, b, c := newPool(t, "a", nil), newPool(t, "b", nil), newPool(t, "c", nil)
	for _, p := range []*Pool{b, c} {
		if _, err := p.Join([]string{addr(a)}); err != nil {
			t.Fatal(err)
		}
	}
	wait(t, 5*time.Second, "three alive members", func() bool {
		return statusOf(a, "b") == StatusAlive && statusOf(a, "c") == StatusAlive
	})
	if m := a.Members(); m[1].Tags["id"] != "b-id" {
		t.Fatalf("tags not gossiped: %+v", m[1])
	}
	if err := b.Leave(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	_ = b.Shutdown()
	wait(t, 10*time.Second, "b left", func() bool { return statusOf(a, "b") == StatusLeft })
	_ = c.Shutdown()
	wait(t, 45*time.Second, "c failed", func() bool { return statusOf(a, "c") == StatusFailed })
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
	wait(t, 5*time.Second, "c alive", func() bool { return statusOf(a, "c") == StatusAlive })
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
	wait(t, 5*time.Second, "b alive", func() bool { return statusOf(a, "b") == StatusAlive })
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
	wait(t, 5*time.Second, "three members", func() bool { return a.NumMembers() == 3 })
	if err := a.KeyringOp(KeyInstall, b64(k2)); err != nil {
		t.Fatal(err)
	}
	wait(t, 10*time.Second, "the new key on every member", func() bool {
		st, err := a.KeyringList()
		return err == nil && st.Keys[b64(k2)] == 3 && st.NumNodes == 3
	})
	if err := b.KeyringOp(KeyUse, b64(k2)); err != nil {
		t.Fatal(err)
	}
	wait(t, 10*time.Second, "the new key primary everywhere", func() bool {
		st, err := c.KeyringList()
		return err == nil && st.PrimaryKeys[b64(k2)] == 3
	})
	if err := c.KeyringOp(KeyRemove, b64(k1)); err != nil {
		t.Fatal(err)
	}
	wait(t, 10*time.Second, "the old key gone everywhere", func() bool {
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
