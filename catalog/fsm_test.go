package catalog_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tribune-mesh/tribune/catalog"
)

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// bufSink is a raft.SnapshotSink over a bytes.Buffer.
type bufSink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (s *bufSink) ID() string { return "test-snapshot" }

func (s *bufSink) Close() error {
	s.closed = true
	return nil
}

func (s *bufSink) Cancel() error {
	s.cancelled = true
	return nil
}

var _ raft.SnapshotSink = (*bufSink)(nil)

// failSink fails every write after limit bytes.
type failSink struct {
	bufSink
	limit int
}

func (s *failSink) Write(p []byte) (int, error) {
	if s.Len()+len(p) > s.limit {
		return 0, errors.New("disk full")
	}
	return s.Buffer.Write(p)
}

// trackCloser records whether Close was called.
type trackCloser struct {
	io.Reader
	closed bool
}

func (c *trackCloser) Close() error {
	c.closed = true
	return nil
}

// applier applies commands to an FSM with increasing indexes.
type applier struct {
	t   testing.TB
	fsm *catalog.FSM
	idx uint64
	// lastKV is the index of populate's last KV write.
	lastKV uint64
}

func (a *applier) apply(ct catalog.CommandType, body any) any {
	a.t.Helper()
	data, err := catalog.Encode(ct, body)
	if err != nil {
		a.t.Fatalf("Encode(%d): %v", ct, err)
	}
	if data[0] != byte(ct) {
		a.t.Fatalf("Encode type byte = %d, want %d", data[0], ct)
	}
	a.idx++
	return a.fsm.Apply(&raft.Log{Index: a.idx, Term: 1, Type: raft.LogCommand, Data: data})
}

// applyOK applies a command and fails the test if its result reports an
// error or a false KV result.
func (a *applier) applyOK(ct catalog.CommandType, body any) any {
	a.t.Helper()
	res := a.apply(ct, body)
	switch r := res.(type) {
	case nil:
	case error:
		a.t.Fatalf("apply %d at %d: %v", ct, a.idx, r)
	case catalog.KVResult:
		if r.Err != nil || !r.OK {
			a.t.Fatalf("apply kv at %d: %+v", a.idx, r)
		}
	case catalog.TxnResponse:
		if len(r.Errors) != 0 {
			a.t.Fatalf("apply txn at %d: %+v", a.idx, r.Errors)
		}
	default:
		a.t.Fatalf("apply %d: unexpected result %T", ct, res)
	}
	return res
}

