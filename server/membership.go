package server

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	metrics "github.com/armon/go-metrics"
	"github.com/hashicorp/raft"

	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/clock"
	"github.com/tribune-mesh/tribune/gossip"
)

// DefaultReconcileInterval is how often the leader compares every gossip
// member with the catalog, besides reacting to each membership event.
const DefaultReconcileInterval = 5 * time.Second

// memberLoop consumes gossip events: it passes them to the leader's
// reconcile routine and drives bootstrap_expect.
func (s *Server) memberLoop() {
	defer s.wg.Done()
	events := s.config.Gossip.Events()
	// bootstrap_expect is retried every second as well as on gossip
	// events: a peer that could not be asked yet (its RPC not served yet)
	// would otherwise stall bootstrapping until the next membership change.
	var retry <-chan time.Time
	if s.config.BootstrapExpect > 0 {
		t := s.clock.NewTicker(time.Second)
		defer t.Stop()
		retry = t.C()
	}
	for {
		select {
		case <-s.shutdownCh:
			return
		case <-retry:
			if s.bootstrapped.Load() || s.raft.LastIndex() > 0 {
				retry = nil
				continue
			}
			s.maybeBootstrap()
		case ev := <-events:
			if s.config.BootstrapExpect > 0 && ev.Member.IsServer() {
				s.maybeBootstrap()
			}
			select {
			case s.reconcileCh <- ev.Member:
			default:
				// The periodic full reconcile catches up.
			}
		}
	}
}

// maybeBootstrap bootstraps Raft once bootstrap_expect servers of this
// datacenter are seen and none of them already has Raft state or a leader,
// so that two clusters are never formed.
func (s *Server) maybeBootstrap() {
	if s.bootstrapped.Load() || s.raft.LastIndex() > 0 {
		return
	}
	var servers []gossip.Member
	for _, m := range s.config.Gossip.Members() {
		if m.Status != gossip.StatusAlive || !m.IsServer() || m.Tags["dc"] != s.config.Datacenter {
			continue
		}
		if m.Tags["expect"] != strconv.Itoa(s.config.BootstrapExpect) {
			if m.Tags["expect"] != "" {
				s.logger.Error("member has a different bootstrap_expect; not bootstrapping", "member", m.Name, "expect", m.Tags["expect"])
				return
			}
			continue
		}
		servers = append(servers, m)
	}
	self := s.config.Gossip.LocalMember()
	found := false
	for _, m := range servers {
		if m.Name == self.Name {
			found = true
		}
	}
	if !found {
		servers = append(servers, self)
	}
	if len(servers) < s.config.BootstrapExpect {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, m := range servers {
		if m.Name == s.config.NodeName {
			continue
		}
		var st StatusResponse
		if err := s.pool.call(ctx, m.ServerAddr(), "Status", &StatusRequest{}, &st); err != nil {
			s.logger.Debug("bootstrap: cannot ask server, waiting", "server", m.Name, "error", err)
			return
		}
		if st.Leader != "" || st.LastIndex > 0 {
			s.logger.Info("bootstrap: existing cluster found, waiting to be added", "server", m.Name, "leader", st.Leader)
			s.bootstrapped.Store(true)
			return
		}
	}
	var conf raft.Configuration
	for _, m := range servers {
		conf.Servers = append(conf.Servers, raft.Server{ID: raft.ServerID(m.Tags["id"]), Address: raft.ServerAddress(m.ServerAddr()), Suffrage: raft.Voter})
	}
	if err := s.raft.BootstrapCluster(conf).Error(); err != nil && err != raft.ErrCantBootstrap {
		s.logger.Error("bootstrap failed", "error", err)
		return
	}
	s.bootstrapped.Store(true)
	s.logger.Info("bootstrapped cluster", "servers", len(conf.Servers))
}

// reconcileLoop is the leader's membership routine: it turns gossip members
// into catalog nodes with a serfHealth check and servers into Raft peers.
func (s *Server) reconcileLoop(ctx context.Context) {

	t := s.clock.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
			start := time.Now()
			s.reconcileAll(ctx)
			metrics.MeasureSince([]string{"leader", "reconcile"}, start)
			s.emitAutopilot()
			t.Reset(s.config.ReconcileInterval)
		case m := <-s.reconcileCh:
			if err := s.reconcileMember(ctx, m); err != nil && ctx.Err() == nil {
				s.logger.Warn("reconcile member", "member", m.Name, "error", err)
			}
		}
	}
}

