package config

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// testHostname stands in for os.Hostname so results do not depend on the
// machine.
func testHostname() (string, error) { return "testhost", nil }

// writeFile writes content to dir/name and returns the path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// testIfaces stands in for net.InterfaceAddrs: loopback and one private
// IPv4 address, so an unspecified bind_addr advertises 10.0.0.7 on any
// machine.
func testIfaces() ([]net.Addr, error) {
	return []net.Addr{
		&net.IPNet{IP: net.ParseIP("127.0.0.1"), Mask: net.CIDRMask(8, 32)},
		&net.IPNet{IP: net.ParseIP("10.0.0.7"), Mask: net.CIDRMask(8, 32)},
	}, nil
}

// load runs Load with args, the test host name and the test interfaces.
func load(args ...string) (*Config, []string, error) {
	return Load(LoadOptions{Args: args, Hostname: testHostname, InterfaceAddrs: testIfaces})
}

// mustLoad runs Load and fails the test on error.
func mustLoad(t *testing.T, args ...string) (*Config, []string) {
	t.Helper()
	c, warnings, err := load(args...)
	if err != nil {
		t.Fatalf("Load(%q): %v", args, err)
	}
	return c, warnings
}

const exampleJSON = `{"node_name":"n1","server":true,"bootstrap":true,"data_dir":"/tmp/x","bind_addr":"127.0.0.1","ports":{"http":18500,"dns":18600,"grpc":18502,"serf_lan":18301,"serf_wan":18302,"server":18300},"log_level":"debug"}`

const exampleHCL = `
node_name = "n1"
server    = true
bootstrap = true
data_dir  = "/tmp/x"
bind_addr = "127.0.0.1"
ports {
  http     = 18500
  dns      = 18600
  grpc     = 18502
  serf_lan = 18301
  serf_wan = 18302
  server   = 18300
}
log_level = "debug"
`

func TestLoadExampleFile(t *testing.T) {
	for _, tc := range []struct{ name, content string }{
		{"x.json", exampleJSON},
		{"x.hcl", exampleHCL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, t.TempDir(), tc.name, tc.content)
			c, _ := mustLoad(t, "-config-file", p)

			if c.NodeName != "n1" || !c.Server || !c.Bootstrap || c.DataDir != "/tmp/x" || c.BindAddr != "127.0.0.1" || c.LogLevel != "debug" {
				t.Errorf("scalars: got node_name=%q server=%v bootstrap=%v data_dir=%q bind_addr=%q log_level=%q",
					c.NodeName, c.Server, c.Bootstrap, c.DataDir, c.BindAddr, c.LogLevel)
			}
			want := defaultPorts()
			want.HTTP, want.DNS, want.GRPC, want.SerfLAN, want.SerfWAN, want.Server = 18500, 18600, 18502, 18301, 18302, 18300
			if c.Ports != want {
				t.Errorf("ports: got %+v, want %+v", c.Ports, want)
			}
			// Server-dependent defaults.
			if c.LeaveOnTerminate || !c.SkipLeaveOnInterrupt {
				t.Errorf("server leave defaults: leave_on_terminate=%v skip_leave_on_interrupt=%v", c.LeaveOnTerminate, c.SkipLeaveOnInterrupt)
			}
			if c.Datacenter != "dc1" || c.PrimaryDatacenter != "dc1" || c.Domain != "consul." {
				t.Errorf("defaults: datacenter=%q primary=%q domain=%q", c.Datacenter, c.PrimaryDatacenter, c.Domain)
			}
			if got := c.RPCAddr(); got != "127.0.0.1:18300" {
				t.Errorf("RPCAddr() = %q", got)
			}
			if got := c.HTTPAddrs(); !reflect.DeepEqual(got, []string{"127.0.0.1:18500"}) {
				t.Errorf("HTTPAddrs() = %q", got)
			}
			if !reflect.DeepEqual(c.ConfigFiles, []string{p}) {
				t.Errorf("ConfigFiles = %q", c.ConfigFiles)
			}
		})
	}
}

