package server

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tribune-mesh/tribune/catalog"
)

// verifyReq is one consistent read waiting for leadership to be confirmed.
type verifyReq struct {
	done chan error
}

// consistentRead confirms, the ReadIndex way, that this server still leads
// and that its FSM has applied every entry committed before the read arrived.
// Concurrent reads share one quorum round: the verify loop takes every read
// waiting when a round starts.
func (s *Server) consistentRead(ctx context.Context) error {
	if !s.IsLeader() {
		if s.Leader() == "" {
			return ErrNoLeader
		}
		return ErrNotLeader
	}
	req := &verifyReq{done: make(chan error, 1)}
	select {
	case s.verifyCh <- req:
	case <-ctx.Done():
		return fmt.Errorf("consistent read: %w", ctx.Err())
	case <-s.shutdownCh:
		return ErrShutdown
	}
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("consistent read: %w", ctx.Err())
	case <-s.shutdownCh:
		return ErrShutdown
	}
}

// verifyLoop serves consistent reads in batches. Reads that arrive while a
// round is in flight wait for the next round, so no read is confirmed by a
// heartbeat that may have been sent before it arrived.
func (s *Server) verifyLoop() {
	defer s.wg.Done()
	batch := make([]*verifyReq, 0, 256)
	for {
		batch = batch[:0]
		select {
		case <-s.shutdownCh:
			return
		case r := <-s.verifyCh:
			batch = append(batch, r)
		}
	drain:
		for len(batch) < cap(batch)*16 {
			select {
			case r := <-s.verifyCh:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		// Every entry up to LastIndex was appended before these reads were
		// collected, so it covers the commit index of each at arrival.
		readIndex := s.raft.LastIndex()
		err := s.raft.VerifyLeader().Error()
		if err != nil {
			err = fmt.Errorf("consistent read: %w", ErrNotLeader)
		} else {
			err = s.waitApplied(readIndex)
		}
		for _, r := range batch {
			r.done <- err
		}
	}
}

// waitApplied waits until the FSM has applied index, bounded by the hold
// timeout.
func (s *Server) waitApplied(index uint64) error {
	deadline := time.NewTimer(s.config.HoldTimeout)
	defer deadline.Stop()
	for {
		ch := s.fsm.changed()
		if s.raft.AppliedIndex() >= index {
			return nil
		}
		select {
		case <-ch:
		case <-time.After(time.Millisecond):
			// Entries that never reach the FSM (no-ops, configuration)
			// advance the applied index without a notification.
		case <-deadline.C:
			return fmt.Errorf("consistent read: timed out waiting for index %d", index)
		case <-s.shutdownCh:
			return ErrShutdown
		}
	}
}

// notifyFSM wraps the catalog FSM to tell waiters when entries are applied.
type notifyFSM struct {
	inner *catalog.FSM
	mu    sync.Mutex
	ch    chan struct{}
	last  atomic.Uint64
}

func newNotifyFSM(inner *catalog.FSM) *notifyFSM {
	return &notifyFSM{inner: inner, ch: make(chan struct{})}
}

func (f *notifyFSM) changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ch
}

func (f *notifyFSM) notify(idx uint64) {
	f.last.Store(idx)
	f.mu.Lock()
	close(f.ch)
	f.ch = make(chan struct{})
	f.mu.Unlock()
}

// Apply implements raft.FSM.
func (f *notifyFSM) Apply(l *raft.Log) any {
	r := f.inner.Apply(l)
	f.notify(l.Index)
	return r
}

// ApplyBatch implements raft.BatchingFSM.
func (f *notifyFSM) ApplyBatch(logs []*raft.Log) []any {
	r := f.inner.ApplyBatch(logs)
	if len(logs) > 0 {
		f.notify(logs[len(logs)-1].Index)
	}
	return r
}

// Snapshot implements raft.FSM.
func (f *notifyFSM) Snapshot() (raft.FSMSnapshot, error) { return f.inner.Snapshot() }

// Restore implements raft.FSM.
func (f *notifyFSM) Restore(rc io.ReadCloser) error { return f.inner.Restore(rc) }