func (s *Server) reconcileAll(ctx context.Context) {
	members := map[string]gossip.Member{}
	if s.config.Gossip != nil {
		for _, m := range s.config.Gossip.Members() {
			members[m.Name] = m
		}
		self := s.config.Gossip.LocalMember()
		members[self.Name] = self
	} else {
		if err := s.reconcileSelf(ctx); err != nil {
			s.logger.Warn("reconcile self", "error", err)
		}
		return
	}
	for _, m := range members {
		if err := s.reconcileMember(ctx, m); err != nil {
			if ctx.Err() == nil {
				s.logger.Warn("reconcile member", "member", m.Name, "error", err)
			}
		}
	}
	s.cleanupDeadServers(members)
	// Gossip forgets members in time; so do we.
	s.failed.retain(func(name string) bool { _, ok := members[name]; return ok })
	// Reap catalog nodes that gossip no longer knows, or that failed
	// longer ago than reconnect_timeout.
	_, nodes, err := s.store.Nodes(nil)
	if err != nil {
		return
	}
	for _, n := range nodes {
		chk, _ := s.store.CheckOf(n.Node, catalog.SerfCheckID)
		if chk == nil {
			continue // registered through the catalog API, not by gossip
		}
		m, known := members[n.Node]
		reap := !known
		if known && m.Status == gossip.StatusFailed {
			since := s.failed.since(m.Name)
			reap = !since.IsZero() && s.clock.Since(since) > s.config.ReconnectTimeout
		}
		if reap {
			s.logger.Info("reaping node", "node", n.Node)
			if err := s.applyErr(ctx, catalog.CmdDeregister, &catalog.DeregisterRequest{Node: n.Node}); err != nil {
				s.logger.Warn("reap node", "node", n.Node, "error", err)
			} else {
				s.failed.forget(n.Node)
			}
			if known && m.IsServer() {
				s.removeRaftPeer(m)
			}
		}
	}
}

// cleanupDeadServers is autopilot's cleanup_dead_servers: a voter whose
// member has been failed longer than the stabilization time is removed from
// the Raft configuration, as long as at least min_quorum (and never fewer
// than three) voters remain, so the cluster keeps its fault tolerance.
func (s *Server) cleanupDeadServers(members map[string]gossip.Member) {
	cleanup, stabilization, minQuorum := s.autopilotSettings()
	if !cleanup {
		return
	}
	f := s.raft.GetConfiguration()
	if f.Error() != nil {
		return
	}
	byID := map[string]gossip.Member{}
	for _, m := range members {
		byID[m.Tags["id"]] = m
	}
	voters := 0
	var dead []raft.Server
	for _, srv := range f.Configuration().Servers {
		if srv.Suffrage != raft.Voter {
			continue
		}
		voters++
		m, ok := byID[string(srv.ID)]
		if !ok || m.Status != gossip.StatusFailed {
			continue
		}
		if since := s.failed.since(m.Name); !since.IsZero() && s.clock.Since(since) > stabilization {
			dead = append(dead, srv)
		}
	}
	floor := max(3, minQuorum)
	for _, srv := range dead {
		if voters-1 < floor {
			return
		}
		if err := s.raft.RemoveServer(srv.ID, 0, 0).Error(); err != nil {
			s.logger.Warn("autopilot: remove dead server", "id", srv.ID, "error", err)
			return
		}
		voters--
		s.logger.Info("autopilot: removed dead server", "id", srv.ID, "address", srv.Address)
	}
}

// reconcileMember brings one member's catalog entry and Raft membership in
// line with its gossip status.
func (s *Server) reconcileMember(ctx context.Context, m gossip.Member) error {
	if dc := m.Tags["dc"]; dc != "" && dc != s.config.Datacenter {
		return nil
	}
	s.failed.observe(m.Name, m.Status == gossip.StatusFailed)
	switch m.Status {
	case gossip.StatusAlive:
		if m.IsServer() {
			s.addRaftPeer(m)
		}
		return s.ensureSerfHealth(ctx, m, catalog.HealthPassing, "Agent alive and reachable")
	case gossip.StatusFailed:
		return s.ensureSerfHealth(ctx, m, catalog.HealthCritical, "Agent not live or unreachable")
	case gossip.StatusLeft:
		if m.IsServer() {
			s.removeRaftPeer(m)
		}
		_, node, _ := s.store.GetNode(nil, m.Name)
		if node == nil {
			return nil
		}
		s.logger.Info("member left, deregistering its node", "node", m.Name)
		return s.applyErr(ctx, catalog.CmdDeregister, &catalog.DeregisterRequest{Node: m.Name})
	}
	return nil
}

func (s *Server) ensureSerfHealth(ctx context.Context, m gossip.Member, status, output string) error {
	addr := m.Addr.String()
	_, node, _ := s.store.GetNode(nil, m.Name)
	chk, _ := s.store.CheckOf(m.Name, catalog.SerfCheckID)
	var svc *catalog.Service
	if m.IsServer() {
		// Servers appear as the "consul" service, as Consul's do, so
		// consul.service.<domain> finds them.
		port, _ := strconv.Atoi(m.Tags["port"])
		svc = &catalog.Service{ID: ServerServiceName, Service: ServerServiceName, Port: port,
			Tags: []string{}, Meta: map[string]string{}, Weights: catalog.Weights{Passing: 1, Warning: 1}}
	}
	if node != nil && node.Address == addr && chk != nil && chk.Status == status && (svc == nil || s.hasServerService(m.Name, svc.Port)) {
		return nil
	}
	req := &catalog.RegisterRequest{
		ID: m.Tags["id"], Node: m.Name, Address: addr, Datacenter: s.config.Datacenter,
		Check: &catalog.HealthCheck{Node: m.Name, CheckID: catalog.SerfCheckID, Name: "Serf Health Status",
			Status: status, Output: output},
		Service: svc,
	}
	if node != nil {
		// Keep what the agent registered (meta, tagged addresses).
		req.TaggedAddresses, req.NodeMeta = node.TaggedAddresses, node.Meta
		if node.ID != "" {
			req.ID = node.ID
		}
	} else {
		// The agent may register its node (with its meta and tagged
		// addresses) between this read and the apply: create the node
		// only if it is still missing then, rather than overwrite it.
		req.SkipNodeUpdate = true
	}
	return s.applyErr(ctx, catalog.CmdRegister, req)
}