func TestConfigDirMergeOrder(t *testing.T) {
	dir := t.TempDir()
	// Written out of order on purpose: lexical order decides.
	writeFile(t, dir, "20-b.hcl", `
node_name  = "from-20"
retry_join = ["b"]
node_meta { rack = "r2" }
ports { dns = 8601 }
`)
	writeFile(t, dir, "10-a.json", `{
		"node_name": "from-10",
		"data_dir": "/var/lib/tribune",
		"retry_join": ["a"],
		"node_meta": {"rack": "r1", "zone": "z1"},
		"ports": {"http": 8501},
		"dns_config": {"service_ttl": {"*": "5s"}}
	}`)
	writeFile(t, dir, "30-c.json", `{"retry_join": ["c"], "dns_config": {"service_ttl": {"web": "30s"}}}`)
	writeFile(t, dir, "README.md", "not config")
	if err := os.Mkdir(filepath.Join(dir, "sub.json"), 0o700); err != nil {
		t.Fatal(err)
	}

	c, warnings := mustLoad(t, "-config-dir", dir)

	if c.NodeName != "from-20" {
		t.Errorf("node_name = %q, want the later file's", c.NodeName)
	}
	if want := []string{"a", "b", "c"}; !reflect.DeepEqual(c.RetryJoin, want) {
		t.Errorf("retry_join = %q, want %q (append in file order)", c.RetryJoin, want)
	}
	if want := map[string]string{"rack": "r2", "zone": "z1"}; !reflect.DeepEqual(c.NodeMeta, want) {
		t.Errorf("node_meta = %v, want %v (maps merge)", c.NodeMeta, want)
	}
	if want := map[string]time.Duration{"*": 5 * time.Second, "web": 30 * time.Second}; !reflect.DeepEqual(c.DNS.ServiceTTL, want) {
		t.Errorf("service_ttl = %v, want %v", c.DNS.ServiceTTL, want)
	}
	if c.Ports.HTTP != 8501 || c.Ports.DNS != 8601 || c.Ports.Server != 8300 {
		t.Errorf("ports = %+v", c.Ports)
	}
	wantFiles := []string{filepath.Join(dir, "10-a.json"), filepath.Join(dir, "20-b.hcl"), filepath.Join(dir, "30-c.json")}
	if !reflect.DeepEqual(c.ConfigFiles, wantFiles) {
		t.Errorf("ConfigFiles = %q, want %q", c.ConfigFiles, wantFiles)
	}
	if !containsSubstring(warnings, "README.md") {
		t.Errorf("no warning about skipping README.md: %q", warnings)
	}
}

func TestConfigPathsKeepCommandLineOrder(t *testing.T) {
	dir := t.TempDir()
	confDir := filepath.Join(dir, "conf.d")
	if err := os.Mkdir(confDir, 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, confDir, "a.json", `{"node_name": "from-dir", "data_dir": "/d"}`)
	file := writeFile(t, dir, "extra.hcl", `node_name = "from-file"`)

	c, _ := mustLoad(t, "-config-file", file, "-config-dir", confDir)
	if c.NodeName != "from-dir" {
		t.Errorf("-config-file then -config-dir: node_name = %q, want from-dir", c.NodeName)
	}
	c, _ = mustLoad(t, "-config-dir", confDir, "-config-file", file)
	if c.NodeName != "from-file" {
		t.Errorf("-config-dir then -config-file: node_name = %q, want from-file", c.NodeName)
	}
}

func TestConfigFormatFlag(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "agent.conf", `data_dir = "/d"
node_name = "fmt"`)
	if _, _, err := load("-config-file", p); err == nil || !strings.Contains(err.Error(), "-config-format") {
		t.Fatalf("file without extension: err = %v, want a hint about -config-format", err)
	}
	c, _ := mustLoad(t, "-config-format", "hcl", "-config-file", p)
	if c.NodeName != "fmt" {
		t.Errorf("node_name = %q", c.NodeName)
	}
}

func TestFlagsOverrideFiles(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "a.json", `{
		"node_name": "file-node",
		"data_dir": "/d",
		"datacenter": "file-dc",
		"ports": {"http": 1111, "dns": 2222},
		"retry_join": ["file-peer"],
		"node_meta": {"a": "file", "b": "file"},
		"log_json": false,
		"client_addr": "10.0.0.1"
	}`)
	c, _ := mustLoad(t,
		"-config-file", p,
		"-node", "flag-node",
		"-datacenter", "FLAG-DC",
		"-http-port", "3333",
		"-retry-join", "flag-peer1", "-retry-join", "flag-peer2",
		"-node-meta", "b:flag", "-node-meta", "c:x:y",
		"-log-json",
		"-client", "127.0.0.1 ::1",
		"-retry-interval", "5s",
		"-join", "j1",
		"-recursor", "8.8.8.8",
		"-raft-protocol", "3",
		"-encrypt", base64.StdEncoding.EncodeToString(make([]byte, 32)),
	)
	if c.NodeName != "flag-node" {
		t.Errorf("node_name = %q", c.NodeName)
	}
	if c.Datacenter != "flag-dc" {
		t.Errorf("datacenter = %q, want lower-cased flag value", c.Datacenter)
	}
	if c.Ports.HTTP != 3333 || c.Ports.DNS != 2222 {
		t.Errorf("ports: http=%d dns=%d", c.Ports.HTTP, c.Ports.DNS)
	}
	if want := []string{"file-peer", "flag-peer1", "flag-peer2"}; !reflect.DeepEqual(c.RetryJoin, want) {
		t.Errorf("retry_join = %q, want %q", c.RetryJoin, want)
	}
	if want := map[string]string{"a": "file", "b": "flag", "c": "x:y"}; !reflect.DeepEqual(c.NodeMeta, want) {
		t.Errorf("node_meta = %v, want %v", c.NodeMeta, want)
	}
	if !c.LogJSON {
		t.Error("log_json not set by -log-json")
	}
	if want := []string{"127.0.0.1:3333", "[::1]:3333"}; !reflect.DeepEqual(c.HTTPAddrs(), want) {
		t.Errorf("HTTPAddrs() = %q, want %q", c.HTTPAddrs(), want)
	}
	if c.RetryInterval != 5*time.Second {
		t.Errorf("retry_interval = %s", c.RetryInterval)
	}
	if !reflect.DeepEqual(c.StartJoin, []string{"j1"}) || !reflect.DeepEqual(c.Recursors, []string{"8.8.8.8"}) {
		t.Errorf("start_join = %q recursors = %q", c.StartJoin, c.Recursors)
	}
	if key, err := c.EncryptKey(); err != nil || len(key) != 32 {
		t.Errorf("EncryptKey() = %d bytes, %v", len(key), err)
	}
}

