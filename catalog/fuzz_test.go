package catalog_test

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/hashicorp/go-memdb"
	"github.com/hashicorp/raft"

	"github.com/tribune-mesh/tribune/catalog"
)

// fuzzBaseStore builds the store every fuzz input is restored into.
func fuzzBaseStore(t testing.TB) *catalog.Store {
	s := catalog.NewStore(newFakeClock())
	if err := s.EnsureRegistration(1, webRegistration("n1", "10.0.0.1", "web1", []string{"a"}, 80, catalog.HealthPassing)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.KVApply(2, &catalog.KVRequest{Op: catalog.KVSet, Entry: catalog.KVEntry{Key: "keep", Value: []byte("me")}}); err != nil {
		t.Fatal(err)
	}
	return s
}

func FuzzRestore(f *testing.F) {
	src := catalog.NewStore(nil)
	fsm := catalog.NewFSM(src, nil)
	populate(f, fsm)
	var buf bytes.Buffer
	if err := src.Dump(&buf); err != nil {
		f.Fatal(err)
	}
	valid := buf.Bytes()

	f.Add(valid)
	f.Add(valid[:len(valid)/2])
	f.Add([]byte(`"tribune-snapshot-v1"` + "\n"))
	f.Add([]byte(""))
	f.Add([]byte("garbage"))
	for _, c := range corruptSnapshots(valid) {
		f.Add(c)
	}
	f.Add([]byte(`"tribune-snapshot-v1"` + "\n" +
		`{"T":"services","S":{"Node":"n","ID":"x","Name":"","Svc":{"ID":"x","Service":""}}}` + "\n" +
		`{"T":"kvs","K":{"Key":"a\u0000b","Session":"ghost"}}` + "\n" +
		`{"T":"checks","C":{"Node":"n","CheckID":"c","Status":"","ServiceID":"x"}}` + "\n"))

	f.Fuzz(func(t *testing.T, data []byte) {
		s := fuzzBaseStore(t)
		before := dump(t, s)
		abandon := s.AbandonCh()

		err := s.Restore(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, catalog.ErrBadSnapshot) {
				t.Fatalf("error does not wrap ErrBadSnapshot: %v", err)
			}
			if got := dump(t, s); !bytes.Equal(got, before) {
				t.Fatalf("failed restore changed the store:\n%s", got)
			}
			if abandoned(abandon) {
				t.Fatal("failed restore closed AbandonCh")
			}
			return
		}
		if !abandoned(abandon) {
			t.Fatal("successful restore did not close AbandonCh")
		}

		// Whatever was accepted must be readable without panics ...
		w := memdb.NewWatchSet()
		_, _, _ = s.Nodes(w)
		_, svcs, _ := s.Services(w)
		for name := range svcs {
			_, _, _ = s.CheckServiceNodes(w, name, nil)
			_, _, _ = s.ServiceChecks(w, name)
		}
		_, _, _ = s.ChecksInState(w, catalog.HealthAny)
		_, _, _ = s.KVKeys(w, "", "/")
		_, _, _ = s.SessionList(w, "")
		_ = s.LastIndex()

		// ... and must round-trip: its dump restores to the same dump.
		first := dump(t, s)
		again := catalog.NewStore(nil)
		if err := again.Restore(bytes.NewReader(first)); err != nil {
			t.Fatalf("re-restoring a dump of an accepted snapshot failed: %v\n%s", err, first)
		}
		if second := dump(t, again); !bytes.Equal(first, second) {
			t.Fatalf("dump not stable across restore:\n%s\nvs\n%s", first, second)
		}
	})
}

