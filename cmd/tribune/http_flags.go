package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/hashicorp/consul/api"
)

// Environment variables Tribune reads when Consul's own are unset, so that a
// shell set up for either product works.
const (
	envTribuneHTTPAddr  = "TRIBUNE_HTTP_ADDR"
	envTribuneHTTPToken = "TRIBUNE_HTTP_TOKEN"
)

// defaultHTTPAddr is the agent address used when neither a flag nor an
// environment variable names one.
const defaultHTTPAddr = "127.0.0.1:8500"

// httpFlags are the options of every command that talks to an agent's HTTP
// API, spelled as Consul's CLI spells them.
type httpFlags struct {
	addr          string
	token         string
	tokenFile     string
	datacenter    string
	stale         bool
	caFile        string
	caPath        string
	clientCert    string
	clientKey     string
	tlsServerName string
}

// isHTTPFlag reports whether name is one of the flags register adds, so
// usage can print those in their own section.
func isHTTPFlag(name string) bool {
	switch name {
	case "http-addr", "token", "token-file", "datacenter", "stale",
		"ca-file", "ca-path", "client-cert", "client-key", "tls-server-name":
		return true
	}
	return false
}

func (f *httpFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.addr, "http-addr", "", "The `address` and port of the agent's HTTP API, optionally with an http:// "+
		"or https:// scheme. Defaults to CONSUL_HTTP_ADDR, then TRIBUNE_HTTP_ADDR, then "+defaultHTTPAddr+".")
	fs.StringVar(&f.token, "token", "", "ACL `token` to use in the request. Defaults to CONSUL_HTTP_TOKEN, then TRIBUNE_HTTP_TOKEN.")
	fs.StringVar(&f.tokenFile, "token-file", "", "Read the ACL token from this `file`; it wins over every other token. Defaults to CONSUL_HTTP_TOKEN_FILE.")
	fs.StringVar(&f.datacenter, "datacenter", "", "Name of the `datacenter` to query. Defaults to the agent's datacenter.")
	fs.BoolVar(&f.stale, "stale", false, "Permit any server to answer the query, even a follower without a leader.")
	fs.StringVar(&f.caFile, "ca-file", "", "CA certificate `file` for TLS to the agent. Defaults to CONSUL_CACERT.")
	fs.StringVar(&f.caPath, "ca-path", "", "A `directory` of CA certificates for TLS to the agent. Defaults to CONSUL_CAPATH.")
	fs.StringVar(&f.clientCert, "client-cert", "", "Client certificate `file` for TLS to the agent. Defaults to CONSUL_CLIENT_CERT.")
	fs.StringVar(&f.clientKey, "client-key", "", "Client key `file` for TLS to the agent. Defaults to CONSUL_CLIENT_KEY.")
	fs.StringVar(&f.tlsServerName, "tls-server-name", "", "Server `name` to send as SNI and verify in TLS to the agent. Defaults to CONSUL_TLS_SERVER_NAME.")
}

// apiConfig builds the client configuration: flags first, then Consul's
// environment variables (read by the api package), then Tribune's.
func (f *httpFlags) apiConfig() *api.Config {
	setIf := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	// Without keep-alives a one-shot command leaves no idle connection (and no
	// goroutine) behind.
	cfg := api.DefaultNonPooledConfig()
	if os.Getenv(api.HTTPAddrEnvName) == "" {
		cfg.Address = defaultHTTPAddr
		if v := os.Getenv(envTribuneHTTPAddr); v != "" {
			cfg.Address = v
		}
	}
	if os.Getenv(api.HTTPTokenEnvName) == "" && os.Getenv(api.HTTPTokenFileEnvName) == "" {
		if v := os.Getenv(envTribuneHTTPToken); v != "" {
			cfg.Token = v
		}
	}
	setIf(&cfg.Address, f.addr)
	setIf(&cfg.Token, f.token)
	// api.NewClient reads the file; it wins over every other token.
	setIf(&cfg.TokenFile, f.tokenFile)
	cfg.Datacenter = f.datacenter
	setIf(&cfg.TLSConfig.CAFile, f.caFile)
	setIf(&cfg.TLSConfig.CAPath, f.caPath)
	setIf(&cfg.TLSConfig.CertFile, f.clientCert)
	setIf(&cfg.TLSConfig.KeyFile, f.clientKey)
	setIf(&cfg.TLSConfig.Address, f.tlsServerName)
	return cfg
}

// client returns an API client for the configured agent.
func (f *httpFlags) client() (*api.Client, error) {
	c, err := api.NewClient(f.apiConfig())
	if err != nil {
		return nil, fmt.Errorf("create API client: %w", err)
	}
	return c, nil
}

// queryOptions are the read options the flags ask for.
func (f *httpFlags) queryOptions() *api.QueryOptions {
	return &api.QueryOptions{AllowStale: f.stale}
}

// newFlagSet returns a flag set for command name whose usage prints the
// synopsis line, a help paragraph, then the command's own options and the
// HTTP API options in separate sections. hf may be nil for commands that do
// not talk to an agent.
func newFlagSet(name, synopsis, help string, stderr io.Writer, hf *httpFlags) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	if hf != nil {
		hf.register(fs)
	}
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: tribune %s\n\n", synopsis)
		if help != "" {
			fmt.Fprintf(stderr, "  %s\n\n", strings.ReplaceAll(strings.TrimSpace(help), "\n", "\n  "))
		}
		httpSet := flag.NewFlagSet("", flag.ContinueOnError)
		cmdSet := flag.NewFlagSet("", flag.ContinueOnError)
		fs.VisitAll(func(f *flag.Flag) {
			dst := cmdSet
			if isHTTPFlag(f.Name) {
				dst = httpSet
			}
			dst.Var(f.Value, f.Name, f.Usage)
			// Var records the current value as the default; show the real one.
			dst.Lookup(f.Name).DefValue = f.DefValue
		})
		for _, s := range []struct {
			title string
			set   *flag.FlagSet
		}{{"HTTP API Options", httpSet}, {"Command Options", cmdSet}} {
			n := 0
			s.set.VisitAll(func(*flag.Flag) { n++ })
			if n == 0 {
				continue
			}
			fmt.Fprintf(stderr, "%s:\n\n", s.title)
			s.set.SetOutput(stderr)
			s.set.PrintDefaults()
			fmt.Fprintln(stderr)
		}
	}
	return fs
}

// parseFlags parses args into fs. When the command must stop it returns
// false and the exit code: 0 for -h, 1 for a flag error (usage has been
// printed by then).
func parseFlags(fs *flag.FlagSet, args []string) (int, bool) {
	err := fs.Parse(args)
	switch {
	case err == nil:
		return 0, true
	case errors.Is(err, flag.ErrHelp):
		return 0, false
	default:
		return 1, false
	}
}

// flagWasSet reports whether the flag name appeared on the command line.
func flagWasSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}

// formatMap renders m as sorted key=value pairs joined by sep.
func formatMap(m map[string]string, sep string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, sep)
}

// writeTable writes rows as left-aligned columns separated by two spaces,
// the layout of Consul's CLI tables. Trailing blanks are trimmed.
func writeTable(w io.Writer, rows [][]string) {
	var widths []int
	for _, r := range rows {
		for i, c := range r {
			if i >= len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	var b strings.Builder
	for _, r := range rows {
		b.Reset()
		for i, c := range r {
			b.WriteString(c)
			if i < len(r)-1 {
				b.WriteString(strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c)+2))
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}