func TestHCLSnippetsAndSources(t *testing.T) {
	c, _ := mustLoadOpts(t, LoadOptions{
		Args:           []string{"-data-dir", "/d", "-node", "flag", "-hcl", `node_name = "snippet"`, "-hcl", `retry_join = ["s"]`},
		Sources:        []Source{{Name: "inline", Format: "json", Data: []byte(`{"node_name": "source", "retry_join": ["src"]}`)}},
		Hostname:       testHostname,
		InterfaceAddrs: testIfaces,
	})
	if c.NodeName != "snippet" {
		t.Errorf("node_name = %q, want the -hcl snippet to win", c.NodeName)
	}
	if want := []string{"src", "s"}; !reflect.DeepEqual(c.RetryJoin, want) {
		t.Errorf("retry_join = %q, want %q", c.RetryJoin, want)
	}
}

func mustLoadOpts(t *testing.T, opts LoadOptions) (*Config, []string) {
	t.Helper()
	c, w, err := Load(opts)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return c, w
}

func TestUnknownKeysWarn(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "x.json", `{"data_dir": "/d", "foo": 1, "ports": {"bar": 2}, "services": [{"name": "web", "bogus": true}]}`)
	c, warnings := mustLoad(t, "-config-file", p)
	for _, want := range []string{
		`config: unknown key "foo" in ` + p,
		`config: unknown key "ports.bar" in ` + p,
		`config: unknown key "services[0].bogus" in ` + p,
	} {
		if !contains(warnings, want) {
			t.Errorf("warnings %q lack %q", warnings, want)
		}
	}
	if len(c.Services) != 1 || c.Services[0].Name != "web" {
		t.Errorf("services = %+v", c.Services)
	}

	h := writeFile(t, dir, "y.hcl", `data_dir = "/d"
dns_config { nope = 1 }`)
	_, warnings = mustLoad(t, "-config-file", h)
	if want := `config: unknown key "dns_config.nope" in ` + h; !contains(warnings, want) {
		t.Errorf("warnings %q lack %q", warnings, want)
	}
}

func TestAdvisoryWarnings(t *testing.T) {
	for _, tc := range []struct {
		name    string
		content string
		want    string
	}{
		{"node name not a DNS label", `{"node_name": "my_node"}`, `node_name "my_node" will not be discoverable via DNS`},
		{"bootstrap_expect 1", `{"server": true, "bootstrap_expect": 1}`, "bootstrap_expect = 1"},
		{"bootstrap_expect even", `{"server": true, "bootstrap_expect": 4}`, "bootstrap_expect = 4"},
		{"deprecated non_voting_server", `{"server": true, "non_voting_server": true}`, `"non_voting_server"`},
		{"deprecated acl master token", `{"acl": {"tokens": {"master": "x"}}}`, "acl.tokens.initial_management"},
		{"script checks without acls", `{"enable_script_checks": true}`, "enable_script_checks"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, t.TempDir(), "x.json", tc.content)
			_, warnings := mustLoad(t, "-data-dir", "/d", "-config-file", p)
			if !containsSubstring(warnings, tc.want) {
				t.Errorf("warnings %q lack %q", warnings, tc.want)
			}
		})
	}
}

