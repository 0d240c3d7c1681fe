package catalog_test

import (
	"bytes"
	"fmt"
	"reflect"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/tribune-mesh/tribune/catalog"
)

// TestApplyBatchMatchesSequentialApply checks that KV writes sharing one
// memdb transaction give the same results and state as applied one by one,
// including CAS writes that depend on earlier writes of the same batch and a
// non-KV command in the middle.
func TestApplyBatchMatchesSequentialApply(t *testing.T) {
	var logs []*raft.Log
	add := func(ct catalog.CommandType, body any) {
		b, err := catalog.Encode(ct, body)
		if err != nil {
			t.Fatal(err)
		}
		logs = append(logs, &raft.Log{Index: uint64(len(logs) + 1), Type: raft.LogCommand, Data: b})
	}
	for i := 0; i < 5; i++ {
		add(catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVSet, Entry: catalog.KVEntry{Key: fmt.Sprintf("k%d", i), Value: []byte("v")}})
	}
	// CAS on k0 at its index (1) succeeds; a second CAS at the same index fails.
	cas := catalog.KVEntry{Key: "k0", Value: []byte("cas")}
	cas.ModifyIndex = 1
	add(catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVCAS, Entry: cas})
	add(catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVCAS, Entry: cas})
	add(catalog.CmdRegister, &catalog.RegisterRequest{Node: "n1", Address: "10.0.0.1"})
	add(catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVDeleteTree, Entry: catalog.KVEntry{Key: "k1"}})
	add(catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVLock, Entry: catalog.KVEntry{Key: "x", Session: "missing"}})
	add(catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVSet, Entry: catalog.KVEntry{Key: "k9", Value: []byte("z")}})

	seqStore, batchStore := catalog.NewStore(nil), catalog.NewStore(nil)
	seq, batch := catalog.NewFSM(seqStore, nil), catalog.NewFSM(batchStore, nil)
	var want []any
	for _, l := range logs {
		want = append(want, seq.Apply(l))
	}
	got := batch.ApplyBatch(logs)
	for i := range want {
		w, g := fmt.Sprint(want[i]), fmt.Sprint(got[i])
		if w != g {
			t.Fatalf("entry %d: batch result %s, sequential %s", i, g, w)
		}
	}
	if r, ok := got[5].(catalog.KVResult); !ok || !r.OK {
		t.Fatalf("first CAS: %v", got[5])
	}
	if r, ok := got[6].(catalog.KVResult); !ok || r.OK {
		t.Fatalf("second CAS at a stale index: %v", got[6])
	}
	var a, b bytes.Buffer
	if err := seqStore.Dump(&a); err != nil {
		t.Fatal(err)
	}
	if err := batchStore.Dump(&b); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a.Bytes(), b.Bytes()) {
		t.Fatal("batched state differs from sequential state")
	}
}

// TestPreparedCommandIsNotDecodedAgain: the FSM applies the command the
// leader recorded for an entry's bytes (Prepared) instead of decoding them,
// and decodes them again once it is forgotten.
func TestPreparedCommandIsNotDecodedAgain(t *testing.T) {
	data, err := catalog.Encode(catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVSet, Entry: catalog.KVEntry{Key: "k", Value: []byte("encoded")}})
	if err != nil {
		t.Fatal(err)
	}
	cmd, err := catalog.ValidateCommand(data)
	if err != nil {
		t.Fatal(err)
	}
	// A recorded command that differs from its bytes shows which one the
	// FSM applied.
	cmd.KV.Entry.Value = []byte("prepared")
	store := catalog.NewStore(nil)
	fsm := catalog.NewFSM(store, nil)
	value := func() string {
		t.Helper()
		_, e, err := store.KVGet(nil, "k")
		if err != nil || e == nil {
			t.Fatalf("get: %v %v", e, err)
		}
		return string(e.Value)
	}
	forget := fsm.Prepared(data, cmd)
	fsm.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: data})
	if got := value(); got != "prepared" {
		t.Fatalf("single apply: value %q, want the prepared command's", got)
	}
	fsm.ApplyBatch([]*raft.Log{{Index: 2, Type: raft.LogCommand, Data: data}, {Index: 3, Type: raft.LogCommand, Data: data[:len(data):len(data)]}})
	if got := value(); got != "prepared" {
		t.Fatalf("batch apply: value %q, want the prepared command's", got)
	}
	forget()
	fsm.Apply(&raft.Log{Index: 4, Type: raft.LogCommand, Data: append([]byte(nil), data...)})
	fsm.Apply(&raft.Log{Index: 5, Type: raft.LogCommand, Data: data})
	if got := value(); got != "encoded" {
		t.Fatalf("after forget: value %q, want the decoded bytes'", got)
	}
}