// seedCommands returns one real encoded command of every type, the
// commands populate applies, and junk.
func seedCommands(t testing.TB) [][]byte {
	var out [][]byte
	enc := func(ct catalog.CommandType, body any) {
		data, err := catalog.Encode(ct, body)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, data)
		// Logs written before the binary format hold JSON bodies.
		if old, err := catalog.EncodeJSON(ct, body); err == nil && !bytes.Equal(old, data) {
			out = append(out, old)
		}
	}
	enc(catalog.CmdRegister, &catalog.RegisterRequest{Node: "n9", Address: "10.0.0.9",
		Service: &catalog.Service{ID: "api1", Service: "api", Tags: []string{"v1"}, Port: 8080},
		Checks:  []*catalog.HealthCheck{{CheckID: "api-ttl", Status: catalog.HealthCritical, ServiceID: "api1"}}})
	enc(catalog.CmdDeregister, &catalog.DeregisterRequest{Node: "n1", ServiceID: "web1"})
	enc(catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVSet, Entry: catalog.KVEntry{Key: "a/b", Value: []byte{0, 0xff}, Flags: 3}})
	enc(catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVDeleteTree, Entry: catalog.KVEntry{Key: "config/"}})
	enc(catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVUnlock, Entry: catalog.KVEntry{Key: "service/leader", Session: "sess-1"}})
	enc(catalog.CmdTxn, []catalog.TxnOp{kvOp(catalog.KVSet, "t/1", "x"), kvOp(catalog.KVGetTree, "config/", ""),
		{Node: &catalog.TxnNodeOp{Verb: catalog.TxnSet, Node: catalog.Node{Node: "n7", Address: "10.0.0.7"}}},
		{Session: &catalog.TxnSessionOp{Verb: catalog.TxnDelete, Session: catalog.Session{ID: "sess-2"}}}})
	enc(catalog.CmdTxn, []catalog.TxnOp{kvOp(catalog.KVSet, "t/\xff", "x"), kvOp(catalog.KVCheckIndex, "t/1", ""),
		{Session: &catalog.TxnSessionOp{Verb: catalog.TxnDelete, Session: catalog.Session{ID: "sess-2"}}}})
	enc(catalog.CmdSession, &catalog.SessionRequest{Op: catalog.SessionCreate, Session: catalog.Session{ID: "s9", Node: "n1", TTL: "10s"}})
	enc(catalog.CmdSession, &catalog.SessionRequest{Op: catalog.SessionDestroy, Session: catalog.Session{ID: "sess-1"}})
	enc(catalog.CmdCoordinate, []*catalog.CoordinateEntry{{Node: "n1"}, nil})
	enc(catalog.CmdPreparedQuery, &catalog.PreparedQueryRequest{Op: catalog.PreparedQueryCreate,
		Query: catalog.PreparedQuery{ID: "q1", Name: "web-q", Service: catalog.ServiceQuery{Service: "web"}}})
	enc(catalog.CmdPreparedQuery, &catalog.PreparedQueryRequest{Op: catalog.PreparedQueryDelete, Query: catalog.PreparedQuery{ID: "q1"}})
	enc(catalog.CmdACLPolicySet, &catalog.ACLPolicy{ID: "p1", Name: "kv", Rules: `key_prefix "" { policy = "read" }`})
	enc(catalog.CmdACLRoleSet, &catalog.ACLRole{ID: "r1", Name: "ops", Policies: []catalog.ACLLink{{Name: "kv"}}})
	enc(catalog.CmdACLTokenSet, &catalog.ACLToken{AccessorID: "a1", SecretID: "s1", Policies: []catalog.ACLLink{{ID: "p1"}},
		Roles: []catalog.ACLLink{{ID: "r1"}}, ServiceIdentities: []*catalog.ACLServiceIdentity{{ServiceName: "web"}, nil}})
	enc(catalog.CmdACLBootstrap, &catalog.ACLToken{AccessorID: "m", SecretID: "root"})
	enc(catalog.CmdACLTokenDelete, &catalog.ACLDeleteRequest{ID: "a1"})
	enc(catalog.CmdACLPolicyDelete, &catalog.ACLDeleteRequest{ID: "p1"})
	enc(catalog.CmdACLRoleDelete, &catalog.ACLDeleteRequest{ID: "r1"})
	enc(catalog.CmdACLAuthMethod, &catalog.ACLAuthMethodRequest{Op: catalog.ACLOpSet, Method: &catalog.ACLAuthMethod{Name: "m", Type: "jwt", Config: map[string]any{"BoundIssuer": "i"}}})
	enc(catalog.CmdACLBindingRule, &catalog.ACLBindingRuleRequest{Op: catalog.ACLOpSet, Rule: &catalog.ACLBindingRule{ID: "b1", AuthMethod: "m", BindType: "service", BindName: "web"}})
	enc(catalog.CmdACLTokenSet, &catalog.ACLToken{AccessorID: "l1", SecretID: "ls1", AuthMethod: "m"})
	enc(catalog.CmdACLBootstrap, &catalog.ACLBootstrapRequest{ACLToken: catalog.ACLToken{AccessorID: "m2", SecretID: "root2"}, ResetIndex: 3})
	enc(catalog.CmdACLLogin, &catalog.ACLLoginRequest{Op: catalog.ACLLoginOp, AuthMethod: "m", BearerToken: "a.b.c", AccessorID: "l2", SecretID: "ls2"})
	enc(catalog.CmdACLBindingRule, &catalog.ACLBindingRuleRequest{Op: catalog.ACLOpDelete, ID: "b1"})
	enc(catalog.CmdACLAuthMethod, &catalog.ACLAuthMethodRequest{Op: catalog.ACLOpDelete, Name: "m"})
	enc(catalog.CmdCA, &catalog.CARequest{Op: catalog.CAOpSetClusterID, ClusterID: "c1"})
	enc(catalog.CmdCA, &catalog.CARequest{Op: catalog.CAOpSetRoots, Config: &catalog.CAConfiguration{Provider: "consul"},
		Roots: []*catalog.CARoot{{ID: "r1", Active: true, PrivateKey: "k"}}})
	enc(catalog.CmdConfigEntry, &catalog.ConfigEntryRequest{Op: catalog.ConfigEntryUpsert,
		Entry: catalog.ConfigEntry{Kind: "service-intentions", Name: "db", Body: []byte(`{"Sources":[{"Name":"web","Action":"deny"}]}`)}})
	enc(catalog.CmdConfigEntry, &catalog.ConfigEntryRequest{Op: catalog.ConfigEntryDeleteCAS, Entry: catalog.ConfigEntry{Kind: "mesh", Name: "mesh"}})
	enc(catalog.CmdConfigEntry, &catalog.ConfigEntryRequest{Op: catalog.ConfigEntryUpsert,
		Entry: catalog.ConfigEntry{Kind: "service-resolver", Name: "db", Body: []byte(`{}`)}})
	enc(catalog.CmdServiceVirtualIP, &catalog.VirtualIPRequest{Service: "db", ManualVIPs: []string{"10.1.1.1"}})
	out = append(out,
		nil, []byte{0}, []byte{200, '{', '}'}, []byte{byte(catalog.CmdKV)}, []byte{byte(catalog.CmdKV), '['},
		[]byte{byte(catalog.CmdRegister), 'n', 'u', 'l', 'l'},
		append([]byte{byte(catalog.CmdRegister)}, `{"Node":"x","Checks":[null]}`...),
		append([]byte{byte(catalog.CmdTxn)}, `[{},{"KV":null}]`...),
		append([]byte{byte(catalog.CmdCA)}, `{"Op":"set-roots","Roots":[null]}`...),
		append([]byte{byte(catalog.CmdConfigEntry)}, `null`...),
		append([]byte{byte(catalog.CmdServiceVirtualIP)}, `null`...),
		[]byte("garbage"))
	return out
}

