package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tribune-mesh/tribune/catalog"
)

// retryable reports whether an error means "try again, maybe elsewhere":
// no leader yet, a leader that just stepped down, or a server that could not
// be reached. Such a write may or may not have been applied only when the
// request reached a leader; forwarding errors before that are safe to retry.
func retryable(err error) bool {
	if errors.Is(err, ErrNoLeader) || errors.Is(err, ErrNotLeader) {
		return true
	}
	if st, ok := status.FromError(errors.Unwrap(err)); ok {
		return st.Code() == codes.Unavailable
	}
	return false
}

// retryableWrite is retryable for writes, which must not be sent twice: a
// connection that broke after the request went out may have carried it to
// a leader that applied it (a retried CAS would then report false for a
// write that happened). Only a failure to connect proves it was not sent.
func retryableWrite(err error) bool {
	if errors.Is(err, ErrNoLeader) || errors.Is(err, ErrNotLeader) {
		return true
	}
	return notSent(err)
}

// notSent reports whether an RPC error happened before the request left:
// the connection could not be made.
func notSent(err error) bool {
	st, ok := status.FromError(errors.Unwrap(err))
	if !ok || st.Code() != codes.Unavailable {
		return false
	}
	msg := st.Message()
	return strings.Contains(msg, "while dialing") || strings.Contains(msg, "connection refused")
}

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
	deadline := time.Now().Add(s.config.HoldTimeout)
	for {
		leader := s.Leader()
		if s.IsLeader() {
			return s.Read(ctx, req)
		}
		if leader != "" {
			var resp ReadResponseWire
			err := s.pool.call(ctx, leader, "Read", req, &resp)
			if err == nil {
				if resp.Error != nil {
					err = fromWire(resp.Error)
				} else {
					return resp.Resp, nil
				}
			}
			if !retryable(err) {
				return nil, err
			}
		}
		if time.Now().After(deadline) {
			return nil, ErrNoLeader
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("forward read: %w", ctx.Err())
		case <-s.shutdownCh:
			return nil, ErrShutdown
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// Status returns the leader's address and the voting peers, as this server
// sees them.
func (s *Server) Status(ctx context.Context) (string, []string, error) {
	peers, err := s.Peers()
	return s.Leader(), peers, err
}
