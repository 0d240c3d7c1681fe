package config

import (
	"errors"
	"fmt"
	"strings"

	"github.com/tribune-mesh/tribune/tlsconfig"
)

// TLS is the tls block: a defaults stanza and one stanza per protocol
// (internal_rpc: the server port; https: the HTTPS API; grpc: the gRPC TLS
// port). After Load, a key left unset in a protocol's stanza holds the
// defaults stanza's value, so each protocol's fields are complete.
type TLS struct {
	// Defaults is tls.defaults (and the legacy top-level keys).
	Defaults tlsconfig.Settings
	// InternalRPC is tls.internal_rpc.
	InternalRPC tlsconfig.Settings
	// HTTPS is tls.https.
	HTTPS tlsconfig.Settings
	// GRPC is tls.grpc.
	GRPC tlsconfig.Settings
	// GRPCUseAutoCert is tls.grpc.use_auto_cert: the gRPC TLS port uses
	// the certificate a client agent got through auto_encrypt.
	GRPCUseAutoCert bool
}

// AutoEncrypt is the auto_encrypt block.
type AutoEncrypt struct {
	// TLS is auto_encrypt.tls: a client agent gets its RPC certificate
	// from the servers at start.
	TLS bool
	// AllowTLS is auto_encrypt.allow_tls: a server signs such requests
	// with the Connect CA and accepts certificates it signed.
	AllowTLS bool
	// DNSSAN and IPSAN are auto_encrypt.dns_san and ip_san: extra names
	// of the client's certificate.
	DNSSAN []string
	IPSAN  []string
}

// tlsKeys are the keys of a tls stanza, bound to p.
func tlsKeys(p *tlsconfig.Settings, hostname bool) map[string]field {
	m := map[string]field{
		"ca_file":           stringField(&p.CAFile),
		"ca_path":           stringField(&p.CAPath),
		"cert_file":         stringField(&p.CertFile),
		"key_file":          stringField(&p.KeyFile),
		"verify_incoming":   boolField(&p.VerifyIncoming),
		"verify_outgoing":   boolField(&p.VerifyOutgoing),
		"tls_min_version":   tlsVersionField(&p.MinVersion),
		"tls_cipher_suites": stringField(&p.CipherSuites),
	}
	if hostname {
		m["verify_server_hostname"] = boolField(&p.VerifyServerHostname)
	}
	return m
}

// tlsVersionField reads tls_min_version, accepting the pre-1.12 spellings
// (tls12) as well.
func tlsVersionField(dst *string) field {
	return func(_ *applier, path string, v interface{}) error {
		s, err := toString(path, v)
		if err != nil {
			return err
		}
		old := map[string]string{"tls10": "TLSv1_0", "tls11": "TLSv1_1", "tls12": "TLSv1_2", "tls13": "TLSv1_3"}
		if n, ok := old[strings.ToLower(s)]; ok {
			s = n
		}
		*dst = s
		return nil
	}
}

// legacyTLSField applies a pre-1.12 top-level TLS key to its tls.* key:
// it warns, and marks the new key as set so that the defaults stanza does
// not overwrite it.
func legacyTLSField(newPath string, f field) field {
	return func(a *applier, path string, v interface{}) error {
		a.warn("config: %q in %s is deprecated; use %q", path, a.source, newPath)
		a.set[newPath] = true
		return f(a, path, v)
	}
}

// addTLSFields adds the tls and auto_encrypt blocks and the legacy
// top-level TLS keys.
func addTLSFields(c *Config, fields map[string]field) {
	grpc := tlsKeys(&c.TLS.GRPC, false)
	grpc["use_auto_cert"] = boolField(&c.TLS.GRPCUseAutoCert)
	fields["tls"] = sectionField(map[string]field{
		"defaults":     sectionField(tlsKeys(&c.TLS.Defaults, false)),
		"internal_rpc": sectionField(tlsKeys(&c.TLS.InternalRPC, true)),
		"https":        sectionField(tlsKeys(&c.TLS.HTTPS, false)),
		"grpc":         sectionField(grpc),
	})
	fields["auto_encrypt"] = sectionField(map[string]field{
		"tls":       boolField(&c.AutoEncrypt.TLS),
		"allow_tls": boolField(&c.AutoEncrypt.AllowTLS),
		"dns_san":   listField(&c.AutoEncrypt.DNSSAN),
		"ip_san":    listField(&c.AutoEncrypt.IPSAN),
	})
	d := &c.TLS.Defaults
	legacy := map[string]struct {
		newPath string
		f       field
	}{
		"ca_file":                {"tls.defaults.ca_file", stringField(&d.CAFile)},
		"ca_path":                {"tls.defaults.ca_path", stringField(&d.CAPath)},
		"cert_file":              {"tls.defaults.cert_file", stringField(&d.CertFile)},
		"key_file":               {"tls.defaults.key_file", stringField(&d.KeyFile)},
		"verify_incoming":        {"tls.defaults.verify_incoming", boolField(&d.VerifyIncoming)},
		"verify_outgoing":        {"tls.defaults.verify_outgoing", boolField(&d.VerifyOutgoing)},
		"tls_min_version":        {"tls.defaults.tls_min_version", tlsVersionField(&d.MinVersion)},
		"tls_cipher_suites":      {"tls.defaults.tls_cipher_suites", stringField(&d.CipherSuites)},
		"verify_incoming_rpc":    {"tls.internal_rpc.verify_incoming", boolField(&c.TLS.InternalRPC.VerifyIncoming)},
		"verify_incoming_https":  {"tls.https.verify_incoming", boolField(&c.TLS.HTTPS.VerifyIncoming)},
		"verify_server_hostname": {"tls.internal_rpc.verify_server_hostname", boolField(&c.TLS.InternalRPC.VerifyServerHostname)},
	}
	for k, v := range legacy {
		if _, taken := fields[k]; !taken {
			fields[k] = legacyTLSField(v.newPath, v.f)
		}
	}
	// Accepted and ignored, as Consul ignores it since Go picks the order.
	if _, taken := fields["tls_prefer_server_cipher_suites"]; !taken {
		fields["tls_prefer_server_cipher_suites"] = deprecatedField("(nothing: it has no effect)", boolField(new(bool)))
	}
}