// populate applies every command type and returns the applier.
func populate(t testing.TB, fsm *catalog.FSM) *applier {
	t.Helper()
	a := &applier{t: t, fsm: fsm}
	a.applyOK(catalog.CmdRegister, &catalog.RegisterRequest{
		ID: "id-1", Node: "n1", Address: "10.0.0.1", Datacenter: "dc1",
		TaggedAddresses: map[string]string{"wan": "1.2.3.4"}, NodeMeta: map[string]string{"rack": "r1"},
		Service: &catalog.Service{ID: "web1", Service: "web", Tags: []string{"a", "b"}, Port: 80,
			Meta:            map[string]string{"v": "1"},
			TaggedAddresses: map[string]catalog.ServiceAddress{"lan": {Address: "10.0.0.1", Port: 80}},
			Proxy: &catalog.ConnectProxyConfig{Upstreams: []catalog.Upstream{{DestinationName: "db", LocalBindPort: 9191}},
				Config: map[string]any{"port": 21000.0}}},
		Checks: []*catalog.HealthCheck{
			{CheckID: catalog.SerfCheckID, Name: "Serf", Status: catalog.HealthPassing},
			{CheckID: "web-http", Name: "http", Status: catalog.HealthPassing, ServiceID: "web1", Interval: "10s",
				Definition: catalog.HealthCheckDefinition{HTTP: "http://localhost/health", Interval: "10s",
					Header: map[string][]string{"X": {"y"}}}},
		},
	})
	a.applyOK(catalog.CmdRegister, &catalog.RegisterRequest{Node: "n2", Address: "10.0.0.2",
		Service: &catalog.Service{ID: "db1", Service: "db", Port: 5432},
		Check:   &catalog.HealthCheck{CheckID: "db-tcp", Status: catalog.HealthWarning, ServiceID: "db1"}})
	a.applyOK(catalog.CmdRegister, &catalog.RegisterRequest{Node: "n3", Address: "10.0.0.3",
		Service: &catalog.Service{ID: "tmp", Service: "tmp"}})
	a.applyOK(catalog.CmdDeregister, &catalog.DeregisterRequest{Node: "n3", ServiceID: "tmp"})
	a.applyOK(catalog.CmdSession, &catalog.SessionRequest{Op: catalog.SessionCreate,
		Session: catalog.Session{ID: "sess-1", Name: "leader", Node: "n1", LockDelay: 15 * time.Second,
			NodeChecks: []string{catalog.SerfCheckID}, ServiceChecks: []catalog.ServiceCheck{{ID: "web-http"}}}})
	a.applyOK(catalog.CmdSession, &catalog.SessionRequest{Op: catalog.SessionCreate,
		Session: catalog.Session{ID: "sess-2", Node: "n2", Behavior: catalog.SessionBehaviorDelete}})
	a.applyOK(catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVSet, Entry: catalog.KVEntry{Key: "config/a", Value: []byte("A"), Flags: 7}})
	a.applyOK(catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVSet, Entry: catalog.KVEntry{Key: "config/b", Value: []byte{0, 1, 2, 0xff}}})
	a.applyOK(catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVCAS, Entry: catalog.KVEntry{Key: "config/a", Value: []byte("A2"),
		RaftIndex: catalog.RaftIndex{ModifyIndex: 7}}})
	a.applyOK(catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVLock, Entry: catalog.KVEntry{Key: "service/leader", Value: []byte("n1"), Session: "sess-1"}})
	a.applyOK(catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVLock, Entry: catalog.KVEntry{Key: "service/db", Value: []byte("n2"), Session: "sess-2"}})
	a.applyOK(catalog.CmdTxn, []catalog.TxnOp{
		kvOp(catalog.KVSet, "txn/x", "X"),
		kvOp(catalog.KVSet, "txn/y", "Y"),
		kvOpIndex(catalog.KVCheckIndex, "config/a", 9),
	})
	a.applyOK(catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVDelete, Entry: catalog.KVEntry{Key: "txn/y"}})
	a.lastKV = a.idx
	populateConnect(a)
	return a
}

func TestFSMApplyAllCommands(t *testing.T) {
	s := newStore(t)
	fsm := catalog.NewFSM(s, nil)
	if fsm.Store() != s {
		t.Fatal("FSM.Store() is not the store it was built over")
	}
	a := populate(t, fsm)

	if got := s.LastIndex(); got != a.idx {
		t.Fatalf("LastIndex = %d, want %d", got, a.idx)
	}
	if e := mustKV(t, s, "config/a"); string(e.Value) != "A2" || e.Flags != 0 || e.CreateIndex != 7 || e.ModifyIndex != 9 {
		t.Fatalf("config/a = %+v", e)
	}
	if e := mustKV(t, s, "config/b"); !bytes.Equal(e.Value, []byte{0, 1, 2, 0xff}) {
		t.Fatalf("binary value = %v", e.Value)
	}
	if e := mustKV(t, s, "service/leader"); e.Session != "sess-1" || e.LockIndex != 1 {
		t.Fatalf("service/leader = %+v", e)
	}
	if got := kvKeys(t, s); !equalStrings(got, []string{"config/a", "config/b", "service/db", "service/leader", "txn/x"}) {
		t.Fatalf("keys = %q", got)
	}
	if sess := getSession(t, s, "sess-1"); sess == nil || sess.LockDelay != 15*time.Second || len(sess.ServiceChecks) != 1 {
		t.Fatalf("sess-1 = %+v", sess)
	}
	if _, ns, _ := s.NodeServices(ws(), "n3"); ns == nil || len(ns.Services) != 0 {
		t.Fatalf("n3 = %+v", ns)
	}

	// Results of failing commands.
	if r := a.apply(catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVCAS, Entry: catalog.KVEntry{Key: "config/a",
		RaftIndex: catalog.RaftIndex{ModifyIndex: 1}}}); r != (catalog.KVResult{}) {
		t.Fatalf("stale cas result = %+v, want {false, nil}", r)
	}
	if r, ok := a.apply(catalog.CmdKV, &catalog.KVRequest{Op: "nope"}).(catalog.KVResult); !ok || r.OK || !errors.Is(r.Err, catalog.ErrInvalidRequest) {
		t.Fatalf("bad kv op result = %+v", r)
	}
	if r, ok := a.apply(catalog.CmdTxn, []catalog.TxnOp{kvOp(catalog.KVGet, "missing", "")}).(catalog.TxnResponse); !ok || len(r.Errors) != 1 {
		t.Fatalf("failing txn result = %+v", r)
	}
	if r, ok := a.apply(catalog.CmdRegister, &catalog.RegisterRequest{}).(error); !ok || !errors.Is(r, catalog.ErrInvalidRequest) {
		t.Fatalf("bad register result = %v", r)
	}
	if r, ok := a.apply(catalog.CmdSession, &catalog.SessionRequest{Op: catalog.SessionCreate,
		Session: catalog.Session{ID: "x", Node: "ghost"}}).(error); !ok || !errors.Is(r, catalog.ErrMissingNode) {
		t.Fatalf("bad session result = %v", r)
	}
}

