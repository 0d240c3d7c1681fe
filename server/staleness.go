package server

import (
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// How a follower knows how old its data is (X-Consul-LastContact and
// max_stale). Hearing from the leader is not enough: a restarted or wiped
// follower hears from it at once, yet its FSM may be minutes behind while
// it replays the log. So the follower watches the commit index the leader
// announces in every AppendEntries (and the index of every snapshot it
// installs) and remembers when it first saw each one; while its FSM has not
// applied all of it, its data is as old as the first entry it lacks (see
// staleness). Until it has heard from a leader at all it cannot tell, and
// says so (staleUnknown).

// staleUnknown is the staleness of a server that has not heard a leader's
// commit index since it started: as stale as can be, so that max_stale
// refuses its data.
const staleUnknown = time.Duration(math.MaxInt64)

// Bounds of the commit tracker: announcements closer than commitGranule
// share an entry (the older time is kept, so the lag is never understated),
// and at most maxCommitMarks entries are kept (past it, the newest entry
// absorbs new announcements, again keeping the older time).
const (
	commitGranule  = 10 * time.Millisecond
	maxCommitMarks = 4096
)

// commitMark is an announced commit index and when it was first seen.
type commitMark struct {
	index uint64
	at    time.Time
}

// commitTracker holds the commit indexes a follower has been told about
// and not yet applied. Safe for concurrent use.
type commitTracker struct {
	mu    sync.Mutex
	heard bool
	// top is the highest commit index announced.
	top uint64
	// arrivingIndex and arrivingAt are the index and AppendedAt of the
	// first entry of an AppendEntries seen before Raft stored it, kept
	// until the FSM holds it (0: none).
	arrivingIndex uint64
	arrivingAt    time.Time
	// unconfirmed is set when a snapshot from the leader was restored and
	// no AppendEntries has arrived since: the snapshot's own age is not
	// known, so neither is the data's.
	unconfirmed bool
	// marks are in increasing index and time order.
	marks []commitMark
	// delay is how old the newest entry of the last AppendEntries that
	// carried entries was when it arrived (receivedAt): how far behind
	// the leader the replication stream ran then.
	delay      time.Duration
	receivedAt time.Time
	// snapshot is the index of the snapshot the leader is installing, if
	// any, and snapshotAt when its transfer began; the FSM holds it once
	// Restore returns.
	snapshot   atomic.Uint64
	snapshotAt atomic.Int64
}

// restored records that the FSM now holds the snapshot the leader sent, if
// it was one, and returns its index (0 when it was not). The snapshot is
// older than its transfer, by an unknown time: the data's age is unknown
// until the leader's next AppendEntries says what it has committed since,
// and at least the time since the transfer began.
func (c *commitTracker) restored(now time.Time) uint64 {
	idx := c.snapshot.Swap(0)
	if idx == 0 {
		return 0
	}
	c.received(time.Unix(0, c.snapshotAt.Load()), now)
	c.mu.Lock()
	c.unconfirmed = true
	c.mu.Unlock()
	return idx
}

// received records that entries the leader appended at appendedAt arrived
// at now.
func (c *commitTracker) received(appendedAt, now time.Time) {
	if appendedAt.IsZero() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.delay, c.receivedAt = max(0, now.Sub(appendedAt)), now
}

// arriving records the first entry of an AppendEntries about to be stored.
func (c *commitTracker) arriving(index uint64, appendedAt time.Time) {
	if appendedAt.IsZero() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.arrivingIndex == 0 || index < c.arrivingIndex {
		c.arrivingIndex, c.arrivingAt = index, appendedAt
	}
}

// arrivingSince returns the index of the oldest arrived entry the FSM does
// not hold yet and when the leader appended it; ok is false when there is
// none.
func (c *commitTracker) arrivingSince(applied func(index uint64) bool) (index uint64, at time.Time, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.arrivingIndex == 0 {
		return 0, time.Time{}, false
	}
	if applied(c.arrivingIndex) {
		c.arrivingIndex, c.arrivingAt = 0, time.Time{}
		return 0, time.Time{}, false
	}
	return c.arrivingIndex, c.arrivingAt, true
}

// streamDelay returns how far behind the leader the replication stream may
// still run at now: the delay last measured, less the time since, as a
// backlog drains at most as fast as time passes and nothing newer has come.
func (c *commitTracker) streamDelay(now time.Time) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.receivedAt.IsZero() {
		return 0
	}
	return max(0, c.delay-now.Sub(c.receivedAt))
}

// announce records that the leader has committed index, as seen at now.
func (c *commitTracker) announce(index uint64, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.heard = true
	c.unconfirmed = false
	if index <= c.top {
		return
	}
	c.top = index
	if n := len(c.marks); n > 0 {
		last := &c.marks[n-1]
		if now.Sub(last.at) < commitGranule || n >= maxCommitMarks {
			last.index = index
			return
		}
	}
	c.marks = append(c.marks, commitMark{index: index, at: now})
}

