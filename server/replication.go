package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	metrics "github.com/armon/go-metrics"
	"github.com/hashicorp/go-memdb"

	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/federation"
)

// One writer for global state. The primary datacenter's leader is the only
// writer of ACL policies, roles and global tokens, and of config entries
// (service-intentions included): a secondary forwards such a write to the
// primary and never applies it itself, and its leader keeps a read-only
// replica with blocking queries against the primary, applying the
// differences through its own Raft log. The loops restart with every
// leadership change (they run in leaderLoop) and wake when a server of
// another datacenter joins the WAN pool.

// Replication pacing, defined here only.
const (
	// DefaultReplicationMinInterval bounds how often one replication loop
	// asks the primary.
	DefaultReplicationMinInterval = 10 * time.Millisecond
	// replicationMinBackoff and replicationMaxBackoff pace the retries of
	// a failing loop; the maximum stays under a second so that a loop
	// that failed before the WAN join runs within a second of it.
	replicationMinBackoff = 50 * time.Millisecond
	replicationMaxBackoff = 800 * time.Millisecond
	// replicationWait is the wait of each blocking query on the primary.
	replicationWait = 30 * time.Second
)

// replicatedKey marks the context of a replication loop's writes: they are
// applied locally even though they are global state.
type replicatedKey struct{}

// PrimaryDatacenter returns the primary datacenter's name.
func (s *Server) PrimaryDatacenter() string {
	if s.config.PrimaryDatacenter == "" {
		return s.config.Datacenter
	}
	return s.config.PrimaryDatacenter
}

// secondary reports whether this server's datacenter is not the primary.
func (s *Server) secondary() bool { return s.PrimaryDatacenter() != s.config.Datacenter }

func (s *Server) setupFederation() {
	s.replication = newReplicationState()
	if s.config.WAN == nil {
		return
	}
	wan := s.config.WAN
	s.router = federation.New(federation.Config{
		Datacenter: s.config.Datacenter, Members: wan.Members, Coordinates: wan.Coordinates, Clock: s.clock,
	})
}

// applyTarget returns the datacenter a write must be applied in, "" for
// this one: the datacenter its context names, or the primary for a write
// of global state arriving in a secondary.
func (s *Server) applyTarget(ctx context.Context, cmd *catalog.Command) string {
	if dc := datacenterOf(ctx); s.remoteDC(dc) {
		return dc
	}
	if !s.secondary() || ctx.Value(replicatedKey{}) != nil || !s.globalWrite(cmd) {
		return ""
	}
	return s.PrimaryDatacenter()
}

// globalWrite reports whether cmd writes global state. The built-in policy
// and anonymous token a leader creates when they are missing are created
// locally (the same everywhere); changing them is a global write.
func (s *Server) globalWrite(cmd *catalog.Command) bool {
	switch cmd.Type {
	case catalog.CmdACLPolicySet:
		if cmd.ACLPolicy.ID == catalog.ACLGlobalManagementPolicyID {
			_, p, err := s.store.ACLPolicyGet(nil, cmd.ACLPolicy.ID, false)
			return err != nil || p != nil
		}
		return true
	case catalog.CmdACLTokenSet:
		if cmd.ACLToken.Local {
			return false
		}
		if cmd.ACLToken.AccessorID == catalog.ACLAnonymousTokenID {
			_, t, err := s.store.ACLTokenGet(nil, cmd.ACLToken.AccessorID, false)
			return err != nil || t != nil
		}
		return true
	case catalog.CmdACLTokenDelete:
		_, t, err := s.store.ACLTokenGet(nil, cmd.ACLDelete.ID, false)
		return err != nil || t == nil || !t.Local
	case catalog.CmdACLPolicyDelete, catalog.CmdACLRoleSet, catalog.CmdACLRoleDelete,
		catalog.CmdACLBootstrap, catalog.CmdConfigEntry:
		return true
	}
	return false
}