func TestInvalidValues(t *testing.T) {
	badKey := base64.StdEncoding.EncodeToString(make([]byte, 10))
	manyMeta := map[string]string{}
	for i := 0; i < 65; i++ {
		manyMeta[strings.Repeat("k", i+1)] = "v"
	}
	manyMetaJSON, _ := json.Marshal(map[string]interface{}{"node_meta": manyMeta})

	for _, tc := range []struct {
		name string
		file string // JSON unless it starts with "hcl:"
		args []string
		want string
	}{
		{name: "port out of range", file: `{"ports": {"http": 70000}}`, want: "ports.http: must be between 1 and 65535, got 70000"},
		{name: "port zero", file: `{"ports": {"server": 0}}`, want: "ports.server: must be between 1 and 65535, got 0"},
		{name: "serf_lan cannot be disabled", file: `{"ports": {"serf_lan": -1}}`, want: "ports.serf_lan: must be between 1 and 65535, got -1"},
		{name: "port not a number", file: `{"ports": {"dns": "x"}}`, want: `ports.dns: expected an integer, got "x"`},
		{name: "ports not an object", file: `{"ports": 5}`, want: "ports: expected an object, got number"},
		{name: "bad duration", file: `{"retry_interval": "abc"}`, want: `retry_interval: invalid duration "abc"`},
		{name: "duration without unit", file: `{"raft_snapshot_interval": 30}`, want: `raft_snapshot_interval: invalid duration "30"`},
		{name: "zero retry interval", file: `{"retry_interval": "0s"}`, want: "retry_interval: must be greater than 0"},
		{name: "bad nested duration", file: `{"dns_config": {"service_ttl": {"*": "x"}}}`, want: `dns_config.service_ttl.*: invalid duration "x"`},
		{name: "bad hcl duration", file: "hcl:autopilot { last_contact_threshold = \"soon\" }", want: `autopilot.last_contact_threshold: invalid duration "soon"`},
		{name: "bootstrap with bootstrap_expect", file: `{"server": true, "bootstrap": true, "bootstrap_expect": 3}`, want: "bootstrap_expect: cannot be used with bootstrap = true"},
		{name: "bootstrap_expect on a client", file: `{"bootstrap_expect": 3}`, want: "bootstrap_expect: requires server = true"},
		{name: "bootstrap on a client", file: `{"bootstrap": true}`, want: "bootstrap: requires server = true"},
		{name: "bootstrap_expect in dev mode", args: []string{"-dev", "-bootstrap-expect", "3"}, want: "bootstrap_expect: cannot be used in dev mode"},
		{name: "encrypt not base64", file: `{"encrypt": "not base64!"}`, want: "encrypt: invalid base64"},
		{name: "encrypt wrong length", file: `{"encrypt": "` + badKey + `"}`, want: "encrypt: key must decode to 16, 24 or 32 bytes, got 10"},
		{name: "raft multiplier", file: `{"performance": {"raft_multiplier": 11}}`, want: "performance.raft_multiplier: must be between 1 and 10, got 11"},
		{name: "raft logstore backend", file: `{"raft_logstore": {"backend": "rocksdb"}}`, want: `raft_logstore.backend: must be boltdb or wal, got "rocksdb"`},
		{name: "raft logstore segment size", file: "hcl:raft_logstore { wal { segment_size_mb = 0 } }", want: "raft_logstore.wal.segment_size_mb: must be between 1 and 1024, got 0"},
		{name: "reconnect timeout below minimum", file: `{"reconnect_timeout": "1h"}`, want: "reconnect_timeout: must be at least 8h0m0s, got 1h0m0s"},
		{name: "too many node_meta keys", file: string(manyMetaJSON), want: "node_meta: at most 64 keys are allowed, got 65"},
		{name: "node_meta key too long", file: `{"node_meta": {"` + strings.Repeat("k", 129) + `": "v"}}`, want: "key is longer than 128 characters"},
		{name: "node_meta value too long", file: `{"node_meta": {"k": "` + strings.Repeat("v", 513) + `"}}`, want: "node_meta.k: value is longer than 512 characters"},
		{name: "node_meta reserved prefix", file: `{"node_meta": {"consul-x": "v"}}`, want: `node_meta.consul-x: the "consul-" prefix is reserved`},
		{name: "log level", file: `{"log_level": "loud"}`, want: `log_level: must be one of trace, debug, info, warn or err, got "loud"`},
		{name: "acl default policy", file: `{"acl": {"default_policy": "maybe"}}`, want: `acl.default_policy: must be allow or deny, got "maybe"`},
		{name: "acl down policy", file: `{"acl": {"down_policy": "panic"}}`, want: `acl.down_policy: must be allow, deny, extend-cache or async-cache, got "panic"`},
		{name: "bool", file: `{"server": "yes"}`, want: `server: expected a boolean, got "yes"`},
		{name: "bind template", file: `{"bind_addr": "{{ GetPrivateIP }}"}`, want: "bind_addr: go-sockaddr templates are not supported"},
		{name: "bind not an ip", file: `{"bind_addr": "localhost"}`, want: `bind_addr: must be an IP address, got "localhost"`},
		{name: "advertise unspecified", file: `{"advertise_addr": "0.0.0.0"}`, want: "advertise_addr: must not be an unspecified address"},
		{name: "client addr", file: `{"client_addr": "127.0.0.1 nope"}`, want: `client_addr[1]: must be an IP address, got "nope"`},
		{name: "node id", file: `{"node_id": "abc"}`, want: `node_id: must be a UUID, got "abc"`},
		{name: "datacenter", file: `{"datacenter": "bad_dc"}`, want: `datacenter: must be a valid DNS label`},
		{name: "check output size", file: `{"check_output_max_size": 0}`, want: "check_output_max_size: must be greater than 0, got 0"},
		{name: "recursor", file: `{"recursors": ["1.1.1.1", "dns.example"]}`, want: `recursors[1]: must be an IP address or IP:port, got "dns.example"`},
		{name: "service without name", file: `{"services": [{"port": 80}]}`, want: "services[0].name: missing service name"},
		{name: "service check without interval", file: `{"service": {"name": "web", "checks": [{"http": "http://localhost"}]}}`, want: "services[0].checks[0].interval: must be greater than 0"},
		{name: "service weights", file: `{"service": {"name": "web", "weights": {"passing": 0}}}`, want: "services[0].weights.passing: must be at least 1, got 0"},
		{name: "check without name", file: `{"checks": [{"ttl": "10s"}]}`, want: "checks[0].name: missing check name"},
		{name: "check without type", file: `{"check": {"name": "c"}}`, want: "checks[0]: must set one of"},
		{name: "check bad duration", file: `{"check": {"name": "c", "ttl": "forever"}}`, want: `check.ttl: invalid duration "forever"`},
		{name: "invalid json", file: "{\n  \"node_name\": \"x\",\n}", want: "line 3, column 1"},
		{name: "truncated json", file: `{"node_name": `, want: "unexpected end of input"},
		{name: "trailing json", file: `{} {}`, want: "line 1, column 4: unexpected data after the top-level object"},
		{name: "json array", file: `[1]`, want: "expected a JSON object at the top level"},
		{name: "invalid hcl", file: "hcl:ports {\n  http = \n", want: "line 3, column"},
		{name: "flag not an int", args: []string{"-http-port", "abc"}, want: `invalid value "abc" for flag -http-port`},
		{name: "flag bad duration", args: []string{"-retry-interval", "abc"}, want: `retry_interval: invalid duration "abc"`},
		{name: "flag config format", args: []string{"-config-format", "yaml"}, want: `-config-format: must be json or hcl, got "yaml"`},
		{name: "flag unknown", args: []string{"-nope"}, want: "flag provided but not defined: -nope"},
		{name: "extra argument", args: []string{"extra"}, want: `unexpected argument "extra"`},
		{name: "missing config file", args: []string{"-config-file", "/does/not/exist.json"}, want: "/does/not/exist.json"},
		{name: "missing data dir", args: []string{"-node", "x"}, want: "data_dir: must be set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			var path string
			if tc.file != "" {
				name, content := "x.json", tc.file
				if rest, ok := strings.CutPrefix(tc.file, "hcl:"); ok {
					name, content = "x.hcl", rest
				}
				path = writeFile(t, t.TempDir(), name, content)
				args = append([]string{"-data-dir", "/d", "-config-file", path}, args...)
			} else if tc.name != "missing data dir" {
				args = append([]string{"-data-dir", "/d"}, args...)
			}
			_, _, err := load(args...)
			if err == nil {
				t.Fatalf("Load(%q) succeeded, want error containing %q", args, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %q, want it to contain %q", err, tc.want)
			}
			// Errors found while reading a file name it.
			if path != "" && !strings.Contains(err.Error(), path) && isReadError(tc.want) {
				t.Errorf("error %q does not name the file %s", err, path)
			}
		})
	}
}