// ServerServiceName is the service every server is registered as.
const ServerServiceName = "consul"

func (s *Server) hasServerService(node string, port int) bool {
	_, ns, err := s.store.NodeServices(nil, node)
	if err != nil || ns == nil {
		return false
	}
	for _, sv := range ns.Services {
		if sv.ID == ServerServiceName && sv.Port == port {
			return true
		}
	}
	return false
}

func (s *Server) applyErr(ctx context.Context, t catalog.CommandType, body any) error {
	res, err := s.Apply(ctx, t, body)
	if err != nil {
		return err
	}
	if e, ok := res.(error); ok && e != nil {
		return e
	}
	return nil
}

func (s *Server) addRaftPeer(m gossip.Member) {
	id := raft.ServerID(m.Tags["id"])
	addr := raft.ServerAddress(m.ServerAddr())
	if id == "" || m.Tags["port"] == "" {
		return
	}
	f := s.raft.GetConfiguration()
	if f.Error() != nil {
		return
	}
	for _, srv := range f.Configuration().Servers {
		if srv.ID == id && srv.Address == addr {
			return
		}
		if srv.Address == addr && srv.ID != id {
			// The same address with a new ID: a server that lost its
			// data directory. Replace the old entry.
			_ = s.raft.RemoveServer(srv.ID, 0, 0).Error()
		}
	}
	var err error
	if m.Tags["read_replica"] == "1" {
		err = s.raft.AddNonvoter(id, addr, 0, 0).Error()
	} else {
		err = s.raft.AddVoter(id, addr, 0, 0).Error()
	}
	if err != nil {
		s.logger.Warn("add raft peer", "server", m.Name, "error", err)
		return
	}
	s.logger.Info("added raft peer", "server", m.Name, "addr", addr)
}

func (s *Server) removeRaftPeer(m gossip.Member) {
	id := raft.ServerID(m.Tags["id"])
	f := s.raft.GetConfiguration()
	if f.Error() != nil {
		return
	}
	for _, srv := range f.Configuration().Servers {
		if srv.ID == id && string(id) != s.config.NodeID {
			if err := s.raft.RemoveServer(id, 0, 0).Error(); err != nil {
				s.logger.Warn("remove raft peer", "server", m.Name, "error", err)
				return
			}
			s.logger.Info("removed raft peer", "server", m.Name)
		}
	}
}

// RemovePeer removes a server from the Raft configuration by address or ID
// (operator raft remove-peer).
func (s *Server) RemovePeer(idOrAddr string) error {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return fmt.Errorf("raft configuration: %w", err)
	}
	for _, srv := range f.Configuration().Servers {
		if string(srv.ID) == idOrAddr || string(srv.Address) == idOrAddr {
			if err := s.raft.RemoveServer(srv.ID, 0, 0).Error(); err != nil {
				return fmt.Errorf("remove peer: %w", err)
			}
			return nil
		}
	}
	return fmt.Errorf("%w: id or address %q was not found in the Raft configuration", catalog.ErrInvalidRequest, idOrAddr)
}

// failedMembers remembers since when each failed member has been failed,
// for reaping (reconnect_timeout) and autopilot (server stabilization).
// Entries go when the member recovers, is reaped, or is forgotten by gossip,
// so the map never holds more than the failed members gossip knows.
// Safe for concurrent use.
type failedMembers struct {
	clock clock.Clock

	mu sync.Mutex
	at map[string]time.Time
}

func newFailedMembers(c clock.Clock) *failedMembers {
	return &failedMembers{clock: c, at: map[string]time.Time{}}
}

// observe records a member's state: the first time it is seen failed, or
// that it is no longer failed.
func (f *failedMembers) observe(name string, failed bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !failed {
		delete(f.at, name)
		return
	}
	if _, ok := f.at[name]; !ok {
		f.at[name] = f.clock.Now()
	}
}

// since returns when name was first seen failed; zero when it is not.
func (f *failedMembers) since(name string) time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.at[name]
}

// forget drops name (its node was reaped).
func (f *failedMembers) forget(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.at, name)
}

// retain drops every member for which keep returns false.
func (f *failedMembers) retain(keep func(name string) bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for name := range f.at {
		if !keep(name) {
			delete(f.at, name)
		}
	}
}

// len returns how many failed members are remembered.
func (f *failedMembers) len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.at)
}
