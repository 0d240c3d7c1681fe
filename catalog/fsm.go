package catalog

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-memdb"
	"github.com/hashicorp/raft"
)

// KVResult is the FSM's response to a CmdKV entry (and to a
// CmdAutopilotConfig one).
type KVResult struct {
	OK  bool
	Err error
}

// FSM applies committed log entries to a Store. It implements raft.FSM and
// raft.BatchingFSM. Apply must be called from one goroutine at a time, as
// hashicorp/raft does.
//
// The FSM never panics on log content: an entry it cannot decode (unknown
// type, malformed body) is logged, counted in Skipped and skipped, which
// every server does alike, so the replicas stay identical.
type FSM struct {
	store  *Store
	logger hclog.Logger
	// skipped counts entries that could not be decoded.
	skipped atomic.Uint64
	// decoded holds the commands the leader already decoded and validated
	// before proposing them (Prepared), keyed by the address of their
	// encoded bytes: hashicorp/raft hands the leader's FSM the very slice
	// given to raft.Apply, so the leader never decodes a command twice.
	// Followers, and a leader replaying its log, find nothing and decode.
	decoded sync.Map // *byte -> *Command
}

// Prepared records that data decodes to cmd, so that Apply uses cmd instead
// of decoding data again; cmd must be DecodeCommand(data) (ValidateCommand's
// result) and must not change afterwards. The returned func forgets it: call
// it once the proposal of data has finished, whatever its outcome.
func (f *FSM) Prepared(data []byte, cmd *Command) (forget func()) {
	if len(data) == 0 || cmd == nil {
		return func() {}
	}
	key := unsafe.SliceData(data)
	f.decoded.Store(key, cmd)
	return func() { f.decoded.Delete(key) }
}

// decode returns the command of a log entry: the one Prepared recorded for
// these very bytes, else DecodeCommand's.
func (f *FSM) decode(data []byte) (*Command, error) {
	if len(data) > 0 {
		if v, ok := f.decoded.Load(unsafe.SliceData(data)); ok {
			return v.(*Command), nil
		}
	}
	return DecodeCommand(data)
}

// NewFSM returns an FSM over store. logger may be nil (discard).
func NewFSM(store *Store, logger hclog.Logger) *FSM {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &FSM{store: store, logger: logger}
}

// Store returns the state store the FSM writes to.
func (f *FSM) Store() *Store { return f.store }

// Skipped returns how many log entries the FSM could not decode and skipped
// since it was created (a metric; tests read it).
func (f *FSM) Skipped() uint64 { return f.skipped.Load() }

// Apply implements raft.FSM. It returns the command's result: error for
// catalog and session writes, KVResult for KV writes, TxnResponse for txns,
// and an error wrapping ErrBadCommand for an entry it skipped.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand || len(l.Data) == 0 {
		return nil
	}
	cmd, err := f.decode(l.Data)
	if err != nil {
		return f.skip(l, err)
	}
	return f.applyCommand(l.Index, cmd)
}

// skip records an entry that cannot be applied.
func (f *FSM) skip(l *raft.Log, err error) error {
	f.skipped.Add(1)
	f.logger.Error("skipping a log entry that cannot be decoded", "index", l.Index, "term", l.Term, "size", len(l.Data), "error", err)
	return fmt.Errorf("log entry %d skipped: %w", l.Index, err)
}

// ApplyBatch implements raft.BatchingFSM.
//
// Consecutive KV writes of a batch share one memdb transaction, so their
// readers are woken once per batch instead of once per write. A KV write
// either applies whole or changes nothing, so sharing is safe; any other
// command runs in a transaction of its own.
func (f *FSM) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	// Every entry is decoded once; kv[i] is entry i's KV write, if any.
	cmds := make([]*Command, len(logs))
	errs := make([]error, len(logs))
	kv := make([]*KVRequest, len(logs))
	for i, l := range logs {
		if l.Type != raft.LogCommand || len(l.Data) == 0 {
			continue
		}
		cmds[i], errs[i] = f.decode(l.Data)
		if errs[i] == nil && cmds[i].Type == CmdKV {
			kv[i] = cmds[i].KV
		}
	}
	for i := 0; i < len(logs); {
		j := i
		for j < len(logs) && kv[j] != nil {
			j++
		}
		if j-i < 2 {
			out[i] = f.applyDecoded(logs[i], cmds[i], errs[i])
			i++
			continue
		}
		res := f.store.kvApplyBatch(logs[i:j], kv[i:j])
		copy(out[i:j], res)
		i = j
	}
	return out
}

