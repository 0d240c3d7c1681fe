package server

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/connect"
	"github.com/tribune-mesh/tribune/test/wait"
)

// agentCSR is a CSR of node's agent identity with the placeholder trust
// domain, as a client agent makes it.
func agentCSR(t testing.TB, node string) string {
	t.Helper()
	csr, _, err := connect.NewLeafCSR(connect.ID{Kind: connect.KindAgent, TrustDomain: connect.AgentCSRTrustDomain, Datacenter: "dc1", Node: node}, "ec", 256)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

// startAutoEncryptServer starts a server with auto_encrypt.allow_tls and
// waits for its CA.
func startAutoEncryptServer(t testing.TB) *Server {
	t.Helper()
	s := startTestServer(t, func(c *Config) { c.AutoEncryptAllowTLS = true; c.ConnectEnabled = true })
	wait.For(t, 10*time.Second, func() error {
		_, err := s.AutoEncryptSign(context.Background(), &AutoEncryptSignRequest{Datacenter: "dc1", Node: "warm", CSR: agentCSR(t, "warm")})
		return err
	})
	return s
}

func TestAutoEncryptSignChecksTheRequest(t *testing.T) {
	s := startAutoEncryptServer(t)
	ctx := context.Background()
	resp, err := s.AutoEncryptSign(ctx, &AutoEncryptSignRequest{Datacenter: "dc1", Node: "c1", CSR: agentCSR(t, "c1")})
	if err != nil || resp.IssuedCert == nil || len(resp.ConnectCARoots) == 0 {
		t.Fatalf("sign: %+v %v", resp, err)
	}
	for _, bad := range []*AutoEncryptSignRequest{
		{Datacenter: "dc1", Node: "c2", CSR: agentCSR(t, "c1")},   // another node's identity
		{Datacenter: "dc2", Node: "c1", CSR: agentCSR(t, "c1")},   // another datacenter
		{Datacenter: "dc1", Node: "", CSR: agentCSR(t, "c1")},     // no node
		{Datacenter: "dc1", Node: "a/b", CSR: agentCSR(t, "a/b")}, // not a node name
		{Datacenter: "dc1", Node: "c1", CSR: "junk"},
	} {
		if _, err := s.AutoEncryptSign(ctx, bad); !errors.Is(err, catalog.ErrInvalidRequest) {
			t.Errorf("%+v: %v, want an invalid request", bad, err)
		}
	}
	off := startTestServer(t)
	if _, err := off.AutoEncryptSign(ctx, &AutoEncryptSignRequest{Datacenter: "dc1", Node: "c1", CSR: agentCSR(t, "c1")}); err == nil {
		t.Fatal("signed without auto_encrypt.allow_tls")
	}
}

// FuzzAutoEncryptSign feeds arbitrary messages to AutoEncryptSign, decoded
// by the RPC codec, as anyone who reaches the server port may send them
// without a client certificate. Nothing panics and every answer encodes.
func FuzzAutoEncryptSign(f *testing.F) {
	seed := func(v any) {
		b, err := json.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	seed(&AutoEncryptSignRequest{Datacenter: "dc1", Node: "c1", CSR: agentCSR(f, "c1")})
	seed(&AutoEncryptSignRequest{Datacenter: "dc1", Node: "c1", CSR: agentCSR(f, "c2")})
	seed(map[string]any{"Datacenter": 1, "CSR": []int{1}})
	f.Add([]byte(`{"Node":"` + string(make([]byte, 300)) + `"}`))
	s := startAutoEncryptServer(f)
	f.Fuzz(func(t *testing.T, msg []byte) {
		var req AutoEncryptSignRequest
		if err := (jsonCodec{}).Unmarshal(msg, &req); err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := s.rpcAutoEncryptSign(ctx, &req)
		if err != nil {
			t.Fatalf("transport error: %v", err)
		}
		if _, err := (jsonCodec{}).Marshal(resp); err != nil {
			t.Fatalf("answer does not encode: %v", err)
		}
	})
}