func TestFSMApplyMalformed(t *testing.T) {
	s := newStore(t)
	fsm := catalog.NewFSM(s, nil)
	populate(t, fsm)
	before := dump(t, s)

	ignored := []struct {
		name string
		log  *raft.Log
	}{
		{"non-command log", &raft.Log{Index: 100, Type: raft.LogConfiguration, Data: []byte{byte(catalog.CmdKV), '{', '}'}}},
		{"noop log", &raft.Log{Index: 100, Type: raft.LogNoop}},
		{"empty command", &raft.Log{Index: 100, Type: raft.LogCommand}},
	}
	for _, tc := range ignored {
		t.Run(tc.name, func(t *testing.T) {
			if r := fsm.Apply(tc.log); r != nil {
				t.Fatalf("result = %#v, want nil", r)
			}
			if fsm.Skipped() != 0 {
				t.Fatalf("Skipped = %d, want 0", fsm.Skipped())
			}
		})
	}

	skipped := []struct {
		name string
		data []byte
	}{
		{"register bad json", []byte{byte(catalog.CmdRegister), '{'}},
		{"register null check", append([]byte{byte(catalog.CmdRegister)}, `{"Node":"n9","Checks":[null]}`...)},
		{"deregister bad json", []byte{byte(catalog.CmdDeregister), 'x'}},
		{"kv bad json", []byte{byte(catalog.CmdKV), '['}},
		{"kv trailing data", append([]byte{byte(catalog.CmdKV)}, `{"Op":"set","Entry":{"Key":"x"}}{}`...)},
		{"txn bad json", []byte{byte(catalog.CmdTxn), '{', '}'}},
		{"txn empty op", append([]byte{byte(catalog.CmdTxn)}, `[{}]`...)},
		{"session bad json", []byte{byte(catalog.CmdSession)}},
		{"coordinate bad json", []byte{byte(catalog.CmdCoordinate), '{'}},
		{"query bad json", []byte{byte(catalog.CmdPreparedQuery), '1'}},
		{"unknown type", []byte{200, '{', '}'}},
		{"type zero", []byte{0}},
	}
	for i, tc := range skipped {
		t.Run(tc.name, func(t *testing.T) {
			r := fsm.Apply(&raft.Log{Index: uint64(100 + i), Type: raft.LogCommand, Data: tc.data})
			err, ok := r.(error)
			if !ok || !errors.Is(err, catalog.ErrBadCommand) || !errors.Is(err, catalog.ErrInvalidRequest) {
				t.Fatalf("result = %#v, want an error wrapping ErrBadCommand", r)
			}
			if got := fsm.Skipped(); got != uint64(i+1) {
				t.Fatalf("Skipped = %d, want %d", got, i+1)
			}
			if string(dump(t, s)) != string(before) {
				t.Fatal("store changed")
			}
		})
	}

	// A batch skips the same entries and applies the good ones around them.
	kv := func(idx uint64, key string) *raft.Log {
		data, err := catalog.Encode(catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVSet, Entry: catalog.KVEntry{Key: key}})
		if err != nil {
			t.Fatal(err)
		}
		return &raft.Log{Index: idx, Type: raft.LogCommand, Data: data}
	}
	res := fsm.ApplyBatch([]*raft.Log{kv(200, "b1"), {Index: 201, Type: raft.LogCommand, Data: []byte{byte(catalog.CmdKV), '['}}, kv(202, "b2"), kv(203, "b3")})
	if err, ok := res[1].(error); !ok || !errors.Is(err, catalog.ErrBadCommand) {
		t.Fatalf("batch result of the bad entry = %#v", res[1])
	}
	for _, k := range []string{"b1", "b2", "b3"} {
		mustKV(t, s, k)
	}
}

