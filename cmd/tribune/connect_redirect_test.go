package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/agent/agenttest"
	"github.com/tribune-mesh/tribune/connect/redirect"
)

// recordingRunner records the iptables commands it is given and answers
// every -C with "no such rule", as on a host without the rules.
type recordingRunner struct {
	netns string
	calls []string
}

func (r *recordingRunner) Run(_ context.Context, args []string) error {
	line := strings.Join(args, " ")
	r.calls = append(r.calls, line)
	if slices.Contains(args, "-C") {
		return &redirect.CommandError{Args: args, ExitCode: 1}
	}
	return nil
}

// rules are the recorded commands less the -C checks.
func (r *recordingRunner) rules() []string {
	var out []string
	for _, c := range r.calls {
		if !strings.Contains(c, " -C ") {
			out = append(out, c)
		}
	}
	return out
}

// runRedirect runs the command in-process with a recording runner.
func runRedirect(args ...string) (result, *recordingRunner) {
	rec := &recordingRunner{}
	factory := func(netns string) (redirect.Runner, error) {
		rec.netns = netns
		return rec, nil
	}
	r := runCmd(func(args []string, stdout, stderr io.Writer) int {
		return connectRedirectTraffic(context.Background(), args, stdout, stderr, factory)
	}, args...)
	return r, rec
}

