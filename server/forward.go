package server

import (
	"context"
	"time"

	"github.com/tribune-mesh/tribune/catalog"
)

// forwardApply sends an encoded command to the leader.
func (s *Server) forwardApply(ctx context.Context, leader string, buf []byte) (any, error) {
	var resp ApplyResponse
	if err := s.pool.call(ctx, leader, "Apply", &ApplyRequest{Data: buf}, &resp); err != nil {
		return nil, err
	}
	return decodeApplyResult(&resp)
}

// forwardRead sends a read to the leader, waiting up to the hold timeout for
// one to be known.
func (s *Server) forwardRead(ctx context.Context, req *catalog.ReadRequest) (*catalog.ReadResponse, error) {
	var out *catalog.ReadResponse
	// A request held by a broken link must not outlive the hold (gRPC
	// deadlines are in real time).
	rpcDeadline := time.Now().Add(s.config.HoldTimeout)
	err := holdRetry(ctx, s.clock, s.config.HoldTimeout, s.shutdownCh, retryable, func() error {
		if s.IsLeader() {
			var err error
			out, err = s.Read(ctx, req)
			return err
		}
		leader := s.Leader()
		if leader == "" {
			return ErrNoLeader
		}
		var resp ReadResponseWire
		fctx := ctx
		if req.Options.MinQueryIndex == 0 {
			// A blocking query waits as long as it asked to.
			var cancel context.CancelFunc
			fctx, cancel = context.WithDeadline(ctx, rpcDeadline)
			defer cancel()
		}
		if err := s.pool.call(fctx, leader, "Read", req, &resp); err != nil {
			return err
		}
		if err := fromWire(resp.Error); err != nil {
			return err
		}
		out = resp.Resp
		return nil
	})
	if err != nil {
		return nil, noLeaderOnExpiry(err)
	}
	return out, nil
}

// Status returns the leader's address and the voting peers, as this server
// sees them.
func (s *Server) Status(ctx context.Context) (string, []string, error) {
	if dc := datacenterOf(ctx); s.remoteDC(dc) {
		var resp StatusResponse
		if err := s.forwardDC(ctx, dc, "Status", &StatusRequest{}, &resp, s.config.HoldTimeout, s.config.HoldTimeout/3, func() error { return nil }); err != nil {
			return "", nil, err
		}
		return resp.Leader, resp.Peers, nil
	}
	peers, err := s.Peers()
	return s.Leader(), peers, err
}
