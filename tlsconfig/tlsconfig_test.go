package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type pki struct {
	dir               string
	caCert, caKey     string
	caFile            string
	otherCAFile       string
	otherCA, otherKey string
}

func write(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir()}
	var err error
	if p.caCert, p.caKey, err = GenerateCA(CAOptions{}); err != nil {
		t.Fatal(err)
	}
	p.caFile = write(t, p.dir, "ca.pem", p.caCert)
	if p.otherCA, p.otherKey, err = GenerateCA(CAOptions{}); err != nil {
		t.Fatal(err)
	}
	p.otherCAFile = write(t, p.dir, "other-ca.pem", p.otherCA)
	return p
}

// cert writes a certificate of role for dc, signed by the main CA (or the
// other one), and returns its cert and key files.
func (p *pki) cert(t *testing.T, role Role, dc string, other bool) (string, string) {
	t.Helper()
	o, err := AgentCertOptions(role, dc, "consul", "", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	o.CACert, o.CAKey = p.caCert, p.caKey
	if other {
		o.CACert, o.CAKey = p.otherCA, p.otherKey
	}
	c, k, err := GenerateCert(o)
	if err != nil {
		t.Fatal(err)
	}
	name := string(role) + "-" + dc
	if other {
		name += "-other"
	}
	return write(t, p.dir, name+".pem", c), write(t, p.dir, name+"-key.pem", k)
}

// handshake serves one TLS connection with server and dials it with client;
// it returns the client's handshake error (or the server's when the client
// saw none).
func handshake(t *testing.T, server, client *tls.Config) error {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", server)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srvErr := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srvErr <- err
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		srvErr <- c.(*tls.Conn).Handshake()
	}()
	d := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", ln.Addr().String(), client)
	if err == nil {
		// TLS 1.3 reports a refused client certificate on the first read.
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		if errors.Is(err, os.ErrDeadlineExceeded) || err != nil && strings.Contains(err.Error(), "EOF") {
			err = nil
		}
		conn.Close()
	}
	if serr := <-srvErr; err == nil && serr != nil {
		return serr
	}
	return err
}

func TestMutualTLSWithHostnameVerification(t *testing.T) {
	p := newPKI(t)
	srvCert, srvKey := p.cert(t, RoleServer, "dc1", false)
	cliCert, cliKey := p.cert(t, RoleClient, "dc1", false)
	server, err := New(Settings{CAFile: p.caFile, CertFile: srvCert, KeyFile: srvKey, VerifyIncoming: true}, "dc1", "consul")
	if err != nil {
		t.Fatal(err)
	}
	client, err := New(Settings{CAFile: p.caFile, CertFile: cliCert, KeyFile: cliKey, VerifyOutgoing: true, VerifyServerHostname: true}, "dc1", "consul")
	if err != nil {
		t.Fatal(err)
	}
	if err := handshake(t, server.IncomingConfig(), client.OutgoingRPCConfig()); err != nil {
		t.Fatalf("valid mutual TLS refused: %v", err)
	}

	// A client of another datacenter checks for server.dc2.consul: refused.
	wrongDC, _ := New(Settings{CAFile: p.caFile, CertFile: cliCert, KeyFile: cliKey, VerifyOutgoing: true, VerifyServerHostname: true}, "dc2", "consul")
	if err := handshake(t, server.IncomingConfig(), wrongDC.OutgoingRPCConfig()); err == nil {
		t.Fatal("server certificate for dc1 accepted as server.dc2.consul")
	}

	// A client certificate is a client's, not a server's: with
	// verify_server_hostname a client cannot pose as a server.
	posing, _ := New(Settings{CAFile: p.caFile, CertFile: cliCert, KeyFile: cliKey, VerifyIncoming: true}, "dc1", "consul")
	if err := handshake(t, posing.IncomingConfig(), client.OutgoingRPCConfig()); err == nil {
		t.Fatal("client certificate accepted as a server's")
	}

	// No client certificate while the server verifies incoming: refused.
	anon, _ := New(Settings{CAFile: p.caFile, VerifyOutgoing: true}, "dc1", "consul")
	if err := handshake(t, server.IncomingConfig(), anon.OutgoingRPCConfig()); err == nil {
		t.Fatal("connection without a client certificate accepted with verify_incoming")
	}

	// A client certificate from another CA: refused.
	oc, ok := p.cert(t, RoleClient, "dc1", true)
	stranger, _ := New(Settings{CAFile: p.caFile, CertFile: oc, KeyFile: ok, VerifyOutgoing: true}, "dc1", "consul")
	if err := handshake(t, server.IncomingConfig(), stranger.OutgoingRPCConfig()); err == nil {
		t.Fatal("client certificate of another CA accepted")
	}

	// verify_outgoing against the other CA: the server's chain is refused.
	distrust, _ := New(Settings{CAFile: p.otherCAFile, CertFile: cliCert, KeyFile: cliKey, VerifyOutgoing: true}, "dc1", "consul")
	if err := handshake(t, server.IncomingConfig(), distrust.OutgoingRPCConfig()); err == nil {
		t.Fatal("server certificate accepted by a client trusting another CA")
	}
}

