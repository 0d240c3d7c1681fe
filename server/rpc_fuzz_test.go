package server

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/gossip"
	"github.com/tribune-mesh/tribune/test/wait"
)

// startTestServer starts a bootstrapped in-memory server on a loopback port
// and shuts it down when the test ends; edit changes its configuration.
func startTestServer(t testing.TB, edit ...func(*Config)) *Server {
	t.Helper()
	cfg := DefaultConfig()
	cfg.NodeName = "fuzz-1"
	cfg.InMemory = true
	cfg.Bootstrap = true
	cfg.RaftMultiplier = 1
	cfg.RPCAddr = "127.0.0.1:0"
	cfg.AdvertiseAddr = "127.0.0.1:0"
	cfg.HoldTimeout = time.Second
	cfg.Logger = hclog.NewNullLogger()
	for _, e := range edit {
		e(cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("start server: %v", err)
	}
	t.Cleanup(func() { _ = s.Shutdown() })
	wait.For(t, 10*time.Second, func() error {
		if !s.IsLeader() {
			return ErrNoLeader
		}
		return nil
	})
	return s
}

// fuzzedMethods are the RPC methods FuzzRPCRequest runs through their
// handler. Operator and SnapshotRestore are operator actions (remove a peer,
// replace the state) that a fuzzer may legitimately trigger; their requests
// are only decoded.
var fuzzedMethods = map[string]bool{"Apply": true, "Read": true, "Status": true, "SessionRenew": true, "SnapshotSave": true,
	"Datacenters": true, "ReplicationStatus": true, "FireEvent": true, "ConnectSignIntermediate": true}

// FuzzRPCRequest feeds arbitrary messages to every method of the server
// port's RPC service, decoded by the codec the gRPC server uses, as a peer
// of port 8300 can. The first byte picks the method. No message panics the
// server, every answer can be encoded back, and nothing the server accepted
// reaches its FSM undecodable.
func FuzzRPCRequest(f *testing.F) {
	add := func(method int, msg []byte) { f.Add(append([]byte{byte(method)}, msg...)) }
	methodIndex := map[string]int{}
	for i, m := range rpcServiceDesc.Methods {
		methodIndex[m.MethodName] = i
	}
	js := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	raw := func(ct catalog.CommandType, body any) []byte {
		data, err := catalog.Encode(ct, body)
		if err != nil {
			f.Fatal(err)
		}
		return append([]byte{rawApply}, data...)
	}
	apply := methodIndex["Apply"]
	add(apply, raw(catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVSet, Entry: catalog.KVEntry{Key: "a", Value: []byte("b")}}))
	add(apply, raw(catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVLock, Entry: catalog.KVEntry{Key: "l", Session: "s"}}))
	add(apply, raw(catalog.CmdRegister, &catalog.RegisterRequest{Node: "n1", Address: "10.0.0.1",
		Service: &catalog.Service{ID: "web1", Service: "web", Port: 80}}))
	add(apply, raw(catalog.CmdDeregister, &catalog.DeregisterRequest{Node: "n1"}))
	add(apply, raw(catalog.CmdTxn, []catalog.TxnOp{{KV: &catalog.TxnKVOp{Verb: catalog.KVSet, Key: "t"}}}))
	add(apply, raw(catalog.CmdSession, &catalog.SessionRequest{Op: catalog.SessionCreate, Session: catalog.Session{ID: "s", Node: "fuzz-1"}}))
	add(apply, raw(catalog.CmdCoordinate, []*catalog.CoordinateEntry{{Node: "fuzz-1"}}))
	add(apply, raw(catalog.CmdPreparedQuery, &catalog.PreparedQueryRequest{Op: catalog.PreparedQueryCreate,
		Query: catalog.PreparedQuery{ID: "q", Service: catalog.ServiceQuery{Service: "web"}}}))
	add(apply, []byte{rawApply, 200, '{', '}'})
	add(apply, []byte{rawApply, byte(catalog.CmdKV), '{'})
	add(apply, []byte{rawApply})
	add(apply, js(&ApplyRequest{Data: []byte{byte(catalog.CmdKV), '{', '}'}}))
	read := methodIndex["Read"]
	for _, op := range []catalog.ReadOp{catalog.ReadKVGet, catalog.ReadKVKeys, catalog.ReadHealthService, catalog.ReadPreparedQueryResolve, "bogus"} {
		add(read, js(&catalog.ReadRequest{Op: op, Key: "a", Name: "web", Tags: []string{"x"}}))
	}
	add(read, js(&catalog.ReadRequest{Op: catalog.ReadKVList, Options: catalog.QueryOptions{MinQueryIndex: 1 << 62, MaxQueryTime: -1, AllowStale: true}}))
	add(methodIndex["Status"], []byte("{}"))
	add(methodIndex["SessionRenew"], js(&SessionRenewRequest{ID: "s"}))
	add(methodIndex["SnapshotSave"], []byte("{}"))
	add(methodIndex["Operator"], js(&OperatorRequest{Op: OpRemovePeer, Arg: "fuzz-1"}))
	add(methodIndex["SnapshotRestore"], js(&SnapshotWire{Data: []byte{0x1f, 0x8b}}))
	add(methodIndex["Datacenters"], []byte("{}"))
	add(methodIndex["ReplicationStatus"], []byte("{}"))
	add(methodIndex["FireEvent"], js(&FireEventRequest{Event: gossip.UserEvent{Name: "deploy", NodeFilter: "("}}))
	add(methodIndex["ConnectSignIntermediate"], js(&SignIntermediateRequest{Datacenter: "dc2", CSR: "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"}))
	add(read, js(&catalog.ReadRequest{Op: catalog.ReadKVGet, Key: "a", Options: catalog.QueryOptions{Datacenter: "dc9"}}))
	f.Add([]byte{})
	f.Add([]byte("\xff\xff\xff"))

	s := startTestServer(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		m := rpcServiceDesc.Methods[int(data[0])%len(rpcServiceDesc.Methods)]
		msg := data[1:]
		var decoded any
		dec := func(v any) error {
			decoded = v
			return jsonCodec{}.Unmarshal(msg, v)
		}
		if !fuzzedMethods[m.MethodName] {
			var err error
			switch m.MethodName {
			case "Operator":
				err = dec(new(OperatorRequest))
			case "SnapshotRestore":
				var in SnapshotWire
				if err = dec(&in); err == nil {
					_, _, _ = InspectSnapshot(in.Data)
				}
			}
			_ = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		resp, err := m.Handler(s, ctx, dec, nil)
		if err == nil {
			if _, err := (jsonCodec{}).Marshal(resp); err != nil {
				t.Fatalf("%s answer cannot be encoded: %v", m.MethodName, err)
			}
		}
		if a, ok := decoded.(*ApplyRequest); ok && err == nil {
			if _, verr := catalog.ValidateCommand(a.Data); verr != nil {
				if r := resp.(*ApplyResponse); r.Error == nil || r.Applied {
					t.Fatalf("invalid command %q was not refused: %+v", a.Data, r)
				}
			}
		}
		if n := s.SkippedEntries(); n != 0 {
			t.Fatalf("%d undecodable entries reached the FSM", n)
		}
	})
}
