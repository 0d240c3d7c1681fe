package catalog

import (
	"fmt"
	"sort"
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
	if s.now().Before(until) {
		return true
	}
	delete(s.lockDelay, key)
	return false
}

func (s *Store) setLockDelay(key string, d time.Duration) {
	if d <= 0 {
		return
	}
	s.mu.Lock()
	s.lockDelay[key] = s.now().Add(d)
	s.mu.Unlock()
}

// ---- KV reads ----

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

// ---- transactions ----

// Txn applies ops atomically at idx: all of them or, when any fails, none;
// the response then carries the errors.
func (s *Store) Txn(idx uint64, ops []TxnOp) TxnResponse {
	txn := s.mem().Txn(true)
	defer txn.Abort()
	var resp TxnResponse
	for i, op := range ops {
		var res []TxnResult
		var err error
		switch {
		case op.KV != nil:
			res, err = s.txnKVTxn(txn, idx, op.KV)
		case op.Node != nil:
			res, err = s.txnNodeTxn(txn, idx, op.Node)
		case op.Service != nil:
			res, err = s.txnServiceTxn(txn, idx, op.Service)
		case op.Check != nil:
			res, err = s.txnCheckTxn(txn, idx, op.Check)
		case op.Session != nil:
			res, err = s.txnSessionTxn(txn, idx, op.Session)
		default:
			err = fmt.Errorf("unknown operation type")
		}
		if err != nil {
			resp.Errors = append(resp.Errors, TxnError{OpIndex: i, What: err.Error()})
			continue
		}
		resp.Results = append(resp.Results, res...)
	}
	if len(resp.Errors) > 0 {
		resp.Results = nil
		return resp
	}
	txn.Commit()
	return resp
}

func (s *Store) txnKVTxn(txn *memdb.Txn, idx uint64, op *TxnKVOp) ([]TxnResult, error) {
	e := &KVEntry{Key: op.Key, Value: op.Value, Flags: op.Flags, Session: op.Session}
	e.ModifyIndex = op.Index
	get := func() (*KVEntry, error) {
		raw, err := txn.First(tableKVs, "id", op.Key)
		if err != nil {
			return nil, fmt.Errorf("kv lookup: %w", err)
		}
		if raw == nil {
			return nil, nil
		}
		return raw.(*KVEntry), nil
	}
	switch op.Verb {
	case KVGet:
		cur, err := get()
		if err != nil {
			return nil, err
		}
		if cur == nil {
			return nil, fmt.Errorf("key %q doesn't exist", op.Key)
		}
		return []TxnResult{{KV: cur}}, nil
	case KVGetTree:
		it, err := txn.Get(tableKVs, "id_prefix", op.Key)
		if err != nil {
			return nil, fmt.Errorf("kv list: %w", err)
		}
		var out []TxnResult
		for raw := it.Next(); raw != nil; raw = it.Next() {
			out = append(out, TxnResult{KV: raw.(*KVEntry)})
		}
		return out, nil
	case KVCheckIndex:
		cur, err := get()
		if err != nil {
			return nil, err
		}
		if cur == nil || cur.ModifyIndex != op.Index {
			return nil, fmt.Errorf("current modify index for %q doesn't match %d", op.Key, op.Index)
		}
		return []TxnResult{{KV: stripValue(cur)}}, nil
	case KVCheckSession:
		cur, err := get()
		if err != nil {
			return nil, err
		}
		if cur == nil || cur.Session != op.Session {
			return nil, fmt.Errorf("key %q is not locked by session %q", op.Key, op.Session)
		}
		return []TxnResult{{KV: stripValue(cur)}}, nil
	case KVCheckNotExists:
		cur, err := get()
		if err != nil {
			return nil, err
		}
		if cur != nil {
			return nil, fmt.Errorf("key %q exists", op.Key)
		}
		return nil, nil
	case KVSet, KVCAS, KVLock, KVUnlock, KVDelete, KVDeleteCAS, KVDeleteTree:
		ok, err := s.kvApplyTxn(txn, idx, op.Verb, e)
		if err != nil {
			return nil, err
		}
		if !ok {
			switch op.Verb {
			case KVCAS, KVDeleteCAS:
				return nil, fmt.Errorf("failed to %s key %q, index is stale", op.Verb, op.Key)
			case KVLock:
				return nil, fmt.Errorf("failed to lock key %q, lock is already held", op.Key)
			default:
				return nil, fmt.Errorf("failed to unlock key %q, lock isn't held, or is held by another session", op.Key)
			}
		}
		switch op.Verb {
		case KVDelete, KVDeleteCAS, KVDeleteTree:
			return nil, nil
		}
		cur, err := get()
		if err != nil {
			return nil, err
		}
		return []TxnResult{{KV: stripValue(cur)}}, nil
	}
	return nil, fmt.Errorf("unknown KV verb %q", op.Verb)
}

// stripValue returns a copy of e without its value, as Consul returns write
// results in a txn.
func stripValue(e *KVEntry) *KVEntry {
	if e == nil {
		return nil
	}
	c := *e
	c.Value = nil
	return &c
}

// ---- sessions ----

// SessionApply creates or destroys a session at idx.
func (s *Store) SessionApply(idx uint64, req *SessionRequest) error {
	txn := s.mem().Txn(true)
	defer txn.Abort()
	var err error
	switch req.Op {
	case SessionCreate:
		err = s.sessionCreateTxn(txn, idx, &req.Session)
	case SessionDestroy:
		err = s.destroySessionTxn(txn, idx, req.Session.ID)
	default:
		err = fmt.Errorf("%w: unknown session operation %q", ErrInvalidRequest, req.Op)
	}
	if err != nil {
		return err
	}
	txn.Commit()
	return nil
}

