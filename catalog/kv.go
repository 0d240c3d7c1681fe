package catalog

import (
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/hashicorp/raft"
)

// KVApply applies one KV write at idx. It returns false when a condition
// (cas index, lock ownership, lock delay) was not met; that is not an error.
func (s *Store) KVApply(idx uint64, req *KVRequest) (bool, error) {
	if req.Op == KVLock && s.LockDelayed(req.Entry.Key) {
		return false, nil
	}
	return s.kvApplyLog(idx, req)
}

// kvApplyBatch applies consecutive KV writes from the Raft log in one memdb
// transaction; each result is as kvApplyLog would give it alone.
func (s *Store) kvApplyBatch(logs []*raft.Log, reqs []*KVRequest) []any {
	txn := s.mem().Txn(true)
	defer txn.Abort()
	out := make([]any, len(reqs))
	for i, req := range reqs {
		ok, err := s.kvApplyTxn(txn, logs[i].Index, req.Op, &req.Entry)
		out[i] = KVResult{OK: ok, Err: err}
	}
	txn.Commit()
	return out
}

// kvApplyLog applies a KV write from the Raft log. Lock delay is not
// consulted: it depends on each server's clock, so the leader checks it
// before it proposes the entry, and every server applies the entry alike.
func (s *Store) kvApplyLog(idx uint64, req *KVRequest) (bool, error) {
	txn := s.mem().Txn(true)
	defer txn.Abort()
	ok, err := s.kvApplyTxn(txn, idx, req.Op, &req.Entry)
	if err != nil || !ok {
		return ok, err
	}
	txn.Commit()
	return true, nil
}

func (s *Store) kvApplyTxn(txn *memdb.Txn, idx uint64, op KVOp, e *KVEntry) (bool, error) {
	switch op {
	case KVSet:
		return true, kvSetTxn(txn, idx, e, false)
	case KVCAS:
		return kvCASTxn(txn, idx, e)
	case KVLock:
		return s.kvLockTxn(txn, idx, e)
	case KVUnlock:
		return kvUnlockTxn(txn, idx, e)
	case KVDelete:
		return true, kvDeleteTxn(txn, idx, e.Key)
	case KVDeleteCAS:
		raw, err := txn.First(tableKVs, "id", e.Key)
		if err != nil {
			return false, fmt.Errorf("kv lookup: %w", err)
		}
		if raw == nil {
			return e.ModifyIndex == 0, nil
		}
		if raw.(*KVEntry).ModifyIndex != e.ModifyIndex {
			return false, nil
		}
		return true, kvDeleteTxn(txn, idx, e.Key)
	case KVDeleteTree:
		return true, kvDeleteTreeTxn(txn, idx, e.Key)
	}
	return false, fmt.Errorf("%w: unknown KV operation %q", ErrInvalidRequest, op)
}

// kvSetTxn writes e. keepSession keeps the existing lock holder (an update
// by the holder or a plain set on a locked key, as Consul allows).
func kvSetTxn(txn *memdb.Txn, idx uint64, e *KVEntry, lockUpdate bool) error {
	raw, err := txn.First(tableKVs, "id", e.Key)
	if err != nil {
		return fmt.Errorf("kv lookup: %w", err)
	}
	entry := &KVEntry{Key: e.Key, Flags: e.Flags, Value: e.Value}
	entry.ModifyIndex = idx
	if raw != nil {
		old := raw.(*KVEntry)
		entry.CreateIndex = old.CreateIndex
		entry.LockIndex = old.LockIndex
		entry.Session = old.Session
	} else {
		entry.CreateIndex = idx
	}
	if lockUpdate {
		entry.Session = e.Session
		entry.LockIndex = e.LockIndex
	}
	if err := txn.Insert(tableKVs, entry); err != nil {
		return fmt.Errorf("insert kv: %w", err)
	}
	return setIndex(txn, tableKVs, idx)
}

func kvCASTxn(txn *memdb.Txn, idx uint64, e *KVEntry) (bool, error) {
	raw, err := txn.First(tableKVs, "id", e.Key)
	if err != nil {
		return false, fmt.Errorf("kv lookup: %w", err)
	}
	if e.ModifyIndex == 0 && raw != nil {
		return false, nil
	}
	if e.ModifyIndex != 0 && (raw == nil || raw.(*KVEntry).ModifyIndex != e.ModifyIndex) {
		return false, nil
	}
	return true, kvSetTxn(txn, idx, e, false)
}

func (s *Store) kvLockTxn(txn *memdb.Txn, idx uint64, e *KVEntry) (bool, error) {
	if e.Session == "" {
		return false, fmt.Errorf("%w: missing session", ErrInvalidRequest)
	}
	sraw, err := txn.First(tableSessions, "id", e.Session)
	if err != nil {
		return false, fmt.Errorf("session lookup: %w", err)
	}
	if sraw == nil {
		return false, fmt.Errorf("%w %q", ErrSessionNotFound, e.Session)
	}
	raw, err := txn.First(tableKVs, "id", e.Key)
	if err != nil {
		return false, fmt.Errorf("kv lookup: %w", err)
	}
	lockIndex := uint64(1)
	if raw != nil {
		old := raw.(*KVEntry)
		switch {
		case old.Session == e.Session:
			lockIndex = old.LockIndex // the holder updates its value
		case old.Session != "":
			return false, nil
		default:
			lockIndex = old.LockIndex + 1
		}
	}
	upd := *e
	upd.LockIndex = lockIndex
	return true, kvSetTxn(txn, idx, &upd, true)
}