func TestValidateCommand(t *testing.T) {
	enc := func(ct catalog.CommandType, body any) []byte {
		t.Helper()
		data, err := catalog.Encode(ct, body)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	good := map[string][]byte{
		"register":   enc(catalog.CmdRegister, &catalog.RegisterRequest{Node: "n1"}),
		"deregister": enc(catalog.CmdDeregister, &catalog.DeregisterRequest{Node: "n1"}),
		"kv":         enc(catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVLock, Entry: catalog.KVEntry{Key: "k", Session: "s"}}),
		"txn":        enc(catalog.CmdTxn, []catalog.TxnOp{kvOp(catalog.KVSet, "a", "b")}),
		"session":    enc(catalog.CmdSession, &catalog.SessionRequest{Op: catalog.SessionDestroy}),
		"coordinate": enc(catalog.CmdCoordinate, []*catalog.CoordinateEntry{{Node: "n1"}}),
		"query":      enc(catalog.CmdPreparedQuery, &catalog.PreparedQueryRequest{Op: catalog.PreparedQueryDelete}),
	}
	for name, data := range good {
		cmd, err := catalog.ValidateCommand(data)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if cmd.Type != catalog.CommandType(data[0]) {
			t.Fatalf("%s: type %d", name, cmd.Type)
		}
	}
	if key, ok := mustValidate(t, good["kv"]).IsLockAcquire(); !ok || key != "k" {
		t.Fatalf("IsLockAcquire = %q, %v", key, ok)
	}
	if _, ok := mustValidate(t, good["register"]).IsLockAcquire(); ok {
		t.Fatal("a registration is a lock acquire")
	}

	manyOps := make([]catalog.TxnOp, catalog.MaxTxnOps+1)
	for i := range manyOps {
		manyOps[i] = kvOp(catalog.KVSet, "k", "")
	}
	bad := map[string][]byte{
		"empty":            nil,
		"unknown type":     {99, '{', '}'},
		"truncated":        good["register"][:len(good["register"])-1],
		"kv unknown op":    enc(catalog.CmdKV, &catalog.KVRequest{Op: "get"}),
		"kv long key":      enc(catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVSet, Entry: catalog.KVEntry{Key: string(make([]byte, catalog.MaxKeySize+1))}}),
		"txn too many ops": enc(catalog.CmdTxn, manyOps),
		"txn two parts":    enc(catalog.CmdTxn, []catalog.TxnOp{{KV: &catalog.TxnKVOp{Verb: catalog.KVSet}, Node: &catalog.TxnNodeOp{}}}),
		"session op":       enc(catalog.CmdSession, &catalog.SessionRequest{Op: "renew"}),
		"query op":         enc(catalog.CmdPreparedQuery, &catalog.PreparedQueryRequest{Op: "explain"}),
		"too large":        append(enc(catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVSet}), make([]byte, catalog.MaxCommandSize)...),
	}
	for name, data := range bad {
		if _, err := catalog.ValidateCommand(data); !errors.Is(err, catalog.ErrBadCommand) {
			t.Fatalf("%s: err = %v, want ErrBadCommand", name, err)
		}
	}
}

func mustValidate(t *testing.T, data []byte) *catalog.Command {
	t.Helper()
	cmd, err := catalog.ValidateCommand(data)
	if err != nil {
		t.Fatal(err)
	}
	return cmd
}

func TestFSMApplyBatch(t *testing.T) {
	mk := func(idx uint64, ct catalog.CommandType, body any) *raft.Log {
		data, err := catalog.Encode(ct, body)
		if err != nil {
			t.Fatal(err)
		}
		return &raft.Log{Index: idx, Type: raft.LogCommand, Data: data}
	}
	s := newStore(t)
	fsm := catalog.NewFSM(s, nil)
	var _ raft.BatchingFSM = fsm
	res := fsm.ApplyBatch([]*raft.Log{
		mk(1, catalog.CmdRegister, &catalog.RegisterRequest{Node: "n1"}),
		{Index: 2, Type: raft.LogNoop},
		mk(3, catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVSet, Entry: catalog.KVEntry{Key: "k"}}),
		mk(4, catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVCAS, Entry: catalog.KVEntry{Key: "k"}}),
	})
	if len(res) != 4 || res[0] != nil || res[1] != nil ||
		res[2] != (catalog.KVResult{OK: true}) || res[3] != (catalog.KVResult{OK: false}) {
		t.Fatalf("ApplyBatch = %#v", res)
	}
	if e := mustKV(t, s, "k"); e.ModifyIndex != 3 {
		t.Fatalf("k = %+v", e)
	}
}

