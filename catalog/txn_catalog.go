package catalog

import (
	"fmt"

	"github.com/hashicorp/go-memdb"
)

// casMismatch is the error of a cas or delete-cas verb whose index is stale.
func casMismatch(what string, want, have uint64) error {
	return fmt.Errorf("failed to set %s: index %d does not match the current index %d", what, want, have)
}

func (s *Store) txnNodeTxn(txn *memdb.Txn, idx uint64, op *TxnNodeOp) ([]TxnResult, error) {
	name := op.Node.Node
	if name == "" {
		return nil, fmt.Errorf("node operation without a node name")
	}
	raw, err := txn.First(tableNodes, "id", name)
	if err != nil {
		return nil, fmt.Errorf("node lookup: %w", err)
	}
	var cur *Node
	if raw != nil {
		cur = raw.(*Node)
	}
	switch op.Verb {
	case TxnGet:
		if cur == nil {
			return nil, fmt.Errorf("node %q doesn't exist", name)
		}
		return []TxnResult{{Node: cur}}, nil
	case TxnCAS, TxnDeleteCAS:
		have := uint64(0)
		if cur != nil {
			have = cur.ModifyIndex
		}
		if have != op.Node.ModifyIndex {
			return nil, casMismatch("node "+name, op.Node.ModifyIndex, have)
		}
	}
	switch op.Verb {
	case TxnSet, TxnCAS:
		n := op.Node
		n.CreateIndex, n.ModifyIndex = 0, 0
		if err := ensureNodeTxn(txn, idx, &n); err != nil {
			return nil, err
		}
		raw, _ := txn.First(tableNodes, "id", name)
		return []TxnResult{{Node: raw.(*Node)}}, nil
	case TxnDelete, TxnDeleteCAS:
		return nil, s.deleteNodeTxn(txn, idx, name)
	}
	return nil, fmt.Errorf("unknown node verb %q", op.Verb)
}

func (s *Store) txnServiceTxn(txn *memdb.Txn, idx uint64, op *TxnServiceOp) ([]TxnResult, error) {
	id := op.Service.ID
	if id == "" {
		id = op.Service.Service
	}
	if op.Node == "" || id == "" {
		return nil, fmt.Errorf("service operation needs a node and a service ID")
	}
	raw, err := txn.First(tableServices, "id", op.Node, id)
	if err != nil {
		return nil, fmt.Errorf("service lookup: %w", err)
	}
	var cur *Service
	if raw != nil {
		cur = raw.(*serviceRow).Svc
	}
	switch op.Verb {
	case TxnGet:
		if cur == nil {
			return nil, fmt.Errorf("service %q on node %q doesn't exist", id, op.Node)
		}
		return []TxnResult{{Service: cur}}, nil
	case TxnCAS, TxnDeleteCAS:
		have := uint64(0)
		if cur != nil {
			have = cur.ModifyIndex
		}
		if have != op.Service.ModifyIndex {
			return nil, casMismatch("service "+id, op.Service.ModifyIndex, have)
		}
	}
	switch op.Verb {
	case TxnSet, TxnCAS:
		sv := op.Service
		sv.ID = id
		sv.CreateIndex, sv.ModifyIndex = 0, 0
		if err := ensureServiceTxn(txn, idx, op.Node, &sv); err != nil {
			return nil, err
		}
		raw, _ := txn.First(tableServices, "id", op.Node, id)
		return []TxnResult{{Service: raw.(*serviceRow).Svc}}, nil
	case TxnDelete, TxnDeleteCAS:
		return nil, s.deleteServiceTxn(txn, idx, op.Node, id)
	}
	return nil, fmt.Errorf("unknown service verb %q", op.Verb)
}

func (s *Store) txnCheckTxn(txn *memdb.Txn, idx uint64, op *TxnCheckOp) ([]TxnResult, error) {
	c := op.Check
	if c.Node == "" || c.CheckID == "" {
		return nil, fmt.Errorf("check operation needs a node and a check ID")
	}
	raw, err := txn.First(tableChecks, "id", c.Node, c.CheckID)
	if err != nil {
		return nil, fmt.Errorf("check lookup: %w", err)
	}
	var cur *HealthCheck
	if raw != nil {
		cur = raw.(*HealthCheck)
	}
	switch op.Verb {
	case TxnGet:
		if cur == nil {
			return nil, fmt.Errorf("check %q on node %q doesn't exist", c.CheckID, c.Node)
		}
		return []TxnResult{{Check: cur}}, nil
	case TxnCAS, TxnDeleteCAS:
		have := uint64(0)
		if cur != nil {
			have = cur.ModifyIndex
		}
		if have != c.ModifyIndex {
			return nil, casMismatch("check "+c.CheckID, c.ModifyIndex, have)
		}
	}
	switch op.Verb {
	case TxnSet, TxnCAS:
		c.CreateIndex, c.ModifyIndex = 0, 0
		if err := s.ensureCheckTxn(txn, idx, &c); err != nil {
			return nil, err
		}
		raw, _ := txn.First(tableChecks, "id", c.Node, c.CheckID)
		return []TxnResult{{Check: raw.(*HealthCheck)}}, nil
	case TxnDelete, TxnDeleteCAS:
		return nil, s.deleteCheckTxn(txn, idx, c.Node, c.CheckID)
	}
	return nil, fmt.Errorf("unknown check verb %q", op.Verb)
}

func (s *Store) txnSessionTxn(txn *memdb.Txn, idx uint64, op *TxnSessionOp) ([]TxnResult, error) {
	if op.Verb != TxnDelete {
		return nil, fmt.Errorf("unknown session verb %q", op.Verb)
	}
	if op.Session.ID == "" {
		return nil, fmt.Errorf("session operation without a session ID")
	}
	return nil, s.destroySessionTxn(txn, idx, op.Session.ID)
}
