// Package tlsconfig turns Tribune's TLS settings (Consul's tls.defaults,
// tls.internal_rpc, tls.https and tls.grpc stanzas) into *tls.Config values
// for each listener and dialer, and makes the CA and agent certificates that
// `tribune tls ca create` and `tribune tls cert create` write.
//
// Certificates and keys are read when a Configurator is made and again on
// Reload; listeners built from it pick up reloaded files on their next
// handshake. The package owns no goroutines.
package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// Settings is one protocol's TLS settings, with the defaults stanza already
// merged in.
type Settings struct {
	// CAFile and CAPath name the CA certificates that peers' certificates
	// must chain to (a PEM file, a directory of PEM files).
	CAFile string
	CAPath string
	// CertFile and KeyFile are this agent's certificate and key (PEM).
	CertFile string
	KeyFile  string
	// VerifyIncoming requires and verifies a client certificate on incoming
	// connections.
	VerifyIncoming bool
	// VerifyOutgoing verifies the server's certificate on outgoing
	// connections against the CA.
	VerifyOutgoing bool
	// VerifyServerHostname also checks that a server's certificate names
	// server.<datacenter>.<domain> (internal RPC only).
	VerifyServerHostname bool
	// MinVersion is Consul's name of the lowest version allowed: TLSv1_0,
	// TLSv1_1, TLSv1_2 (the default) or TLSv1_3.
	MinVersion string
	// CipherSuites are the allowed suites by their IANA names, comma
	// separated; empty means Go's defaults. Ignored for TLS 1.3.
	CipherSuites string
	// AutoCert says the certificate comes at run time (auto_encrypt on a
	// client agent, through SetAutoCertificate) rather than from files:
	// VerifyIncoming is then valid without CertFile and KeyFile. It is
	// not a configuration key.
	AutoCert bool
}

// Enabled reports whether the settings name a certificate: only then can a
// listener speak TLS.
func (s Settings) Enabled() bool { return s.CertFile != "" && s.KeyFile != "" }

// Validate checks the settings without reading files: versions and suites
// known, certificate and key given together, verification possible.
func (s Settings) Validate() error {
	if (s.CertFile == "") != (s.KeyFile == "") {
		return errors.New("cert_file and key_file must be given together")
	}
	if _, err := ParseMinVersion(s.MinVersion); err != nil {
		return err
	}
	if _, err := ParseCipherSuites(s.CipherSuites); err != nil {
		return err
	}
	if (s.VerifyIncoming || s.VerifyOutgoing || s.VerifyServerHostname) && s.CAFile == "" && s.CAPath == "" {
		return errors.New("verify_incoming, verify_outgoing and verify_server_hostname need ca_file or ca_path")
	}
	if s.VerifyIncoming && !s.Enabled() && !s.AutoCert {
		return errors.New("verify_incoming needs cert_file and key_file")
	}
	return nil
}

var versions = map[string]uint16{
	"TLSv1_0": tls.VersionTLS10,
	"TLSv1_1": tls.VersionTLS11,
	"TLSv1_2": tls.VersionTLS12,
	"TLSv1_3": tls.VersionTLS13,
}

// ParseMinVersion turns Consul's version name into a crypto/tls version; ""
// means TLSv1_2.
func ParseMinVersion(v string) (uint16, error) {
	if v == "" {
		return tls.VersionTLS12, nil
	}
	if n, ok := versions[v]; ok {
		return n, nil
	}
	return 0, fmt.Errorf("tls_min_version %q: want one of TLSv1_0, TLSv1_1, TLSv1_2, TLSv1_3", v)
}

// ParseCipherSuites turns a comma-separated list of IANA suite names into
// crypto/tls IDs. Insecure suites are refused.
func ParseCipherSuites(list string) ([]uint16, error) {
	if strings.TrimSpace(list) == "" {
		return nil, nil
	}
	byName := map[string]uint16{}
	for _, s := range tls.CipherSuites() {
		byName[s.Name] = s.ID
	}
	var out []uint16
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		id, ok := byName[name]
		if !ok {
			return nil, fmt.Errorf("tls_cipher_suites: unsupported or insecure suite %q", name)
		}
		out = append(out, id)
	}
	return out, nil
}