// finishTLS fills every protocol stanza's unset keys from tls.defaults.
func finishTLS(c *Config, set map[string]bool) {
	d := c.TLS.Defaults
	for name, p := range map[string]*tlsconfig.Settings{"internal_rpc": &c.TLS.InternalRPC, "https": &c.TLS.HTTPS, "grpc": &c.TLS.GRPC} {
		inherit := func(key string, dst *string, v string) {
			if !set["tls."+name+"."+key] {
				*dst = v
			}
		}
		inheritBool := func(key string, dst *bool, v bool) {
			if !set["tls."+name+"."+key] {
				*dst = v
			}
		}
		inherit("ca_file", &p.CAFile, d.CAFile)
		inherit("ca_path", &p.CAPath, d.CAPath)
		inherit("cert_file", &p.CertFile, d.CertFile)
		inherit("key_file", &p.KeyFile, d.KeyFile)
		inherit("tls_min_version", &p.MinVersion, d.MinVersion)
		inherit("tls_cipher_suites", &p.CipherSuites, d.CipherSuites)
		inheritBool("verify_incoming", &p.VerifyIncoming, d.VerifyIncoming)
		inheritBool("verify_outgoing", &p.VerifyOutgoing, d.VerifyOutgoing)
	}
}

// validateTLS checks the tls and auto_encrypt blocks. It reads no file. A
// TLS port without a certificate is not an error (Consul starts, and the
// official client's test harness always sets ports.https): tlsPortWarnings
// says that port is not served.
func validateTLS(c *Config) error {
	var errs []error
	auto := c.AutoEncrypt.TLS && !c.Server
	for _, p := range []struct {
		key string
		p   tlsconfig.Settings
	}{{"tls.defaults", c.TLS.Defaults}, {"tls.internal_rpc", c.TLS.InternalRPC}, {"tls.https", c.TLS.HTTPS}, {"tls.grpc", c.TLS.GRPC}} {
		s := p.p
		// With auto_encrypt the certificate comes from the servers.
		s.AutoCert = auto
		if err := s.Validate(); err != nil {
			errs = append(errs, fieldErr(p.key, err.Error()))
		}
	}
	if c.AutoEncrypt.TLS && c.Server {
		errs = append(errs, fieldErr("auto_encrypt.tls", "is for client agents; a server uses auto_encrypt.allow_tls"))
	}
	if c.AutoEncrypt.AllowTLS && !c.Server {
		errs = append(errs, fieldErr("auto_encrypt.allow_tls", "requires server = true"))
	}
	if auto && c.TLS.InternalRPC.CAFile == "" && c.TLS.InternalRPC.CAPath == "" {
		errs = append(errs, fieldErr("auto_encrypt.tls", "needs tls.defaults (or tls.internal_rpc) ca_file or ca_path to check the servers"))
	}
	if c.AutoEncrypt.AllowTLS && !c.Connect.Enabled {
		errs = append(errs, fieldErr("auto_encrypt.allow_tls", "needs connect.enabled: the Connect CA signs the client certificates"))
	}
	for i, ip := range c.AutoEncrypt.IPSAN {
		if err := checkIP(indexPath("auto_encrypt.ip_san", i), ip, false); err != nil {
			errs = append(errs, err)
		}
	}
	for i, n := range c.AutoEncrypt.DNSSAN {
		if !isDomain(n) {
			errs = append(errs, fieldErrf(indexPath("auto_encrypt.dns_san", i), "must be a DNS name, got %q", n))
		}
	}
	return errors.Join(errs...)
}

// RPCUsesTLS reports whether this agent dials the server port with TLS:
// with verify_outgoing, verify_server_hostname or auto_encrypt, and on a
// server that requires TLS itself (verify_incoming with a certificate),
// since its peers require it as well.
func (c *Config) RPCUsesTLS() bool {
	r := c.TLS.InternalRPC
	return r.VerifyOutgoing || r.VerifyServerHostname || (c.AutoEncrypt.TLS && !c.Server) ||
		(c.Server && r.VerifyIncoming && r.Enabled())
}

// tlsPortWarnings returns a warning for each TLS port that is set without a
// certificate to serve it: the agent starts without that listener.
func tlsPortWarnings(c *Config) []string {
	var w []string
	auto := c.AutoEncrypt.TLS && !c.Server
	if c.Ports.HTTPS > 0 && !c.TLS.HTTPS.Enabled() && !auto {
		w = append(w, fmt.Sprintf("config: ports.https = %d has no certificate (set tls.https or tls.defaults cert_file and key_file): HTTPS is not served", c.Ports.HTTPS))
	}
	if c.Ports.GRPCTLS > 0 && !c.TLS.GRPC.Enabled() && !(auto && c.TLS.GRPCUseAutoCert) {
		w = append(w, fmt.Sprintf("config: ports.grpc_tls = %d has no certificate (set tls.grpc or tls.defaults cert_file and key_file): gRPC over TLS is not served", c.Ports.GRPCTLS))
	}
	return w
}
