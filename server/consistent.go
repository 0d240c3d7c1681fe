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
	if s.soleVoter() {
		return s.soleVoterRead()
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

// soleVoter reports whether this server is the only voter of the Raft
// configuration (a single-server cluster, -dev): its leadership needs
// nobody's confirmation.
func (s *Server) soleVoter() bool {
	voters := 0
	for _, srv := range s.raft.GetConfiguration().Configuration().Servers {
		if srv.Suffrage != raft.Voter {
			continue
		}
		if srv.ID != raft.ServerID(s.config.NodeID) {
			return false
		}
		voters++
	}
	return voters == 1
}

// soleVoterRead is consistentRead on the only voter. hashicorp/raft
// confirms the leadership of a leader whose quorum is itself without
// contacting anyone (VerifyLeader answers at once); here the read skips the
// round trip through the verify loop and the Raft loop as well, and the
// rest is the same: the index is taken before leadership is checked, then
// the FSM must have applied it.
func (s *Server) soleVoterRead() error {
	readIndex := s.raft.LastIndex()
	if !s.IsLeader() || !s.soleVoter() {
		return fmt.Errorf("consistent read: %w", ErrNotLeader)
	}
	s.readIndexReads.Add(1)
	return s.waitApplied(readIndex)
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
		s.readIndexRounds.Add(1)
		s.readIndexReads.Add(uint64(len(batch)))
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

// ReadIndexStats returns how many leadership rounds (quorum heartbeats)
// this server has run for consistent reads, and how many reads they
// confirmed; concurrent reads share one round. The only voter of a
// cluster runs no rounds: its reads count among the confirmed.
func (s *Server) ReadIndexStats() (rounds, reads uint64) {
	return s.readIndexRounds.Load(), s.readIndexReads.Load()
}

// PendingConsistentReads returns how many consistent reads wait for the
// next leadership round.
func (s *Server) PendingConsistentReads() int { return len(s.verifyCh) }

// waitApplied waits until the FSM has applied index, bounded by the hold
// timeout.
func (s *Server) waitApplied(index uint64) error {
	if s.fsmCaughtUp(index) {
		// Nothing to wait for (no write since the last round): no
		// timer, no goroutine.
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.config.HoldTimeout)
	defer cancel()
	go func() {
		select {
		case <-s.shutdownCh:
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := s.waitCaughtUp(ctx, index); err != nil {
		return fmt.Errorf("consistent read: timed out waiting for index %d", index)
	}
	return nil
}

// fsmCaughtUp reports whether the FSM has applied every entry up to index.
// raft.AppliedIndex is not enough: it counts entries handed to the FSM, not
// applied by it. Entries the FSM never sees (no-ops, barriers) and entries
// compacted into a snapshot (restored before any later entry is applied)
// need no wait.
func (s *Server) fsmCaughtUp(index uint64) bool {
	last := s.fsm.last.Load()
	for i := index; i > last; i-- {
		var l raft.Log
		if err := s.logs.GetLog(i, &l); err != nil {
			continue
		}
		if l.Type == raft.LogCommand || l.Type == raft.LogConfiguration {
			return false
		}
	}
	return true
}

// waitCaughtUp waits until the FSM has applied every entry up to index, or
// ctx ends.
func (s *Server) waitCaughtUp(ctx context.Context, index uint64) error {
	for {
		ch := s.fsm.changed()
		if s.fsmCaughtUp(index) {
			return nil
		}
		select {
		case <-ch:
		case <-time.After(5 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// waitLeaderReady waits, up to the hold timeout, until this leader has
// applied the log it inherited.
func (s *Server) waitLeaderReady(ctx context.Context) error {
	if s.leaderReady.Load() {
		return nil
	}
	deadline := time.NewTimer(s.config.HoldTimeout)
	defer deadline.Stop()
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for !s.leaderReady.Load() {
		if !s.IsLeader() {
			return ErrNotLeader
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for leader to catch up: %w", ctx.Err())
		case <-s.shutdownCh:
			return ErrShutdown
		case <-deadline.C:
			return ErrNoLeader
		case <-t.C:
		}
	}
	return nil
}

// notifyFSM wraps the catalog FSM to tell waiters when entries are applied.
type notifyFSM struct {
	// onRestored, when set, is called on the FSM goroutine after each
	// successful Restore.
	onRestored func()
	inner      *catalog.FSM
	mu         sync.Mutex
	ch         chan struct{}
	last       atomic.Uint64
	// snapAt and snapCh drive the threshold snapshots
	// (snapshot_trigger.go).
	snapAt atomic.Uint64
	snapCh chan struct{}
}

func newNotifyFSM(inner *catalog.FSM) *notifyFSM {
	return &notifyFSM{inner: inner, ch: make(chan struct{}), snapCh: make(chan struct{}, 1)}
}

func (f *notifyFSM) changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ch
}

func (f *notifyFSM) notify(idx uint64) {
	f.last.Store(idx)
	f.checkSnapshot(idx)
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
func (f *notifyFSM) Restore(rc io.ReadCloser) error {
	if err := f.inner.Restore(rc); err != nil {
		return err
	}
	if f.onRestored != nil {
		f.onRestored()
	}
	f.mu.Lock()
	close(f.ch)
	f.ch = make(chan struct{})
	f.mu.Unlock()
	return nil
}