func TestReloadSwapsCertificate(t *testing.T) {
	p := newPKI(t)
	srvCert, srvKey := p.cert(t, RoleServer, "dc1", false)
	server, err := New(Settings{CAFile: p.caFile, CertFile: srvCert, KeyFile: srvKey}, "dc1", "consul")
	if err != nil {
		t.Fatal(err)
	}
	in := server.IncomingConfig()
	strict, _ := New(Settings{CAFile: p.caFile, VerifyServerHostname: true}, "dc1", "consul")
	if err := handshake(t, in, strict.OutgoingRPCConfig()); err != nil {
		t.Fatalf("before reload: %v", err)
	}
	// Reload with a server certificate of the other CA: the same listener
	// config now presents it, and the strict client refuses it.
	oc, ok := p.cert(t, RoleServer, "dc1", true)
	if err := server.Reload(Settings{CAFile: p.caFile, CertFile: oc, KeyFile: ok}); err != nil {
		t.Fatal(err)
	}
	if err := handshake(t, in, strict.OutgoingRPCConfig()); err == nil {
		t.Fatal("reloaded certificate not used by the existing listener config")
	}
	// A failed reload keeps the previous files.
	if err := server.Reload(Settings{CAFile: p.caFile, CertFile: "/nonexistent", KeyFile: ok}); err == nil {
		t.Fatal("reload with a missing file succeeded")
	}
	if server.get().cert == nil {
		t.Fatal("failed reload dropped the certificate")
	}
}

func TestSettingsValidate(t *testing.T) {
	for _, c := range []struct {
		s    Settings
		want string
	}{
		{Settings{CertFile: "a"}, "together"},
		{Settings{MinVersion: "TLSv9"}, "tls_min_version"},
		{Settings{CipherSuites: "TLS_RSA_WITH_RC4_128_SHA"}, "tls_cipher_suites"},
		{Settings{VerifyOutgoing: true}, "ca_file"},
		{Settings{CAFile: "ca", VerifyIncoming: true}, "cert_file"},
	} {
		err := c.s.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate(%+v) = %v, want an error naming %q", c.s, err, c.want)
		}
	}
	if v, err := ParseMinVersion("TLSv1_3"); err != nil || v != tls.VersionTLS13 {
		t.Errorf("TLSv1_3 = %v, %v", v, err)
	}
	ids, err := ParseCipherSuites("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384")
	if err != nil || len(ids) != 2 {
		t.Errorf("cipher suites: %v %v", ids, err)
	}
}

func TestAgentCertNames(t *testing.T) {
	p := newPKI(t)
	o, err := AgentCertOptions(RoleServer, "dc1", "consul.", "node1", []string{"extra.example"}, []net.IP{net.ParseIP("10.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	o.CACert, o.CAKey = p.caCert, p.caKey
	c, _, err := GenerateCert(o)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode([]byte(c))
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"server.dc1.consul", "localhost", "node1.server.dc1.consul", "extra.example"}
	if strings.Join(cert.DNSNames, ",") != strings.Join(want, ",") {
		t.Fatalf("DNS names %v, want %v", cert.DNSNames, want)
	}
	if len(cert.IPAddresses) != 2 {
		t.Fatalf("IPs %v", cert.IPAddresses)
	}
	if _, err := AgentCertOptions("admin", "dc1", "consul", "", nil, nil); err == nil {
		t.Fatal("unknown role accepted")
	}
	ca, _, err := GenerateCA(CAOptions{NameConstraint: true, Domain: "consul"})
	if err != nil {
		t.Fatal(err)
	}
	b, _ = pem.Decode([]byte(ca))
	caCert, _ := x509.ParseCertificate(b.Bytes)
	if !caCert.IsCA || len(caCert.PermittedDNSDomains) != 2 {
		t.Fatalf("name-constrained CA: IsCA=%v domains=%v", caCert.IsCA, caCert.PermittedDNSDomains)
	}
}
