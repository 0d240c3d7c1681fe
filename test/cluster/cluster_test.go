// Package cluster tests real tribune processes: three servers and a client
// agent on loopback, killed with SIGKILL and restarted from their data.
package cluster

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/test/procs"
	"github.com/tribune-mesh/tribune/test/wait"
)

func waitUntil(t *testing.T, d time.Duration, what string, cond func() error) {
	t.Helper()
	wait.For(t, d, func() error {
		if err := cond(); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	})
}

func TestKillRestartAndSnapshot(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	c := procs.StartCluster(t, procs.Options{Servers: 3, Clients: 1})
	cl := c.Clients[0].Client(t)
	waitUntil(t, 30*time.Second, "the client to reach a server", func() error {
		_, err := cl.KV().Put(&api.KVPair{Key: "warmup", Value: []byte("1")}, nil)
		return err
	})
	for i := 0; i < 50; i++ {
		if _, err := cl.KV().Put(&api.KVPair{Key: fmt.Sprintf("k/%02d", i), Value: []byte(fmt.Sprint(i))}, nil); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}

	// SIGKILL the leader: the next write through the client succeeds.
	leader := c.Leader(t, 10*time.Second)
	nodes, _, err := cl.Catalog().Nodes(nil)
	if err != nil {
		t.Fatal(err)
	}
	var leaderID string
	for _, n := range nodes {
		if n.Node == leader.Name {
			leaderID = n.ID
		}
	}
	if leaderID == "" {
		t.Fatalf("leader %s not in the catalog: %v", leader.Name, nodes)
	}
	leader.Kill()
	start := time.Now()
	waitUntil(t, 30*time.Second, "a write after SIGKILL of the leader", func() error {
		_, err := cl.KV().Put(&api.KVPair{Key: "after-kill", Value: []byte("x")}, nil)
		return err
	})
	t.Logf("leader SIGKILL -> next write succeeded in %v", time.Since(start))

	// The killed server restarts from its data directory with its data and
	// its node ID.
	leader.Start(t)
	c.WaitForLeader(t, 30*time.Second)
	rc := leader.Client(t)
	waitUntil(t, 30*time.Second, "the restarted server to catch up", func() error {
		p, _, err := rc.KV().Get("after-kill", &api.QueryOptions{AllowStale: true})
		if err != nil || p == nil {
			return fmt.Errorf("after-kill: %v %v", p, err)
		}
		keys, _, err := rc.KV().Keys("k/", "", &api.QueryOptions{AllowStale: true})
		if err != nil || len(keys) != 50 {
			return fmt.Errorf("keys %d %v", len(keys), err)
		}
		return nil
	})
	waitUntil(t, 30*time.Second, "the restarted server's node with the same ID", func() error {
		n, _, err := cl.Catalog().Node(leader.Name, nil)
		if err != nil || n == nil {
			return fmt.Errorf("node: %v %v", n, err)
		}
		if n.Node.ID != leaderID {
			return fmt.Errorf("node ID changed from %s to %s", leaderID, n.Node.ID)
		}
		return nil
	})

	// Snapshot save, more writes, restore: every server has the saved state.
	rcSnap, _, err := cl.Snapshot().Save(nil)
	if err != nil {
		t.Fatalf("snapshot save: %v", err)
	}
	snap, err := io.ReadAll(rcSnap)
	rcSnap.Close()
	if err != nil || len(snap) == 0 {
		t.Fatalf("read snapshot: %v (%d bytes)", err, len(snap))
	}
	if _, err := cl.KV().Put(&api.KVPair{Key: "after-snapshot", Value: []byte("y")}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.KV().Delete("k/00", nil); err != nil {
		t.Fatal(err)
	}
	// A corrupt upload is refused with 400 and changes nothing.
	req, _ := http.NewRequest(http.MethodPut, "http://"+c.Clients[0].HTTPAddr()+"/v1/snapshot", bytes.NewReader(snap[:len(snap)/2]))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("corrupt snapshot: %d %s", resp.StatusCode, body)
	}
	if p, _, err := cl.KV().Get("after-snapshot", nil); err != nil || p == nil {
		t.Fatalf("corrupt snapshot changed the state: %v %v", p, err)
	}
	if err := cl.Snapshot().Restore(nil, bytes.NewReader(snap)); err != nil {
		t.Fatalf("snapshot restore: %v", err)
	}
	for _, s := range c.Servers {
		sc := s.Client(t)
		waitUntil(t, 30*time.Second, "restored state on "+s.Name, func() error {
			p, _, err := sc.KV().Get("after-snapshot", &api.QueryOptions{AllowStale: true})
			if err != nil || p != nil {
				return fmt.Errorf("after-snapshot still there: %v %v", p, err)
			}
			p, _, err = sc.KV().Get("k/00", &api.QueryOptions{AllowStale: true})
			if err != nil || p == nil || string(p.Value) != "0" {
				return fmt.Errorf("k/00 not restored: %v %v", p, err)
			}
			return nil
		})
	}
	// Writes keep working after the restore.
	waitUntil(t, 20*time.Second, "a write after restore", func() error {
		_, err := cl.KV().Put(&api.KVPair{Key: "post-restore", Value: []byte("z")}, nil)
		return err
	})

	// SIGTERM of a client with leave_on_terminate (the client default)
	// removes it from the catalog.
	c.Clients[0].Stop(20 * time.Second)
	sc := c.Servers[0].Client(t)
	waitUntil(t, 20*time.Second, "the client's node to leave the catalog", func() error {
		n, _, err := sc.Catalog().Node("c1", &api.QueryOptions{AllowStale: true})
		if err != nil {
			return err
		}
		if n != nil {
			return fmt.Errorf("c1 still registered")
		}
		return nil
	})
	if strings.Contains(c.Clients[0].Log(), "panic") {
		t.Fatal("client panicked")
	}
}
