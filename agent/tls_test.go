package agent_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tribune-mesh/tribune/agent/agenttest"
	"github.com/tribune-mesh/tribune/agent/config"
	"github.com/tribune-mesh/tribune/test/wait"
	"github.com/tribune-mesh/tribune/tlsconfig"
	"github.com/tribune-mesh/tribune/tlsconfig/tlstest"
)

// withTLS gives cfg the PKI's server certificate on every protocol and
// the HTTPS port; verifyIncoming requires client certificates.
func withTLS(t *testing.T, cfg *config.Config, p *tlstest.PKI, verifyIncoming bool) {
	t.Helper()
	proto := tlsconfig.Settings{CAFile: p.CAFile, CertFile: p.Server.Cert, KeyFile: p.Server.Key, VerifyIncoming: verifyIncoming}
	cfg.TLS.Defaults, cfg.TLS.HTTPS, cfg.TLS.GRPC = proto, proto, proto
	cfg.TLS.InternalRPC = proto
	cfg.Ports.HTTPS = agenttest.FreePorts(t, 1)[0]
}

func TestHTTPSWithClientCertificates(t *testing.T) {
	p := tlstest.NewPKI(t, "dc1")
	cfg := agenttest.Config(t)
	withTLS(t, cfg, p, true)
	a := agenttest.Start(t, cfg)
	if a.HTTPSAddr() == "" {
		t.Fatal("no HTTPS listener")
	}

	// The official client with a client certificate reads and writes.
	c, err := api.NewClient(&api.Config{Address: a.HTTPSAddr(), Scheme: "https",
		TLSConfig: api.TLSConfig{CAFile: p.CAFile, CertFile: p.CLI.Cert, KeyFile: p.CLI.Key}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.KV().Put(&api.KVPair{Key: "k", Value: []byte("v")}, nil); err != nil {
		t.Fatalf("put over HTTPS: %v", err)
	}
	kv, _, err := c.KV().Get("k", nil)
	if err != nil || kv == nil || string(kv.Value) != "v" {
		t.Fatalf("get over HTTPS: %v %v", kv, err)
	}

	// Without a client certificate the handshake is refused.
	noCert, _ := api.NewClient(&api.Config{Address: a.HTTPSAddr(), Scheme: "https", TLSConfig: api.TLSConfig{CAFile: p.CAFile}})
	if _, _, err := noCert.KV().Get("k", nil); err == nil {
		t.Fatal("a client without a certificate was served with verify_incoming")
	}

	// A client that does not trust the CA refuses the server.
	plain, _ := api.NewClient(&api.Config{Address: a.HTTPSAddr(), Scheme: "https"})
	if _, _, err := plain.KV().Get("k", nil); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a client without the CA: %v", err)
	}

	// HTTP keeps working on its own port.
	httpc, _ := api.NewClient(&api.Config{Address: a.HTTPAddr()})
	if _, _, err := httpc.KV().Get("k", nil); err != nil {
		t.Fatalf("plain HTTP: %v", err)
	}
}

func TestHTTPSPlaintextClientGetsAnAnswer(t *testing.T) {
	p := tlstest.NewPKI(t, "dc1")
	cfg := agenttest.Config(t)
	withTLS(t, cfg, p, false)
	cfg.Ports.HTTP = -1
	cfg.Limits.HTTPReadHeaderTimeout = 2 * time.Second
	a := agenttest.Start(t, cfg)
	if a.HTTPAddr() != "" {
		t.Fatalf("HTTP listener %s with ports.http = -1", a.HTTPAddr())
	}

	// A plaintext request gets a clear 400, not a hang.
	conn, err := net.DialTimeout("tcp", a.HTTPSAddr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte("GET /v1/kv/k HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.Contains(line, "400") {
		t.Fatalf("plaintext request: %q %v", line, err)
	}

	// A client that connects and says nothing is dropped after the
	// handshake timeout.
	idle, err := net.DialTimeout("tcp", a.HTTPSAddr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	_ = idle.SetDeadline(time.Now().Add(20 * time.Second))
	start := time.Now()
	if _, err := idle.Read(make([]byte, 1)); err == nil {
		t.Fatal("read data from an idle TLS connection")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the server kept a silent connection open for %s", time.Since(start))
	}

	// Without client-certificate verification, a TLS client with only
	// the CA is served.
	c, _ := api.NewClient(&api.Config{Address: a.HTTPSAddr(), Scheme: "https", TLSConfig: api.TLSConfig{CAFile: p.CAFile}})
	if _, _, err := c.KV().Get("k", nil); err != nil {
		t.Fatalf("TLS without a client certificate: %v", err)
	}
	// TLS 1.1 is below the minimum.
	old, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", a.HTTPSAddr(), &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS11})
	if err == nil {
		old.Close()
		t.Fatal("TLS 1.1 accepted")
	}
}

// rpcTLS gives cfg the PKI's server (or client) certificate for the server
// port with verify_incoming, verify_outgoing and verify_server_hostname.
func rpcTLS(p *tlstest.PKI) func(*config.Config) {
	return func(c *config.Config) {
		pair := p.Client
		if c.Server {
			pair = p.Server
		}
		c.TLS.InternalRPC = tlsconfig.Settings{CAFile: p.CAFile, CertFile: pair.Cert, KeyFile: pair.Key,
			VerifyIncoming: true, VerifyOutgoing: true, VerifyServerHostname: true}
	}
}

func TestClusterOverTLS(t *testing.T) {
	p := tlstest.NewPKI(t, "dc1")
	// Raft between the servers and the client's RPC go through TLS: the
	// servers refuse plaintext, so a cluster that forms and serves a
	// write through the client proves it.
	srvs, cls := startClusterWith(t, 3, 1, rpcTLS(p))
	if _, err := cls[0].api.KV().Put(&api.KVPair{Key: "tls", Value: []byte("on")}, nil); err != nil {
		t.Fatalf("write through the client: %v", err)
	}
	for _, s := range srvs {
		kv, _, err := s.api.KV().Get("tls", &api.QueryOptions{AllowStale: true})
		if err != nil {
			t.Fatal(err)
		}
		if kv == nil {
			// Followers may lag a moment.
			wait.For(t, 10*time.Second, func() error {
				kv, _, err = s.api.KV().Get("tls", &api.QueryOptions{AllowStale: true})
				if err == nil && kv == nil {
					err = fmt.Errorf("not replicated yet")
				}
				return err
			})
		}
	}

	// A client agent without TLS is refused by the servers.
	join := agenttest.SerfAddr(srvs[0].cfg)
	plainCfg := agenttest.ClusterConfig(t, "plain", false, 0, join)
	plainCfg.RPCHoldTimeout = 2 * time.Second
	plain := agenttest.StartNoWait(t, plainCfg)
	c := apiClient(t, plain)
	wait.For(t, 20*time.Second, func() error {
		members, err := c.Agent().Members(false)
		if err != nil || len(members) < 5 {
			return fmt.Errorf("members %d %v", len(members), err)
		}
		return nil
	})
	if _, err := c.KV().Put(&api.KVPair{Key: "plain", Value: []byte("x")}, nil); err == nil {
		t.Fatal("a plaintext client agent wrote to servers that require TLS")
	}
}

func TestGRPCTLSHealth(t *testing.T) {
	p := tlstest.NewPKI(t, "dc1")
	cfg := agenttest.Config(t)
	withTLS(t, cfg, p, true)
	cfg.Ports.GRPCTLS = agenttest.FreePorts(t, 1)[0]
	a := agenttest.Start(t, cfg)
	if a.GRPCTLSAddr() == "" {
		t.Fatal("no gRPC TLS listener")
	}
	check := func(creds credentials.TransportCredentials) error {
		conn, err := grpc.NewClient("passthrough:///"+a.GRPCTLSAddr(), grpc.WithTransportCredentials(creds))
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		if resp.Status != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("status %v", resp.Status)
		}
		return nil
	}
	pem, err := os.ReadFile(p.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	cert, err := tls.LoadX509KeyPair(p.CLI.Cert, p.CLI.Key)
	if err != nil {
		t.Fatal(err)
	}
	if err := check(credentials.NewTLS(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, ServerName: "localhost"})); err != nil {
		t.Fatalf("health over TLS with a client certificate: %v", err)
	}
	// verify_incoming: no client certificate, no service; plaintext
	// neither.
	if err := check(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "localhost"})); err == nil {
		t.Fatal("served a client without a certificate")
	}
	if err := check(insecure.NewCredentials()); err == nil {
		t.Fatal("served a plaintext client")
	}
}