// applyElsewhere commits a write in datacenter dc. A write of global state
// forwarded from a secondary to the primary returns once this server's
// replica holds it too (bounded by the hold timeout), so that the caller
// reads back what it wrote, as it would in the primary.
func (s *Server) applyElsewhere(ctx context.Context, dc string, buf []byte, cmd *catalog.Command) (any, error) {
	res, err := s.applyDC(ctx, dc, buf)
	if err != nil || dc != s.PrimaryDatacenter() || applyOK(res, nil) != nil {
		return res, err
	}
	op, id, want := s.replicaOf(cmd)
	if op == "" {
		return res, nil
	}
	s.wakeReplication()
	wctx, cancel := context.WithTimeout(ctx, s.config.HoldTimeout)
	defer cancel()
	for _, k := range s.replicatedKinds() {
		if k.read != op {
			continue
		}
		for {
			ws := memdb.NewWatchSet()
			_, local, err := s.store.Execute(ws, &catalog.ReadRequest{Op: op})
			if err != nil {
				return res, nil
			}
			have, _, err := k.items(local)
			if err != nil {
				return res, nil
			}
			got, ok := have[id]
			if (want == nil && !ok) || (want != nil && ok && (len(want) == 0 || string(got) == string(want))) {
				return res, nil
			}
			if ws.WatchCtx(wctx) != nil {
				s.logger.Debug("write forwarded to the primary is not in the replica yet", "op", op, "id", id)
				return res, nil
			}
		}
	}
	return res, nil
}

// replicaOf says how a global write shows in the replica: the kind's read,
// the item's ID, and its comparable JSON (nil for a deletion, empty when its
// presence is enough: the FSM completes a token). The read is empty for
// writes that are not replicated here.
func (s *Server) replicaOf(cmd *catalog.Command) (catalog.ReadOp, string, []byte) {
	bare := func(v any) []byte {
		b, _ := json.Marshal(v)
		return b
	}
	switch cmd.Type {
	case catalog.CmdACLPolicySet:
		p := *cmd.ACLPolicy
		p.RaftIndex = catalog.RaftIndex{}
		return catalog.ReadACLPolicies, p.ID, bare(&p)
	case catalog.CmdACLPolicyDelete:
		return catalog.ReadACLPolicies, cmd.ACLDelete.ID, nil
	case catalog.CmdACLRoleSet:
		r := *cmd.ACLRole
		r.RaftIndex = catalog.RaftIndex{}
		return catalog.ReadACLRoles, r.ID, bare(&r)
	case catalog.CmdACLRoleDelete:
		return catalog.ReadACLRoles, cmd.ACLDelete.ID, nil
	case catalog.CmdACLTokenSet:
		if s.config.ACLTokenReplication {
			return catalog.ReadACLTokens, cmd.ACLToken.AccessorID, []byte{}
		}
	case catalog.CmdACLTokenDelete:
		if s.config.ACLTokenReplication {
			return catalog.ReadACLTokens, cmd.ACLDelete.ID, nil
		}
	case catalog.CmdConfigEntry:
		e := cmd.ConfigEntry.Entry
		id := e.Kind + "/" + e.Name
		switch cmd.ConfigEntry.Op {
		case catalog.ConfigEntryDelete, catalog.ConfigEntryDeleteCAS:
			return catalog.ReadConfigEntries, id, nil
		}
		e.RaftIndex = catalog.RaftIndex{}
		return catalog.ReadConfigEntries, id, bare(&e)
	}
	return "", "", nil
}

// resolveInPrimary reports whether a token resolution must be answered by
// the primary: in a secondary without token replication, a token that is
// not one of this datacenter's own (a local token, or the anonymous one)
// exists only in the primary.
func (s *Server) resolveInPrimary(req *catalog.ReadRequest) bool {
	if req.Op != catalog.ReadACLResolve || req.Options.Datacenter != "" || !s.secondary() ||
		s.config.ACLTokenReplication || s.router == nil {
		return false
	}
	if _, t, err := s.store.ACLTokenGet(nil, req.Name, true); err != nil || t != nil {
		return false
	}
	return true
}

// ReplicationStatus is GET /v1/acl/replication's answer, with Consul's
// fields.
type ReplicationStatus struct {
	Enabled              bool
	Running              bool
	SourceDatacenter     string
	ReplicationType      string
	ReplicatedIndex      uint64
	ReplicatedRoleIndex  uint64
	ReplicatedTokenIndex uint64
	LastSuccess          time.Time
	LastError            time.Time
	LastErrorMessage     string
	// ReplicatedConfigIndex is the primary's config entries index last
	// replicated (a Tribune addition).
	ReplicatedConfigIndex uint64 `json:",omitempty"`
	// LagMilliseconds is how long the last round that changed something
	// took from the primary's answer to the change applied here (a
	// Tribune addition; also the leader.replication.<kind>.lag metric).
	LagMilliseconds float64 `json:",omitempty"`
}

