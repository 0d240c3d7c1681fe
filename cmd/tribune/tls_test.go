package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
)

func TestTLSCreateCAAndCerts(t *testing.T) {
	dir := t.TempDir()
	wd, _ := os.Getwd()
	if err := os.Chdir(dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chdir(wd) })

	var out, errb bytes.Buffer
	if code := run([]string{"tls", "ca", "create"}, &out, &errb); code != 0 {
		t.Fatalf("tls ca create: %d %s", code, errb.String())
	}
	if code := run([]string{"tls", "ca", "create"}, &out, &errb); code == 0 {
		t.Fatal("second tls ca create overwrote the CA")
	}
	for i := 0; i < 2; i++ {
		if code := run([]string{"tls", "cert", "create", "-server", "-dc", "dc2", "-node", "s1"}, &out, &errb); code != 0 {
			t.Fatalf("tls cert create -server: %d %s", code, errb.String())
		}
	}
	if code := run([]string{"tls", "cert", "create", "-client"}, &out, &errb); code != 0 {
		t.Fatalf("tls cert create -client: %d %s", code, errb.String())
	}
	if code := run([]string{"tls", "cert", "create"}, &out, &errb); code == 0 {
		t.Fatal("tls cert create without a role succeeded")
	}
	for _, f := range []string{"consul-agent-ca.pem", "consul-agent-ca-key.pem", "dc2-server-consul-0.pem",
		"dc2-server-consul-0-key.pem", "dc2-server-consul-1.pem", "dc1-client-consul-0-key.pem"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("missing %s: %v", f, err)
		}
	}
	if st, err := os.Stat("consul-agent-ca-key.pem"); err == nil && st.Mode().Perm() != 0o600 {
		t.Errorf("CA key mode %v, want 0600", st.Mode().Perm())
	}
	// The server certificate verifies against the CA as server.dc2.consul.
	pair, err := tls.LoadX509KeyPair("dc2-server-consul-0.pem", "dc2-server-consul-0-key.pem")
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	caPEM, _ := os.ReadFile("consul-agent-ca.pem")
	b, _ := pem.Decode(caPEM)
	ca, _ := x509.ParseCertificate(b.Bytes)
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	for _, name := range []string{"server.dc2.consul", "s1.server.dc2.consul", "localhost"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: name}); err != nil {
			t.Errorf("server certificate does not verify as %s: %v", name, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "server.dc1.consul"}); err == nil {
		t.Error("dc2 server certificate verifies as server.dc1.consul")
	}
}
