package server

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/gossip"
)

// RaftServer is one server of the Raft configuration, as
// /v1/operator/raft/configuration shows it.
type RaftServer struct {
	ID              string
	Node            string
	Address         string
	Leader          bool
	ProtocolVersion string
	Voter           bool
}

// RaftConfiguration is the Raft configuration with its index.
type RaftConfiguration struct {
	Servers []RaftServer
	Index   uint64
}

// ServerHealth is one server's health as autopilot sees it.
type ServerHealth struct {
	ID          string
	Name        string
	Address     string
	SerfStatus  string
	Version     string
	Leader      bool
	LastContact string
	LastTerm    uint64
	LastIndex   uint64
	Healthy     bool
	Voter       bool
	StableSince time.Time
}

// AutopilotHealth is /v1/operator/autopilot/health.
type AutopilotHealth struct {
	Healthy          bool
	FailureTolerance int
	Servers          []ServerHealth
}

// Operator operations.
const (
	OpRaftConfiguration = "raft-configuration"
	OpRemovePeer        = "remove-peer"
	OpAutopilotHealth   = "autopilot-health"
	// OpTransferLeader hands leadership to another voter: the one whose
	// Raft ID is Arg, or any up-to-date one when Arg is empty.
	OpTransferLeader = "transfer-leader"
	// OpAutopilotState is /v1/operator/autopilot/state.
	OpAutopilotState = "autopilot-state"
)

// AutopilotServerState is one server in /v1/operator/autopilot/state.
type AutopilotServerState struct {
	ID          string
	Name        string
	Address     string
	NodeStatus  string
	Version     string
	LastContact string
	LastTerm    uint64
	LastIndex   uint64
	Healthy     bool
	StableSince time.Time
	ReadReplica bool
	// Status is "leader", "voter" or "non-voter".
	Status   string
	Meta     map[string]string
	NodeType string
}

// AutopilotState is /v1/operator/autopilot/state: the servers by Raft ID.
type AutopilotState struct {
	Healthy                    bool
	FailureTolerance           int
	OptimisticFailureTolerance int
	Servers                    map[string]AutopilotServerState
	Leader                     string
	Voters                     []string
}

// TransferLeaderResult is /v1/operator/raft/transfer-leader's answer.
type TransferLeaderResult struct {
	Success bool
}

// OperatorRequest is an operator call; Arg is the peer for remove-peer.
type OperatorRequest struct {
	Op  string
	Arg string
}

// OperatorResponse carries an operator call's JSON result.
type OperatorResponse struct {
	Result json.RawMessage `json:",omitempty"`
	Error  *WireError      `json:",omitempty"`
}

// Operator runs an operator call on the leader.
func (s *Server) Operator(ctx context.Context, req *OperatorRequest) (json.RawMessage, error) {
	if !s.IsLeader() {
		leader := s.Leader()
		if leader == "" {
			return nil, ErrNoLeader
		}
		var resp OperatorResponse
		if err := s.pool.call(ctx, leader, "Operator", req, &resp); err != nil {
			return nil, err
		}
		return resp.Result, fromWire(resp.Error)
	}
	var out any
	switch req.Op {
	case OpRaftConfiguration:
		cfg, err := s.raftConfiguration()
		if err != nil {
			return nil, err
		}
		out = cfg
	case OpRemovePeer:
		if err := s.RemovePeer(req.Arg); err != nil {
			return nil, err
		}
		out = true
	case OpTransferLeader:
		if err := s.transferLeader(ctx, req.Arg); err != nil {
			return nil, err
		}
		out = TransferLeaderResult{Success: true}
	case OpAutopilotGetConfig:
		c, err := s.autopilotConfig()
		if err != nil {
			return nil, err
		}
		out = c
	case OpAutopilotState:
		st, err := s.autopilotState()
		if err != nil {
			return nil, err
		}
		out = st
	case OpAutopilotHealth:
		h, err := s.autopilotHealth()
		if err != nil {
			return nil, err
		}
		out = h
	default:
		return nil, fmt.Errorf("%w: unknown operator call %q", catalog.ErrInvalidRequest, req.Op)
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", req.Op, err)
	}
	return b, nil
}

func (s *Server) rpcOperator(ctx context.Context, req *OperatorRequest) (*OperatorResponse, error) {
	if err := s.authorizeOperator(ctx, req.Op); err != nil {
		return &OperatorResponse{Error: toWire(err)}, nil
	}
	res, err := s.Operator(ctx, req)
	return &OperatorResponse{Result: res, Error: toWire(err)}, nil
}

// Operator runs an operator call through a server.
func (c *Client) Operator(ctx context.Context, req *OperatorRequest) (json.RawMessage, error) {
	var resp OperatorResponse
	if err := c.invoke(ctx, "Operator", req, &resp, func() error { return fromWire(resp.Error) }); err != nil {
		return nil, err
	}
	return resp.Result, nil
}

