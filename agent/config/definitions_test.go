package config

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

// webService is the service both spellings below describe.
func webService() ServiceDefinition {
	return ServiceDefinition{
		ID:                "web-1",
		Name:              "web",
		Tags:              []string{"v1", "primary"},
		Address:           "10.0.0.1",
		TaggedAddresses:   map[string]ServiceAddress{"lan": {Address: "10.0.0.1", Port: 8080}},
		Meta:              map[string]string{"version": "1"},
		Port:              8080,
		EnableTagOverride: true,
		Weights:           Weights{Passing: 10, Warning: 1},
		Token:             "tok",
		Check: &CheckDefinition{
			ID:                             "web-http",
			Name:                           "web http",
			HTTP:                           "http://localhost:8080/health",
			Method:                         "POST",
			Header:                         map[string][]string{"X-A": {"1", "2"}},
			Body:                           "{}",
			TLSSkipVerify:                  true,
			TLSServerName:                  "web.internal",
			Interval:                       10 * time.Second,
			Timeout:                        time.Second,
			DeregisterCriticalServiceAfter: 90 * time.Minute,
			SuccessBeforePassing:           2,
			FailuresBeforeWarning:          1,
			FailuresBeforeCritical:         3,
			OutputMaxSize:                  1024,
		},
		Checks: []CheckDefinition{
			{ScriptArgs: []string{"/bin/check", "-x"}, Interval: 30 * time.Second},
			{TCP: "localhost:8080", Interval: 5 * time.Second, Status: "critical"},
			{GRPC: "localhost:8081", GRPCUseTLS: true, Interval: 10 * time.Second},
			{H2PING: "localhost:8082", H2PingUseTLS: true, Interval: 10 * time.Second},
			{UDP: "localhost:53", Interval: 10 * time.Second},
			{AliasService: "db", AliasNode: "n2"},
			{DockerContainerID: "f00", Shell: "/bin/sh", ScriptArgs: []string{"true"}, Interval: 10 * time.Second},
		},
		Connect: map[string]interface{}{"sidecar_service": map[string]interface{}{}},
	}
}

// memCheck is the stand-alone check both spellings below describe.
func memCheck() CheckDefinition {
	return CheckDefinition{
		ID:         "mem",
		Name:       "Memory",
		Notes:      "watch it",
		ServiceID:  "web-1",
		ScriptArgs: []string{"/bin/mem"},
		Interval:   10 * time.Second,
		Timeout:    2 * time.Second,
	}
}

const servicesSnakeJSON = `{
  "services": [{
    "id": "web-1",
    "name": "web",
    "tags": ["v1", "primary"],
    "address": "10.0.0.1",
    "tagged_addresses": {"lan": {"address": "10.0.0.1", "port": 8080}},
    "meta": {"version": "1"},
    "port": 8080,
    "enable_tag_override": true,
    "weights": {"passing": 10, "warning": 1},
    "token": "tok",
    "check": {
      "id": "web-http",
      "name": "web http",
      "http": "http://localhost:8080/health",
      "method": "POST",
      "header": {"X-A": ["1", "2"]},
      "body": "{}",
      "tls_skip_verify": true,
      "tls_server_name": "web.internal",
      "interval": "10s",
      "timeout": "1s",
      "deregister_critical_service_after": "90m",
      "success_before_passing": 2,
      "failures_before_warning": 1,
      "failures_before_critical": 3,
      "output_max_size": 1024
    },
    "checks": [
      {"args": ["/bin/check", "-x"], "interval": "30s"},
      {"tcp": "localhost:8080", "interval": "5s", "status": "critical"},
      {"grpc": "localhost:8081", "grpc_use_tls": true, "interval": "10s"},
      {"h2ping": "localhost:8082", "h2ping_use_tls": true, "interval": "10s"},
      {"udp": "localhost:53", "interval": "10s"},
      {"alias_service": "db", "alias_node": "n2"},
      {"docker_container_id": "f00", "shell": "/bin/sh", "args": ["true"], "interval": "10s"}
    ],
    "connect": {"sidecar_service": {}}
  }],
  "checks": [{
    "check_id": "mem", "name": "Memory", "notes": "watch it", "service_id": "web-1",
    "script_args": ["/bin/mem"], "interval": "10s", "timeout": "2s"
  }]
}`