// replicationState is what the loops report, and how to wake them.
type replicationState struct {
	mu     sync.Mutex
	status ReplicationStatus
	// wake is closed (and replaced) to wake every loop at once.
	wake chan struct{}
	// running counts the loops running.
	running int
}

func newReplicationState() *replicationState {
	return &replicationState{wake: make(chan struct{})}
}

func (r *replicationState) wakeCh() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.wake
}

// wakeReplication makes every replication loop waiting out a backoff try
// again now.
func (s *Server) wakeReplication() {
	r := s.replication
	r.mu.Lock()
	defer r.mu.Unlock()
	close(r.wake)
	r.wake = make(chan struct{})
}

// ReplicationStatus returns the state of ACL replication in this
// datacenter, as its leader knows it (asked over the RPC from a follower).
func (s *Server) ReplicationStatus(ctx context.Context) (ReplicationStatus, error) {
	leader := s.Leader()
	if s.IsLeader() || leader == "" {
		return s.localReplicationStatus(), nil
	}
	var resp ReplicationStatus
	if err := s.pool.call(ctx, leader, "ReplicationStatus", &ReplicationStatusRequest{FromServer: true}, &resp); err != nil {
		return ReplicationStatus{}, err
	}
	return resp, nil
}

// ReplicationStatusRequest asks a server for the replication status.
type ReplicationStatusRequest struct {
	// FromServer marks a request a server forwarded to its leader: it is
	// answered there, never forwarded again.
	FromServer bool `json:",omitempty"`
}

func (s *Server) rpcReplicationStatus(ctx context.Context, req *ReplicationStatusRequest) (*ReplicationStatus, error) {
	if req.FromServer {
		st := s.localReplicationStatus()
		return &st, nil
	}
	st, err := s.ReplicationStatus(ctx)
	if err != nil {
		return nil, err
	}
	return &st, nil
}

// ReplicationStatus asks the servers for the replication status.
func (c *Client) ReplicationStatus(ctx context.Context) (ReplicationStatus, error) {
	var resp ReplicationStatus
	err := c.invoke(ctx, "ReplicationStatus", &ReplicationStatusRequest{}, &resp, func() error { return nil })
	return resp, err
}

// localReplicationStatus is this server's own replication state.
func (s *Server) localReplicationStatus() ReplicationStatus {
	r := s.replication
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.status
	st.Enabled = s.secondary() && s.config.ACL.Enabled
	st.Running = r.running > 0 && s.IsLeader()
	if st.Enabled {
		st.SourceDatacenter = s.PrimaryDatacenter()
		st.ReplicationType = "policies"
		if s.config.ACLTokenReplication {
			st.ReplicationType = "tokens"
		}
	}
	return st
}

// replicated describes one kind of global state a secondary replicates.
type replicated struct {
	name string
	read catalog.ReadOp
	// items lists a read's items by ID, as comparable JSON without their
	// Raft indexes; keep selects the ones replicated.
	items func(*catalog.ReadResponse) (map[string][]byte, map[string]any, error)
	// set and del build the commands that write one item.
	set func(item any) (catalog.CommandType, any)
	del func(id string) (catalog.CommandType, any)
	// record stores the replicated index in the status.
	record func(st *ReplicationStatus, idx uint64)
}

// itemsOf indexes a list by ID, each with its JSON minus Raft indexes.
func itemsOf[T any](list []T, id func(T) string, keep func(T) bool, bare func(T) T) (map[string][]byte, map[string]any, error) {
	enc := make(map[string][]byte, len(list))
	raw := make(map[string]any, len(list))
	for _, it := range list {
		if keep != nil && !keep(it) {
			continue
		}
		b, err := json.Marshal(bare(it))
		if err != nil {
			return nil, nil, fmt.Errorf("encode replicated item: %w", err)
		}
		enc[id(it)] = b
		raw[id(it)] = it
	}
	return enc, raw, nil
}

