package catalog

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/hashicorp/go-memdb"
	"github.com/hashicorp/raft"
)

// CommandType is the first byte of every Raft log entry Tribune writes.
type CommandType uint8

// Command types. Values are part of the on-disk format: never reuse one.
const (
	CmdRegister   CommandType = 1
	CmdDeregister CommandType = 2
	CmdKV         CommandType = 3
	CmdTxn        CommandType = 4
	CmdSession    CommandType = 5
	CmdCoordinate CommandType = 6
	// CmdPreparedQuery carries a PreparedQueryRequest.
	CmdPreparedQuery CommandType = 7

	// Operator state uses 40-49.

	// CmdAutopilotConfig carries an AutopilotConfigRequest; the FSM
	// answers a KVResult (the same CAS outcome the RPC layer already
	// carries): OK when it was stored, not OK for a failed CAS, or Err.
	CmdAutopilotConfig CommandType = 40
)

// Encode returns the log entry for a command: its type byte and its JSON body.
func Encode(t CommandType, body any) ([]byte, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode command %d: %w", t, err)
	}
	out := make([]byte, 0, len(b)+1)
	out = append(out, byte(t))
	return append(out, b...), nil
}

// KVResult is the FSM's response to a CmdKV entry (and to a
// CmdAutopilotConfig one).
type KVResult struct {
	OK  bool
	Err error
}

// FSM applies committed log entries to a Store. It implements raft.FSM and
// raft.BatchingFSM. Apply must be called from one goroutine at a time, as
// hashicorp/raft does.
type FSM struct {
	store *Store
}

// NewFSM returns an FSM over store.
func NewFSM(store *Store) *FSM { return &FSM{store: store} }

// Store returns the state store the FSM writes to.
func (f *FSM) Store() *Store { return f.store }

// Apply implements raft.FSM. It returns the command's result: error for
// catalog and session writes, KVResult for KV writes, TxnResponse for txns.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand || len(l.Data) == 0 {
		return nil
	}
	return f.applyCommand(l.Index, CommandType(l.Data[0]), l.Data[1:])
}

// ApplyBatch implements raft.BatchingFSM.
//
// Consecutive KV writes of a batch share one memdb transaction, so their
// readers are woken once per batch instead of once per write. A KV write
// either applies whole or changes nothing, so sharing is safe; any other
// command runs in a transaction of its own.
func (f *FSM) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	for i := 0; i < len(logs); {
		j := i
		var reqs []*KVRequest
		for j < len(logs) {
			req, ok := decodeKV(logs[j])
			if !ok {
				break
			}
			reqs = append(reqs, req)
			j++
		}
		if len(reqs) < 2 {
			out[i] = f.Apply(logs[i])
			i++
			continue
		}
		res := f.store.kvApplyBatch(logs[i:j], reqs)
		for k := range res {
			out[i+k] = res[k]
		}
		i = j
	}
	return out
}

// decodeKV returns the KV write an entry carries, if it is a valid one.
func decodeKV(l *raft.Log) (*KVRequest, bool) {
	if l.Type != raft.LogCommand || len(l.Data) == 0 || CommandType(l.Data[0]) != CmdKV {
		return nil, false
	}
	var req KVRequest
	if err := json.Unmarshal(l.Data[1:], &req); err != nil {
		return nil, false
	}
	return &req, true
}

