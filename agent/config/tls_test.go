package config

import (
	"strings"
	"testing"
)

func TestTLSStanzasInheritDefaults(t *testing.T) {
	p := writeFile(t, t.TempDir(), "tls.hcl", `
ports { https = 8501 }
tls {
  defaults {
    ca_file = "/ca.pem"
    cert_file = "/a.pem"
    key_file = "/a-key.pem"
    verify_incoming = true
    verify_outgoing = true
    tls_min_version = "TLSv1_3"
  }
  internal_rpc { verify_server_hostname = true }
  https {
    verify_incoming = false
    cert_file = "/h.pem"
    key_file = "/h-key.pem"
  }
  grpc { use_auto_cert = false }
}
auto_encrypt { allow_tls = true }
server = true
`)
	c, _ := mustLoad(t, "-data-dir", "/d", "-config-file", p)
	r, h, g := c.TLS.InternalRPC, c.TLS.HTTPS, c.TLS.GRPC
	if r.CAFile != "/ca.pem" || r.CertFile != "/a.pem" || !r.VerifyIncoming || !r.VerifyOutgoing || !r.VerifyServerHostname || r.MinVersion != "TLSv1_3" {
		t.Errorf("internal_rpc = %+v", r)
	}
	if h.VerifyIncoming || h.CertFile != "/h.pem" || h.CAFile != "/ca.pem" || !h.VerifyOutgoing {
		t.Errorf("https = %+v", h)
	}
	if g.CertFile != "/a.pem" || !g.VerifyIncoming || g.VerifyServerHostname {
		t.Errorf("grpc = %+v", g)
	}
	if !c.AutoEncrypt.AllowTLS || !c.RPCUsesTLS() {
		t.Errorf("auto_encrypt = %+v, RPCUsesTLS %v", c.AutoEncrypt, c.RPCUsesTLS())
	}
}

func TestTLSLegacyKeys(t *testing.T) {
	p := writeFile(t, t.TempDir(), "x.json", `{"ca_file": "/ca.pem", "cert_file": "/c.pem", "key_file": "/k.pem",
		"verify_incoming_rpc": true, "verify_outgoing": true, "verify_server_hostname": true, "tls_min_version": "tls12",
		"tls": {"internal_rpc": {"verify_incoming": false}}}`)
	c, warnings := mustLoad(t, "-data-dir", "/d", "-config-file", p)
	r := c.TLS.InternalRPC
	// The newer key wins over the legacy one whatever the order.
	if r.CAFile != "/ca.pem" || r.CertFile != "/c.pem" || !r.VerifyOutgoing || !r.VerifyServerHostname || r.MinVersion != "TLSv1_2" {
		t.Errorf("internal_rpc = %+v", r)
	}
	if c.TLS.HTTPS.CertFile != "/c.pem" || c.TLS.HTTPS.VerifyIncoming {
		t.Errorf("https = %+v", c.TLS.HTTPS)
	}
	if !containsSubstring(warnings, "tls.internal_rpc.verify_server_hostname") {
		t.Errorf("no deprecation warning in %q", warnings)
	}
}

func TestTLSValidation(t *testing.T) {
	for _, tc := range []struct{ file, want string }{
		{`{"tls": {"defaults": {"verify_outgoing": true}}}`, "need ca_file or ca_path"},
		{`{"tls": {"https": {"cert_file": "/c.pem"}}}`, "tls.https: cert_file and key_file must be given together"},
		{`{"tls": {"defaults": {"tls_min_version": "SSLv3"}}}`, "tls_min_version"},
		{`{"auto_encrypt": {"tls": true}}`, "auto_encrypt.tls: needs tls.defaults"},
		{`{"auto_encrypt": {"allow_tls": true}}`, "auto_encrypt.allow_tls: requires server = true"},
		{`{"server": true, "auto_encrypt": {"tls": true}}`, "auto_encrypt.tls: is for client agents"},
		{`{"auto_encrypt": {"tls": true, "ip_san": ["nope"]}, "ca_file": "/ca"}`, "auto_encrypt.ip_san[0]"},
	} {
		p := writeFile(t, t.TempDir(), "x.json", tc.file)
		_, _, err := load("-data-dir", "/d", "-config-file", p)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.file, err, tc.want)
		}
	}
	// A client with auto_encrypt needs only the CA, also for HTTPS.
	p := writeFile(t, t.TempDir(), "x.json", `{"auto_encrypt": {"tls": true}, "ca_file": "/ca.pem", "verify_incoming": true, "ports": {"https": 8501}}`)
	if _, _, err := load("-data-dir", "/d", "-config-file", p); err != nil {
		t.Errorf("auto_encrypt client: %v", err)
	}
}

// A TLS port without a certificate is a warning, not an error: Consul
// starts, and the official client's test harness always sets ports.https.
func TestTLSPortWithoutCertificateWarns(t *testing.T) {
	for _, tc := range []struct{ file, want string }{
		{`{"ports": {"https": 8501}}`, "ports.https = 8501 has no certificate"},
		{`{"ports": {"grpc_tls": 8503}}`, "ports.grpc_tls = 8503 has no certificate"},
	} {
		p := writeFile(t, t.TempDir(), "x.json", tc.file)
		_, warnings, err := load("-data-dir", "/d", "-config-file", p)
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		if !containsSubstring(warnings, tc.want) {
			t.Errorf("%s: warnings %q, want %q", tc.file, warnings, tc.want)
		}
	}
}