const servicesCamelJSON = `{
  "service": {
    "ID": "web-1",
    "Name": "web",
    "Tags": ["v1", "primary"],
    "Address": "10.0.0.1",
    "TaggedAddresses": {"lan": {"Address": "10.0.0.1", "Port": 8080}},
    "Meta": {"version": "1"},
    "Port": 8080,
    "EnableTagOverride": true,
    "Weights": {"Passing": 10, "Warning": 1},
    "Token": "tok",
    "Check": {
      "CheckID": "web-http",
      "Name": "web http",
      "HTTP": "http://localhost:8080/health",
      "Method": "POST",
      "Header": {"X-A": ["1", "2"]},
      "Body": "{}",
      "TLSSkipVerify": true,
      "TLSServerName": "web.internal",
      "Interval": "10s",
      "Timeout": "1s",
      "DeregisterCriticalServiceAfter": "90m",
      "SuccessBeforePassing": 2,
      "FailuresBeforeWarning": 1,
      "FailuresBeforeCritical": 3,
      "OutputMaxSize": 1024
    },
    "Checks": [
      {"ScriptArgs": ["/bin/check", "-x"], "Interval": "30s"},
      {"TCP": "localhost:8080", "Interval": "5s", "Status": "critical"},
      {"GRPC": "localhost:8081", "GRPCUseTLS": true, "Interval": "10s"},
      {"H2PING": "localhost:8082", "H2PingUseTLS": true, "Interval": "10s"},
      {"UDP": "localhost:53", "Interval": "10s"},
      {"AliasService": "db", "AliasNode": "n2"},
      {"DockerContainerID": "f00", "Shell": "/bin/sh", "Args": ["true"], "Interval": "10s"}
    ],
    "Connect": {"sidecar_service": {}}
  },
  "check": {
    "ID": "mem", "Name": "Memory", "Notes": "watch it", "ServiceID": "web-1",
    "ScriptArgs": ["/bin/mem"], "Interval": "10s", "Timeout": "2s"
  }
}`

const servicesHCL = `
service {
  id   = "web-1"
  name = "web"
  tags = ["v1", "primary"]
  address = "10.0.0.1"
  tagged_addresses {
    lan {
      address = "10.0.0.1"
      port    = 8080
    }
  }
  meta { version = "1" }
  port = 8080
  enable_tag_override = true
  weights {
    passing = 10
    warning = 1
  }
  token = "tok"
  check {
    id     = "web-http"
    name   = "web http"
    http   = "http://localhost:8080/health"
    method = "POST"
    header { X-A = ["1", "2"] }
    body   = "{}"
    tls_skip_verify = true
    tls_server_name = "web.internal"
    interval = "10s"
    timeout  = "1s"
    deregister_critical_service_after = "90m"
    success_before_passing   = 2
    failures_before_warning  = 1
    failures_before_critical = 3
    output_max_size = 1024
  }
  checks = [
    { args = ["/bin/check", "-x"], interval = "30s" },
    { tcp = "localhost:8080", interval = "5s", status = "critical" },
    { grpc = "localhost:8081", grpc_use_tls = true, interval = "10s" },
    { h2ping = "localhost:8082", h2ping_use_tls = true, interval = "10s" },
    { udp = "localhost:53", interval = "10s" },
    { alias_service = "db", alias_node = "n2" },
    { docker_container_id = "f00", shell = "/bin/sh", args = ["true"], interval = "10s" },
  ]
  connect { sidecar_service {} }
}
checks {
  id = "mem"
  name = "Memory"
  notes = "watch it"
  service_id = "web-1"
  script_args = ["/bin/mem"]
  interval = "10s"
  timeout = "2s"
}
`