// oldestPending drops the marks that applied(index) says the FSM holds and
// returns when the oldest remaining one was seen. ok is false when nothing
// is pending; heard is false when no commit index was ever announced, or
// none since a snapshot was restored.
func (c *commitTracker) oldestPending(applied func(index uint64) bool) (at time.Time, ok, heard bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.unconfirmed {
		return time.Time{}, false, false
	}
	drop := 0
	for drop < len(c.marks) && applied(c.marks[drop].index) {
		drop++
	}
	if drop > 0 {
		c.marks = append(c.marks[:0], c.marks[drop:]...)
	}
	if len(c.marks) == 0 {
		return time.Time{}, false, c.heard
	}
	return c.marks[0].at, true, c.heard
}

// pending returns how many marks are kept.
func (c *commitTracker) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.marks)
}

// observedTransport is Raft's transport with the follower's side of the
// commit tracking: every RPC Raft receives passes by observe first.
// Heartbeats, which carry no commit index, keep their fast path.
type observedTransport struct {
	*raft.NetworkTransport
	out chan raft.RPC
}

// newObservedTransport starts the goroutine that passes RPCs from inner to
// Raft through observe; it stops when stop closes, and done is called
// then.
func newObservedTransport(inner *raft.NetworkTransport, observe func(raft.RPC), stop <-chan struct{}, done func()) *observedTransport {
	t := &observedTransport{NetworkTransport: inner, out: make(chan raft.RPC)}
	go func() {
		defer done()
		in := inner.Consumer()
		for {
			select {
			case rpc := <-in:
				observe(rpc)
				select {
				case t.out <- rpc:
				case <-stop:
					return
				}
			case <-stop:
				return
			}
		}
	}()
	return t
}

// Consumer implements raft.Transport.
func (t *observedTransport) Consumer() <-chan raft.RPC { return t.out }

// observeRPC feeds the commit tracker from an RPC Raft is about to handle.
func (s *Server) observeRPC(rpc raft.RPC) {
	switch req := rpc.Command.(type) {
	case *raft.AppendEntriesRequest:
		now := s.clock.Now()
		if n := len(req.Entries); n > 0 {
			s.commits.arriving(req.Entries[0].Index, req.Entries[0].AppendedAt)
			s.commits.received(req.Entries[n-1].AppendedAt, now)
		}
		s.commits.announce(req.LeaderCommitIndex, now)
	case *raft.InstallSnapshotRequest:
		s.commits.snapshotAt.Store(s.clock.Now().UnixNano())
		s.commits.snapshot.Store(req.LastLogIndex)
		s.commits.announce(req.LastLogIndex, s.clock.Now())
	}
}

// appliedThrough reports whether the FSM holds every entry up to index.
// Entries the FSM never sees (no-ops, configurations) need no applying, so
// an index past the FSM's last one counts as applied when only such
// entries separate them and this server has them in its log (checked for
// the last 64 entries only: further behind is behind).
func (s *Server) appliedThrough(index uint64) bool {
	last := s.fsm.last.Load()
	if index <= last {
		return true
	}
	return index <= s.raft.LastIndex() && index-last <= 64 && s.fsmCaughtUp(index)
}

// staleness bounds how old a follower's data may be. Once its FSM has
// applied every commit the leader announced, it is the time since the
// follower last heard from the leader, or the delay of the replication
// stream if that is longer (entries that arrive long after the leader
// appended them). Before that, the data lacks a
// committed entry, and is as old as that entry: the leader stamped each
// entry with the time it appended it (raft.Log.AppendedAt, the leader's
// clock), so the first entry the FSM lacks tells, or, when the follower has
// not even received it, the newest entry it holds. Never less than the time
// since it first heard of the commit it has yet to apply; unknown for a
// follower that holds nothing.
func (s *Server) staleness() time.Duration {
	contact := s.clock.Since(s.started)
	if lc := s.raft.LastContact(); !lc.IsZero() {
		// Raft stamps contact with the real clock.
		contact = time.Since(lc)
	}
	at, behind, heard := s.commits.oldestPending(s.appliedThrough)
	if !heard {
		return staleUnknown
	}
	// Heartbeats travel apart from the entries: when the entries queue
	// up (a slow or saturated link), contact alone understates the lag.
	age := max(contact, s.commits.streamDelay(s.clock.Now()))
	if behind {
		age = max(age, s.clock.Since(at))
	}
	arrIndex, arrAt, arriving := s.commits.arrivingSince(s.appliedThrough)
	if !behind && !arriving {
		return age
	}
	// The data lacks entry last+1 and is as old as it: the leader appended
	// it at AppendedAt. Not stored yet, it may be the entry arriving; not
	// known at all, the entry before it was appended earlier still, so its
	// AppendedAt overstates the age, never understates it.
	last := s.fsm.last.Load()
	if arriving && arrIndex == last+1 {
		return max(age, s.clock.Since(arrAt))
	}
	var l raft.Log
	if err := s.logs.GetLog(last+1, &l); err == nil && !l.AppendedAt.IsZero() {
		return max(age, s.clock.Since(l.AppendedAt))
	}
	if last > 0 {
		if err := s.logs.GetLog(last, &l); err == nil && !l.AppendedAt.IsZero() {
			return max(age, s.clock.Since(l.AppendedAt))
		}
	}
	return staleUnknown
}