// loaded is what a Configurator read from disk at its last (re)load, with
// what was set at run time (SetAutoCertificate, SetExtraClientCAs) applied.
type loaded struct {
	settings Settings
	cert     *tls.Certificate
	pool     *x509.CertPool
	// clientPool verifies client certificates: pool plus the extra
	// client CAs.
	clientPool *x509.CertPool
	// caPEMs are the CA files' certificates, in PEM.
	caPEMs []string
	min    uint16
	suites []uint16
}

// Configurator hands out tls.Configs built from one protocol's Settings. It
// is safe for concurrent use.
type Configurator struct {
	serverName string // server.<dc>.<domain>, checked with VerifyServerHostname

	mu  sync.RWMutex
	cur *loaded
	// fileCert is the certificate the files name (nil: none); autoCert
	// the one set at run time, used when there is no file certificate.
	fileCert *tls.Certificate
	autoCert *tls.Certificate
	// extraClientCAs are PEM CAs trusted for client certificates on top
	// of the configured ones.
	extraClientCAs []string
}

// New reads the files the settings name. datacenter and domain give the name
// a server's certificate must carry (server.<datacenter>.<domain>).
func New(s Settings, datacenter, domain string) (*Configurator, error) {
	c := &Configurator{serverName: ServerName(datacenter, domain)}
	if err := c.Reload(s); err != nil {
		return nil, err
	}
	return c, nil
}

// ServerName returns the name a server's certificate carries:
// server.<datacenter>.<domain>.
func ServerName(datacenter, domain string) string {
	return "server." + datacenter + "." + strings.TrimSuffix(domain, ".")
}

// Reload reads the settings' files again and swaps them in; on error the
// previous files stay in use.
func (c *Configurator) Reload(s Settings) error {
	if err := s.Validate(); err != nil {
		return err
	}
	l := &loaded{settings: s}
	l.min, _ = ParseMinVersion(s.MinVersion)
	l.suites, _ = ParseCipherSuites(s.CipherSuites)
	var fileCert *tls.Certificate
	if s.Enabled() {
		cert, err := tls.LoadX509KeyPair(s.CertFile, s.KeyFile)
		if err != nil {
			return fmt.Errorf("load cert_file %s and key_file %s: %w", s.CertFile, s.KeyFile, err)
		}
		fileCert = &cert
	}
	pems, err := loadCAs(s.CAFile, s.CAPath)
	if err != nil {
		return err
	}
	l.caPEMs = pems
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fileCert = fileCert
	c.cur = l
	c.rebuildLocked()
	return nil
}

// rebuildLocked recomputes the current certificate and pools from the
// files' and the run-time parts. c.mu is held.
func (c *Configurator) rebuildLocked() {
	l := *c.cur
	l.cert = c.fileCert
	if l.cert == nil {
		l.cert = c.autoCert
	}
	l.pool, l.clientPool = nil, nil
	if len(l.caPEMs) > 0 {
		l.pool = x509.NewCertPool()
		for _, p := range l.caPEMs {
			l.pool.AppendCertsFromPEM([]byte(p))
		}
	}
	if len(c.extraClientCAs) > 0 {
		l.clientPool = x509.NewCertPool()
		for _, p := range append(append([]string(nil), l.caPEMs...), c.extraClientCAs...) {
			l.clientPool.AppendCertsFromPEM([]byte(p))
		}
	} else {
		l.clientPool = l.pool
	}
	c.cur = &l
}

// SetAutoCertificate installs a certificate obtained at run time
// (auto_encrypt); it is used while the settings name no certificate file.
// Later handshakes use it.
func (c *Configurator) SetAutoCertificate(cert tls.Certificate) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.autoCert = &cert
	c.rebuildLocked()
}

// SetExtraClientCAs makes client certificates signed by the given PEM CAs
// (the Connect CA's roots, for auto_encrypt.allow_tls) acceptable as well
// as those of the configured CA. It replaces the previous extra CAs.
func (c *Configurator) SetExtraClientCAs(pems []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.extraClientCAs = append([]string(nil), pems...)
	c.rebuildLocked()
}

