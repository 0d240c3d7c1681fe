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

// With ACLs on, the RPC signs a node's certificate only for a token with
// node:write on that node: reaching the server port is not enough.
func TestAutoEncryptSignNeedsNodeWrite(t *testing.T) {
	s := startTestServer(t, func(c *Config) {
		c.AutoEncryptAllowTLS = true
		c.ConnectEnabled = true
		c.ACL = ACLConfig{Enabled: true, DefaultPolicy: "deny", InitialManagement: checkMgmt}
	})
	mgmt := WithToken(context.Background(), checkMgmt)
	const nodeSecret = "21111111-2222-4333-8444-555555555555"
	wait.For(t, 10*time.Second, func() error {
		if _, err := s.Apply(mgmt, catalog.CmdACLPolicySet, &catalog.ACLPolicy{ID: "p-c1", Name: "c1", Rules: `node "c1" { policy = "write" }`}); err != nil {
			return err
		}
		_, err := s.Apply(mgmt, catalog.CmdACLTokenSet, &catalog.ACLToken{AccessorID: "a-c1", SecretID: nodeSecret, Policies: []catalog.ACLLink{{ID: "p-c1"}}})
		return err
	})
	sign := func(node, token string) *AutoEncryptSignResponse {
		t.Helper()
		var resp *AutoEncryptSignResponse
		wait.For(t, 10*time.Second, func() error {
			var err error
			resp, err = s.rpcAutoEncryptSign(WithToken(context.Background(), ""), &AutoEncryptSignRequest{Datacenter: "dc1", Node: node, CSR: agentCSR(t, node), Token: token})
			if err != nil {
				return err
			}
			if resp.Error != nil && errors.Is(fromWire(resp.Error), ErrConnectDisabled) {
				return fromWire(resp.Error) // the CA is not there yet
			}
			return nil
		})
		return resp
	}
	for _, c := range []struct{ node, token string }{{"c1", ""}, {"c1", "no-such-token"}, {"c2", nodeSecret}} {
		if resp := sign(c.node, c.token); resp.Error == nil || resp.IssuedCert != nil {
			t.Errorf("node %q token %q: signed (%+v)", c.node, c.token, resp)
		}
	}
	if resp := sign("c1", nodeSecret); resp.Error != nil || resp.IssuedCert == nil {
		t.Fatalf("node:write token refused: %+v", resp.Error)
	}
}