func TestEncodeError(t *testing.T) {
	if _, err := catalog.Encode(catalog.CmdKV, make(chan int)); err == nil {
		t.Fatal("Encode of an unencodable body succeeded")
	}
}

// snapshotOf persists an FSM snapshot into a buffer sink.
func snapshotOf(t *testing.T, fsm *catalog.FSM) *bufSink {
	t.Helper()
	snap, err := fsm.Snapshot()
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	defer snap.Release()
	sink := &bufSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatalf("Persist: %v", err)
	}
	if !sink.closed || sink.cancelled {
		t.Fatalf("sink closed=%v cancelled=%v after successful Persist", sink.closed, sink.cancelled)
	}
	return sink
}

func TestFSMSnapshotRestore(t *testing.T) {
	src := newStore(t)
	srcFSM := catalog.NewFSM(src, nil)
	a := populate(t, srcFSM)
	want := dump(t, src)

	sink := snapshotOf(t, srcFSM)
	if !bytes.Equal(sink.Bytes(), want) {
		t.Fatalf("persisted snapshot differs from Dump:\n%s\nvs\n%s", sink.Bytes(), want)
	}

	dst := newStore(t)
	dstFSM := catalog.NewFSM(dst, nil)
	// The destination has data of its own, which the restore must replace.
	kvSet(t, dst, 1000, "stale", "x")
	registerNode(t, dst, 1001, "stale-node")
	abandon := dst.AbandonCh()

	rc := &trackCloser{Reader: bytes.NewReader(sink.Bytes())}
	if err := dstFSM.Restore(rc); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if !rc.closed {
		t.Fatal("FSM.Restore did not close the reader")
	}
	if !abandoned(abandon) {
		t.Fatal("AbandonCh not closed by Restore")
	}
	if got := dump(t, dst); !bytes.Equal(got, want) {
		t.Fatalf("restored Dump differs:\n%s\nwant\n%s", got, want)
	}

	// Spot checks.
	if dst.LastIndex() != a.idx {
		t.Fatalf("LastIndex = %d, want %d", dst.LastIndex(), a.idx)
	}
	if _, e := kvGet(t, dst, "stale"); e != nil {
		t.Fatal("pre-restore key survives")
	}
	if _, n, _ := dst.GetNode(ws(), "stale-node"); n != nil {
		t.Fatal("pre-restore node survives")
	}
	if e := mustKV(t, dst, "config/b"); !bytes.Equal(e.Value, []byte{0, 1, 2, 0xff}) || e.CreateIndex != 8 {
		t.Fatalf("config/b = %+v", e)
	}
	if idx, e := kvGet(t, dst, "missing"); e != nil || idx != a.lastKV {
		t.Fatalf("missing key index = %d, want %d", idx, a.lastKV)
	}
	_, csns, _ := dst.CheckServiceNodes(ws(), "web", []string{"b"})
	if len(csns) != 1 || csns[0].Node.Meta["rack"] != "r1" || len(csns[0].Checks) != 2 ||
		csns[0].Service.TaggedAddresses["lan"].Port != 80 || csns[0].Service.Proxy.Config["port"] != 21000.0 ||
		csns[0].Service.Proxy.Upstreams[0].LocalBindPort != 9191 {
		t.Fatalf("web after restore = %+v", csns)
	}
	_, svcs, _ := dst.Services(ws())
	if _, ok := svcs["tmp"]; ok || !equalStrings(svcs["web"], []string{"a", "b"}) {
		t.Fatalf("Services = %v", svcs)
	}
	if sess := getSession(t, dst, "sess-1"); sess == nil || sess.LockDelay != 15*time.Second || sess.Behavior != catalog.SessionBehaviorRelease {
		t.Fatalf("sess-1 = %+v", sess)
	}
	if _, roots, cfg, _ := dst.CARootsWithKeys(ws()); len(roots) != 2 || roots[1].PrivateKey != "NEW-KEY" || cfg.ClusterID == "" {
		t.Fatalf("CA after restore = %+v %+v", roots, cfg)
	}
	if _, e, _ := dst.ConfigEntry(ws(), "service-defaults", "web"); e == nil || string(e.Body) != `{"Protocol":"http"}` {
		t.Fatalf("config entry after restore = %+v", e)
	}

	// The restored store is fully functional: session-check links survived,
	// so a check going critical still invalidates the session and releases
	// its lock; indexes continue from the snapshot.
	b := &applier{t: t, fsm: dstFSM, idx: a.idx}
	b.applyOK(catalog.CmdRegister, &catalog.RegisterRequest{Node: "n1", SkipNodeUpdate: true,
		Check: &catalog.HealthCheck{CheckID: "web-http", ServiceID: "web1", Status: catalog.HealthCritical}})
	if getSession(t, dst, "sess-1") != nil {
		t.Fatal("restored session not invalidated by its check going critical")
	}
	if e := mustKV(t, dst, "service/leader"); e.Session != "" || e.ModifyIndex != b.idx {
		t.Fatalf("service/leader after invalidation = %+v", e)
	}
	// Deleting node n2 destroys sess-2 (delete behaviour) which deletes its key.
	b.applyOK(catalog.CmdDeregister, &catalog.DeregisterRequest{Node: "n2"})
	if _, e := kvGet(t, dst, "service/db"); e != nil {
		t.Fatalf("service/db survives: %+v", e)
	}
}