func TestHelpFlag(t *testing.T) {
	var out strings.Builder
	_, _, err := Load(LoadOptions{Args: []string{"-h"}, FlagOutput: &out})
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err = %v, want flag.ErrHelp", err)
	}
	if !strings.Contains(out.String(), "-retry-join") {
		t.Errorf("usage output lacks -retry-join:\n%s", out.String())
	}
}

func TestDefaults(t *testing.T) {
	d := Default()
	checks := []struct {
		name      string
		got, want interface{}
	}{
		{"datacenter", d.Datacenter, "dc1"},
		{"bind_addr", d.BindAddr, "0.0.0.0"},
		{"client_addr", d.ClientAddrs, []string{"127.0.0.1"}},
		{"ports.http", d.Ports.HTTP, 8500},
		{"ports.https", d.Ports.HTTPS, -1},
		{"ports.dns", d.Ports.DNS, 8600},
		{"ports.grpc", d.Ports.GRPC, 8502},
		{"ports.serf_lan", d.Ports.SerfLAN, 8301},
		{"ports.serf_wan", d.Ports.SerfWAN, 8302},
		{"ports.server", d.Ports.Server, 8300},
		{"retry_interval", d.RetryInterval, 30 * time.Second},
		{"retry_max", d.RetryMax, 0},
		{"log_level", d.LogLevel, "INFO"},
		{"domain", d.Domain, "consul."},
		{"dns_config.allow_stale", d.DNS.AllowStale, true},
		{"dns_config.max_stale", d.DNS.MaxStale, 87600 * time.Hour},
		{"dns_config.udp_answer_limit", d.DNS.UDPAnswerLimit, 3},
		{"dns_config.recursor_timeout", d.DNS.RecursorTimeout, 2 * time.Second},
		{"dns_config.soa", d.DNS.SOA, SOAConfig{Refresh: 3600, Retry: 600, Expire: 86400}},
		{"performance.raft_multiplier", d.Performance.RaftMultiplier, 5},
		{"leave_on_terminate", d.LeaveOnTerminate, true},
		{"skip_leave_on_interrupt", d.SkipLeaveOnInterrupt, false},
		{"reconnect_timeout", d.ReconnectTimeout, 72 * time.Hour},
		{"raft_snapshot_threshold", d.RaftSnapshotThreshold, 16384},
		{"raft_snapshot_interval", d.RaftSnapshotInterval, 30 * time.Second},
		{"raft_trailing_logs", d.RaftTrailingLogs, 10240},
		{"raft_logstore", d.RaftLogStore, RaftLogStore{WALSegmentSizeMB: 64}},
		{"autopilot", d.Autopilot, Autopilot{CleanupDeadServers: true, LastContactThreshold: 200 * time.Millisecond, MaxTrailingLogs: 250, ServerStabilizationTime: 10 * time.Second}},
		{"limits.http_max_conns_per_client", d.Limits.HTTPMaxConnsPerClient, 200},
		{"limits.rpc_max_conns_per_client", d.Limits.RPCMaxConnsPerClient, 100},
		{"limits.kv_max_value_size", d.Limits.KVMaxValueSize, 524288},
		{"limits.txn_max_req_len", d.Limits.TxnMaxReqLen, 524288},
		{"acl.default_policy", d.ACL.DefaultPolicy, "allow"},
		{"acl.down_policy", d.ACL.DownPolicy, "extend-cache"},
		{"rpc_hold_timeout", d.RPCHoldTimeout, 7 * time.Second},
		{"check_output_max_size", d.CheckOutputMaxSize, 4096},
		{"encrypt_verify_incoming", d.EncryptVerifyIncoming, true},
		{"encrypt_verify_outgoing", d.EncryptVerifyOutgoing, true},
	}
	for _, tc := range checks {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("Default() %s = %v, want %v", tc.name, tc.got, tc.want)
		}
	}

	// Default plus a data directory and a name is valid.
	d.DataDir, d.NodeName = "/d", "n"
	if err := d.Validate(); err != nil {
		t.Errorf("Default() with data_dir and node_name: %v", err)
	}
	if err := Default().Validate(); err == nil || !strings.Contains(err.Error(), "data_dir") {
		t.Errorf("Default().Validate() = %v, want a data_dir error", err)
	}
}