// Bad or missing flags exit 1 with a message that names the flag, and run
// no iptables command.
func TestRedirectTrafficFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no uid", []string{"-proxy-inbound-port=20000"}, "-proxy-uid is required"},
		{"unknown user", []string{"-proxy-uid=no-such-user-tribune", "-proxy-inbound-port=20000"}, `"no-such-user-tribune" is neither a numeric user ID nor a known user`},
		{"no port nor proxy id", []string{"-proxy-uid=1234"}, "either -proxy-id or -proxy-inbound-port is required"},
		{"inbound port out of range", []string{"-proxy-uid=1234", "-proxy-inbound-port=70000"}, "-proxy-inbound-port: port 70000 is out of range 1-65535"},
		{"outbound port out of range", []string{"-proxy-uid=1234", "-proxy-inbound-port=20000", "-proxy-outbound-port=0"}, "-proxy-outbound-port: port 0 is out of range"},
		{"inbound port not a number", []string{"-proxy-uid=1234", "-proxy-inbound-port=http"}, `invalid value "http" for flag -proxy-inbound-port`},
		{"bad excluded port", []string{"-proxy-uid=1234", "-proxy-inbound-port=20000", "-exclude-inbound-port=abc"}, `invalid value "abc" for flag -exclude-inbound-port: "abc" is not a port number`},
		{"excluded port out of range", []string{"-proxy-uid=1234", "-proxy-inbound-port=20000", "-exclude-outbound-port=65536"}, "invalid value \"65536\" for flag -exclude-outbound-port: port 65536 is out of range"},
		{"bad CIDR", []string{"-proxy-uid=1234", "-proxy-inbound-port=20000", "-exclude-outbound-cidr=10.0.0.0/40"}, `invalid value "10.0.0.0/40" for flag -exclude-outbound-cidr`},
		{"IPv6 CIDR", []string{"-proxy-uid=1234", "-proxy-inbound-port=20000", "-exclude-outbound-cidr=fd00::/8"}, "is not IPv4"},
		{"bad excluded uid", []string{"-proxy-uid=1234", "-proxy-inbound-port=20000", "-exclude-uid=no-such-user-tribune"}, "invalid value \"no-such-user-tribune\" for flag -exclude-uid"},
		{"proxy id and ports", []string{"-proxy-uid=1234", "-proxy-id=web-proxy", "-proxy-inbound-port=20000"}, "cannot be used with -proxy-id"},
		{"proxy id and outbound port", []string{"-proxy-uid=1234", "-proxy-id=web-proxy", "-proxy-outbound-port=15001"}, "cannot be used with -proxy-id"},
		{"node without proxy id", []string{"-proxy-uid=1234", "-proxy-inbound-port=20000", "-node-name=n1"}, "-node-name requires -proxy-id"},
		{"bad DNS IP", []string{"-proxy-uid=1234", "-proxy-inbound-port=20000", "-consul-dns-ip=dns.local"}, `-consul-dns-ip: "dns.local" is not an IPv4 address`},
		{"bad DNS port", []string{"-proxy-uid=1234", "-proxy-inbound-port=20000", "-consul-dns-port=100000"}, "-consul-dns-port: port 100000"},
		{"extra argument", []string{"-proxy-uid=1234", "-proxy-inbound-port=20000", "now"}, `unexpected arguments ["now"]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, rec := runRedirect(tc.args...)
			if r.code != 1 {
				t.Fatalf("exit %d, want 1\n%v", r.code, r)
			}
			assertContains(t, "stderr", r.stderr, tc.want)
			if len(rec.calls) != 0 {
				t.Errorf("ran iptables despite the error: %q", rec.calls)
			}
		})
	}
}

// Every flag lands in the rules: the ports, each exclusion, the DNS
// server, the uid given by name, and -netns reaches the runner.
func TestRedirectTrafficFlagsToRules(t *testing.T) {
	r, rec := runRedirect("-proxy-uid=root", "-proxy-inbound-port=21000", "-proxy-outbound-port=15002",
		"-exclude-inbound-port=22", "-exclude-inbound-port=9102",
		"-exclude-outbound-port=5432", "-exclude-outbound-cidr=10.1.0.0/16", "-exclude-outbound-cidr=192.168.1.7",
		"-exclude-uid=42", "-consul-dns-ip=10.0.0.10", "-consul-dns-port=8600", "-netns=/var/run/netns/pod")
	if r.code != 0 {
		t.Fatalf("%v", r)
	}
	want := []string{
		"-t nat -N CONSUL_PROXY_INBOUND",
		"-t nat -N CONSUL_PROXY_IN_REDIRECT",
		"-t nat -N CONSUL_PROXY_OUTPUT",
		"-t nat -N CONSUL_PROXY_REDIRECT",
		"-t nat -N CONSUL_DNS_REDIRECT",
		"-t nat -A CONSUL_DNS_REDIRECT -p udp -d 10.0.0.10 -j DNAT --to-destination 10.0.0.10:8600",
		"-t nat -A CONSUL_DNS_REDIRECT -p tcp -d 10.0.0.10 -j DNAT --to-destination 10.0.0.10:8600",
		"-t nat -A CONSUL_PROXY_REDIRECT -p tcp -j REDIRECT --to-ports 15002",
		"-t nat -A CONSUL_PROXY_OUTPUT -m owner --uid-owner 0 -j RETURN",
		"-t nat -A CONSUL_PROXY_OUTPUT -m owner --uid-owner 42 -j RETURN",
		"-t nat -A CONSUL_PROXY_OUTPUT -p tcp --dport 5432 -j RETURN",
		"-t nat -A CONSUL_PROXY_OUTPUT -d 10.1.0.0/16 -j RETURN",
		"-t nat -A CONSUL_PROXY_OUTPUT -d 192.168.1.7/32 -j RETURN",
		"-t nat -A CONSUL_PROXY_OUTPUT -d 127.0.0.1/32 -j RETURN",
		"-t nat -A CONSUL_PROXY_OUTPUT -j CONSUL_PROXY_REDIRECT",
		"-t nat -A CONSUL_PROXY_IN_REDIRECT -p tcp -j REDIRECT --to-ports 21000",
		"-t nat -A CONSUL_PROXY_INBOUND -p tcp --dport 22 -j RETURN",
		"-t nat -A CONSUL_PROXY_INBOUND -p tcp --dport 9102 -j RETURN",
		"-t nat -A CONSUL_PROXY_INBOUND -p tcp -j CONSUL_PROXY_IN_REDIRECT",
		"-t nat -A OUTPUT -p udp --dport 53 -j CONSUL_DNS_REDIRECT",
		"-t nat -A OUTPUT -p tcp --dport 53 -j CONSUL_DNS_REDIRECT",
		"-t nat -A OUTPUT -p tcp -j CONSUL_PROXY_OUTPUT",
		"-t nat -A PREROUTING -p tcp -j CONSUL_PROXY_INBOUND",
	}
	if got := rec.rules(); !slices.Equal(got, want) {
		t.Errorf("commands:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if rec.netns != "/var/run/netns/pod" {
		t.Errorf("runner namespace = %q, want the -netns path", rec.netns)
	}
	assertContains(t, "stdout", r.stdout, "inbound TCP to port 21000, outbound TCP to port 15002")
}

// With -proxy-id the ports come from the registration on the local agent
// (or, with -node-name, from the catalog): Port or bind_port inbound, the
// transparent proxy's outbound listener port, and the exposed paths' and
// Envoy's metrics ports excluded from inbound redirection.
func TestRedirectTrafficFromProxyRegistration(t *testing.T) {
	a := agenttest.Start(t, nil)
	addr := "-http-addr=" + a.HTTPAddr()
	client, err := api.NewClient(&api.Config{Address: a.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	for _, reg := range []*api.AgentServiceRegistration{
		{Name: "web", ID: "web", Port: 8080},
		{Kind: api.ServiceKindConnectProxy, Name: "web-sidecar-proxy", ID: "web-sidecar-proxy", Port: 21000,
			Proxy: &api.AgentServiceConnectProxyConfig{
				DestinationServiceName: "web", DestinationServiceID: "web", LocalServicePort: 8080,
				Mode:             api.ProxyModeTransparent,
				TransparentProxy: &api.TransparentProxyConfig{OutboundListenerPort: 15099},
				Config: map[string]any{
					"envoy_prometheus_bind_addr": "0.0.0.0:9102",
					"envoy_stats_bind_addr":      "0.0.0.0:9103",
				},
				Expose: api.ExposeConfig{Paths: []api.ExposePath{
					{Path: "/health", LocalPathPort: 8080, ListenerPort: 21500, Protocol: "http"},
				}},
			}},
		{Kind: api.ServiceKindConnectProxy, Name: "api-sidecar-proxy", ID: "api-sidecar-proxy", Port: 21001,
			Proxy: &api.AgentServiceConnectProxyConfig{
				DestinationServiceName: "web", Config: map[string]any{"bind_port": 21111},
			}},
	} {
		if err := client.Agent().ServiceRegister(reg); err != nil {
			t.Fatalf("register %s: %v", reg.ID, err)
		}
	}

	wantWeb := []string{
		"-t nat -A CONSUL_PROXY_REDIRECT -p tcp -j REDIRECT --to-ports 15099",
		"-t nat -A CONSUL_PROXY_IN_REDIRECT -p tcp -j REDIRECT --to-ports 21000",
		"-t nat -A CONSUL_PROXY_INBOUND -p tcp --dport 22 -j RETURN",
		"-t nat -A CONSUL_PROXY_INBOUND -p tcp --dport 21500 -j RETURN",
		"-t nat -A CONSUL_PROXY_INBOUND -p tcp --dport 9102 -j RETURN",
		"-t nat -A CONSUL_PROXY_INBOUND -p tcp --dport 9103 -j RETURN",
	}
	checkRules := func(t *testing.T, rec *recordingRunner, want []string) {
		t.Helper()
		var got []string
		for _, l := range rec.rules() {
			if strings.Contains(l, "REDIRECT --to-ports") || strings.Contains(l, "-A CONSUL_PROXY_INBOUND -p tcp --dport") {
				got = append(got, l)
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}

	t.Run("local agent", func(t *testing.T) {
		r, rec := runRedirect(addr, "-proxy-uid=1234", "-proxy-id=web-sidecar-proxy", "-exclude-inbound-port=22")
		if r.code != 0 {
			t.Fatalf("%v", r)
		}
		checkRules(t, rec, wantWeb)
	})
	t.Run("exposed checks", func(t *testing.T) {
		// The ports the agent gave the checks a sidecar exposes are
		// excluded: the agent's probes arrive there.
		if err := client.Agent().ServiceRegister(&api.AgentServiceRegistration{Name: "db", ID: "db", Port: 5432,
			Check: &api.AgentServiceCheck{CheckID: "db-http", HTTP: "http://127.0.0.1:5432/ready", Interval: "30s"}}); err != nil {
			t.Fatal(err)
		}
		if err := client.Agent().ServiceRegister(&api.AgentServiceRegistration{Kind: api.ServiceKindConnectProxy, Name: "db-sidecar-proxy",
			ID: "db-sidecar-proxy", Port: 21002, Proxy: &api.AgentServiceConnectProxyConfig{DestinationServiceName: "db", DestinationServiceID: "db",
				Expose: api.ExposeConfig{Checks: true}}}); err != nil {
			t.Fatal(err)
		}
		var exposed int
		waitFor(t, 10*time.Second, func() (bool, string) {
			checks, err := client.Agent().Checks()
			if err != nil || checks["db-http"] == nil || checks["db-http"].ExposedPort == 0 {
				return false, "db-http not exposed yet"
			}
			exposed = checks["db-http"].ExposedPort
			return true, ""
		})
		r, rec := runRedirect(addr, "-proxy-uid=1234", "-proxy-id=db-sidecar-proxy")
		if r.code != 0 {
			t.Fatalf("%v", r)
		}
		checkRules(t, rec, []string{
			"-t nat -A CONSUL_PROXY_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
			"-t nat -A CONSUL_PROXY_IN_REDIRECT -p tcp -j REDIRECT --to-ports 21002",
			fmt.Sprintf("-t nat -A CONSUL_PROXY_INBOUND -p tcp --dport %d -j RETURN", exposed),
		})
	})
	t.Run("bind_port", func(t *testing.T) {
		r, rec := runRedirect(addr, "-proxy-uid=1234", "-proxy-id=api-sidecar-proxy")
		if r.code != 0 {
			t.Fatalf("%v", r)
		}
		checkRules(t, rec, []string{
			"-t nat -A CONSUL_PROXY_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
			"-t nat -A CONSUL_PROXY_IN_REDIRECT -p tcp -j REDIRECT --to-ports 21111",
		})
	})
	t.Run("catalog", func(t *testing.T) {
		node, err := client.Agent().NodeName()
		if err != nil {
			t.Fatal(err)
		}
		// Anti-entropy puts the registration into the catalog.
		waitFor(t, 10*time.Second, func() (bool, string) {
			n, _, err := client.Catalog().Node(node, nil)
			if err != nil || n == nil || n.Services["web-sidecar-proxy"] == nil {
				return false, "web-sidecar-proxy not in the catalog yet"
			}
			return true, ""
		})
		r, rec := runRedirect(addr, "-proxy-uid=1234", "-proxy-id=web-sidecar-proxy", "-node-name="+node, "-exclude-inbound-port=22")
		if r.code != 0 {
			t.Fatalf("%v", r)
		}
		checkRules(t, rec, wantWeb)

		r, _ = runRedirect(addr, "-proxy-uid=1234", "-proxy-id=nope", "-node-name="+node)
		if r.code != 1 {
			t.Fatalf("unknown service on the node: %v", r)
		}
		assertContains(t, "stderr", r.stderr, "no service nope on node "+node)
	})
	t.Run("not a proxy", func(t *testing.T) {
		r, rec := runRedirect(addr, "-proxy-uid=1234", "-proxy-id=web")
		if r.code != 1 || len(rec.calls) != 0 {
			t.Fatalf("%v (calls %q)", r, rec.calls)
		}
		assertContains(t, "stderr", r.stderr, "service web is not a connect-proxy")
	})
	t.Run("unknown", func(t *testing.T) {
		r, _ := runRedirect(addr, "-proxy-uid=1234", "-proxy-id=nope")
		if r.code != 1 {
			t.Fatalf("%v", r)
		}
		assertContains(t, "stderr", r.stderr, "read proxy service nope from the local agent")
	})
}

// Without iptables the command says so and exits 1.
func TestRedirectTrafficWithoutIPTables(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	r := runCmd(runConnectRedirectTraffic, "-proxy-uid=1234", "-proxy-inbound-port=20000")
	if r.code != 1 {
		t.Fatalf("%v", r)
	}
	assertContains(t, "stderr", r.stderr, "iptables is required to redirect traffic")
}

// A failing iptables command fails the run with its output.
func TestRedirectTrafficReportsIPTablesFailure(t *testing.T) {
	factory := func(string) (redirect.Runner, error) { return failingRunner{}, nil }
	r := runCmd(func(args []string, stdout, stderr io.Writer) int {
		return connectRedirectTraffic(context.Background(), args, stdout, stderr, factory)
	}, "-proxy-uid=1234", "-proxy-inbound-port=20000")
	if r.code != 1 {
		t.Fatalf("%v", r)
	}
	assertContains(t, "stderr", r.stderr, "applying the traffic redirection rules: create chain CONSUL_PROXY_INBOUND")
	assertContains(t, "stderr", r.stderr, "Permission denied (you must be root)")
}

type failingRunner struct{}

func (failingRunner) Run(_ context.Context, args []string) error {
	return &redirect.CommandError{Args: args, ExitCode: 4, Output: "Permission denied (you must be root)",
		Err: errors.New("exit status 4")}
}
