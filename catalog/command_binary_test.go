package catalog_test

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tribune-mesh/tribune/catalog"
)

// binaryBodies are commands with a binary form, with nil and empty slices,
// every field set, and strings that are not valid UTF-8.
func binaryBodies() []struct {
	t    catalog.CommandType
	body any
} {
	full := catalog.KVEntry{LockIndex: 7, Key: "a/\xffb", Flags: 1 << 63, Value: []byte{0, 1, 0xff}, Session: "s-1"}
	full.CreateIndex, full.ModifyIndex = 3, 1<<40
	sess := catalog.Session{ID: "s1", Name: "lock", Node: "n1", LockDelay: 15 * time.Second, Behavior: "delete", TTL: "10s",
		NodeChecks: []string{"serfHealth", "x\xc3"}, ServiceChecks: []catalog.ServiceCheck{{ID: "c1", Namespace: "ns"}, {ID: "c2"}}}
	sess.CreateIndex, sess.ModifyIndex = 9, 10
	return []struct {
		t    catalog.CommandType
		body any
	}{
		{catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVSet, Entry: catalog.KVEntry{Key: "k", Value: []byte("v")}}},
		{catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVCAS, Entry: full}},
		{catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVSet, Entry: catalog.KVEntry{Key: "empty", Value: []byte{}}}},
		{catalog.CmdKV, &catalog.KVRequest{Op: "no-such-op", Entry: catalog.KVEntry{Key: "k"}}},
		{catalog.CmdSession, &catalog.SessionRequest{Op: catalog.SessionCreate, Session: sess}},
		{catalog.CmdSession, &catalog.SessionRequest{Op: catalog.SessionDestroy, Session: catalog.Session{ID: "s1", NodeChecks: []string{}, ServiceChecks: []catalog.ServiceCheck{}}}},
		{catalog.CmdTxn, []catalog.TxnOp{
			{KV: &catalog.TxnKVOp{Verb: catalog.KVSet, Key: "t/1", Value: []byte("x"), Flags: 2, Index: 3, Session: "s"}},
			{KV: &catalog.TxnKVOp{Verb: catalog.KVGetTree, Key: "t/"}},
			{Session: &catalog.TxnSessionOp{Verb: catalog.TxnDelete, Session: sess}},
		}},
		{catalog.CmdTxn, []catalog.TxnOp{}},
	}
}

// TestBinaryCommandsRoundTrip: the binary entries decode to what was
// encoded, and to what the same command's JSON entry decodes to.
func TestBinaryCommandsRoundTrip(t *testing.T) {
	for i, c := range binaryBodies() {
		bin, err := catalog.Encode(c.t, c.body)
		if err != nil {
			t.Fatal(err)
		}
		if len(bin) < 2 || bin[1] != 0xB1 {
			t.Fatalf("body %d: not binary: %q", i, bin)
		}
		js, err := catalog.EncodeJSON(c.t, c.body)
		if err != nil {
			t.Fatal(err)
		}
		fromBin, err := catalog.DecodeCommand(bin)
		if err != nil {
			t.Fatalf("body %d: binary: %v", i, err)
		}
		fromJSON, err := catalog.DecodeCommand(js)
		if err != nil {
			t.Fatalf("body %d: JSON: %v", i, err)
		}
		if !reflect.DeepEqual(fromBin, fromJSON) {
			t.Errorf("body %d: binary decodes to\n%#v\nJSON to\n%#v", i, fromBin, fromJSON)
		}
		// Every proper prefix is refused, and so is a trailing byte.
		for n := 2; n < len(bin); n++ {
			if _, err := catalog.DecodeCommand(bin[:n]); !errors.Is(err, catalog.ErrBadCommand) {
				t.Fatalf("body %d cut at %d: %v", i, n, err)
			}
		}
		if _, err := catalog.DecodeCommand(append(bin[:len(bin):len(bin)], 0)); !errors.Is(err, catalog.ErrBadCommand) {
			t.Fatalf("body %d with a trailing byte: %v", i, err)
		}
	}
}