func TestLeaveDefaultsFollowServer(t *testing.T) {
	for _, tc := range []struct {
		name            string
		args            []string
		leave, skipLeft bool
	}{
		{"client", nil, true, false},
		{"server", []string{"-server"}, false, true},
		{"server with explicit leave_on_terminate", []string{"-server", "-hcl", "leave_on_terminate = true"}, true, true},
		{"client with explicit skip_leave_on_interrupt", []string{"-hcl", "skip_leave_on_interrupt = true"}, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := mustLoad(t, append([]string{"-data-dir", "/d"}, tc.args...)...)
			if c.LeaveOnTerminate != tc.leave || c.SkipLeaveOnInterrupt != tc.skipLeft {
				t.Errorf("leave_on_terminate=%v skip_leave_on_interrupt=%v, want %v %v", c.LeaveOnTerminate, c.SkipLeaveOnInterrupt, tc.leave, tc.skipLeft)
			}
		})
	}
}

func TestDevMode(t *testing.T) {
	c, _ := mustLoad(t, "-dev")
	checks := []struct {
		name      string
		got, want interface{}
	}{
		{"dev", c.DevMode, true},
		{"server", c.Server, true},
		{"bootstrap", c.Bootstrap, true},
		{"bind_addr", c.BindAddr, "127.0.0.1"},
		{"in memory", c.InMemory(), true},
		{"node_name", c.NodeName, "testhost"},
		{"raft_multiplier", c.Performance.RaftMultiplier, 1},
		{"ui", c.UI.Enabled, true},
		{"connect", c.Connect.Enabled, true},
		{"grpc port", c.Ports.GRPC, 8502},
		{"leave_on_terminate", c.LeaveOnTerminate, false},
		{"skip_leave_on_interrupt", c.SkipLeaveOnInterrupt, true},
		{"advertise", c.AdvertiseAddr(), "127.0.0.1"},
	}
	for _, tc := range checks {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("-dev %s = %v, want %v", tc.name, tc.got, tc.want)
		}
	}

	// Files and flags still apply over dev defaults.
	c, _ = mustLoad(t, "-dev", "-data-dir", "/d", "-bind", "0.0.0.0", "-hcl", "performance { raft_multiplier = 2 }")
	if c.InMemory() || c.BindAddr != "0.0.0.0" || c.Performance.RaftMultiplier != 2 {
		t.Errorf("overrides over -dev: in memory=%v bind=%q raft_multiplier=%d", c.InMemory(), c.BindAddr, c.Performance.RaftMultiplier)
	}
}

func TestAddressHelpers(t *testing.T) {
	c := Default()
	c.ClientAddrs = []string{"127.0.0.1", "::1"}
	c.Addresses.DNS = []string{"10.0.0.5"}
	c.Addresses.GRPC = []string{"unix:///run/grpc.sock"}
	c.BindAddr = "10.0.0.9"

	if got, want := c.HTTPAddrs(), []string{"127.0.0.1:8500", "[::1]:8500"}; !reflect.DeepEqual(got, want) {
		t.Errorf("HTTPAddrs() = %q, want %q", got, want)
	}
	if got := c.HTTPSAddrs(); len(got) != 0 {
		t.Errorf("HTTPSAddrs() with https disabled = %q", got)
	}
	if got, want := c.DNSAddrs(), []string{"10.0.0.5:8600"}; !reflect.DeepEqual(got, want) {
		t.Errorf("DNSAddrs() = %q, want %q", got, want)
	}
	if got, want := c.GRPCAddr(), "unix:///run/grpc.sock"; got != want {
		t.Errorf("GRPCAddr() = %q, want %q", got, want)
	}
	if got, want := c.RPCAddr(), "10.0.0.9:8300"; got != want {
		t.Errorf("RPCAddr() = %q, want %q", got, want)
	}
	c.Ports.GRPC = -1
	if got := c.GRPCAddr(); got != "" {
		t.Errorf("GRPCAddr() with grpc disabled = %q", got)
	}

}

