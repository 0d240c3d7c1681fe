package agent_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/agent"
	"github.com/tribune-mesh/tribune/agent/agenttest"
	"github.com/tribune-mesh/tribune/agent/config"
	"github.com/tribune-mesh/tribune/test/wait"
)

func apiClient(t *testing.T, a *agent.Agent) *api.Client {
	t.Helper()
	c, err := api.NewClient(&api.Config{Address: a.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type node struct {
	cfg   *config.Config
	agent *agent.Agent
	api   *api.Client
}

func (n *node) stop(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = n.agent.Shutdown(ctx)
}

// startCluster starts servers (bootstrap_expect=servers) and clients, all
// joining the first server, and waits for a leader and every member.
func startCluster(t *testing.T, servers, clients int) (srvs, cls []*node) {
	t.Helper()
	return startClusterWith(t, servers, clients, nil)
}

// startClusterWith is startCluster with each configuration passed through
// modify (when not nil) before its agent starts.
func startClusterWith(t *testing.T, servers, clients int, modify func(*config.Config)) (srvs, cls []*node) {
	t.Helper()
	if modify == nil {
		modify = func(*config.Config) {}
	}
	var join string
	for i := 0; i < servers; i++ {
		c := agenttest.ClusterConfig(t, fmt.Sprintf("s%d", i+1), true, servers, join)
		if join == "" {
			join = agenttest.SerfAddr(c)
		}
		modify(c)
		a := agenttest.StartNoWait(t, c)
		srvs = append(srvs, &node{cfg: c, agent: a, api: apiClient(t, a)})
	}
	for i := 0; i < clients; i++ {
		c := agenttest.ClusterConfig(t, fmt.Sprintf("c%d", i+1), false, 0, join)
		modify(c)
		a := agenttest.StartNoWait(t, c)
		cls = append(cls, &node{cfg: c, agent: a, api: apiClient(t, a)})
	}
	wait.For(t, 30*time.Second, func() error {
		peers, err := srvs[0].api.Status().Peers()
		if err != nil {
			return err
		}
		if len(peers) != servers {
			return fmt.Errorf("peers %v", peers)
		}
		leader, err := srvs[0].api.Status().Leader()
		if err != nil || leader == "" {
			return fmt.Errorf("no leader (%v)", err)
		}
		return nil
	})
	wait.For(t, 30*time.Second, func() error {
		checks, _, err := srvs[0].api.Health().State(api.HealthPassing, nil)
		if err != nil {
			return err
		}
		n := 0
		for _, c := range checks {
			if c.CheckID == "serfHealth" {
				n++
			}
		}
		if n != servers+clients {
			return fmt.Errorf("%d passing serfHealth checks", n)
		}
		return nil
	})
	return srvs, cls
}

func leaderOf(t *testing.T, srvs []*node) *node {
	t.Helper()
	var leader string
	wait.For(t, 20*time.Second, func() error {
		for _, s := range srvs {
			l, err := s.api.Status().Leader()
			if err == nil && l != "" {
				leader = l
				return nil
			}
		}
		return fmt.Errorf("no leader")
	})
	for _, s := range srvs {
		if strings.HasSuffix(leader, fmt.Sprintf(":%d", s.cfg.Ports.Server)) {
			return s
		}
	}
	t.Fatalf("leader %s is none of the servers", leader)
	return nil
}

func TestClusterReplicationFailoverAndMembership(t *testing.T) {
	srvs, cls := startCluster(t, 3, 2)

	// A write through a client is readable from every server.
	if _, err := cls[0].api.KV().Put(&api.KVPair{Key: "k", Value: []byte("v1")}, nil); err != nil {
		t.Fatalf("put through client: %v", err)
	}
	for _, s := range srvs {
		wait.For(t, 5*time.Second, func() error {
			p, _, err := s.api.KV().Get("k", &api.QueryOptions{AllowStale: true})
			if err != nil || p == nil || string(p.Value) != "v1" {
				return fmt.Errorf("got %v, %v", p, err)
			}
			return nil
		})
	}
	// Default and consistent reads through a follower reach the leader.
	leader := leaderOf(t, srvs)
	var follower *node
	for _, s := range srvs {
		if s != leader {
			follower = s
			break
		}
	}
	for _, q := range []*api.QueryOptions{nil, {RequireConsistent: true}} {
		p, meta, err := follower.api.KV().Get("k", q)
		if err != nil || p == nil || string(p.Value) != "v1" || !meta.KnownLeader {
			t.Fatalf("read through follower %+v: %v %v %+v", q, p, err, meta)
		}
	}
	// A blocking query through a client wakes on a write.
	_, meta, err := cls[1].api.KV().Get("k", nil)
	if err != nil {
		t.Fatal(err)
	}
	woke := make(chan string, 1)
	go func() {
		p, _, err := cls[1].api.KV().Get("k", &api.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 20 * time.Second})
		if err != nil || p == nil {
			woke <- fmt.Sprintf("error %v", err)
			return
		}
		woke <- string(p.Value)
	}()
	time.Sleep(200 * time.Millisecond)
	if _, err := cls[0].api.KV().Put(&api.KVPair{Key: "k", Value: []byte("v2")}, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case v := <-woke:
		if v != "v2" {
			t.Fatalf("blocking query through client woke with %q", v)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("blocking query through client did not wake")
	}

	// The leader dies: a new one is elected and writes resume.
	leader.stop(t)
	start := time.Now()
	var rest []*node
	for _, s := range srvs {
		if s != leader {
			rest = append(rest, s)
		}
	}
	wait.For(t, 20*time.Second, func() error {
		_, err := cls[0].api.KV().Put(&api.KVPair{Key: "after", Value: []byte("x")}, nil)
		return err
	})
	t.Logf("leader stopped -> next write succeeded in %v", time.Since(start))
	if l := leaderOf(t, rest); l == leader {
		t.Fatal("the dead server is still the leader")
	}

	// A client dies: its serfHealth goes critical.
	cls[1].stop(t)
	wait.For(t, 20*time.Second, func() error {
		checks, _, err := rest[0].api.Health().Node("c2", &api.QueryOptions{AllowStale: true})
		if err != nil {
			return err
		}
		for _, c := range checks {
			if c.CheckID == "serfHealth" && c.Status == api.HealthCritical {
				return nil
			}
		}
		return fmt.Errorf("checks %v", checks)
	})

	// A client leaves gracefully: its node is removed from the catalog.
	if err := cls[0].api.Agent().Leave(); err != nil {
		t.Fatal(err)
	}
	cls[0].stop(t)
	wait.For(t, 20*time.Second, func() error {
		n, _, err := rest[0].api.Catalog().Node("c1", &api.QueryOptions{AllowStale: true})
		if err != nil {
			return err
		}
		if n != nil {
			ms, _ := rest[0].api.Agent().Members(false)
			var st []string
			for _, m := range ms {
				st = append(st, fmt.Sprintf("%s=%d", m.Name, m.Status))
			}
			return fmt.Errorf("c1 still registered; members %v", st)
		}
		return nil
	})

	// Two of three servers down: writes fail cleanly within the hold
	// timeout, stale reads still answer.
	rest[0].stop(t)
	last := rest[1]
	// The survivor steps down once its leader lease runs out; a write in
	// that window may report the lost leadership instead.
	wait.For(t, 10*time.Second, func() error {
		l, err := last.api.Status().Leader()
		if err != nil || l != "" {
			return fmt.Errorf("leader %q, %v", l, err)
		}
		return nil
	})
	begin := time.Now()
	_, err = last.api.KV().Put(&api.KVPair{Key: "minority", Value: []byte("x")}, nil)
	if err == nil || !strings.Contains(err.Error(), "No cluster leader") {
		t.Fatalf("write without quorum: %v", err)
	}
	if d := time.Since(begin); d > 15*time.Second {
		t.Fatalf("write without quorum took %v", d)
	}
	p, _, err := last.api.KV().Get("after", &api.QueryOptions{AllowStale: true})
	if err != nil || p == nil || string(p.Value) != "x" {
		t.Fatalf("stale read on the minority: %v %v", p, err)
	}
}

func TestAutopilotRemovesDeadServer(t *testing.T) {
	if testing.Short() {
		t.Skip("five servers")
	}
	var srvs []*node
	var join string
	for i := 0; i < 5; i++ {
		c := agenttest.ClusterConfig(t, fmt.Sprintf("s%d", i+1), true, 5, join)
		c.Autopilot.ServerStabilizationTime = time.Second
		if join == "" {
			join = agenttest.SerfAddr(c)
		}
		a := agenttest.StartNoWait(t, c)
		srvs = append(srvs, &node{cfg: c, agent: a, api: apiClient(t, a)})
	}
	wait.For(t, 30*time.Second, func() error {
		peers, err := srvs[0].api.Status().Peers()
		if err != nil || len(peers) != 5 {
			return fmt.Errorf("peers %v %v", peers, err)
		}
		return nil
	})
	// A follower dies: after the stabilization time it leaves the Raft
	// configuration, and the remaining four keep a quorum of three.
	leader := leaderOf(t, srvs)
	var victim *node
	for _, s := range srvs {
		if s != leader {
			victim = s
			break
		}
	}
	victim.stop(t)
	wait.For(t, 40*time.Second, func() error {
		peers, err := leader.api.Status().Peers()
		if err != nil {
			return err
		}
		for _, p := range peers {
			if strings.HasSuffix(p, fmt.Sprintf(":%d", victim.cfg.Ports.Server)) {
				return fmt.Errorf("still a peer: %v", peers)
			}
		}
		if len(peers) != 4 {
			return fmt.Errorf("peers %v", peers)
		}
		return nil
	})
	if _, err := leader.api.KV().Put(&api.KVPair{Key: "after", Value: []byte("1")}, nil); err != nil {
		t.Fatalf("write after removing the dead server: %v", err)
	}
}

func TestNetworkCoordinatesAndNear(t *testing.T) {
	srvs, cls := startCluster(t, 1, 2)
	wait.For(t, 30*time.Second, func() error {
		coords, _, err := srvs[0].api.Coordinate().Nodes(nil)
		if err != nil {
			return err
		}
		if len(coords) != 3 {
			return fmt.Errorf("%d coordinates", len(coords))
		}
		for _, c := range coords {
			if c.Coord == nil || len(c.Coord.Vec) == 0 {
				return fmt.Errorf("empty coordinate for %s", c.Node)
			}
		}
		return nil
	})
	for _, n := range append(srvs, cls...) {
		nodes, _, err := n.api.Catalog().Nodes(&api.QueryOptions{Near: "_agent"})
		if err != nil {
			t.Fatal(err)
		}
		if len(nodes) != 3 || nodes[0].Node != n.cfg.NodeName {
			t.Fatalf("near=_agent on %s: first node %v", n.cfg.NodeName, nodes)
		}
	}
	// A node's coordinate leaves with the node.
	if _, err := srvs[0].api.Catalog().Deregister(&api.CatalogDeregistration{Node: "c2"}, nil); err != nil {
		t.Fatal(err)
	}
	coords, _, err := srvs[0].api.Coordinate().Node("c2", nil)
	if err == nil && len(coords) > 0 {
		t.Fatalf("coordinate of a deregistered node: %v", coords)
	}
}

// Force-leave as the official client sends it: the agent's own name and an
// unknown name answer 200 with nothing to do (as Consul does); a failed
// client is marked left, and with ?prune it is gone from the member list.
func TestForceLeaveOwnUnknownAndPrune(t *testing.T) {
	srvs, cls := startCluster(t, 1, 2)
	c := srvs[0].api
	if err := c.Agent().ForceLeave(srvs[0].cfg.NodeName); err != nil {
		t.Fatalf("force-leave of the agent's own name: %v", err)
	}
	if err := c.Agent().ForceLeaveOptions("no-such-node", api.ForceLeaveOpts{Prune: true}, nil); err != nil {
		t.Fatalf("force-leave of an unknown name: %v", err)
	}
	memberStatus := func(name string) (int, bool) {
		members, err := c.Agent().Members(false)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range members {
			if m.Name == name {
				return m.Status, true
			}
		}
		return 0, false
	}
	if st, ok := memberStatus(srvs[0].cfg.NodeName); !ok || st != 1 {
		t.Fatalf("the server after force-leaving itself: status %d, present %v", st, ok)
	}
	for _, cl := range cls {
		cl.stop(t)
	}
	for _, cl := range cls {
		name := cl.cfg.NodeName
		wait.For(t, 30*time.Second, func() error {
			if st, _ := memberStatus(name); st == 1 {
				return fmt.Errorf("%s still alive", name)
			}
			return nil
		})
	}
	left, pruned := cls[0].cfg.NodeName, cls[1].cfg.NodeName
	if err := c.Agent().ForceLeave(left); err != nil {
		t.Fatal(err)
	}
	if err := c.Agent().ForceLeavePrune(pruned); err != nil {
		t.Fatal(err)
	}
	if st, ok := memberStatus(left); !ok || st != 3 /* serf StatusLeft */ {
		t.Fatalf("force-left %s: status %d, present %v", left, st, ok)
	}
	if _, ok := memberStatus(pruned); ok {
		t.Fatalf("pruned %s still listed", pruned)
	}
}

// /v1/agent/leave answers once the agent has left the gossip pool: the
// server lists it as left at once, as the official client's test expects.
func TestAgentLeaveIsSeenWhenItAnswers(t *testing.T) {
	srvs, cls := startCluster(t, 1, 1)
	if err := cls[0].api.Agent().Leave(); err != nil && !strings.Contains(err.Error(), "EOF") {
		t.Fatal(err)
	}
	members, err := srvs[0].api.Agent().Members(false)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range members {
		if m.Name == cls[0].cfg.NodeName && m.Status != 3 /* serf StatusLeft */ {
			t.Fatalf("client right after its leave: status %d", m.Status)
		}
	}
}
