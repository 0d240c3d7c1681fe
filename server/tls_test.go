package server

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tribune-mesh/tribune/test/logbuf"
	"github.com/tribune-mesh/tribune/tlsconfig"
	"github.com/tribune-mesh/tribune/tlsconfig/tlstest"
)

func configurator(t *testing.T, s tlsconfig.Settings) *tlsconfig.Configurator {
	t.Helper()
	c, err := tlsconfig.New(s, "dc1", "consul")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// tlsHarness runs the server port with the PKI's server certificate
// (pair) and tls.internal_rpc.verify_incoming as given.
func tlsHarness(t *testing.T, p *tlstest.PKI, pair tlstest.Pair, verifyIncoming bool) (*muxHarness, *logbuf.Buffer) {
	t.Helper()
	logs := &logbuf.Buffer{}
	conf := configurator(t, tlsconfig.Settings{CAFile: p.CAFile, CertFile: pair.Cert, KeyFile: pair.Key, VerifyIncoming: verifyIncoming})
	h := newMuxHarnessConfig(t, 0, &Config{RPCHandshakeTimeout: 5 * time.Second, TLS: conf}, 0,
		hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Debug}))
	return h, logs
}

// dialTLS dials the harness as a peer with the client certificate pair
// and verify_server_hostname, then sends data inside the stream.
func dialTLS(t *testing.T, h *muxHarness, p *tlstest.PKI, pair tlstest.Pair, kind byte, data string) (net.Conn, *logbuf.Buffer, error) {
	t.Helper()
	logs := &logbuf.Buffer{}
	sec := portTLS{
		conf:   configurator(t, tlsconfig.Settings{CAFile: p.CAFile, CertFile: pair.Cert, KeyFile: pair.Key, VerifyOutgoing: true, VerifyServerHostname: true}),
		logger: hclog.New(&hclog.LoggerOptions{Output: logs}),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := dialPort(ctx, dialTCP, sec, h.addr, kind)
	if err != nil {
		return nil, logs, err
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write([]byte(data)); err != nil {
		return nil, logs, err
	}
	return c, logs, nil
}

func TestServerPortRoutesTLSConnections(t *testing.T) {
	p := tlstest.NewPKI(t, "dc1")
	h, logs := tlsHarness(t, p, p.Server, true)

	for _, tc := range []struct {
		kind byte
		l    *chanListener
	}{{connRPC, h.rpcL}, {connRaft, h.raftL}} {
		client, _, err := dialTLS(t, h, p, p.Client, tc.kind, "hello")
		if err != nil {
			t.Fatalf("type %d over TLS: %v", tc.kind, err)
		}
		srv := accept(t, tc.l)
		buf := make([]byte, 5)
		_ = srv.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(srv, buf); err != nil || string(buf) != "hello" {
			t.Fatalf("type %d: read %q %v", tc.kind, buf, err)
		}
		// The answer goes back through TLS.
		if _, err := srv.Write([]byte("ok")); err != nil {
			t.Fatal(err)
		}
		_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(client, buf[:2]); err != nil || string(buf[:2]) != "ok" {
			t.Fatalf("type %d: answer %q %v", tc.kind, buf[:2], err)
		}
	}

	// verify_incoming: plaintext Raft and RPC are refused, with a reason.
	for _, kind := range []byte{connRPC, connRaft} {
		c := dialFrom(t, "127.0.0.1", h.addr, []byte{kind, 'x'})
		if !closedByPeer(c, 10*time.Second) {
			t.Fatalf("plaintext type %d was not refused", kind)
		}
	}
	logs.WaitFor(t, 10*time.Second, "verify_incoming requires TLS")
}

func TestServerPortRefusesBadCertificates(t *testing.T) {
	p := tlstest.NewPKI(t, "dc1")
	h, logs := tlsHarness(t, p, p.Server, true)

	// A client certificate of another CA, or an expired one: the server
	// refuses and says why.
	if _, _, err := dialTLS(t, h, p, p.OtherCA, connRPC, "x"); err == nil {
		// TLS 1.3 reports the client's rejection on the first read.
		t.Log("the client saw its handshake succeed; the server refuses after it")
	}
	logs.WaitFor(t, 10*time.Second, "certificate signed by unknown authority")
	if c, _, err := dialTLS(t, h, p, p.Expired, connRPC, "x"); err == nil {
		// TLS 1.3: the client learns of the refusal on its first read.
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := c.Read(make([]byte, 1))
		if ne, ok := err.(net.Error); err == nil || (ok && ne.Timeout()) {
			t.Fatalf("an expired client certificate was served: %v", err)
		}
	}
	logs.WaitFor(t, 10*time.Second, "expired")
	select {
	case <-h.rpcL.ch:
		t.Fatal("a connection with a bad certificate was routed")
	default:
	}

	// A server whose certificate names another datacenter, or is
	// expired, or of another CA: the dialing side refuses and says why.
	for _, tc := range []struct {
		pair tlstest.Pair
		want string
	}{
		{p.WrongDC, "server.dc1.consul"},
		{p.Expired, "expired"},
		{p.OtherCA, "unknown authority"},
	} {
		bad, _ := tlsHarness(t, p, tc.pair, false)
		_, clientLogs, err := dialTLS(t, bad, p, p.Client, connRPC, "x")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("server with %s: err %v, want %q", tc.pair.Cert, err, tc.want)
		}
		if !strings.Contains(clientLogs.String(), "TLS handshake with server failed") || !strings.Contains(clientLogs.String(), tc.want) {
			t.Errorf("server with %s: client log %q", tc.pair.Cert, clientLogs.String())
		}
	}
}

func TestServerPortWithoutVerifyIncomingTakesBoth(t *testing.T) {
	p := tlstest.NewPKI(t, "dc1")
	h, _ := tlsHarness(t, p, p.Server, false)
	dialFrom(t, "127.0.0.1", h.addr, []byte{connRPC, 'x'})
	accept(t, h.rpcL)
	if _, _, err := dialTLS(t, h, p, p.Client, connRPC, "x"); err != nil {
		t.Fatal(err)
	}
	accept(t, h.rpcL)

	// A server without TLS refuses a TLS connection, saying why.
	logs := &logbuf.Buffer{}
	plain := newMuxHarnessConfig(t, 0, &Config{RPCHandshakeTimeout: 5 * time.Second}, 0, hclog.New(&hclog.LoggerOptions{Output: logs}))
	if _, _, err := dialTLS(t, plain, p, p.Client, connRPC, "x"); err == nil {
		t.Fatal("TLS handshake with a server without TLS succeeded")
	}
	logs.WaitFor(t, 10*time.Second, "tls.internal_rpc has no cert_file")
}

func TestServerPortRefusesAutoEncryptWhenNotAllowed(t *testing.T) {
	p := tlstest.NewPKI(t, "dc1")
	h, logs := tlsHarness(t, p, p.Server, true)
	sec := portTLS{conf: configurator(t, tlsconfig.Settings{CAFile: p.CAFile, VerifyOutgoing: true}), first: connTLSInsecure}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if c, err := dialPort(ctx, dialTCP, sec, h.addr, connRPC); err == nil {
		c.Close()
	}
	logs.WaitFor(t, 10*time.Second, "auto_encrypt.allow_tls is off")
}

func TestRaftOverTLSNeedsAServerCertificate(t *testing.T) {
	p := tlstest.NewPKI(t, "dc1")
	logs := &logbuf.Buffer{}
	conf := configurator(t, tlsconfig.Settings{CAFile: p.CAFile, CertFile: p.Server.Cert, KeyFile: p.Server.Key,
		VerifyIncoming: true, VerifyOutgoing: true, VerifyServerHostname: true})
	h := newMuxHarnessConfig(t, 0, &Config{RPCHandshakeTimeout: 5 * time.Second, TLS: conf}, 0, hclog.New(&hclog.LoggerOptions{Output: logs}))
	// A client agent's certificate may speak the RPC, not Raft.
	if _, _, err := dialTLS(t, h, p, p.Client, connRPC, "x"); err != nil {
		t.Fatal(err)
	}
	accept(t, h.rpcL)
	c, _, err := dialTLS(t, h, p, p.Client, connRaft, "x")
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("Raft with a client certificate was served")
	}
	logs.WaitFor(t, 10*time.Second, "refusing Raft connection", "server.dc1.consul")
	// A server's certificate may.
	if _, _, err := dialTLS(t, h, p, p.Server, connRaft, "x"); err != nil {
		t.Fatal(err)
	}
	accept(t, h.raftL)
}
