package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/tribune-mesh/tribune/tlsconfig"
)

// listFlag collects a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// writeNew writes body to path, refusing to overwrite an existing file.
func writeNew(path, body string, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.WriteString(f, body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// runTLSCACreate implements "tls ca create": a CA certificate and key,
// written as <domain>-agent-ca.pem and <domain>-agent-ca-key.pem.
func runTLSCACreate(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("tls ca create", "tls ca create [options]", "Creates a CA for the agents' TLS certificates.", stderr, nil)
	days := fs.Int("days", 1825, "Number of days the CA is valid for.")
	domain := fs.String("domain", "consul", "Domain of the agents; the CA's files are named after it.")
	constraint := fs.Bool("name-constraint", false, "Limit the CA to the domain and localhost.")
	var extra listFlag
	fs.Var(&extra, "additional-name-constraint", "Further domain the CA may sign for (repeatable; needs -name-constraint).")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if *days <= 0 {
		fmt.Fprintln(stderr, "==> -days must be positive")
		return 1
	}
	certFile := *domain + "-agent-ca.pem"
	keyFile := *domain + "-agent-ca-key.pem"
	for _, f := range []string{certFile, keyFile} {
		if _, err := os.Stat(f); err == nil {
			fmt.Fprintf(stderr, "==> %s already exists\n", f)
			return 1
		}
	}
	cert, key, err := tlsconfig.GenerateCA(tlsconfig.CAOptions{Days: *days, Domain: *domain, NameConstraint: *constraint, AdditionalNameConstraints: extra})
	if err != nil {
		fmt.Fprintf(stderr, "==> %v\n", err)
		return 1
	}
	if err := writeNew(certFile, cert, 0o644); err != nil {
		fmt.Fprintf(stderr, "==> %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "==> Saved %s\n", certFile)
	if err := writeNew(keyFile, key, 0o600); err != nil {
		fmt.Fprintf(stderr, "==> %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "==> Saved %s\n", keyFile)
	return 0
}

// runTLSCertCreate implements "tls cert create -server|-client|-cli": a
// certificate signed by the CA, written as <dc>-<role>-<domain>-<n>.pem and
// <dc>-<role>-<domain>-<n>-key.pem with the first free n.
func runTLSCertCreate(args []string, stdout, stderr io.Writer) int {
	fset := newFlagSet("tls cert create", "tls cert create [options]", "Creates an agent certificate signed by the CA.", stderr, nil)
	server := fset.Bool("server", false, "Create a server certificate (server.<dc>.<domain>).")
	client := fset.Bool("client", false, "Create a client agent certificate (client.<dc>.<domain>).")
	cli := fset.Bool("cli", false, "Create a certificate for the CLI (cli.client.<dc>.<domain>).")
	dc := fset.String("dc", "dc1", "Datacenter of the agent.")
	domain := fset.String("domain", "consul", "Domain of the agents.")
	node := fset.String("node", "", "Node name, added as <node>.server.<dc>.<domain> (servers only).")
	days := fset.Int("days", 365, "Number of days the certificate is valid for.")
	caFile := fset.String("ca", "", "CA certificate (default <domain>-agent-ca.pem).")
	keyFile := fset.String("key", "", "CA key (default <domain>-agent-ca-key.pem).")
	var dnsNames, ips listFlag
	fset.Var(&dnsNames, "additional-dnsname", "Further DNS name for the certificate (repeatable).")
	fset.Var(&ips, "additional-ipaddress", "Further IP address for the certificate (repeatable).")
	if code, ok := parseFlags(fset, args); !ok {
		return code
	}
	var role tlsconfig.Role
	n := 0
	for _, r := range []struct {
		set  bool
		role tlsconfig.Role
	}{{*server, tlsconfig.RoleServer}, {*client, tlsconfig.RoleClient}, {*cli, tlsconfig.RoleCLI}} {
		if r.set {
			role = r.role
			n++
		}
	}
	if n != 1 {
		fmt.Fprintln(stderr, "==> Exactly one of -server, -client or -cli must be given")
		return 1
	}
	if *node != "" && role != tlsconfig.RoleServer {
		fmt.Fprintln(stderr, "==> -node is only for -server certificates")
		return 1
	}
	var extraIPs []net.IP
	for _, s := range ips {
		ip := net.ParseIP(s)
		if ip == nil {
			fmt.Fprintf(stderr, "==> -additional-ipaddress %q is not an IP address\n", s)
			return 1
		}
		extraIPs = append(extraIPs, ip)
	}
	if *caFile == "" {
		*caFile = *domain + "-agent-ca.pem"
	}
	if *keyFile == "" {
		*keyFile = *domain + "-agent-ca-key.pem"
	}
	caPEM, err := os.ReadFile(*caFile)
	if err != nil {
		fmt.Fprintf(stderr, "==> CA certificate: %v\n", err)
		return 1
	}
	caKey, err := os.ReadFile(*keyFile)
	if err != nil {
		fmt.Fprintf(stderr, "==> CA key: %v\n", err)
		return 1
	}
	opts, err := tlsconfig.AgentCertOptions(role, *dc, *domain, *node, dnsNames, extraIPs)
	if err != nil {
		fmt.Fprintf(stderr, "==> %v\n", err)
		return 1
	}
	opts.CACert, opts.CAKey, opts.Days = string(caPEM), string(caKey), *days
	cert, key, err := tlsconfig.GenerateCert(opts)
	if err != nil {
		fmt.Fprintf(stderr, "==> %v\n", err)
		return 1
	}
	prefix := fmt.Sprintf("%s-%s-%s", *dc, role, *domain)
	for i := 0; i < 10000; i++ {
		certName := fmt.Sprintf("%s-%d.pem", prefix, i)
		keyName := fmt.Sprintf("%s-%d-key.pem", prefix, i)
		if _, err := os.Stat(certName); err == nil {
			continue
		}
		if err := writeNew(certName, cert, 0o644); err != nil {
			if errors.Is(err, fs.ErrExist) {
				continue
			}
			fmt.Fprintf(stderr, "==> %v\n", err)
			return 1
		}
		if err := writeNew(keyName, key, 0o600); err != nil {
			os.Remove(certName)
			fmt.Fprintf(stderr, "==> %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "==> Using %s and %s\n", filepath.Clean(*caFile), filepath.Clean(*keyFile))
		fmt.Fprintf(stdout, "==> Saved %s\n==> Saved %s\n", certName, keyName)
		return 0
	}
	fmt.Fprintf(stderr, "==> no free file name for %s-<n>.pem\n", prefix)
	return 1
}