func (s *Server) replicatedKinds() []*replicated {
	kinds := []*replicated{{
		name: "policies", read: catalog.ReadACLPolicies,
		items: func(r *catalog.ReadResponse) (map[string][]byte, map[string]any, error) {
			return itemsOf(r.ACLPolicies, func(p *catalog.ACLPolicy) string { return p.ID }, nil,
				func(p *catalog.ACLPolicy) *catalog.ACLPolicy { c := *p; c.RaftIndex = catalog.RaftIndex{}; return &c })
		},
		set: func(it any) (catalog.CommandType, any) { return catalog.CmdACLPolicySet, it },
		del: func(id string) (catalog.CommandType, any) {
			return catalog.CmdACLPolicyDelete, &catalog.ACLDeleteRequest{ID: id}
		},
		record: func(st *ReplicationStatus, idx uint64) { st.ReplicatedIndex = idx },
	}, {
		name: "roles", read: catalog.ReadACLRoles,
		items: func(r *catalog.ReadResponse) (map[string][]byte, map[string]any, error) {
			return itemsOf(r.ACLRoles, func(p *catalog.ACLRole) string { return p.ID }, nil,
				func(p *catalog.ACLRole) *catalog.ACLRole { c := *p; c.RaftIndex = catalog.RaftIndex{}; return &c })
		},
		set: func(it any) (catalog.CommandType, any) { return catalog.CmdACLRoleSet, it },
		del: func(id string) (catalog.CommandType, any) {
			return catalog.CmdACLRoleDelete, &catalog.ACLDeleteRequest{ID: id}
		},
		record: func(st *ReplicationStatus, idx uint64) { st.ReplicatedRoleIndex = idx },
	}, {
		name: "config-entries", read: catalog.ReadConfigEntries,
		items: func(r *catalog.ReadResponse) (map[string][]byte, map[string]any, error) {
			return itemsOf(r.ConfigEntries, func(e *catalog.ConfigEntry) string { return e.Kind + "/" + e.Name }, nil,
				func(e *catalog.ConfigEntry) *catalog.ConfigEntry {
					c := *e
					c.RaftIndex = catalog.RaftIndex{}
					return &c
				})
		},
		set: func(it any) (catalog.CommandType, any) {
			e := *it.(*catalog.ConfigEntry)
			e.RaftIndex = catalog.RaftIndex{}
			return catalog.CmdConfigEntry, &catalog.ConfigEntryRequest{Op: catalog.ConfigEntryUpsert, Entry: e}
		},
		del: func(id string) (catalog.CommandType, any) {
			kind, name, _ := cutID(id)
			return catalog.CmdConfigEntry, &catalog.ConfigEntryRequest{Op: catalog.ConfigEntryDelete,
				Entry: catalog.ConfigEntry{Kind: kind, Name: name}}
		},
		record: func(st *ReplicationStatus, idx uint64) { st.ReplicatedConfigIndex = idx },
	}}
	if s.config.ACLTokenReplication {
		global := func(t *catalog.ACLToken) bool { return !t.Local }
		kinds = append(kinds, &replicated{
			name: "tokens", read: catalog.ReadACLTokens,
			items: func(r *catalog.ReadResponse) (map[string][]byte, map[string]any, error) {
				return itemsOf(r.ACLTokens, func(t *catalog.ACLToken) string { return t.AccessorID }, global,
					func(t *catalog.ACLToken) *catalog.ACLToken { c := *t; c.RaftIndex = catalog.RaftIndex{}; return &c })
			},
			set: func(it any) (catalog.CommandType, any) { return catalog.CmdACLTokenSet, it },
			del: func(id string) (catalog.CommandType, any) {
				return catalog.CmdACLTokenDelete, &catalog.ACLDeleteRequest{ID: id}
			},
			record: func(st *ReplicationStatus, idx uint64) { st.ReplicatedTokenIndex = idx },
		})
	}
	return kinds
}

func cutID(id string) (string, string, bool) {
	for i := 0; i < len(id); i++ {
		if id[i] == '/' {
			return id[:i], id[i+1:], true
		}
	}
	return id, "", false
}

// replicationLeader runs the replication loops while this server leads a
// secondary datacenter.
func (s *Server) replicationLeader(ctx context.Context) {
	if !s.secondary() {
		return
	}
	var wg sync.WaitGroup
	if s.config.ConnectEnabled {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.replicateCA(ctx)
		}()
	}
	for _, k := range s.replicatedKinds() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.replicateLoop(ctx, k)
		}()
	}
	wg.Wait()
}

