package redirect

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// commandLines renders a plan's commands one per line, as a shell would
// read them, for comparisons that print well.
func commandLines(p Plan) []string {
	var lines []string
	for _, c := range p.Commands() {
		lines = append(lines, strings.Join(c, " "))
	}
	return lines
}

func mustPlan(t *testing.T, c Config) Plan {
	t.Helper()
	p, err := c.Plan()
	if err != nil {
		t.Fatalf("Plan(%+v): %v", c, err)
	}
	return p
}

func assertLines(t *testing.T, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("commands:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// The chains every plan creates, and the jumps every plan ends with.
var (
	chainLines = []string{
		"-t nat -N CONSUL_PROXY_INBOUND",
		"-t nat -N CONSUL_PROXY_IN_REDIRECT",
		"-t nat -N CONSUL_PROXY_OUTPUT",
		"-t nat -N CONSUL_PROXY_REDIRECT",
		"-t nat -N CONSUL_DNS_REDIRECT",
	}
	jumpLines = []string{
		"-t nat -A OUTPUT -p udp --dport 53 -j CONSUL_DNS_REDIRECT",
		"-t nat -A OUTPUT -p tcp --dport 53 -j CONSUL_DNS_REDIRECT",
		"-t nat -A OUTPUT -p tcp -j CONSUL_PROXY_OUTPUT",
		"-t nat -A PREROUTING -p tcp -j CONSUL_PROXY_INBOUND",
	}
)

func concat(parts ...[]string) []string {
	var out []string
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// With only the required settings: outbound to 15001 except the proxy's uid
// and loopback, inbound to the inbound port, no DNS rule.
func TestRedirectPlanDefaults(t *testing.T) {
	p := mustPlan(t, Config{ProxyUID: "1234", ProxyInboundPort: 20000})
	assertLines(t, commandLines(p), concat(chainLines, []string{
		"-t nat -A CONSUL_PROXY_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
		"-t nat -A CONSUL_PROXY_OUTPUT -m owner --uid-owner 1234 -j RETURN",
		"-t nat -A CONSUL_PROXY_OUTPUT -d 127.0.0.1/32 -j RETURN",
		"-t nat -A CONSUL_PROXY_OUTPUT -j CONSUL_PROXY_REDIRECT",
		"-t nat -A CONSUL_PROXY_IN_REDIRECT -p tcp -j REDIRECT --to-ports 20000",
		"-t nat -A CONSUL_PROXY_INBOUND -p tcp -j CONSUL_PROXY_IN_REDIRECT",
	}, jumpLines))
}

// Every exclusion is a RETURN ahead of the redirect, duplicates once; CIDRs
// are normalized (an address is a /32, host bits cleared).
func TestRedirectPlanExclusions(t *testing.T) {
	p := mustPlan(t, Config{
		ProxyUID: "101", ProxyInboundPort: 21000, ProxyOutboundPort: 15002,
		ExcludeInboundPorts:  []int{9102, 8080, 9102},
		ExcludeOutboundPorts: []int{5432},
		ExcludeOutboundCIDRs: []string{"10.1.2.3", "192.168.7.9/16", "10.1.2.3/32"},
		ExcludeUIDs:          []string{"0", "42"},
	})
	assertLines(t, commandLines(p), concat(chainLines, []string{
		"-t nat -A CONSUL_PROXY_REDIRECT -p tcp -j REDIRECT --to-ports 15002",
		"-t nat -A CONSUL_PROXY_OUTPUT -m owner --uid-owner 101 -j RETURN",
		"-t nat -A CONSUL_PROXY_OUTPUT -m owner --uid-owner 0 -j RETURN",
		"-t nat -A CONSUL_PROXY_OUTPUT -m owner --uid-owner 42 -j RETURN",
		"-t nat -A CONSUL_PROXY_OUTPUT -p tcp --dport 5432 -j RETURN",
		"-t nat -A CONSUL_PROXY_OUTPUT -d 10.1.2.3/32 -j RETURN",
		"-t nat -A CONSUL_PROXY_OUTPUT -d 192.168.0.0/16 -j RETURN",
		"-t nat -A CONSUL_PROXY_OUTPUT -d 127.0.0.1/32 -j RETURN",
		"-t nat -A CONSUL_PROXY_OUTPUT -j CONSUL_PROXY_REDIRECT",
		"-t nat -A CONSUL_PROXY_IN_REDIRECT -p tcp -j REDIRECT --to-ports 21000",
		"-t nat -A CONSUL_PROXY_INBOUND -p tcp --dport 9102 -j RETURN",
		"-t nat -A CONSUL_PROXY_INBOUND -p tcp --dport 8080 -j RETURN",
		"-t nat -A CONSUL_PROXY_INBOUND -p tcp -j CONSUL_PROXY_IN_REDIRECT",
	}, jumpLines))
}

// DNS: an address alone takes every query to port 53 there; a port takes
// only the queries to the address (127.0.0.1 by default) to that port.
func TestRedirectPlanDNS(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ip    string
		port  int
		rules []string
	}{
		{"ip only", "10.0.0.10", 0, []string{
			"-t nat -A CONSUL_DNS_REDIRECT -p udp -j DNAT --to-destination 10.0.0.10",
			"-t nat -A CONSUL_DNS_REDIRECT -p tcp -j DNAT --to-destination 10.0.0.10",
		}},
		{"port only", "", 8600, []string{
			"-t nat -A CONSUL_DNS_REDIRECT -p udp -d 127.0.0.1 -j DNAT --to-destination 127.0.0.1:8600",
			"-t nat -A CONSUL_DNS_REDIRECT -p tcp -d 127.0.0.1 -j DNAT --to-destination 127.0.0.1:8600",
		}},
		{"ip and port", "10.0.0.10", 8600, []string{
			"-t nat -A CONSUL_DNS_REDIRECT -p udp -d 10.0.0.10 -j DNAT --to-destination 10.0.0.10:8600",
			"-t nat -A CONSUL_DNS_REDIRECT -p tcp -d 10.0.0.10 -j DNAT --to-destination 10.0.0.10:8600",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := mustPlan(t, Config{ProxyUID: "1", ProxyInboundPort: 20000, DNSIP: tc.ip, DNSPort: tc.port})
			var dns []string
			for _, l := range commandLines(p) {
				if strings.Contains(l, "-A "+DNSChain) {
					dns = append(dns, l)
				}
			}
			assertLines(t, dns, tc.rules)
			// The DNS jumps come before the jump that redirects all TCP.
			lines := commandLines(p)
			assertLines(t, lines[len(lines)-len(jumpLines):], jumpLines)
		})
	}
}

func TestRedirectConfigValidate(t *testing.T) {
	ok := Config{ProxyUID: "1234", ProxyInboundPort: 20000}
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"no uid", func(c *Config) { c.ProxyUID = "" }, "user ID is required"},
		{"uid not numeric", func(c *Config) { c.ProxyUID = "envoy" }, `"envoy" is not a numeric user ID`},
		{"no inbound port", func(c *Config) { c.ProxyInboundPort = 0 }, "inbound port is required"},
		{"inbound port too big", func(c *Config) { c.ProxyInboundPort = 70000 }, "port 70000 is out of range"},
		{"outbound port negative", func(c *Config) { c.ProxyOutboundPort = -1 }, "proxy outbound port: port -1"},
		{"excluded inbound port", func(c *Config) { c.ExcludeInboundPorts = []int{0} }, "excluded inbound port: port 0"},
		{"excluded outbound port", func(c *Config) { c.ExcludeOutboundPorts = []int{65536} }, "excluded outbound port"},
		{"bad CIDR", func(c *Config) { c.ExcludeOutboundCIDRs = []string{"10.0.0.0/33"} }, `"10.0.0.0/33" is neither`},
		{"IPv6 CIDR", func(c *Config) { c.ExcludeOutboundCIDRs = []string{"fd00::/8"} }, "not IPv4"},
		{"bad excluded uid", func(c *Config) { c.ExcludeUIDs = []string{"-3"} }, "excluded user ID"},
		{"bad DNS IP", func(c *Config) { c.DNSIP = "consul" }, "DNS server address"},
		{"IPv6 DNS IP", func(c *Config) { c.DNSIP = "::1" }, "not IPv4"},
		{"bad DNS port", func(c *Config) { c.DNSPort = 99999 }, "DNS server port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.change(&c)
			_, err := c.Plan()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Plan() error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
	if _, err := ok.Plan(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
}

// natTable is an in-memory nat table that answers iptables commands as
// iptables does (exit status 1 for an existing chain on -N, a missing
// chain on -F or -A, a missing rule on -C).
type natTable struct {
	chains map[string][]string
	order  []string // user chains in creation order
	calls  [][]string
	// failOn, when it matches a command's operation ("-N", "-A"...), makes
	// that command fail with exit status failCode.
	failOn   string
	failCode int
}

func newNATTable() *natTable {
	return &natTable{chains: map[string][]string{"PREROUTING": nil, "INPUT": nil, "OUTPUT": nil, "POSTROUTING": nil}}
}

func (n *natTable) Run(_ context.Context, args []string) error {
	n.calls = append(n.calls, args)
	fail := func(code int) error { return &CommandError{Args: args, ExitCode: code} }
	if len(args) < 4 || args[0] != "-t" || args[1] != "nat" {
		return fail(2)
	}
	op, chain, spec := args[2], args[3], strings.Join(args[4:], " ")
	if op == n.failOn {
		return fail(n.failCode)
	}
	rules, exists := n.chains[chain]
	switch op {
	case "-N":
		if exists {
			return fail(1)
		}
		n.chains[chain] = nil
		n.order = append(n.order, chain)
	case "-F":
		if !exists {
			return fail(1)
		}
		n.chains[chain] = nil
	case "-C":
		if !exists || !slices.Contains(rules, spec) {
			return fail(1)
		}
	case "-A":
		target := args[len(args)-1]
		if _, ok := n.chains[target]; !ok && strings.HasPrefix(target, "CONSUL_") {
			return fail(1) // a jump to a chain that does not exist
		}
		if !exists {
			return fail(1)
		}
		n.chains[chain] = append(rules, spec)
	default:
		return fail(2)
	}
	return nil
}

// dump lists every chain's rules, iptables -S style.
func (n *natTable) dump() []string {
	var out []string
	for _, c := range append([]string{"PREROUTING", "OUTPUT"}, n.order...) {
		out = append(out, "-N "+c)
		for _, r := range n.chains[c] {
			out = append(out, "-A "+c+" "+r)
		}
	}
	return out
}

// Applying a plan on a fresh table gives exactly its commands; applying it
// again leaves the table unchanged (chains flushed and refilled, jumps not
// duplicated); applying another plan replaces the first one's rules.
func TestRedirectApplyIsIdempotent(t *testing.T) {
	ctx := context.Background()
	first := mustPlan(t, Config{ProxyUID: "1234", ProxyInboundPort: 20000, ExcludeInboundPorts: []int{22}})
	table := newNATTable()
	if err := Apply(ctx, table, first); err != nil {
		t.Fatal(err)
	}
	var calls []string
	for _, c := range table.calls {
		calls = append(calls, strings.Join(c, " "))
	}
	// On a fresh table: the plan's commands, with a -C before each jump.
	var want []string
	for _, l := range commandLines(first) {
		if strings.Contains(l, "-A OUTPUT") || strings.Contains(l, "-A PREROUTING") {
			want = append(want, strings.Replace(l, "-A", "-C", 1))
		}
		want = append(want, l)
	}
	assertLines(t, calls, want)
	once := table.dump()

	if err := Apply(ctx, table, first); err != nil {
		t.Fatalf("second run: %v", err)
	}
	assertLines(t, table.dump(), once)

	second := mustPlan(t, Config{ProxyUID: "0", ProxyInboundPort: 21000, DNSIP: "10.0.0.10"})
	if err := Apply(ctx, table, second); err != nil {
		t.Fatalf("run with another config: %v", err)
	}
	fresh := newNATTable()
	if err := Apply(ctx, fresh, second); err != nil {
		t.Fatal(err)
	}
	assertLines(t, table.dump(), fresh.dump())
}

// A failure other than "already exists" / "not there" stops Apply with the
// step and the command's error.
func TestRedirectApplyReportsFailures(t *testing.T) {
	p := mustPlan(t, Config{ProxyUID: "1234", ProxyInboundPort: 20000})
	for _, tc := range []struct {
		op   string
		code int
		want string
	}{
		{"-N", 4, "create chain CONSUL_PROXY_INBOUND: iptables -t nat -N CONSUL_PROXY_INBOUND: exit status 4"},
		{"-F", 4, "create or flush chain CONSUL_PROXY_INBOUND"},
		{"-A", 2, "add rule to CONSUL_PROXY_REDIRECT"},
		{"-C", 2, "look for the jump from OUTPUT"},
	} {
		t.Run(tc.op, func(t *testing.T) {
			table := newNATTable()
			if tc.op == "-F" {
				// The chain exists, so -N fails with 1 and -F is tried.
				table.chains[InboundChain] = nil
			}
			table.failOn, table.failCode = tc.op, tc.code
			err := Apply(context.Background(), table, p)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Apply error = %v, want it to contain %q", err, tc.want)
			}
			var ce *CommandError
			if !errors.As(err, &ce) || ce.ExitCode != tc.code {
				t.Fatalf("Apply error %v does not wrap the command's exit status %d", err, tc.code)
			}
		})
	}
}

func TestRedirectMissingIPTables(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := NewIPTables("")
	if !errors.Is(err, exec.ErrNotFound) || !strings.Contains(err.Error(), "iptables is required") {
		t.Fatalf("NewIPTables without iptables on PATH: %v", err)
	}
}

// fakeIPTables puts on PATH an iptables that logs its arguments and answers
// "-N" as for a chain that already exists.
func fakeIPTables(t *testing.T) (log string) {
	t.Helper()
	dir := t.TempDir()
	log = filepath.Join(dir, "calls")
	script := "#!/bin/sh\necho \"$*\" >> '" + log + "'\n" +
		"case \" $* \" in *\" -N \"*) echo 'iptables: Chain already exists.' >&2; exit 1;; esac\n" +
		"case \" $* \" in *\" -C \"*) echo 'iptables: Bad rule (does a matching rule exist in that chain?).' >&2; exit 1;; esac\n"
	if err := os.WriteFile(filepath.Join(dir, "iptables"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	return log
}

// IPTables runs the program found on PATH with the lock wait and reads its
// exit status: here every chain "exists", so each is flushed, and every
// jump is "missing", so each is added.
func TestRedirectIPTablesRunsTheProgram(t *testing.T) {
	log := fakeIPTables(t)
	x, err := NewIPTables("")
	if err != nil {
		t.Fatal(err)
	}
	p := mustPlan(t, Config{ProxyUID: "1234", ProxyInboundPort: 20000})
	if err := Apply(context.Background(), x, p); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(got) == 0 || got[0] != "-w 10 -t nat -N CONSUL_PROXY_INBOUND" || got[1] != "-w 10 -t nat -F CONSUL_PROXY_INBOUND" {
		t.Fatalf("first calls = %q, want -N then -F of %s with -w 10", got, InboundChain)
	}
	wantLast := "-w 10 -t nat -A PREROUTING -p tcp -j CONSUL_PROXY_INBOUND"
	if got[len(got)-1] != wantLast {
		t.Fatalf("last call = %q, want %q", got[len(got)-1], wantLast)
	}
	// 5 chains x (-N, -F), the rules, 4 jumps x (-C, -A).
	if want := 10 + len(p.Rules) + 8; len(got) != want {
		t.Fatalf("%d calls, want %d:\n%s", len(got), want, b)
	}
}

// A failing command's error carries its arguments, exit status and output.
func TestRedirectIPTablesReportsOutput(t *testing.T) {
	fakeIPTables(t)
	x, err := NewIPTables("")
	if err != nil {
		t.Fatal(err)
	}
	err = x.Run(context.Background(), []string{"-t", "nat", "-N", "X"})
	var ce *CommandError
	if !errors.As(err, &ce) || ce.ExitCode != 1 {
		t.Fatalf("Run error = %v, want a CommandError with exit status 1", err)
	}
	want := "iptables -t nat -N X: exit status 1: iptables: Chain already exists."
	if err.Error() != want {
		t.Fatalf("error = %q, want %q", err, want)
	}
	if _, err := NewIPTables(filepath.Join(t.TempDir(), "no-such-netns")); err == nil || !strings.Contains(err.Error(), "network namespace") {
		t.Fatalf("NewIPTables with a missing namespace: %v", err)
	}
}