// transferLeader hands leadership away from this server, to the voter with
// Raft ID id when it is set. Raft refuses when there is no other voter
// ("cannot find peer").
func (s *Server) transferLeader(ctx context.Context, id string) error {
	var f raft.Future
	if id == "" {
		f = s.raft.LeadershipTransfer()
	} else {
		cfg, err := s.raftConfiguration()
		if err != nil {
			return err
		}
		var addr string
		for _, srv := range cfg.Servers {
			if srv.ID == id {
				addr = srv.Address
			}
		}
		if addr == "" {
			return fmt.Errorf("%w: id %q was not found in the Raft configuration", catalog.ErrInvalidRequest, id)
		}
		f = s.raft.LeadershipTransferToServer(raft.ServerID(id), raft.ServerAddress(addr))
	}
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("transfer leadership: %w", err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("transfer leadership: %w", ctx.Err())
	}
}

// nodeNames maps Raft IDs to gossip member names.
func (s *Server) nodeNames() map[string]gossip.Member {
	out := map[string]gossip.Member{}
	if s.config.Gossip == nil {
		return out
	}
	for _, m := range s.config.Gossip.Members() {
		out[m.Tags["id"]] = m
	}
	self := s.config.Gossip.LocalMember()
	out[self.Tags["id"]] = self
	return out
}

func (s *Server) raftConfiguration() (*RaftConfiguration, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("raft configuration: %w", err)
	}
	names := s.nodeNames()
	_, leaderID := s.raft.LeaderWithID()
	out := &RaftConfiguration{Index: f.Index()}
	for _, srv := range f.Configuration().Servers {
		name := names[string(srv.ID)].Name
		if string(srv.ID) == s.config.NodeID {
			name = s.config.NodeName
		}
		out.Servers = append(out.Servers, RaftServer{ID: string(srv.ID), Node: name, Address: string(srv.Address),
			Leader: srv.ID == leaderID, ProtocolVersion: "3", Voter: srv.Suffrage == raft.Voter})
	}
	return out, nil
}

func (s *Server) autopilotHealth() (*AutopilotHealth, error) {
	cfg, err := s.raftConfiguration()
	if err != nil {
		return nil, err
	}
	names := s.nodeNames()
	stats := s.raft.Stats()
	var term uint64
	fmt.Sscan(stats["term"], &term)
	out := &AutopilotHealth{Healthy: true}
	voters, healthyVoters := 0, 0
	for _, srv := range cfg.Servers {
		m := names[srv.ID]
		status := m.Status.String()
		if srv.ID == s.config.NodeID {
			status = gossip.StatusAlive.String()
		}
		h := ServerHealth{ID: srv.ID, Name: srv.Node, Address: srv.Address, SerfStatus: status,
			Version: m.Tags["build"], Leader: srv.Leader, LastContact: "0s", LastTerm: term,
			LastIndex: s.raft.LastIndex(), Healthy: status == "alive", Voter: srv.Voter}
		if srv.Voter {
			voters++
			if h.Healthy {
				healthyVoters++
			}
		}
		if !h.Healthy {
			out.Healthy = false
		}
		out.Servers = append(out.Servers, h)
	}
	out.FailureTolerance = max(healthyVoters-(voters/2+1), 0)
	return out, nil
}

// autopilotState is autopilotHealth keyed by server ID, with each server's
// role, as /v1/operator/autopilot/state shows it.
func (s *Server) autopilotState() (*AutopilotState, error) {
	h, err := s.autopilotHealth()
	if err != nil {
		return nil, err
	}
	out := &AutopilotState{Healthy: h.Healthy, FailureTolerance: h.FailureTolerance,
		OptimisticFailureTolerance: h.FailureTolerance, Servers: map[string]AutopilotServerState{}, Voters: []string{}}
	for _, srv := range h.Servers {
		status, nodeType := "non-voter", "read-replica"
		if srv.Voter {
			status, nodeType = "voter", "voter"
			out.Voters = append(out.Voters, srv.ID)
		}
		if srv.Leader {
			status = "leader"
			out.Leader = srv.ID
		}
		out.Servers[srv.ID] = AutopilotServerState{ID: srv.ID, Name: srv.Name, Address: srv.Address,
			NodeStatus: srv.SerfStatus, Version: srv.Version, LastContact: srv.LastContact, LastTerm: srv.LastTerm,
			LastIndex: srv.LastIndex, Healthy: srv.Healthy, StableSince: srv.StableSince, ReadReplica: !srv.Voter,
			Status: status, Meta: map[string]string{}, NodeType: nodeType}
	}
	return out, nil
}