func TestSnapshotIsPointInTime(t *testing.T) {
	s := newStore(t)
	fsm := catalog.NewFSM(s, nil)
	a := populate(t, fsm)
	want := dump(t, s)

	snap, err := fsm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	// Writes after Snapshot() must not appear in the persisted snapshot.
	a.applyOK(catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVSet, Entry: catalog.KVEntry{Key: "later", Value: []byte("x")}})
	a.applyOK(catalog.CmdDeregister, &catalog.DeregisterRequest{Node: "n1"})
	sink := &bufSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sink.Bytes(), want) {
		t.Fatalf("snapshot includes later writes:\n%s\nwant\n%s", sink.Bytes(), want)
	}
}

func TestSnapshotPersistErrorCancels(t *testing.T) {
	s := newStore(t)
	fsm := catalog.NewFSM(s, nil)
	populate(t, fsm)
	snap, err := fsm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	sink := &failSink{limit: 10}
	if err := snap.Persist(sink); err == nil {
		t.Fatal("Persist to a failing sink succeeded")
	}
	if !sink.cancelled || sink.closed {
		t.Fatalf("failing Persist: cancelled=%v closed=%v, want cancelled and not closed", sink.cancelled, sink.closed)
	}
}

func TestRestoreEmptySnapshot(t *testing.T) {
	// A snapshot of an empty store is valid and empties the target.
	empty := dump(t, newStore(t))
	s := healthFixture(t)
	if err := s.Restore(bytes.NewReader(empty)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dump(t, s), empty) || s.LastIndex() != 0 {
		t.Fatalf("store not empty after restoring an empty snapshot: %s", dump(t, s))
	}
}

// corruptSnapshots returns named invalid snapshots derived from valid.
func corruptSnapshots(valid []byte) map[string][]byte {
	lines := bytes.SplitAfter(valid, []byte("\n"))
	header := lines[0]
	firstRec := lines[1]
	out := map[string][]byte{
		"empty":                   {},
		"garbage":                 []byte("\x00\x01\x02garbage\xff\xfe"),
		"random text":             []byte("hello world\n"),
		"wrong header":            append([]byte(`"consul-snapshot-v1"`+"\n"), valid[len(header):]...),
		"header not a string":     append([]byte(`{"T":"nodes"}`+"\n"), valid[len(header):]...),
		"header only truncated":   header[:len(header)/2],
		"truncated mid-record":    valid[:len(header)+len(firstRec)/2],
		"truncated near end":      valid[:len(valid)-3],
		"trailing garbage":        append(append([]byte{}, valid...), []byte("xyz")...),
		"unknown table":           append(append([]byte{}, header...), []byte(`{"T":"bogus","N":{"Node":"x"}}`+"\n")...),
		"table/row mismatch":      append(append([]byte{}, header...), []byte(`{"T":"kvs","N":{"Node":"x"}}`+"\n")...),
		"record without row":      append(append([]byte{}, header...), []byte(`{"T":"nodes"}`+"\n")...),
		"service without Svc":     append(append([]byte{}, header...), []byte(`{"T":"services","S":{"Node":"n","ID":"x","Name":"x"}}`+"\n")...),
		"missing primary key":     append(append([]byte{}, header...), []byte(`{"T":"nodes","N":{"Node":""}}`+"\n")...),
		"missing index key":       append(append([]byte{}, header...), []byte(`{"T":"index","I":{"Key":"","Value":3}}`+"\n")...),
		"wrong field type":        append(append([]byte{}, header...), []byte(`{"T":"kvs","K":{"Key":"a","Flags":"x"}}`+"\n")...),
		"record is not an object": append(append([]byte{}, header...), []byte("[1,2,3]\n")...),
		"valid then bad":          append(append([]byte{}, valid...), []byte(`{"T":"nodes"}`+"\n")...),
	}
	return out
}