func (f *FSM) applyCommand(idx uint64, t CommandType, body []byte) any {
	switch t {
	case CmdRegister:
		var req RegisterRequest
		if err := json.Unmarshal(body, &req); err != nil {
			return fmt.Errorf("decode register at %d: %w", idx, err)
		}
		return f.store.EnsureRegistration(idx, &req)
	case CmdDeregister:
		var req DeregisterRequest
		if err := json.Unmarshal(body, &req); err != nil {
			return fmt.Errorf("decode deregister at %d: %w", idx, err)
		}
		return f.store.Deregister(idx, &req)
	case CmdKV:
		var req KVRequest
		if err := json.Unmarshal(body, &req); err != nil {
			return KVResult{Err: fmt.Errorf("decode kv at %d: %w", idx, err)}
		}
		ok, err := f.store.kvApplyLog(idx, &req)
		return KVResult{OK: ok, Err: err}
	case CmdTxn:
		var ops []TxnOp
		if err := json.Unmarshal(body, &ops); err != nil {
			return TxnResponse{Errors: []TxnError{{What: fmt.Sprintf("decode txn: %v", err)}}}
		}
		return f.store.Txn(idx, ops)
	case CmdCoordinate:
		var updates []*CoordinateEntry
		if err := json.Unmarshal(body, &updates); err != nil {
			return fmt.Errorf("decode coordinates at %d: %w", idx, err)
		}
		return f.store.CoordinateUpdates(idx, updates)
	case CmdPreparedQuery:
		var req PreparedQueryRequest
		if err := json.Unmarshal(body, &req); err != nil {
			return fmt.Errorf("decode prepared query at %d: %w", idx, err)
		}
		return f.store.PreparedQueryApply(idx, &req)
	case CmdAutopilotConfig:
		var req AutopilotConfigRequest
		if err := json.Unmarshal(body, &req); err != nil {
			return fmt.Errorf("decode autopilot config at %d: %w", idx, err)
		}
		ok, err := f.store.AutopilotConfigSet(idx, &req)
		return KVResult{OK: ok, Err: err}
	case CmdSession:
		var req SessionRequest
		if err := json.Unmarshal(body, &req); err != nil {
			return fmt.Errorf("decode session at %d: %w", idx, err)
		}
		return f.store.SessionApply(idx, &req)
	}
	// An unknown command from a newer version must not be silently skipped
	// on some servers and applied on others.
	panic(fmt.Sprintf("catalog: unknown command type %d at index %d", t, idx))
}

// snapshotRecord is one line of a snapshot: a table name and a row.
type snapshotRecord struct {
	T string
	N *Node            `json:",omitempty"`
	S *serviceRow      `json:",omitempty"`
	C *HealthCheck     `json:",omitempty"`
	K *KVEntry         `json:",omitempty"`
	E *Session         `json:",omitempty"`
	X *sessionCheck    `json:",omitempty"`
	D *CoordinateEntry `json:",omitempty"`
	Q *PreparedQuery   `json:",omitempty"`
	I *indexEntry      `json:",omitempty"`
	A *autopilotRow    `json:",omitempty"`
}

// snapshotMagic starts every snapshot so that a foreign file is refused.
const snapshotMagic = "tribune-snapshot-v1"

// Snapshot implements raft.FSM: it captures a point-in-time read transaction;
// Persist writes it out without blocking Apply.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	return &fsmSnapshot{txn: f.store.mem().Txn(false)}, nil
}

type fsmSnapshot struct{ txn *memdb.Txn }

// Persist writes the snapshot as newline-delimited JSON records.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := WriteSnapshot(s.txn, sink); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

// Release implements raft.FSMSnapshot.
func (s *fsmSnapshot) Release() {}

// WriteSnapshot writes every row visible in txn to w.
func WriteSnapshot(txn *memdb.Txn, w io.Writer) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	if err := enc.Encode(snapshotMagic); err != nil {
		return fmt.Errorf("write snapshot header: %w", err)
	}
	tables := []string{tableIndex, tableNodes, tableServices, tableChecks, tableKVs, tableSessions, tableSessChks, tableCoords, tablePreparedQueries,
		tableAutopilot}
	for _, t := range tables {
		it, err := txn.Get(t, "id")
		if err != nil {
			return fmt.Errorf("snapshot table %s: %w", t, err)
		}
		for raw := it.Next(); raw != nil; raw = it.Next() {
			rec := snapshotRecord{T: t}
			switch v := raw.(type) {
			case *indexEntry:
				rec.I = v
			case *Node:
				rec.N = v
			case *serviceRow:
				rec.S = v
			case *HealthCheck:
				rec.C = v
			case *KVEntry:
				rec.K = v
			case *Session:
				rec.E = v
			case *sessionCheck:
				rec.X = v
			case *CoordinateEntry:
				rec.D = v
			case *PreparedQuery:
				rec.Q = v
			case *autopilotRow:
				rec.A = v
			}
			if err := enc.Encode(&rec); err != nil {
				return fmt.Errorf("write snapshot record: %w", err)
			}
		}
	}
	// The end record makes a snapshot cut at a line boundary detectable.
	if err := enc.Encode(&snapshotRecord{T: snapshotEnd}); err != nil {
		return fmt.Errorf("write snapshot end: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("flush snapshot: %w", err)
	}
	return nil
}