func kvUnlockTxn(txn *memdb.Txn, idx uint64, e *KVEntry) (bool, error) {
	if e.Session == "" {
		return false, fmt.Errorf("%w: missing session", ErrInvalidRequest)
	}
	raw, err := txn.First(tableKVs, "id", e.Key)
	if err != nil {
		return false, fmt.Errorf("kv lookup: %w", err)
	}
	if raw == nil || raw.(*KVEntry).Session != e.Session {
		return false, nil
	}
	upd := *e
	upd.Session = ""
	upd.LockIndex = raw.(*KVEntry).LockIndex
	return true, kvSetTxn(txn, idx, &upd, true)
}

func kvDeleteTxn(txn *memdb.Txn, idx uint64, key string) error {
	raw, err := txn.First(tableKVs, "id", key)
	if err != nil {
		return fmt.Errorf("kv lookup: %w", err)
	}
	if raw == nil {
		return nil
	}
	if err := txn.Delete(tableKVs, raw); err != nil {
		return fmt.Errorf("delete kv: %w", err)
	}
	return setIndex(txn, tableKVs, idx)
}

func kvDeleteTreeTxn(txn *memdb.Txn, idx uint64, prefix string) error {
	n, err := txn.DeletePrefix(tableKVs, "id_prefix", prefix)
	if err != nil {
		return fmt.Errorf("delete kv tree: %w", err)
	}
	if n {
		return setIndex(txn, tableKVs, idx)
	}
	return nil
}

// LockDelayed reports whether key is in its lock delay: a session holding it
// was invalidated less than that session's LockDelay ago. Acquires are refused
// meanwhile. The state is local to each server.
func (s *Store) LockDelayed(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	until, ok := s.lockDelay[key]
	if !ok {
		return false
	}
	if s.clock.Now().Before(until) {
		return true
	}
	delete(s.lockDelay, key)
	return false
}

// minLockDelaySweep is the smallest lock-delay map that setLockDelay sweeps.
const minLockDelaySweep = 64

// setLockDelay refuses acquires of key for d from now. LockDelayed drops
// an expired entry only when its key is asked about again, so a stream of
// invalidated sessions over keys nobody acquires again would grow the map
// without end: whenever it has doubled since the last sweep, the expired
// entries go, which keeps it within twice the delays in force at an
// amortised constant cost per call.
func (s *Store) setLockDelay(key string, d time.Duration) {
	if d <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	s.lockDelay[key] = now.Add(d)
	if len(s.lockDelay) < max(s.lockDelaySweepAt, minLockDelaySweep) {
		return
	}
	for k, until := range s.lockDelay {
		if !now.Before(until) {
			delete(s.lockDelay, k)
		}
	}
	s.lockDelaySweepAt = 2 * len(s.lockDelay)
}

// LockDelays returns the number of keys with a lock-delay entry, expired
// or not (for metrics and tests).
func (s *Store) LockDelays() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.lockDelay)
}

// KVGet returns one entry (nil when missing) and its index: the entry's
// ModifyIndex, or the KV table's index when it does not exist.
func (s *Store) KVGet(ws memdb.WatchSet, key string) (uint64, *KVEntry, error) {
	txn := s.mem().Txn(false)
	ch, raw, err := txn.FirstWatch(tableKVs, "id", key)
	if err != nil {
		return 0, nil, fmt.Errorf("kv lookup: %w", err)
	}
	ws.Add(ch)
	if raw == nil {
		return maxIndex(txn, tableKVs), nil, nil
	}
	e := raw.(*KVEntry)
	return e.ModifyIndex, e, nil
}

// KVList returns the entries under prefix in key order.
func (s *Store) KVList(ws memdb.WatchSet, prefix string) (uint64, []*KVEntry, error) {
	txn := s.mem().Txn(false)
	it, err := txn.Get(tableKVs, "id_prefix", prefix)
	if err != nil {
		return 0, nil, fmt.Errorf("kv list: %w", err)
	}
	ws.Add(it.WatchCh())
	var out []*KVEntry
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*KVEntry))
	}
	return maxIndex(txn, tableKVs), out, nil
}

// KVKeys returns the keys under prefix, rolled up at the first separator after
// the prefix when separator is set.
func (s *Store) KVKeys(ws memdb.WatchSet, prefix, separator string) (uint64, []string, error) {
	idx, entries, err := s.KVList(ws, prefix)
	if err != nil {
		return 0, nil, err
	}
	keys := []string{}
	last := ""
	for _, e := range entries {
		k := e.Key
		if separator != "" {
			if i := strings.Index(k[len(prefix):], separator); i >= 0 {
				k = k[:len(prefix)+i+len(separator)]
			}
		}
		if k != last {
			keys = append(keys, k)
			last = k
		}
	}
	return idx, keys, nil
}
