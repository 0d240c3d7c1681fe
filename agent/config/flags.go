package config

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

// stringSlice is a flag.Value collecting every use of a repeatable flag.
type stringSlice []string

// String returns the values joined with commas.
func (s *stringSlice) String() string { return strings.Join(*s, ",") }

// Get returns the collected values, making stringSlice a flag.Getter.
func (s *stringSlice) Get() interface{} { return []string(*s) }

// Set appends one use of the flag.
func (s *stringSlice) Set(v string) error {
	*s = append(*s, v)
	return nil
}

// parsedFlags is the outcome of parsing `agent` command-line arguments.
type parsedFlags struct {
	dev bool
	// configPaths are the -config-file and -config-dir values in
	// command-line order; both name files or directories.
	configPaths []string
	// configFormat is -config-format: "", "json" or "hcl".
	configFormat string
	// hcl are the -hcl snippets.
	hcl []string
	// overrides are the other flags that were given, as a configuration
	// source in file key names.
	overrides map[string]interface{}
}

// flagKeys maps flags to the configuration keys they set.
func flagKeys() map[string]string {
	return map[string]string{
		"server":                     "server",
		"bootstrap":                  "bootstrap",
		"bootstrap-expect":           "bootstrap_expect",
		"data-dir":                   "data_dir",
		"node":                       "node_name",
		"node-id":                    "node_id",
		"datacenter":                 "datacenter",
		"bind":                       "bind_addr",
		"advertise":                  "advertise_addr",
		"advertise-wan":              "advertise_addr_wan",
		"client":                     "client_addr",
		"http-port":                  "ports.http",
		"https-port":                 "ports.https",
		"dns-port":                   "ports.dns",
		"grpc-port":                  "ports.grpc",
		"grpc-tls-port":              "ports.grpc_tls",
		"serf-lan-port":              "ports.serf_lan",
		"serf-wan-port":              "ports.serf_wan",
		"server-port":                "ports.server",
		"retry-join":                 "retry_join",
		"retry-join-wan":             "retry_join_wan",
		"retry-interval":             "retry_interval",
		"retry-interval-wan":         "retry_interval_wan",
		"retry-max":                  "retry_max",
		"retry-max-wan":              "retry_max_wan",
		"join":                       "start_join",
		"join-wan":                   "start_join_wan",
		"log-level":                  "log_level",
		"log-json":                   "log_json",
		"log-file":                   "log_file",
		"log-rotate-bytes":           "log_rotate_bytes",
		"log-rotate-duration":        "log_rotate_duration",
		"log-rotate-max-files":       "log_rotate_max_files",
		"encrypt":                    "encrypt",
		"domain":                     "domain",
		"alt-domain":                 "alt_domain",
		"recursor":                   "recursors",
		"ui":                         "ui",
		"ui-dir":                     "ui_config.dir",
		"ui-content-path":            "ui_config.content_path",
		"node-meta":                  "node_meta",
		"enable-script-checks":       "enable_script_checks",
		"enable-local-script-checks": "enable_local_script_checks",
		"raft-protocol":              "raft_protocol",
		"pid-file":                   "pid_file",
		"rejoin":                     "rejoin_after_leave",
		"read-replica":               "read_replica",
		"non-voting-server":          "non_voting_server",
		"primary-datacenter":         "primary_datacenter",
	}
}

