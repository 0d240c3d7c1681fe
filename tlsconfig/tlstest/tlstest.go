// Package tlstest writes a throwaway PKI for tests: a CA, server, client
// and CLI certificates signed by it, and the certificates a test expects
// to be refused (signed by another CA, expired, for the wrong datacenter).
// It starts nothing and keeps no state beyond the files it writes.
package tlstest

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tribune-mesh/tribune/tlsconfig"
)

// Pair is a certificate file and its key file.
type Pair struct {
	Cert, Key string
}

// PKI names the files NewPKI wrote.
type PKI struct {
	// Dir holds every file.
	Dir string
	// CAFile is the CA certificate; CACert and CAKey its PEM text.
	CAFile        string
	CACert, CAKey string
	// CAPath is a directory holding the CA certificate alone.
	CAPath string
	// Server is a server certificate for server.<dc>.consul (and
	// localhost, 127.0.0.1); Client a client certificate; CLI a CLI one.
	Server, Client, CLI Pair
	// OtherCA is a server certificate signed by another CA.
	OtherCA Pair
	// Expired is a server certificate of the right CA that expired.
	Expired Pair
	// WrongDC is a server certificate for server.other.consul.
	WrongDC Pair
}

// NewPKI writes a PKI for datacenter dc (domain consul) into a temporary
// directory removed when the test ends.
func NewPKI(t testing.TB, dc string) *PKI {
	t.Helper()
	p := &PKI{Dir: t.TempDir()}
	var err error
	if p.CACert, p.CAKey, err = tlsconfig.GenerateCA(tlsconfig.CAOptions{}); err != nil {
		t.Fatal(err)
	}
	p.CAFile = p.write(t, "ca.pem", p.CACert)
	p.CAPath = filepath.Join(p.Dir, "ca")
	if err := os.Mkdir(p.CAPath, 0o700); err != nil {
		t.Fatal(err)
	}
	p.write(t, "ca/ca.pem", p.CACert)
	otherCA, otherKey, err := tlsconfig.GenerateCA(tlsconfig.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Server = p.cert(t, "server", tlsconfig.RoleServer, dc, p.CACert, p.CAKey, time.Time{})
	p.Client = p.cert(t, "client", tlsconfig.RoleClient, dc, p.CACert, p.CAKey, time.Time{})
	p.CLI = p.cert(t, "cli", tlsconfig.RoleCLI, dc, p.CACert, p.CAKey, time.Time{})
	p.OtherCA = p.cert(t, "other-ca-server", tlsconfig.RoleServer, dc, otherCA, otherKey, time.Time{})
	p.Expired = p.cert(t, "expired-server", tlsconfig.RoleServer, dc, p.CACert, p.CAKey, time.Now().Add(-400*24*time.Hour))
	p.WrongDC = p.cert(t, "wrong-dc-server", tlsconfig.RoleServer, "other", p.CACert, p.CAKey, time.Time{})
	return p
}

func (p *PKI) write(t testing.TB, name, body string) string {
	t.Helper()
	path := filepath.Join(p.Dir, name)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func (p *PKI) cert(t testing.TB, name string, role tlsconfig.Role, dc, caCert, caKey string, now time.Time) Pair {
	t.Helper()
	o, err := tlsconfig.AgentCertOptions(role, dc, "consul", "", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	o.CACert, o.CAKey, o.Now = caCert, caKey, now
	c, k, err := tlsconfig.GenerateCert(o)
	if err != nil {
		t.Fatal(err)
	}
	return Pair{Cert: p.write(t, name+".pem", c), Key: p.write(t, name+"-key.pem", k)}
}