// applyDecoded applies one entry that ApplyBatch decoded (cmd nil and err
// nil: not a command).
func (f *FSM) applyDecoded(l *raft.Log, cmd *Command, err error) any {
	if err != nil {
		return f.skip(l, err)
	}
	if cmd == nil {
		return nil
	}
	return f.applyCommand(l.Index, cmd)
}

func (f *FSM) applyCommand(idx uint64, cmd *Command) any {
	switch cmd.Type {
	case CmdRegister:
		return f.store.EnsureRegistration(idx, cmd.Register)
	case CmdDeregister:
		return f.store.Deregister(idx, cmd.Deregister)
	case CmdKV:
		ok, err := f.store.kvApplyLog(idx, cmd.KV)
		return KVResult{OK: ok, Err: err}
	case CmdTxn:
		return f.store.Txn(idx, cmd.Txn)
	case CmdCoordinate:
		return f.store.CoordinateUpdates(idx, cmd.Coordinates)
	case CmdPreparedQuery:
		return f.store.PreparedQueryApply(idx, cmd.PreparedQuery)
	case CmdAutopilotConfig:
		ok, err := f.store.AutopilotConfigSet(idx, cmd.Autopilot)
		return KVResult{OK: ok, Err: err}
	case CmdSession:
		return f.store.SessionApply(idx, cmd.Session)
	case CmdCA:
		return f.store.CAApply(idx, cmd.CA)
	case CmdConfigEntry:
		return f.store.ConfigEntryApply(idx, cmd.ConfigEntry)
	case CmdServiceVirtualIP:
		return f.store.AssignManualVirtualIPs(idx, cmd.VirtualIP)
	}
	if res, ok := f.store.applyACL(idx, cmd); ok {
		return res
	}
	// DecodeCommand returns only the types above.
	panic(fmt.Sprintf("catalog: decoded command of unhandled type %d", cmd.Type))
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
	// ACL rows.
	AT *ACLToken       `json:",omitempty"`
	AP *ACLPolicy      `json:",omitempty"`
	AR *ACLRole        `json:",omitempty"`
	AM *ACLAuthMethod  `json:",omitempty"`
	AB *ACLBindingRule `json:",omitempty"`
	// Connect.
	CC *CAConfiguration `json:",omitempty"`
	CR *CARoot          `json:",omitempty"`
	CE *ConfigEntry     `json:",omitempty"`
	// Service virtual IPs.
	VI *ServiceVirtualIP `json:",omitempty"`
	// Operator state.
	A *autopilotRow `json:",omitempty"`
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
		tableACLPolicies, tableACLRoles, tableACLAuthMethods, tableACLBindingRules, tableACLTokens,
		tableCAConfig, tableCARoots, tableConfigEntries, tableServiceVirtualIPs,
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
			case *ACLToken:
				rec.AT = v
			case *ACLPolicy:
				rec.AP = v
			case *ACLRole:
				rec.AR = v
			case *ACLAuthMethod:
				rec.AM = v
			case *ACLBindingRule:
				rec.AB = v
			case *CAConfiguration:
				rec.CC = v
			case *CARoot:
				rec.CR = v
			case *ConfigEntry:
				rec.CE = v
			case *ServiceVirtualIP:
				rec.VI = v
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
		case rec.T == tableACLTokens && rec.AT != nil:
			row = rec.AT
		case rec.T == tableACLPolicies && rec.AP != nil:
			row = rec.AP
		case rec.T == tableACLRoles && rec.AR != nil:
			row = rec.AR
		case rec.T == tableACLAuthMethods && rec.AM != nil && rec.AM.Name != "":
			row = rec.AM
		case rec.T == tableACLBindingRules && rec.AB != nil && rec.AB.ID != "":
			row = rec.AB
		case rec.T == tableCAConfig && rec.CC != nil:
			row = rec.CC
		case rec.T == tableCARoots && rec.CR != nil && rec.CR.ID != "":
			row = rec.CR
		case rec.T == tableConfigEntries && rec.CE != nil && rec.CE.Kind != "" && rec.CE.Name != "":
			row = rec.CE
		case rec.T == tableServiceVirtualIPs && rec.VI != nil && rec.VI.Service != "" && rec.VI.Offset > 0:
			row = rec.VI
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