// HasCertificate reports whether a certificate is in use (from the files
// or set at run time).
func (c *Configurator) HasCertificate() bool { return c.get().cert != nil }

// CAPEMs returns the configured CA certificates, in PEM.
func (c *Configurator) CAPEMs() []string { return append([]string(nil), c.get().caPEMs...) }

// ServerName returns the name a server's certificate must carry with
// VerifyServerHostname: server.<datacenter>.<domain>.
func (c *Configurator) ServerName() string { return c.serverName }

// Settings returns the settings of the last successful (re)load.
func (c *Configurator) Settings() Settings { return c.get().settings }

func (c *Configurator) get() *loaded {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.cur
}

// loadCAs reads the CA certificates of a file and of every .pem/.crt file of
// a directory, one PEM text per file. It returns nil when neither is set.
func loadCAs(file, dir string) ([]string, error) {
	if file == "" && dir == "" {
		return nil, nil
	}
	var pems []string
	add := func(path string) error {
		pem, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("read CA %s: %w", path, err)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			return fmt.Errorf("CA %s holds no PEM certificate", path)
		}
		pems = append(pems, string(pem))
		return nil
	}
	if file != "" {
		if err := add(file); err != nil {
			return nil, err
		}
	}
	if dir != "" {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return nil, fmt.Errorf("read ca_path %s: %w", dir, err)
		}
		n := 0
		for _, e := range entries {
			ext := filepath.Ext(e.Name())
			if e.IsDir() || (ext != ".pem" && ext != ".crt") {
				continue
			}
			if err := add(filepath.Join(dir, e.Name())); err != nil {
				return nil, err
			}
			n++
		}
		if n == 0 {
			return nil, fmt.Errorf("ca_path %s holds no .pem or .crt file", dir)
		}
	}
	return pems, nil
}

// IncomingConfig returns the tls.Config of a listener: this agent's
// certificate, and with VerifyIncoming a client certificate that chains to
// the CA is required. Files reloaded later apply to later handshakes.
func (c *Configurator) IncomingConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			l := c.get()
			if l.cert == nil {
				return nil, errors.New("tls: no certificate configured (cert_file, key_file)")
			}
			cfg := &tls.Config{
				Certificates: []tls.Certificate{*l.cert},
				MinVersion:   l.min,
				CipherSuites: l.suites,
				ClientCAs:    l.clientPool,
				ClientAuth:   tls.NoClientCert,
				NextProtos:   []string{"h2", "http/1.1"},
			}
			if l.settings.VerifyIncoming {
				cfg.ClientAuth = tls.RequireAndVerifyClientCert
			} else if l.clientPool != nil {
				cfg.ClientAuth = tls.VerifyClientCertIfGiven
			}
			return cfg, nil
		},
	}
}

// OutgoingRPCConfig returns the tls.Config for dialing another server or
// agent's RPC port: this agent's certificate (if any) for the peer's
// verify_incoming, the CA with VerifyOutgoing, and the server name
// server.<dc>.<domain> with VerifyServerHostname.
func (c *Configurator) OutgoingRPCConfig() *tls.Config {
	l := c.get()
	cfg := &tls.Config{
		MinVersion:   l.min,
		CipherSuites: l.suites,
		RootCAs:      l.pool,
	}
	// The current certificate at each handshake: a reloaded file or one
	// set by auto_encrypt applies at once. None yet: none is sent.
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		if cur := c.get(); cur.cert != nil {
			return cur.cert, nil
		}
		return &tls.Certificate{}, nil
	}
	switch {
	case l.settings.VerifyServerHostname:
		cfg.ServerName = c.serverName
	case l.settings.VerifyOutgoing:
		// Chain checked against the CA; the name is not (Consul's
		// behaviour without verify_server_hostname).
		pool := l.pool
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error { return verifyChain(cs, pool) }
	default:
		cfg.InsecureSkipVerify = true
	}
	return cfg
}

// verifyChain checks that the peer's certificate chains to pool, ignoring
// the host name.
func verifyChain(cs tls.ConnectionState, pool *x509.CertPool) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("tls: peer sent no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
		Roots:         pool,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return fmt.Errorf("tls: peer certificate: %w", err)
	}
	return nil
}