func TestServiceDefinitionsInFiles(t *testing.T) {
	for _, tc := range []struct{ name, file, content string }{
		{"snake_case json", "s.json", servicesSnakeJSON},
		{"CamelCase json", "c.json", servicesCamelJSON},
		{"hcl blocks", "s.hcl", servicesHCL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, t.TempDir(), tc.file, tc.content)
			c, warnings := mustLoad(t, "-data-dir", "/d", "-config-file", p)
			if len(warnings) != 0 {
				t.Errorf("warnings: %q", warnings)
			}
			if len(c.Services) != 1 {
				t.Fatalf("got %d services, want 1", len(c.Services))
			}
			if want := webService(); !reflect.DeepEqual(c.Services[0], want) {
				t.Errorf("service:\n got %+v\nwant %+v", c.Services[0], want)
				if !reflect.DeepEqual(c.Services[0].Check, want.Check) {
					t.Errorf("check:\n got %+v\nwant %+v", *c.Services[0].Check, *want.Check)
				}
				for i := range want.Checks {
					if i < len(c.Services[0].Checks) && !reflect.DeepEqual(c.Services[0].Checks[i], want.Checks[i]) {
						t.Errorf("checks[%d]:\n got %+v\nwant %+v", i, c.Services[0].Checks[i], want.Checks[i])
					}
				}
			}
			if want := []CheckDefinition{memCheck()}; !reflect.DeepEqual(c.Checks, want) {
				t.Errorf("checks:\n got %+v\nwant %+v", c.Checks, want)
			}
		})
	}
}

func TestServicesAppendAcrossFiles(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "a.hcl", `
service { name = "a" }
service { name = "b" }
`)
	writeFile(t, dir, "b.json", `{"services": [{"name": "c"}]}`)
	writeFile(t, dir, "c.json", `{"service": {"name": "d"}}`)
	c, _ := mustLoad(t, "-data-dir", "/d", "-config-dir", dir)
	var names []string
	for _, s := range c.Services {
		names = append(names, s.Name)
		if s.Weights != (Weights{Passing: 1, Warning: 1}) {
			t.Errorf("service %s weights = %+v, want the {1, 1} default", s.Name, s.Weights)
		}
		if s.ServiceID() != s.Name {
			t.Errorf("ServiceID() = %q, want the name %q", s.ServiceID(), s.Name)
		}
	}
	if want := []string{"a", "b", "c", "d"}; !reflect.DeepEqual(names, want) {
		t.Errorf("services = %q, want %q", names, want)
	}
}

// apiServiceBody is what Consul's Go client sends to
// /v1/agent/service/register for a typical registration.
const apiServiceBody = `{
  "ID": "web-1",
  "Name": "web",
  "Tags": ["v1"],
  "Port": 8080,
  "Address": "10.0.0.1",
  "Meta": {"version": "1"},
  "Weights": {"Passing": 10, "Warning": 1},
  "EnableTagOverride": false,
  "Check": {"CheckID": "web-ttl", "Name": "ttl", "TTL": "15s", "DeregisterCriticalServiceAfter": "1m"},
  "Checks": [
    {"HTTP": "http://localhost:8080/health", "Interval": "10s", "Timeout": "1s", "Header": {"X-A": ["1"]}, "Method": "GET", "TLSSkipVerify": true}
  ],
  "Namespace": "",
  "Proxy": {"DestinationServiceName": "web"}
}`

func TestDecodeServiceDefinitionAPI(t *testing.T) {
	var s ServiceDefinition
	if err := json.Unmarshal([]byte(apiServiceBody), &s); err != nil {
		t.Fatal(err)
	}
	want := ServiceDefinition{
		ID:      "web-1",
		Name:    "web",
		Tags:    []string{"v1"},
		Port:    8080,
		Address: "10.0.0.1",
		Meta:    map[string]string{"version": "1"},
		Weights: Weights{Passing: 10, Warning: 1},
		Check:   &CheckDefinition{ID: "web-ttl", Name: "ttl", TTL: 15 * time.Second, DeregisterCriticalServiceAfter: time.Minute},
		Checks: []CheckDefinition{{
			HTTP: "http://localhost:8080/health", Interval: 10 * time.Second, Timeout: time.Second,
			Header: map[string][]string{"X-A": {"1"}}, Method: "GET", TLSSkipVerify: true,
		}},
		Proxy: map[string]interface{}{"DestinationServiceName": "web"},
	}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("decoded:\n got %+v\nwant %+v", s, want)
	}
	if err := s.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}

	// Durations as nanoseconds, from a body decoded without UseNumber.
	var m map[string]interface{}
	if err := json.Unmarshal([]byte(`{"Name": "db", "Check": {"TTL": 15000000000, "DeregisterCriticalServiceAfter": 315360000000000000}}`), &m); err != nil {
		t.Fatal(err)
	}
	d, err := DecodeServiceDefinition(m)
	if err != nil {
		t.Fatal(err)
	}
	if d.Check == nil || d.Check.TTL != 15*time.Second || d.Check.DeregisterCriticalServiceAfter != 87600*time.Hour {
		t.Errorf("numeric durations: %+v", d.Check)
	}

	// The structs round-trip through encoding/json.
	b, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	var again ServiceDefinition
	if err := json.Unmarshal(b, &again); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(again, want) {
		t.Errorf("round trip:\n got %+v\nwant %+v", again, want)
	}
}