func TestRestoreCorruptSnapshot(t *testing.T) {
	src := newStore(t)
	populate(t, catalog.NewFSM(src, nil))
	valid := dump(t, src)

	for name, data := range corruptSnapshots(valid) {
		t.Run(name, func(t *testing.T) {
			s := healthFixture(t)
			kvSet(t, s, 3, "keep", "me")
			before := dump(t, s)
			abandon := s.AbandonCh()
			fsm := catalog.NewFSM(s, nil)

			rc := &trackCloser{Reader: bytes.NewReader(data)}
			err := fsm.Restore(rc)
			if err == nil {
				t.Fatal("Restore of a corrupt snapshot succeeded")
			}
			if !errors.Is(err, catalog.ErrBadSnapshot) {
				t.Fatalf("err = %v, want it to wrap ErrBadSnapshot", err)
			}
			if !rc.closed {
				t.Fatal("reader not closed")
			}
			if got := dump(t, s); !bytes.Equal(got, before) {
				t.Fatalf("store changed by a failed restore:\n%s", got)
			}
			if abandoned(abandon) {
				t.Fatal("AbandonCh closed by a failed restore")
			}
			if e := mustKV(t, s, "keep"); string(e.Value) != "me" {
				t.Fatalf("keep = %+v", e)
			}
			if _, csns, _ := s.CheckServiceNodes(ws(), "web", nil); len(csns) != 1 {
				t.Fatalf("web instances = %d", len(csns))
			}
			// The store still accepts writes.
			kvSet(t, s, 4, "after", "x")
		})
	}
}

func TestRestoreTruncatedAtEveryOffset(t *testing.T) {
	src := newStore(t)
	populate(t, catalog.NewFSM(src, nil))
	valid := dump(t, src)

	s := healthFixture(t)
	before := dump(t, s)
	abandon := s.AbandonCh()
	step := 1
	if testing.Short() {
		step = 7
	}
	for n := 0; n < len(valid); n += step {
		// Every cut must be refused, record boundaries included: the end
		// record is required. Dropping only the final newline keeps every
		// record and is accepted.
		if n == len(valid)-1 {
			continue
		}
		err := s.Restore(bytes.NewReader(valid[:n]))
		if !errors.Is(err, catalog.ErrBadSnapshot) {
			t.Fatalf("cut at %d/%d: err = %v, want ErrBadSnapshot", n, len(valid), err)
		}
		// The data is swapped only together with closing AbandonCh; the
		// full comparison is sampled to keep the test fast.
		if abandoned(abandon) || (n%64 == 0 && !bytes.Equal(dump(t, s), before)) {
			t.Fatalf("cut at %d changed the store", n)
		}
	}
	if !bytes.Equal(dump(t, s), before) {
		t.Fatal("truncated restores changed the store")
	}
}

// BenchmarkValidateCommand is the cost ApplyRaw adds to every write before
// it is proposed.
func BenchmarkValidateCommand(b *testing.B) {
	for _, size := range []int{64, 4 << 10, 512 << 10} {
		data, err := catalog.Encode(catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVSet,
			Entry: catalog.KVEntry{Key: "service/web/config", Value: bytes.Repeat([]byte("v"), size)}})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("kv-%dB", size), func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for i := 0; i < b.N; i++ {
				if _, err := catalog.ValidateCommand(data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