// replicateLoop replicates one kind until ctx ends: a blocking query on
// the primary, then the differences applied here; failures back off, up to
// replicationMaxBackoff, and a WAN join ends the backoff at once.
func (s *Server) replicateLoop(ctx context.Context, k *replicated) {
	r := s.replication
	r.mu.Lock()
	r.running++
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.running--
		r.mu.Unlock()
	}()
	minInterval := s.config.ReplicationMinInterval
	if minInterval <= 0 {
		minInterval = DefaultReplicationMinInterval
	}
	var index uint64
	backoff := time.Duration(0)
	for ctx.Err() == nil {
		wake := r.wakeCh()
		start := s.clock.Now()
		idx, lag, err := s.replicateRound(ctx, k, index)
		now := s.clock.Now()
		r.mu.Lock()
		if err != nil {
			r.status.LastError, r.status.LastErrorMessage = now, fmt.Sprintf("%s: %v", k.name, err)
		} else {
			r.status.LastSuccess = now
			k.record(&r.status, idx)
			if lag > 0 {
				r.status.LagMilliseconds = float64(lag.Microseconds()) / 1000
			}
		}
		r.mu.Unlock()
		if err == nil {
			metrics.SetGauge([]string{"leader", "replication", k.name, "index"}, float32(idx))
			if lag > 0 {
				metrics.AddSample([]string{"leader", "replication", k.name, "lag"}, float32(lag.Microseconds())/1000)
			}
		}
		metrics.SetGauge([]string{"leader", "replication", k.name, "status"}, map[bool]float32{true: 1, false: 0}[err == nil])
		pause := minInterval - now.Sub(start)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.logger.Debug("replication round failed", "kind", k.name, "error", err)
			backoff = min(max(2*backoff, replicationMinBackoff), replicationMaxBackoff)
			pause = backoff
			// A primary that answered with a lower index restarted
			// from a snapshot or is another cluster: start over.
			index = 0
		} else {
			backoff = 0
			index = idx
		}
		if pause > 0 && !s.pauseOrWake(ctx, wake, pause) {
			return
		}
	}
}

// pauseOrWake waits d, or until wake closes; it reports false when ctx
// ended first.
func (s *Server) pauseOrWake(ctx context.Context, wake <-chan struct{}, d time.Duration) bool {
	t := s.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-wake:
	case <-t.C():
	}
	return true
}

// replicateRound waits (blocking query) for the primary's state of one kind
// to pass index, then applies the differences locally: deletions first (so
// that a renamed item's old name is free), then upserts. It returns the
// primary's index, and how long applying took when something changed.
func (s *Server) replicateRound(ctx context.Context, k *replicated, index uint64) (uint64, time.Duration, error) {
	req := &catalog.ReadRequest{Op: k.read, Options: catalog.QueryOptions{
		Datacenter: s.PrimaryDatacenter(), Token: s.config.ACLReplicationToken,
		MinQueryIndex: index, MaxQueryTime: replicationWait,
	}}
	remote, err := s.Read(ctx, req)
	answered := time.Now()
	if err != nil {
		return 0, 0, fmt.Errorf("read the primary: %w", err)
	}
	if remote.Meta.Index < index {
		return 0, 0, fmt.Errorf("primary index went back from %d to %d", index, remote.Meta.Index)
	}
	_, local, err := s.store.Execute(memdb.NewWatchSet(), &catalog.ReadRequest{Op: k.read})
	if err != nil {
		return 0, 0, fmt.Errorf("read the replica: %w", err)
	}
	want, wantRaw, err := k.items(remote)
	if err != nil {
		return 0, 0, err
	}
	have, _, err := k.items(local)
	if err != nil {
		return 0, 0, err
	}
	var dels, sets []string
	for id := range have {
		if _, ok := want[id]; !ok {
			dels = append(dels, id)
		}
	}
	for id, b := range want {
		if string(have[id]) != string(b) {
			sets = append(sets, id)
		}
	}
	sort.Strings(dels)
	sort.Strings(sets)
	rctx := context.WithValue(ctx, replicatedKey{}, true)
	for _, id := range dels {
		t, body := k.del(id)
		if err := applyOK(s.Apply(rctx, t, body)); err != nil {
			return 0, 0, fmt.Errorf("delete %s %s: %w", k.name, id, err)
		}
	}
	for _, id := range sets {
		t, body := k.set(wantRaw[id])
		if err := applyOK(s.Apply(rctx, t, body)); err != nil {
			return 0, 0, fmt.Errorf("write %s %s: %w", k.name, id, err)
		}
	}
	if len(dels)+len(sets) == 0 {
		return remote.Meta.Index, 0, nil
	}
	return remote.Meta.Index, time.Since(answered), nil
}

// applyOK turns an FSM answer that is an error (or a KVResult that failed)
// into an error.
func applyOK(res any, err error) error {
	if err := responseErr(res, err); err != nil {
		return err
	}
	if kv, ok := res.(catalog.KVResult); ok && !kv.OK {
		return errors.New("not applied")
	}
	return nil
}
