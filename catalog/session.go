package catalog

import (
	"fmt"
	"sort"

	"github.com/hashicorp/go-memdb"
)

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