// ifaces returns an interface lister over cidrs ("10.1.1.1/8").
func ifaces(t *testing.T, cidrs ...string) func() ([]net.Addr, error) {
	t.Helper()
	var out []net.Addr
	for _, s := range cidrs {
		ip, n, err := net.ParseCIDR(s)
		if err != nil {
			t.Fatal(err)
		}
		n.IP = ip
		out = append(out, n)
	}
	return func() ([]net.Addr, error) { return out, nil }
}

// TestChooseAdvertiseAddr covers the address a start without
// advertise_addr advertises, over given interface lists.
func TestChooseAdvertiseAddr(t *testing.T) {
	failing := func() ([]net.Addr, error) { return nil, errors.New("no interfaces") }
	for _, tc := range []struct {
		name    string
		bind    string
		dev     bool
		ifaces  func() ([]net.Addr, error)
		want    string
		wantErr []string
	}{
		{name: "specific bind_addr", bind: "10.0.0.1", ifaces: failing, want: "10.0.0.1"},
		{name: "specific ipv6 bind_addr", bind: "2001:db8::5", ifaces: failing, want: "2001:db8::5"},
		{name: "the one private ipv4", bind: "0.0.0.0",
			ifaces: ifaces(t, "127.0.0.1/8", "fe80::1/64", "203.0.113.5/24", "192.168.1.20/24"), want: "192.168.1.20"},
		{name: "empty bind is 0.0.0.0", bind: "", ifaces: ifaces(t, "172.16.0.2/12"), want: "172.16.0.2"},
		{name: "cgnat counts as private", bind: "0.0.0.0", ifaces: ifaces(t, "100.64.3.4/10"), want: "100.64.3.4"},
		{name: "one address on two interfaces", bind: "0.0.0.0", ifaces: ifaces(t, "10.1.1.1/8", "10.1.1.1/32"), want: "10.1.1.1"},
		{name: "several private ipv4", bind: "0.0.0.0", ifaces: ifaces(t, "10.1.1.1/8", "127.0.0.1/8", "192.168.1.20/24"),
			wantErr: []string{"advertise_addr: not set", "several private IPv4 addresses found (10.1.1.1, 192.168.1.20)", "-advertise"}},
		{name: "no private ipv4", bind: "0.0.0.0", ifaces: ifaces(t, "127.0.0.1/8", "203.0.113.5/24"),
			wantErr: []string{"no private IPv4 address found", `bind_addr "0.0.0.0"`, "-bind"}},
		{name: "interfaces unavailable", bind: "0.0.0.0", ifaces: failing, wantErr: []string{"no interfaces"}},
		{name: "unspecified ipv6: the one public ipv6", bind: "::",
			ifaces: ifaces(t, "10.0.0.1/8", "fe80::1/64", "fd00::1/8", "2001:db8::7/64"), want: "2001:db8::7"},
		{name: "unspecified ipv6 without a public one", bind: "::", ifaces: ifaces(t, "10.0.0.1/8", "fd00::1/8"),
			wantErr: []string{"no public IPv6 address found"}},
		{name: "dev mode keeps loopback", bind: "0.0.0.0", dev: true, ifaces: failing, want: "127.0.0.1"},
		{name: "dev mode with a specific bind_addr", bind: "10.0.0.3", dev: true, ifaces: failing, want: "10.0.0.3"},
		{name: "bind_addr not an address", bind: "localhost", ifaces: failing, want: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := chooseAdvertiseAddr(tc.bind, tc.dev, tc.ifaces)
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatalf("chose %q, want an error", got)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("chooseAdvertiseAddr = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// TestLoadAdvertiseAddr checks what Load makes of advertise_addr: a normal
// start advertises the private address, never 127.0.0.1; -advertise and
// -advertise-wan win; -dev keeps 127.0.0.1; an ambiguous machine fails
// naming its addresses.
func TestLoadAdvertiseAddr(t *testing.T) {
	c, _ := mustLoad(t, "-server", "-bootstrap", "-data-dir", "/d")
	if c.AdvertiseAddrLAN != "10.0.0.7" || c.AdvertiseAddrWAN != "10.0.0.7" || c.AdvertiseAddr() != "10.0.0.7" {
		t.Errorf("normal start advertises %q (wan %q), want 10.0.0.7", c.AdvertiseAddrLAN, c.AdvertiseAddrWAN)
	}
	c, _ = mustLoad(t, "-data-dir", "/d", "-advertise", "192.0.2.9", "-advertise-wan", "198.51.100.9")
	if c.AdvertiseAddrLAN != "192.0.2.9" || c.AdvertiseAddrWAN != "198.51.100.9" {
		t.Errorf("advertise %q, wan %q", c.AdvertiseAddrLAN, c.AdvertiseAddrWAN)
	}
	p := writeFile(t, t.TempDir(), "a.hcl", `advertise_addr = "192.0.2.10"`+"\n"+`advertise_addr_wan = "198.51.100.10"`)
	c, _ = mustLoad(t, "-data-dir", "/d", "-config-file", p)
	if c.AdvertiseAddrLAN != "192.0.2.10" || c.AdvertiseAddrWAN != "198.51.100.10" {
		t.Errorf("advertise %q, wan %q from a file", c.AdvertiseAddrLAN, c.AdvertiseAddrWAN)
	}
	c, _ = mustLoad(t, "-data-dir", "/d", "-bind", "10.9.9.9")
	if c.AdvertiseAddrLAN != "10.9.9.9" {
		t.Errorf("advertise %q with -bind 10.9.9.9", c.AdvertiseAddrLAN)
	}
	c, _ = mustLoad(t, "-dev")
	if c.AdvertiseAddrLAN != "127.0.0.1" {
		t.Errorf("dev mode advertises %q", c.AdvertiseAddrLAN)
	}
	_, _, err := Load(LoadOptions{Args: []string{"-data-dir", "/d"}, Hostname: testHostname,
		InterfaceAddrs: ifaces(t, "10.0.0.7/8", "192.168.5.5/24")})
	if err == nil || !strings.Contains(err.Error(), "several private IPv4 addresses found (10.0.0.7, 192.168.5.5)") {
		t.Errorf("two private addresses: err = %v", err)
	}
	c, _, err = Load(LoadOptions{Args: []string{"-data-dir", "/d", "-advertise", "10.0.0.7"}, Hostname: testHostname,
		InterfaceAddrs: ifaces(t, "10.0.0.7/8", "192.168.5.5/24")})
	if err != nil || c.AdvertiseAddrLAN != "10.0.0.7" {
		t.Errorf("two private addresses with -advertise: %v", err)
	}
}

// isReadError reports whether an expected message comes from parsing or
// decoding a file rather than from validating the merged result.
func isReadError(want string) bool {
	for _, s := range []string{"line ", "unexpected end", "top-level", "invalid duration", "expected a", "expected an"} {
		if strings.Contains(want, s) {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

func containsSubstring(list []string, s string) bool {
	for _, e := range list {
		if strings.Contains(e, s) {
			return true
		}
	}
	return false
}

// FuzzLoadJSON feeds arbitrary bytes to Load as a JSON configuration file.
// Load may reject them but must not panic, and whatever it accepts must
// validate.
func FuzzLoadJSON(f *testing.F) {
	f.Add([]byte(exampleJSON))
	f.Add([]byte(`{"services":[{"name":"web","port":80,"checks":[{"http":"http://x","interval":"10s"}]}]}`))
	f.Add([]byte(`{"ports":{"http":"8500"},"dns_config":{"service_ttl":{"*":"5s"},"soa":{"refresh":1}}}`))
	f.Add([]byte(`{"node_meta":{"a":"b"},"retry_join":"x","acl":{"tokens":{"agent":1}}}`))
	f.Add([]byte(`{"ports":[{"http":1},{"dns":2}],"check":{"name":"c","ttl":1e400}}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"a":`))
	// One file, rewritten for each input: a worker runs inputs one at a
	// time.
	p := filepath.Join(f.TempDir(), "fuzz.json")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c, _, err := Load(LoadOptions{Args: []string{"-data-dir", "/d", "-config-file", p}, Hostname: testHostname, InterfaceAddrs: testIfaces})
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Load accepted a config that does not validate: %v", err)
		}
	})
}

// FuzzLoadHCL is FuzzLoadJSON for HCL files.
func FuzzLoadHCL(f *testing.F) {
	f.Add([]byte(exampleHCL))
	f.Add([]byte("service { name = \"web\" check { args = [\"true\"] interval = \"10s\" } }"))
	f.Add([]byte("ports { http = 1 }\nports { dns = 2 }"))
	f.Add([]byte("{\"a\": [}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := parseSource("fuzz.hcl", "hcl", data)
		if err != nil {
			return
		}
		_ = duplicateKeys("hcl", data)
		c := Default()
		var warnings []string
		a := &applier{source: "fuzz.hcl", warnings: &warnings, set: map[string]bool{}}
		_ = a.apply(c, m)
	})
}

// An empty (or blank) config file sets nothing, as Consul reads it: tools
// create the file before they fill it in and reload.
func TestLoadEmptyFile(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"empty.json", "blank.json", "empty.hcl"} {
		content := ""
		if name == "blank.json" {
			content = " \n\t\n"
		}
		p := writeFile(t, dir, name, content)
		c, _ := mustLoad(t, "-dev", "-config-file", p)
		if c.Datacenter != "dc1" || !reflect.DeepEqual(c.ConfigFiles, []string{p}) {
			t.Errorf("%s: datacenter=%q files=%q", name, c.Datacenter, c.ConfigFiles)
		}
	}
}

// TestRaftLogStore: the raft_logstore block as Consul documents it.
func TestRaftLogStore(t *testing.T) {
	c, warnings := mustLoad(t, "-data-dir", "/d", "-hcl", `raft_logstore {
  backend = "wal"
  disable_log_cache = true
  wal { segment_size_mb = 16 }
}`)
	if want := (RaftLogStore{Backend: "wal", DisableLogCache: true, WALSegmentSizeMB: 16}); c.RaftLogStore != want {
		t.Fatalf("raft_logstore = %+v, want %+v", c.RaftLogStore, want)
	}
	if len(warnings) != 0 {
		t.Fatalf("warnings: %q", warnings)
	}
}