func TestAutoEncryptClientGetsItsCertificate(t *testing.T) {
	p := tlstest.NewPKI(t, "dc1")
	var httpsPort int
	srvs, cls := startClusterWith(t, 3, 1, func(c *config.Config) {
		if c.Server {
			rpcTLS(p)(c)
			c.AutoEncrypt.AllowTLS = true
			c.Connect.Enabled = true
			return
		}
		// The client has the CA and nothing else.
		c.TLS.InternalRPC = tlsconfig.Settings{CAFile: p.CAFile, VerifyOutgoing: true, VerifyServerHostname: true}
		c.TLS.HTTPS = tlsconfig.Settings{CAFile: p.CAFile}
		c.AutoEncrypt.TLS = true
		c.AutoEncrypt.DNSSAN = []string{"client.example"}
		httpsPort = agenttest.FreePorts(t, 1)[0]
		c.Ports.HTTPS = httpsPort
	})
	if _, err := cls[0].api.KV().Put(&api.KVPair{Key: "auto", Value: []byte("encrypt")}, nil); err != nil {
		t.Fatalf("write through the auto_encrypt client: %v", err)
	}
	kv, _, err := srvs[0].api.KV().Get("auto", &api.QueryOptions{RequireConsistent: true})
	if err != nil || kv == nil || string(kv.Value) != "encrypt" {
		t.Fatalf("read on a server: %v %v", kv, err)
	}

	// The client serves HTTPS with the certificate the servers signed:
	// the Connect CA's, for the agent's SPIFFE ID.
	roots, _, err := srvs[0].api.Connect().CARoots(nil)
	if err != nil || len(roots.Roots) == 0 {
		t.Fatalf("CA roots: %v %v", roots, err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(roots.Roots[0].RootCertPEM))
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", fmt.Sprintf("127.0.0.1:%d", httpsPort),
		&tls.Config{RootCAs: pool, ServerName: "client.example"})
	if err != nil {
		t.Fatalf("HTTPS with the Connect CA: %v", err)
	}
	defer conn.Close()
	leaf := conn.ConnectionState().PeerCertificates[0]
	want := fmt.Sprintf("spiffe://%s/agent/client/dc/dc1/id/c1", roots.TrustDomain)
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != want {
		t.Fatalf("agent certificate URIs %v, want %s", leaf.URIs, want)
	}
}

