package server

import (
	"context"
	"sync"

	"github.com/tribune-mesh/tribune/catalog"
)

// monitorLeadership runs the leader-only routines while this server leads and
// stops them when it loses leadership; every change of leader restarts them.
func (s *Server) monitorLeadership() {
	defer s.wg.Done()
	defer close(s.leaderStopped)
	stop := func() {}
	defer func() { stop() }()
	for {
		select {
		case <-s.shutdownCh:
			return
		case isLeader := <-s.raft.LeaderCh():
			stop()
			stop = func() {}
			s.leaderReady.Store(false)
			if isLeader {
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan struct{})
				go func() {
					defer close(done)
					s.leaderLoop(ctx)
				}()
				stop = func() { cancel(); <-done }
			}
		}
	}
}

// leaderLoop runs while this server leads: the membership reconcile and the
// session TTL timers. It returns once ctx ends and both have stopped.
func (s *Server) leaderLoop(ctx context.Context) {
	// Like a barrier, but one that stops with ctx (a Raft barrier future is
	// never answered once Raft shuts down): reads wait until the FSM holds
	// the whole log this leader inherited.
	if err := s.waitCaughtUp(ctx, s.raft.LastIndex()); err != nil {
		return
	}
	s.leaderReady.Store(true)
	defer s.leaderReady.Store(false)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.sessionTTL.run(ctx)
	}()
	// Each leader routine runs on its own: the ACL token reaper runs
	// until leadership ends, and must not hold up the CA.
	for _, routine := range []func(context.Context){s.aclLeader, s.leaderConnect, s.replicationLeader} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			routine(ctx)
		}()
	}
	s.reconcileLoop(ctx)
	wg.Wait()
}

func (s *Server) reconcileSelf(ctx context.Context) error {
	host := s.config.AdvertiseAddr
	if h, _, err := splitHostPort(host); err == nil {
		host = h
	}
	req := &catalog.RegisterRequest{
		ID:         s.config.NodeID,
		Node:       s.config.NodeName,
		Address:    host,
		Datacenter: s.config.Datacenter,
		Check: &catalog.HealthCheck{
			Node: s.config.NodeName, CheckID: catalog.SerfCheckID, Name: "Serf Health Status",
			Status: catalog.HealthPassing, Output: "Agent alive and reachable", Type: "",
		},
		SkipNodeUpdate: true,
	}
	n, err := s.store.CheckOf(s.config.NodeName, catalog.SerfCheckID)
	if err == nil && n != nil && n.Status == catalog.HealthPassing {
		return nil
	}
	resp, err := s.Apply(ctx, catalog.CmdRegister, req)
	if err != nil {
		return err
	}
	if e, ok := resp.(error); ok && e != nil {
		return e
	}
	return nil
}