func (s *Store) sessionCreateTxn(txn *memdb.Txn, idx uint64, sess *Session) error {
	if sess.ID == "" {
		return fmt.Errorf("%w: missing session ID", ErrInvalidRequest)
	}
	if !nodeExists(txn, sess.Node) {
		return fmt.Errorf("Failed to create session: %w", ErrMissingNode)
	}
	if sess.Behavior == "" {
		sess.Behavior = SessionBehaviorRelease
	}
	var checkIDs []string
	checkIDs = append(checkIDs, sess.NodeChecks...)
	for _, sc := range sess.ServiceChecks {
		checkIDs = append(checkIDs, sc.ID)
	}
	for _, id := range checkIDs {
		raw, err := txn.First(tableChecks, "id", sess.Node, id)
		if err != nil {
			return fmt.Errorf("check lookup: %w", err)
		}
		if raw == nil {
			return fmt.Errorf("Missing check '%s' registration", id)
		}
		if raw.(*HealthCheck).Status == HealthCritical {
			return fmt.Errorf("Check '%s' is in critical state", id)
		}
	}
	c := *sess
	c.CreateIndex, c.ModifyIndex = idx, idx
	if err := txn.Insert(tableSessions, &c); err != nil {
		return fmt.Errorf("insert session: %w", err)
	}
	for _, id := range checkIDs {
		if err := txn.Insert(tableSessChks, &sessionCheck{Node: c.Node, CheckID: id, Session: c.ID}); err != nil {
			return fmt.Errorf("insert session check: %w", err)
		}
	}
	return setIndex(txn, tableSessions, idx)
}

func (s *Store) destroySessionTxn(txn *memdb.Txn, idx uint64, id string) error {
	raw, err := txn.First(tableSessions, "id", id)
	if err != nil {
		return fmt.Errorf("session lookup: %w", err)
	}
	if raw == nil {
		return nil
	}
	sess := raw.(*Session)
	if err := txn.Delete(tableSessions, sess); err != nil {
		return fmt.Errorf("delete session: %w", err)
	}
	// Prepared queries bound to the session end with it.
	if n, err := txn.DeleteAll(tablePreparedQueries, "session", id); err != nil {
		return fmt.Errorf("delete queries of session: %w", err)
	} else if n > 0 {
		if err := setIndex(txn, tablePreparedQueries, idx); err != nil {
			return err
		}
	}
	if _, err := txn.DeleteAll(tableSessChks, "session", id); err != nil {
		return fmt.Errorf("delete session checks: %w", err)
	}
	// Release or delete every key the session holds.
	it, err := txn.Get(tableKVs, "session", id)
	if err != nil {
		return fmt.Errorf("keys of session: %w", err)
	}
	var held []*KVEntry
	for r := it.Next(); r != nil; r = it.Next() {
		held = append(held, r.(*KVEntry))
	}
	for _, e := range held {
		s.setLockDelay(e.Key, sess.LockDelay)
		if sess.Behavior == SessionBehaviorDelete {
			if err := kvDeleteTxn(txn, idx, e.Key); err != nil {
				return err
			}
			continue
		}
		upd := *e
		upd.Session = ""
		if err := kvSetTxn(txn, idx, &upd, true); err != nil {
			return err
		}
	}
	return setIndex(txn, tableSessions, idx)
}

func (s *Store) invalidateCheckSessionsTxn(txn *memdb.Txn, idx uint64, node, checkID string) error {
	it, err := txn.Get(tableSessChks, "node_check", node, checkID)
	if err != nil {
		return fmt.Errorf("sessions of check: %w", err)
	}
	var ids []string
	for r := it.Next(); r != nil; r = it.Next() {
		ids = append(ids, r.(*sessionCheck).Session)
	}
	for _, id := range ids {
		if err := s.destroySessionTxn(txn, idx, id); err != nil {
			return err
		}
	}
	return nil
}

// SessionGet returns one session, nil when missing.
func (s *Store) SessionGet(ws memdb.WatchSet, id string) (uint64, *Session, error) {
	txn := s.mem().Txn(false)
	ch, raw, err := txn.FirstWatch(tableSessions, "id", id)
	if err != nil {
		return 0, nil, fmt.Errorf("session lookup: %w", err)
	}
	ws.Add(ch)
	idx := maxIndex(txn, tableSessions)
	if raw == nil {
		return idx, nil, nil
	}
	return idx, raw.(*Session), nil
}

// SessionList returns every session, or those of one node when node is set.
func (s *Store) SessionList(ws memdb.WatchSet, node string) (uint64, []*Session, error) {
	txn := s.mem().Txn(false)
	var it memdb.ResultIterator
	var err error
	if node == "" {
		it, err = txn.Get(tableSessions, "id")
	} else {
		it, err = txn.Get(tableSessions, "node", node)
	}
	if err != nil {
		return 0, nil, fmt.Errorf("sessions: %w", err)
	}
	ws.Add(it.WatchCh())
	out := []*Session{}
	for r := it.Next(); r != nil; r = it.Next() {
		out = append(out, r.(*Session))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreateIndex < out[j].CreateIndex })
	return maxIndex(txn, tableSessions), out, nil
}