func TestDecodeCheckDefinitionAPI(t *testing.T) {
	for _, tc := range []struct {
		name string
		body string
		want CheckDefinition
	}{
		{
			name: "api client check registration",
			body: `{"ID": "mem", "Name": "Memory", "ServiceID": "web-1", "Args": ["/bin/mem"], "Interval": "10s", "Timeout": "1s", "Status": "warning"}`,
			want: CheckDefinition{ID: "mem", Name: "Memory", ServiceID: "web-1", ScriptArgs: []string{"/bin/mem"}, Interval: 10 * time.Second, Timeout: time.Second, Status: "warning"},
		},
		{
			name: "ScriptArgs spelling",
			body: `{"Name": "x", "ScriptArgs": ["a"], "Interval": 5000000000}`,
			want: CheckDefinition{Name: "x", ScriptArgs: []string{"a"}, Interval: 5 * time.Second},
		},
		{
			name: "snake_case spelling",
			body: `{"name": "x", "script_args": ["a"], "interval": "5s", "deregister_critical_service_after": "1m", "tls_skip_verify": true}`,
			want: CheckDefinition{Name: "x", ScriptArgs: []string{"a"}, Interval: 5 * time.Second, DeregisterCriticalServiceAfter: time.Minute, TLSSkipVerify: true},
		},
		{
			name: "header with a single value",
			body: `{"Name": "h", "HTTP": "http://x", "Interval": "1s", "Header": {"A": "b"}}`,
			want: CheckDefinition{Name: "h", HTTP: "http://x", Interval: time.Second, Header: map[string][]string{"A": {"b"}}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c CheckDefinition
			if err := json.Unmarshal([]byte(tc.body), &c); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(c, tc.want) {
				t.Errorf("got %+v\nwant %+v", c, tc.want)
			}
		})
	}

	if _, err := DecodeCheckDefinition(map[string]interface{}{"Interval": "ten"}); err == nil || !strings.Contains(err.Error(), `Interval: invalid duration "ten"`) {
		t.Errorf("bad duration: err = %v", err)
	}
	var c CheckDefinition
	if err := json.Unmarshal([]byte(`{"TTL": true}`), &c); err == nil {
		t.Error("TTL true: no error")
	}
}

