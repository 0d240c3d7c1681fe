package servertest_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/server"
	"github.com/tribune-mesh/tribune/server/servertest"
	"github.com/tribune-mesh/tribune/test/wait"
)

// configuration returns a server's Raft configuration as sorted addresses.
func configuration(t *testing.T, s *servertest.Server) []string {
	t.Helper()
	f := s.Raft().GetConfiguration()
	if err := f.Error(); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, srv := range f.Configuration().Servers {
		out = append(out, string(srv.Address))
	}
	slices.Sort(out)
	return out
}

// bootstrap_expect never forms two clusters: a minority that sees too few
// servers waits, and joins the cluster the majority formed.
func TestBootstrapExpectFormsOneCluster(t *testing.T) {
	c := servertest.New(t, servertest.Options{Servers: 5, BootstrapExpect: 3, NoForm: true})
	s := c.Servers
	majority, minority := s[:3], s[3:]
	c.Partition(majority, minority)
	c.Join(s[1], s[0])
	c.Join(s[2], s[0])
	c.Join(s[4], s[3])
	leader := c.WaitForLeaderAmong(servertest.DefaultTimeout, majority)
	if got := configuration(t, leader); len(got) != 3 {
		t.Fatalf("the majority formed %v, want its 3 servers", got)
	}
	for _, m := range minority {
		if m.Leader() != "" || m.Raft().LastIndex() != 0 {
			t.Fatalf("%s (sees 2 servers, expects 3) formed a cluster: leader %q, last index %d", m.Name, m.Leader(), m.Raft().LastIndex())
		}
	}
	c.Heal()
	// Join every majority server, as retry_join with all their addresses
	// does: a join through one server reaches the others by broadcasts,
	// which are sent a bounded number of times and can all miss one
	// server (its leader then learns the minority only at the next
	// push/pull, 15 s later: 1 run in ~200 under CPU load).
	for _, m := range majority {
		c.Join(s[3], m)
	}
	c.WaitForPeers(servertest.DefaultTimeout, 5)
	want := configuration(t, c.Leader())
	for _, m := range s {
		if got := configuration(t, m); !slices.Equal(got, want) {
			t.Fatalf("%s has configuration %v, the leader %v", m.Name, got, want)
		}
	}
}

// Five servers that all see each other at once still form one cluster.
func TestBootstrapExpectConcurrentStart(t *testing.T) {
	c := servertest.New(t, servertest.Options{Servers: 5, BootstrapExpect: 3})
	want := configuration(t, c.Leader())
	if len(want) != 5 {
		t.Fatalf("configuration %v, want 5 servers", want)
	}
	for _, m := range c.Servers {
		if got := configuration(t, m); !slices.Equal(got, want) {
			t.Fatalf("%s has configuration %v, the leader %v", m.Name, got, want)
		}
	}
}

func serfHealth(s *servertest.Server, node string) (string, error) {
	chk, err := s.Store().CheckOf(node, catalog.SerfCheckID)
	if err != nil {
		return "", err
	}
	if chk == nil {
		return "", nil
	}
	return chk.Status, nil
}

// The leader registers every member with its serfHealth check, marks a
// failed one critical, and reaps it (catalog and Raft) after
// reconnect_timeout.
func TestMembershipReconcileAndReap(t *testing.T) {
	c := servertest.New(t, servertest.Options{Gossip: true, Configure: func(_ int, cfg *server.Config) {
		cfg.ReconnectTimeout = 2 * time.Second
		cfg.ReconcileInterval = 100 * time.Millisecond
		cfg.CleanupDeadServers = false
	}})
	leader := c.WaitForLeader(servertest.DefaultTimeout)
	wait.For(t, servertest.DefaultTimeout, func() error {
		for _, s := range c.Servers {
			if st, err := serfHealth(leader, s.Name); err != nil || st != catalog.HealthPassing {
				return fmt.Errorf("%s serfHealth %q, %v", s.Name, st, err)
			}
		}
		return nil
	})
	victim := c.Followers()[0]
	c.Stop(victim)
	wait.For(t, 30*time.Second, func() error {
		st, err := serfHealth(leader, victim.Name)
		if err != nil {
			return err
		}
		if st == catalog.HealthCritical || st == "" {
			return nil
		}
		return fmt.Errorf("serfHealth of the stopped server: %q", st)
	})
	wait.For(t, 30*time.Second, func() error {
		_, n, err := leader.Store().GetNode(nil, victim.Name)
		if err != nil {
			return err
		}
		if n != nil {
			return errors.New("failed node still in the catalog")
		}
		if peers, _ := leader.Peers(); len(peers) != 2 {
			return fmt.Errorf("peers %v, want the 2 live servers", peers)
		}
		return nil
	})
}

// Autopilot removes a voter failed past the stabilization time while
// enough voters remain.
func TestAutopilotRemovesDeadServer(t *testing.T) {
	c := servertest.New(t, servertest.Options{Servers: 4, Gossip: true, Configure: func(_ int, cfg *server.Config) {
		cfg.ReconcileInterval = 100 * time.Millisecond
		cfg.ServerStabilizationTime = 500 * time.Millisecond
		cfg.CleanupDeadServers = true
	}})
	leader := c.WaitForLeader(servertest.DefaultTimeout)
	victim := c.Followers()[0]
	c.Stop(victim)
	wait.For(t, 30*time.Second, func() error {
		peers, err := leader.Peers()
		if err != nil {
			return err
		}
		if slices.Contains(peers, victim.Addr) {
			return fmt.Errorf("dead server still a voter: %v", peers)
		}
		return nil
	})
	// Its node stays, critical, until reconnect_timeout.
	if st, err := serfHealth(leader, victim.Name); err != nil || st != catalog.HealthCritical {
		t.Fatalf("serfHealth of the removed server: %q, %v", st, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := leader.Apply(ctx, catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVSet, Entry: catalog.KVEntry{Key: "k"}}); err != nil {
		t.Fatalf("write after autopilot cleanup: %v", err)
	}
}