// snapshotEnd is the table name of the record that closes a snapshot.
const snapshotEnd = "__end__"

// ErrBadSnapshot is returned when a snapshot cannot be decoded; the store is
// left untouched.
var ErrBadSnapshot = errors.New("invalid snapshot")

// Restore implements raft.FSM: it replaces the store's data with the
// snapshot's. The old data stays in place if the snapshot is invalid.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	return f.store.Restore(rc)
}

// Restore replaces the store's contents with a snapshot read from r. On any
// error the store is unchanged.
func (s *Store) Restore(r io.Reader) error {
	db, err := memdb.NewMemDB(mustSchema())
	if err != nil {
		return fmt.Errorf("restore: new memdb: %w", err)
	}
	dec := json.NewDecoder(bufio.NewReaderSize(r, 64<<10))
	var magic string
	if err := dec.Decode(&magic); err != nil || magic != snapshotMagic {
		return fmt.Errorf("%w: missing header", ErrBadSnapshot)
	}
	txn := db.Txn(true)
	defer txn.Abort()
	for {
		var rec snapshotRecord
		err := dec.Decode(&rec)
		if err == io.EOF {
			return fmt.Errorf("%w: truncated (no end record)", ErrBadSnapshot)
		}
		if err != nil {
			return fmt.Errorf("%w: %v", ErrBadSnapshot, err)
		}
		if rec.T == snapshotEnd {
			if _, err := dec.Token(); err != io.EOF {
				return fmt.Errorf("%w: data after the end record", ErrBadSnapshot)
			}
			break
		}
		var row any
		switch {
		case rec.T == tableIndex && rec.I != nil:
			row = rec.I
		case rec.T == tableNodes && rec.N != nil:
			row = rec.N
		case rec.T == tableServices && rec.S != nil && rec.S.Svc != nil:
			row = rec.S
		case rec.T == tableChecks && rec.C != nil:
			row = rec.C
		case rec.T == tableKVs && rec.K != nil:
			row = rec.K
		case rec.T == tableSessions && rec.E != nil:
			row = rec.E
		case rec.T == tableSessChks && rec.X != nil:
			row = rec.X
		case rec.T == tableCoords && rec.D != nil && rec.D.Coord != nil:
			row = rec.D
		case rec.T == tablePreparedQueries && rec.Q != nil:
			row = rec.Q
		case rec.T == tableAutopilot && rec.A != nil && rec.A.Config != nil:
			row = rec.A
		default:
			return fmt.Errorf("%w: bad record for table %q", ErrBadSnapshot, rec.T)
		}
		if err := txn.Insert(rec.T, row); err != nil {
			return fmt.Errorf("%w: insert into %s: %v", ErrBadSnapshot, rec.T, err)
		}
	}
	txn.Commit()
	s.db.Store(db)
	s.abandonMu.Lock()
	close(s.abandonCh)
	s.abandonCh = make(chan struct{})
	s.abandonMu.Unlock()
	return nil
}

// Dump writes a snapshot of the store's current state to w (used by
// /v1/snapshot and tests).
func (s *Store) Dump(w io.Writer) error {
	return WriteSnapshot(s.mem().Txn(false), w)
}
