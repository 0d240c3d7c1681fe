package server

import (
	"errors"
	"strconv"

	"github.com/hashicorp/raft"
)

// Raft snapshots when it checks, every SnapshotInterval (randomised up to
// twice that), that SnapshotThreshold entries were applied since the last
// one. Between two checks the log grows with the write rate: 100,000 writes
// of 1 KiB at ~4,000/s left raft.db at 209 MiB and growing, no snapshot
// taken, under the 30 s default. snapshotTrigger asks for a snapshot as
// soon as the threshold is crossed, so the log, and raft.db (whose freed
// pages are reused, never returned), stay bounded by about
// (SnapshotThreshold + TrailingLogs) entries whatever the write rate: the
// same run levels off at 80 MiB.

// armSnapshot makes the FSM signal snapCh once its applied index reaches at;
// 0 disarms it.
func (f *notifyFSM) armSnapshot(at uint64) { f.snapAt.Store(at) }

// checkSnapshot signals the trigger when idx reached the armed index. It is
// called by the FSM goroutine after each apply and never blocks.
func (f *notifyFSM) checkSnapshot(idx uint64) {
	if at := f.snapAt.Load(); at != 0 && idx >= at {
		f.snapAt.Store(0)
		select {
		case f.snapCh <- struct{}{}:
		default:
		}
	}
}

// snapshotTrigger takes a snapshot every SnapshotThreshold applied entries
// until shutdown. A snapshot that fails (one already running, nothing new)
// is not retried before the next threshold's worth of entries.
func (s *Server) snapshotTrigger() {
	defer s.wg.Done()
	threshold := s.config.SnapshotThreshold
	last, _ := strconv.ParseUint(s.raft.Stats()["last_snapshot_index"], 10, 64)
	for {
		s.fsm.armSnapshot(max(last, 1) + threshold)
		// An index applied before arming would not signal.
		s.fsm.checkSnapshot(s.fsm.last.Load())
		select {
		case <-s.shutdownCh:
			return
		case <-s.fsm.snapCh:
		}
		last = s.fsm.last.Load()
		err := s.raft.Snapshot().Error()
		switch {
		case err == nil, errors.Is(err, raft.ErrNothingNewToSnapshot):
		case errors.Is(err, raft.ErrRaftShutdown):
			return
		default:
			s.logger.Debug("threshold snapshot not taken", "applied", last, "error", err)
		}
	}
}