// TestCatalogTxnKeepsJSON: transactions with catalog operations, and every
// other command type, keep JSON bodies.
func TestCatalogTxnKeepsJSON(t *testing.T) {
	ops := []catalog.TxnOp{{Node: &catalog.TxnNodeOp{Verb: catalog.TxnSet, Node: catalog.Node{Node: "n"}}}}
	for _, c := range []struct {
		t    catalog.CommandType
		body any
	}{{catalog.CmdTxn, ops}, {catalog.CmdRegister, &catalog.RegisterRequest{Node: "n"}}, {catalog.CmdTxn, []catalog.TxnOp{{}}}} {
		b, err := catalog.Encode(c.t, c.body)
		if err != nil {
			t.Fatal(err)
		}
		if b[1] != '{' && b[1] != '[' {
			t.Fatalf("type %d: body %q is not JSON", c.t, b)
		}
	}
	// A binary body for a type without a binary form is refused.
	if _, err := catalog.DecodeCommand([]byte{byte(catalog.CmdRegister), 0xB1}); !errors.Is(err, catalog.ErrBadCommand) {
		t.Fatalf("binary register: %v", err)
	}
}

// TestBinaryCodecKnowsEveryField fails when a field is added to a struct the
// binary format writes by hand: add it to command_binary.go (writer and
// reader, at the end of its struct) and to the list below.
func TestBinaryCodecKnowsEveryField(t *testing.T) {
	want := map[reflect.Type][]string{
		reflect.TypeOf(catalog.KVRequest{}):      {"Op", "Entry"},
		reflect.TypeOf(catalog.KVEntry{}):        {"LockIndex", "Key", "Flags", "Value", "Session", "RaftIndex"},
		reflect.TypeOf(catalog.RaftIndex{}):      {"CreateIndex", "ModifyIndex"},
		reflect.TypeOf(catalog.SessionRequest{}): {"Op", "Session"},
		reflect.TypeOf(catalog.Session{}):        {"ID", "Name", "Node", "LockDelay", "Behavior", "TTL", "NodeChecks", "ServiceChecks", "RaftIndex"},
		reflect.TypeOf(catalog.ServiceCheck{}):   {"ID", "Namespace"},
		reflect.TypeOf(catalog.TxnOp{}):          {"KV", "Node", "Service", "Check", "Session"},
		reflect.TypeOf(catalog.TxnKVOp{}):        {"Verb", "Key", "Value", "Flags", "Index", "Session"},
		reflect.TypeOf(catalog.TxnSessionOp{}):   {"Verb", "Session"},
	}
	for rt, fields := range want {
		var got []string
		for i := 0; i < rt.NumField(); i++ {
			got = append(got, rt.Field(i).Name)
		}
		if !reflect.DeepEqual(got, fields) {
			t.Errorf("%s has fields %v; the binary codec knows %v", rt.Name(), got, fields)
		}
	}
}

// TestFSMAppliesOldJSONEntries: a log written before the binary format
// (JSON bodies) applies as it did, mixed with binary entries in one batch.
func TestFSMAppliesOldJSONEntries(t *testing.T) {
	var logs []*raft.Log
	for i, enc := range []func(catalog.CommandType, any) ([]byte, error){catalog.EncodeJSON, catalog.Encode, catalog.EncodeJSON} {
		data, err := enc(catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVSet, Entry: catalog.KVEntry{Key: "k", Value: []byte{byte('a' + i)}}})
		if err != nil {
			t.Fatal(err)
		}
		logs = append(logs, &raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: data})
	}
	single, batch := catalog.NewStore(nil), catalog.NewStore(nil)
	fs, fb := catalog.NewFSM(single, nil), catalog.NewFSM(batch, nil)
	for _, l := range logs {
		if r := fs.Apply(l); r != (catalog.KVResult{OK: true}) {
			t.Fatalf("apply %d: %v", l.Index, r)
		}
	}
	fb.ApplyBatch(logs)
	for _, s := range []*catalog.Store{single, batch} {
		_, e, err := s.KVGet(nil, "k")
		if err != nil || e == nil || !bytes.Equal(e.Value, []byte("c")) || e.CreateIndex != 1 || e.ModifyIndex != 3 {
			t.Fatalf("k = %+v, %v", e, err)
		}
	}
}

func BenchmarkDecodeKVCommand(b *testing.B) {
	body := &catalog.KVRequest{Op: catalog.KVSet, Entry: catalog.KVEntry{Key: "bench/12/0345", Value: bytes.Repeat([]byte("x"), 128)}}
	for _, c := range []struct {
		name string
		enc  func(catalog.CommandType, any) ([]byte, error)
	}{{"json", catalog.EncodeJSON}, {"binary", catalog.Encode}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				data, err := c.enc(catalog.CmdKV, body)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := catalog.ValidateCommand(data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