// FuzzFSMApply feeds arbitrary log entries to the FSM, one by one and as one
// batch: neither panics, both reach the same state, an entry is skipped
// exactly when DecodeCommand refuses it, whatever ValidateCommand accepts is
// applied, and the resulting state survives snapshot and restore unchanged.
func FuzzFSMApply(f *testing.F) {
	seeds := seedCommands(f)
	for i, a := range seeds {
		f.Add(a, seeds[(i+1)%len(seeds)], seeds[(i+5)%len(seeds)])
	}

	// Every input starts from the state populate builds (restoring its
	// dump is cheaper than applying it again).
	clk := newFakeClock()
	src := catalog.NewStore(clk)
	base := populate(f, catalog.NewFSM(src, nil)).idx
	baseDump := dump(f, src)

	f.Fuzz(func(t *testing.T, e1, e2, e3 []byte) {
		entries := [][]byte{e1, e2, e3}
		seqStore, batchStore := catalog.NewStore(clk), catalog.NewStore(clk)
		for _, st := range []*catalog.Store{seqStore, batchStore} {
			if err := st.Restore(bytes.NewReader(baseDump)); err != nil {
				t.Fatal(err)
			}
		}
		seq, batch := catalog.NewFSM(seqStore, nil), catalog.NewFSM(batchStore, nil)

		var logs []*raft.Log
		wantSkipped := uint64(0)
		for i, e := range entries {
			l := &raft.Log{Index: base + uint64(i) + 1, Term: 1, Type: raft.LogCommand, Data: e}
			logs = append(logs, l)
			_, decErr := catalog.DecodeCommand(e)
			_, valErr := catalog.ValidateCommand(e)
			if valErr == nil && decErr != nil {
				t.Fatalf("ValidateCommand accepted what DecodeCommand refuses: %v", decErr)
			}
			before := seq.Skipped()
			res := seq.Apply(l)
			skipped := seq.Skipped() - before
			switch {
			case len(e) == 0:
				if skipped != 0 || res != nil {
					t.Fatalf("empty entry: skipped %d, result %#v", skipped, res)
				}
			case decErr != nil:
				wantSkipped++
				if err, ok := res.(error); skipped != 1 || !ok || !errors.Is(err, catalog.ErrBadCommand) {
					t.Fatalf("undecodable entry: skipped %d, result %#v", skipped, res)
				}
			case skipped != 0:
				t.Fatalf("decodable entry skipped: %q", e)
			}
		}
		batch.ApplyBatch(logs)
		if seq.Skipped() != wantSkipped || batch.Skipped() != wantSkipped {
			t.Fatalf("skipped: sequential %d, batch %d, want %d", seq.Skipped(), batch.Skipped(), wantSkipped)
		}
		got := dump(t, seqStore)
		if b := dump(t, batchStore); !bytes.Equal(got, b) {
			t.Fatalf("batch and sequential apply differ:\n%s\nvs\n%s", got, b)
		}

		snap, err := seq.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		sink := &bufSink{}
		if err := snap.Persist(sink); err != nil {
			t.Fatalf("Persist: %v", err)
		}
		restored := catalog.NewFSM(catalog.NewStore(clk), nil)
		if err := restored.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
			t.Fatalf("restore of the FSM's own snapshot: %v\n%s", err, sink.Bytes())
		}
		if r := dump(t, restored.Store()); !bytes.Equal(got, r) {
			t.Fatalf("state changed across snapshot/restore:\n%s\nvs\n%s", got, r)
		}
	})
}
