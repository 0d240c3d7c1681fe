package main

import (
	"strings"
	"testing"

	"github.com/tribune-mesh/tribune/agent/agenttest"
	"github.com/tribune-mesh/tribune/tlsconfig"
	"github.com/tribune-mesh/tribune/tlsconfig/tlstest"
)

// clearTLSEnv unsets every variable the CLI reads for its HTTP client.
func clearTLSEnv(t *testing.T) {
	for _, v := range []string{"CONSUL_HTTP_ADDR", "TRIBUNE_HTTP_ADDR", "CONSUL_CACERT", "CONSUL_CAPATH", "CONSUL_CLIENT_CERT",
		"CONSUL_CLIENT_KEY", "CONSUL_HTTP_SSL", "CONSUL_HTTP_SSL_VERIFY", "CONSUL_TLS_SERVER_NAME", "CONSUL_HTTP_TOKEN"} {
		t.Setenv(v, "")
	}
}

func TestKVOverHTTPSWithClientCertificate(t *testing.T) {
	p := tlstest.NewPKI(t, "dc1")
	cfg := agenttest.Config(t)
	tlsOn := tlsconfig.Settings{CAFile: p.CAFile, CertFile: p.Server.Cert, KeyFile: p.Server.Key, VerifyIncoming: true}
	cfg.TLS.HTTPS = tlsOn
	cfg.Ports.HTTPS = agenttest.FreePorts(t, 1)[0]
	a := agenttest.Start(t, cfg)
	addr := a.HTTPSAddr()
	clearTLSEnv(t)
	mustExec(t, kvPutCommand(strings.NewReader("")), "-http-addr=http://"+a.HTTPAddr(), "tls/k", "secret")

	// Flags: https:// address, CA, client certificate and key.
	tlsFlags := []string{"-http-addr=https://" + addr, "-ca-file=" + p.CAFile, "-client-cert=" + p.CLI.Cert, "-client-key=" + p.CLI.Key}
	if got := mustExec(t, runKVGet, append(tlsFlags, "tls/k")...).stdout; got != "secret\n" {
		t.Errorf("get over HTTPS with flags = %q", got)
	}
	// -tls-server-name is checked against the agent's certificate.
	if got := mustExec(t, runKVGet, append(tlsFlags, "-tls-server-name=server.dc1.consul", "tls/k")...).stdout; got != "secret\n" {
		t.Errorf("get with -tls-server-name = %q", got)
	}
	if r := runCmd(runKVGet, append(tlsFlags, "-tls-server-name=other.example", "tls/k")...); r.code != 1 {
		t.Errorf("wrong -tls-server-name accepted: %v", r)
	}
	// Without the client certificate the agent refuses.
	if r := runCmd(runKVGet, "-http-addr=https://"+addr, "-ca-file="+p.CAFile, "tls/k"); r.code != 1 {
		t.Errorf("no client certificate accepted: %v", r)
	}

	// Consul's environment variables: an address without a scheme and
	// CONSUL_HTTP_SSL, the CA path, the client certificate and key.
	t.Setenv("CONSUL_HTTP_ADDR", addr)
	t.Setenv("CONSUL_HTTP_SSL", "true")
	t.Setenv("CONSUL_CAPATH", p.CAPath)
	t.Setenv("CONSUL_CLIENT_CERT", p.CLI.Cert)
	t.Setenv("CONSUL_CLIENT_KEY", p.CLI.Key)
	t.Setenv("CONSUL_TLS_SERVER_NAME", "localhost")
	if got := mustExec(t, runKVGet, "tls/k").stdout; got != "secret\n" {
		t.Errorf("get over HTTPS from the environment = %q", got)
	}
	// CONSUL_HTTP_SSL_VERIFY=false skips checking the agent's certificate.
	t.Setenv("CONSUL_CAPATH", "")
	t.Setenv("CONSUL_CACERT", p.OtherCA.Cert)
	if r := runCmd(runKVGet, "tls/k"); r.code != 1 {
		t.Errorf("an agent certificate of an untrusted CA accepted: %v", r)
	}
	t.Setenv("CONSUL_HTTP_SSL_VERIFY", "false")
	if got := mustExec(t, runKVGet, "tls/k").stdout; got != "secret\n" {
		t.Errorf("get with CONSUL_HTTP_SSL_VERIFY=false = %q", got)
	}

	// CONSUL_HTTP_ADDR with https:// needs no CONSUL_HTTP_SSL.
	t.Setenv("CONSUL_HTTP_SSL", "")
	t.Setenv("CONSUL_HTTP_SSL_VERIFY", "")
	t.Setenv("CONSUL_CACERT", p.CAFile)
	t.Setenv("CONSUL_HTTP_ADDR", "https://"+addr)
	if got := mustExec(t, runKVGet, "tls/k").stdout; got != "secret\n" {
		t.Errorf("get with CONSUL_HTTP_ADDR=https://... = %q", got)
	}
}