// newFlagSet defines the agent's flags. Values are read back with Visit, so
// only the flags actually given become overrides. -config-file and
// -config-dir share the returned list so that their command-line order is
// kept.
func newFlagSet(out io.Writer) (*flag.FlagSet, *stringSlice) {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(out)

	b := func(name, usage string) { fs.Bool(name, false, usage) }
	s := func(name, usage string) { fs.String(name, "", usage) }
	n := func(name, usage string) { fs.Int(name, 0, usage) }
	l := func(name, usage string) { fs.Var(new(stringSlice), name, usage) }

	b("dev", "Start a single in-memory server with every interface on, for development.")
	paths := new(stringSlice)
	fs.Var(paths, "config-file", "A configuration file to load (repeatable).")
	fs.Var(paths, "config-dir", "A directory of .json and .hcl configuration files to load in lexical order (repeatable).")
	s("config-format", "Read configuration files as json or hcl whatever their extension.")
	l("hcl", "An HCL configuration snippet, applied after files and flags (repeatable).")

	b("server", "Run as a server.")
	b("bootstrap", "Bootstrap a single server.")
	n("bootstrap-expect", "Number of servers to wait for before bootstrapping.")
	b("read-replica", "Run a server that does not vote.")
	b("non-voting-server", "Deprecated: use -read-replica.")
	s("data-dir", "Directory for agent state.")
	s("node", "Node name (default: host name).")
	s("node-id", "Node ID, a UUID.")
	s("datacenter", "Datacenter name.")
	s("primary-datacenter", "Primary datacenter name.")
	s("bind", "Address for cluster communication.")
	s("advertise", "Address to advertise to the LAN.")
	s("advertise-wan", "Address to advertise to the WAN.")
	s("client", "Space-separated addresses for the HTTP, DNS and gRPC interfaces.")
	n("http-port", "HTTP API port (-1 disables).")
	n("https-port", "HTTPS API port (-1 disables).")
	n("dns-port", "DNS port (-1 disables).")
	n("grpc-port", "gRPC port (-1 disables).")
	n("grpc-tls-port", "gRPC TLS port (-1 disables).")
	n("serf-lan-port", "LAN gossip port.")
	n("serf-wan-port", "WAN gossip port (-1 disables).")
	n("server-port", "Server RPC port.")
	l("retry-join", "Address to join on the LAN, retried (repeatable).")
	l("retry-join-wan", "Address to join on the WAN, retried (repeatable).")
	s("retry-interval", "Time between LAN join attempts.")
	s("retry-interval-wan", "Time between WAN join attempts.")
	n("retry-max", "Maximum LAN join attempts (0: no limit).")
	n("retry-max-wan", "Maximum WAN join attempts (0: no limit).")
	l("join", "Address to join on the LAN at start (repeatable).")
	l("join-wan", "Address to join on the WAN at start (repeatable).")
	b("rejoin", "Rejoin the cluster after leaving it.")
	s("log-level", "Log level: trace, debug, info, warn or err.")
	b("log-json", "Log as JSON.")
	s("log-file", "File (or directory, ending in /) to write the log to as well.")
	n("log-rotate-bytes", "Rotate the log file before it passes this many bytes (0: never).")
	s("log-rotate-duration", "Rotate the log file once it is this old (default 24h).")
	n("log-rotate-max-files", "Rotated log files to keep (0: all, -1: none).")
	s("pid-file", "File to write the agent's process ID to.")
	s("encrypt", "Base64 gossip encryption key.")
	s("domain", "DNS domain.")
	s("alt-domain", "Alternate DNS domain.")
	l("recursor", "Upstream DNS server (repeatable).")
	b("ui", "Serve the web UI.")
	s("ui-dir", "Serve the web UI from this directory instead of the built-in one.")
	s("ui-content-path", "The HTTP path the web UI is served under (default /ui/).")
	l("node-meta", "Node metadata as key:value (repeatable).")
	b("enable-script-checks", "Allow script checks from any source.")
	b("enable-local-script-checks", "Allow script checks from configuration files only.")
	n("raft-protocol", "Accepted for compatibility; ignored.")
	return fs, paths
}

// parseFlags parses the arguments after `agent`.
func parseFlags(args []string, out io.Writer) (*parsedFlags, error) {
	if out == nil {
		out = io.Discard
	}
	fs, paths := newFlagSet(out)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}

	pf := &parsedFlags{
		configPaths: *paths,
		overrides:   make(map[string]interface{}),
	}
	keys := flagKeys()
	var err error
	fs.Visit(func(f *flag.Flag) {
		if err != nil {
			return
		}
		value := f.Value.(flag.Getter).Get()
		switch f.Name {
		case "dev":
			pf.dev = value.(bool)
			return
		case "config-file", "config-dir":
			return
		case "config-format":
			pf.configFormat = value.(string)
			if pf.configFormat != "json" && pf.configFormat != "hcl" {
				err = fmt.Errorf("-config-format: must be json or hcl, got %q", pf.configFormat)
			}
			return
		case "hcl":
			pf.hcl = append(pf.hcl, *f.Value.(*stringSlice)...)
			return
		case "node-meta":
			meta := make(map[string]interface{})
			for _, kv := range *f.Value.(*stringSlice) {
				k, v, _ := strings.Cut(kv, ":")
				meta[k] = v
			}
			setPath(pf.overrides, keys[f.Name], meta)
			return
		}
		if ss, ok := f.Value.(*stringSlice); ok {
			l := make([]interface{}, len(*ss))
			for i, s := range *ss {
				l[i] = s
			}
			value = l
		}
		setPath(pf.overrides, keys[f.Name], value)
	})
	if err != nil {
		return nil, err
	}
	return pf, nil
}

// setPath stores v in m under a dotted key path, creating objects on the
// way.
func setPath(m map[string]interface{}, path string, v interface{}) {
	parts := strings.Split(path, ".")
	for _, p := range parts[:len(parts)-1] {
		next, ok := m[p].(map[string]interface{})
		if !ok {
			next = make(map[string]interface{})
			m[p] = next
		}
		m = next
	}
	m[parts[len(parts)-1]] = v
}