func TestReloadSwapsTLSCertificates(t *testing.T) {
	p := tlstest.NewPKI(t, "dc1")
	cfg := agenttest.Config(t)
	withTLS(t, cfg, p, false)
	a := agenttest.Start(t, cfg)
	served := func() string {
		t.Helper()
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", a.HTTPSAddr(), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	if got := served(); got != "server.dc1.consul" {
		t.Fatalf("served %q", got)
	}
	next := *cfg
	next.TLS.HTTPS.CertFile, next.TLS.HTTPS.KeyFile = p.WrongDC.Cert, p.WrongDC.Key
	a.SetReloader(func() (*config.Config, []string, error) { n := next; return &n, nil, nil })
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := served(); got != "server.other.consul" {
		t.Fatalf("after reload served %q", got)
	}
	// A reload naming a missing file fails and changes nothing.
	bad := next
	bad.TLS.InternalRPC.CertFile = "/nonexistent.pem"
	a.SetReloader(func() (*config.Config, []string, error) { n := bad; return &n, nil, nil })
	if err := a.Reload(); err == nil || !strings.Contains(err.Error(), "tls.internal_rpc") {
		t.Fatalf("reload with a missing certificate: %v", err)
	}
	if got := served(); got != "server.other.consul" {
		t.Fatalf("after a failed reload served %q", got)
	}
}