func TestCheckDefinitionValidate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		check CheckDefinition
		want  string // "" for valid
	}{
		{"ttl", CheckDefinition{TTL: time.Second}, ""},
		{"http", CheckDefinition{HTTP: "http://x", Interval: time.Second}, ""},
		{"alias", CheckDefinition{AliasService: "web"}, ""},
		{"docker", CheckDefinition{DockerContainerID: "x", ScriptArgs: []string{"true"}, Interval: time.Second}, ""},
		{"no type", CheckDefinition{Name: "x"}, "must set one of"},
		{"http without interval", CheckDefinition{HTTP: "http://x"}, "interval: must be greater than 0"},
		{"docker without args", CheckDefinition{DockerContainerID: "x", Interval: time.Second}, "args: required for a docker_container_id check"},
		{"alias with interval", CheckDefinition{AliasService: "x", Interval: time.Second}, "interval: must not be set for an alias check"},
		{"alias with ttl", CheckDefinition{AliasService: "x", TTL: time.Second}, "ttl: must not be set for an alias check"},
		{"bad status", CheckDefinition{TTL: time.Second, Status: "ok"}, `status: must be passing, warning or critical, got "ok"`},
		{"negative timeout", CheckDefinition{TTL: time.Second, Timeout: -time.Second}, "timeout: must not be negative"},
		{"negative output size", CheckDefinition{TTL: time.Second, OutputMaxSize: -1}, "output_max_size: must not be negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.check.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestServiceDefinitionValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		svc  ServiceDefinition
		want string
	}{
		{"minimal", ServiceDefinition{Name: "a", Weights: Weights{Passing: 1}}, ""},
		{"no name", ServiceDefinition{Weights: Weights{Passing: 1}}, "name: missing service name"},
		{"bad kind", ServiceDefinition{Name: "a", Kind: "sidecar", Weights: Weights{Passing: 1}}, `kind: unknown service kind "sidecar"`},
		{"bad port", ServiceDefinition{Name: "a", Port: 70000, Weights: Weights{Passing: 1}}, "port: must be between 0 and 65535, got 70000"},
		{"bad meta", ServiceDefinition{Name: "a", Meta: map[string]string{"a b": "c"}, Weights: Weights{Passing: 1}}, `meta.a b: keys may only contain`},
		{"nested check", ServiceDefinition{Name: "a", Weights: Weights{Passing: 1}, Checks: []CheckDefinition{{TTL: time.Second}, {HTTP: "x"}}}, "checks[1].interval"},
		{"single check", ServiceDefinition{Name: "a", Weights: Weights{Passing: 1}, Check: &CheckDefinition{}}, "check: must set one of"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.svc.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestHCLSingleUpstreamBlockStaysAList: one `upstreams { }` block (and one
// `paths { }` block of expose) is a list of one, in a proxy block and in a
// sidecar_service's proxy block; two blocks are a list of two.
func TestHCLSingleUpstreamBlockStaysAList(t *testing.T) {
	const src = `
service {
  name = "web-proxy"
  kind = "connect-proxy"
  port = 21000
  proxy {
    destination_service_name = "web"
    upstreams {
      destination_name = "db"
      local_bind_port  = 9191
    }
    expose {
      paths {
        path = "/health"
        local_path_port = 8080
        listener_port = 21500
      }
    }
  }
}
service {
  name = "api"
  port = 8081
  connect {
    sidecar_service {
      proxy {
        upstreams {
          destination_name = "db"
          local_bind_port  = 9192
        }
        upstreams {
          destination_name = "cache"
          local_bind_port  = 9193
        }
      }
    }
  }
}
`
	p := writeFile(t, t.TempDir(), "s.hcl", src)
	c, warnings := mustLoad(t, "-data-dir", "/d", "-config-file", p)
	if len(warnings) != 0 {
		t.Errorf("warnings: %q", warnings)
	}
	if len(c.Services) != 2 {
		t.Fatalf("got %d services, want 2", len(c.Services))
	}
	listLen := func(v interface{}, what string) int {
		t.Helper()
		l, ok := v.([]interface{})
		if !ok {
			t.Fatalf("%s: got %T (%v), want a list", what, v, v)
		}
		return len(l)
	}
	proxy := c.Services[0].Proxy
	if n := listLen(proxy["upstreams"], "proxy upstreams"); n != 1 {
		t.Errorf("proxy upstreams: %d, want 1", n)
	}
	expose, ok := proxy["expose"].(map[string]interface{})
	if !ok {
		t.Fatalf("expose: got %T, want an object", proxy["expose"])
	}
	if n := listLen(expose["paths"], "expose paths"); n != 1 {
		t.Errorf("expose paths: %d, want 1", n)
	}
	sidecar, _ := c.Services[1].Connect["sidecar_service"].(map[string]interface{})
	sproxy, _ := sidecar["proxy"].(map[string]interface{})
	if n := listLen(sproxy["upstreams"], "sidecar upstreams"); n != 2 {
		t.Errorf("sidecar upstreams: %d, want 2", n)
	}
}
