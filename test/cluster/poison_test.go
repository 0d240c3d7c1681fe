package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/test/procs"
	"github.com/tribune-mesh/tribune/test/wait"
)

// rawApply is what a peer of the server port sends as an Apply request: the
// marker byte 0xff then the command's bytes, as server/rpc.go's codec
// frames it. The answer is JSON.
type rawApply []byte

// applyAnswer is the part of the server's Apply answer this test reads.
type applyAnswer struct {
	Error *struct {
		Kind string
		Msg  string
	}
	Applied bool
}

type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	if r, ok := v.(rawApply); ok {
		return append([]byte{0xff}, r...), nil
	}
	return json.Marshal(v)
}
func (rawCodec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }
func (rawCodec) Name() string                       { return "json" }

// dialServerPort opens a gRPC connection to a server port the way a peer
// does: connection type byte 0x02, then HTTP/2.
func dialServerPort(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	dialer := func(ctx context.Context, a string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", a)
		if err != nil {
			return nil, err
		}
		if _, err := c.Write([]byte{0x02}); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(dialer), grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// TestPoisonedCommandsAreRefused sends junk, truncated and unknown-type
// commands to every server port of a 3-server cluster (issue 9 §1): each is
// refused with an invalid-request error before it reaches Raft, and every
// server stays up and keeps serving writes and reads. Before the fix one
// unknown-type command was committed and panicked every server.
func TestPoisonedCommandsAreRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	c := procs.StartCluster(t, procs.Options{Servers: 3})

	good, err := catalog.Encode(catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVSet, Entry: catalog.KVEntry{Key: "poison/ok", Value: []byte("1")}})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := catalog.Encode(catalog.CmdRegister, &catalog.RegisterRequest{Node: "n1", Address: "10.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	poison := map[string][]byte{
		"unknown type":        {200, '{', '}'},
		"type zero":           {0},
		"junk":                []byte("\x13\x37 definitely not a command"),
		"truncated kv":        good[:len(good)/2],
		"truncated register":  reg[:len(reg)-1],
		"type byte only":      {byte(catalog.CmdTxn)},
		"kv unknown op":       append([]byte{byte(catalog.CmdKV)}, `{"Op":"explode","Entry":{"Key":"x"}}`...),
		"register null check": append([]byte{byte(catalog.CmdRegister)}, `{"Node":"n","Checks":[null]}`...),
		"txn empty op":        append([]byte{byte(catalog.CmdTxn)}, `[{}]`...),
		"kv trailing junk":    append(append([]byte{}, good...), "}{"...),
	}
	for _, s := range c.Servers {
		cc := dialServerPort(t, s.RPCAddr())
		for name, cmd := range poison {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			var ans applyAnswer
			err := cc.Invoke(ctx, "/tribune.Server/Apply", rawApply(cmd), &ans)
			cancel()
			if err != nil {
				t.Fatalf("%s: %s: rpc failed: %v", s.Name, name, err)
			}
			if ans.Applied || ans.Error == nil || ans.Error.Kind != "invalid" {
				t.Fatalf("%s: %s: answer %+v, want an invalid-request error and nothing applied", s.Name, name, ans)
			}
		}
		// A well-formed command still works on the same connection.
		var ans applyAnswer
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := cc.Invoke(ctx, "/tribune.Server/Apply", rawApply(good), &ans)
		cancel()
		if err != nil || !ans.Applied || ans.Error != nil {
			t.Fatalf("%s: good command: %v %+v", s.Name, err, ans)
		}
		// Junk on the raw port: unknown connection type, junk HTTP/2, junk Raft.
		for _, junk := range [][]byte{{0x7f, 1, 2, 3}, append([]byte{0x02}, "GET / HTTP/1.1\r\n\r\n"...), {0x01, 0xff, 0xff, 0xff, 0xff, 0, 0}} {
			conn, err := net.DialTimeout("tcp", s.RPCAddr(), 2*time.Second)
			if err != nil {
				t.Fatalf("%s: dial: %v", s.Name, err)
			}
			_, _ = conn.Write(junk)
			conn.Close()
		}
	}

	// Every server stays up and serves writes (forwarded to the leader)
	// and sees every other server's writes.
	for i, s := range c.Servers {
		cl := s.Client(t)
		key := fmt.Sprintf("after/%d", i)
		wait.For(t, 15*time.Second, func() error {
			_, err := cl.KV().Put(&api.KVPair{Key: key, Value: []byte(s.Name)}, nil)
			return err
		})
	}
	for _, s := range c.Servers {
		cl := s.Client(t)
		wait.For(t, 15*time.Second, func() error {
			for i := range c.Servers {
				p, _, err := cl.KV().Get(fmt.Sprintf("after/%d", i), &api.QueryOptions{AllowStale: true})
				if err != nil {
					return err
				}
				if p == nil {
					return fmt.Errorf("%s: after/%d not there yet", s.Name, i)
				}
			}
			return nil
		})
		if s.Contains("panic") {
			t.Fatalf("%s logged a panic", s.Name)
		}
		if s.Contains("cannot be decoded") {
			t.Fatalf("%s: an undecodable entry reached the log", s.Name)
		}
	}
}
