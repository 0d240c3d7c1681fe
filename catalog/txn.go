package catalog

import (
	"fmt"

	"github.com/hashicorp/go-memdb"
)

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
