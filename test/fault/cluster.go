package fault

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/test/procs"
	"github.com/tribune-mesh/tribune/test/wait"
)

// Address and uid layout inside the namespace. Server i (from 1) is
// 127.0.0.(10+i), client agent i is 127.0.0.(20+i). The workload runs as
// root from 127.0.0.1, which no fault ever touches: like Jepsen's control
// node, it always reaches every agent.
//
// Each agent runs under uid uidBase+<last octet>, and a routing rule sends
// that uid's traffic through a table whose local route has the agent's own
// address as source. Without it every outgoing TCP connection (Raft, RPC,
// gossip push/pull) would leave from 127.0.0.1 and no iptables rule could
// tell the agents apart.
const (
	serverOctet = 10
	clientOctet = 20
	uidBase     = 41000
	tableBase   = 100
)

// maxWait caps every wait of this package whose real bound is its
// context's deadline.
const maxWait = 10 * time.Minute

// ClusterOptions shape a cluster.
type ClusterOptions struct {
	Servers, Clients int
	// LogLevel is the agents' -log-level (default info).
	LogLevel string

	// The options below let several clusters (datacenters) share one
	// namespace; their zero values give the single cluster above.

	// Prefix is put before every agent's name ("dc2-" names s1 dc2-s1),
	// and its data directory and log.
	Prefix string
	// ServerOctet and ClientOctet are the last octets before the first
	// server's and client's addresses (default serverOctet, clientOctet).
	ServerOctet, ClientOctet int
	// Args are added to every agent's command line (-datacenter, -hcl).
	Args []string
	// ServerArgs are added to the servers' command lines only.
	ServerArgs []string
	// Token is the ACL token the harness's own clients send.
	Token string
	// Net, when set, is the network this cluster shares with others
	// (its chain is not reset); else the cluster makes its own.
	Net *Network
}

// Cluster is a set of agents in the namespace and the network between them.
type Cluster struct {
	Servers []*Agent
	Clients []*Agent
	Dir     string
	Net     *Network

	marker atomic.Int64
}

// NewCluster lays out a cluster in dir (binary, data dirs, logs) and sets up
// the namespace's routing and iptables chain. It starts nothing.
func NewCluster(env *Env, dir string, opts ClusterOptions) (*Cluster, error) {
	if opts.LogLevel == "" {
		opts.LogLevel = "info"
	}
	// The agents run under their own uids: they must reach the binary
	// and their directories.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, fmt.Errorf("chmod %s: %w", dir, err)
	}
	bin := filepath.Join(dir, "tribune")
	if err := copyFile(env.Binary, bin, 0o755); err != nil {
		return nil, err
	}
	c := &Cluster{Dir: dir, Net: opts.Net}
	if c.Net == nil {
		c.Net = &Network{}
	}
	if opts.ServerOctet == 0 {
		opts.ServerOctet = serverOctet
	}
	if opts.ClientOctet == 0 {
		opts.ClientOctet = clientOctet
	}
	var joins []string
	for i := 1; i <= opts.Servers; i++ {
		joins = append(joins, fmt.Sprintf("127.0.0.%d:%d", opts.ServerOctet+i, serfPort))
	}
	mk := func(name string, octet int, server bool) *Agent {
		addr := fmt.Sprintf("127.0.0.%d", octet)
		a := &Agent{Agent: &procs.Agent{Name: name, Server: server, Bin: bin, Addr: addr, UID: uidBase + octet,
			HTTPPort: httpPort, DNSPort: dnsPort, RPCPort: serverPort, SerfPort: serfPort,
			DataDir: filepath.Join(dir, "data", name), LogPath: filepath.Join(dir, name+".log")}, Token: opts.Token}
		a.ctl = APIClient(a, 5*time.Second)
		a.Args = []string{"agent", "-node", name, "-bind", addr, "-client", addr, "-advertise", addr,
			"-data-dir", a.DataDir, "-retry-interval", "200ms", "-log-level", opts.LogLevel,
			"-hcl", "performance { raft_multiplier = 1 }"}
		for _, j := range joins {
			if !strings.HasPrefix(j, addr+":") {
				a.Args = append(a.Args, "-retry-join", j)
			}
		}
		a.Args = append(a.Args, opts.Args...)
		if server {
			a.Args = append(a.Args, "-server", "-bootstrap-expect", strconv.Itoa(opts.Servers))
			a.Args = append(a.Args, opts.ServerArgs...)
		}
		return a
	}
	for i := 1; i <= opts.Servers; i++ {
		c.Servers = append(c.Servers, mk(fmt.Sprintf("%ss%d", opts.Prefix, i), opts.ServerOctet+i, true))
	}
	for i := 1; i <= opts.Clients; i++ {
		c.Clients = append(c.Clients, mk(fmt.Sprintf("%sc%d", opts.Prefix, i), opts.ClientOctet+i, false))
	}
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	for _, a := range c.All() {
		if err := routeAgent(a); err != nil {
			return nil, err
		}
	}
	if err := moveLocalRule(); err != nil {
		return nil, err
	}
	if opts.Net == nil {
		if err := c.Net.Init(); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// All returns the servers, then the client agents.
func (c *Cluster) All() []*Agent { return append(append([]*Agent{}, c.Servers...), c.Clients...) }

// Start starts every agent and waits until the cluster is healthy.
func (c *Cluster) Start(ctx context.Context) error {
	for _, a := range c.All() {
		if err := a.Launch(); err != nil {
			return err
		}
	}
	return c.WaitHealthy(ctx)
}

// Close kills every agent.
func (c *Cluster) Close() {
	for _, a := range c.All() {
		a.Kill()
	}
}

// Leader returns the running server that the running servers name as
// leader, waiting for one until ctx ends.
func (c *Cluster) Leader(ctx context.Context) (*Agent, error) {
	var found *Agent
	err := wait.Until(ctx, maxWait, func() error {
		for _, s := range c.Servers {
			if !s.Running() {
				continue
			}
			addr, err := leaderOf(ctx, s)
			if err != nil || addr == "" {
				continue
			}
			for _, l := range c.Servers {
				if l.RPCAddr() == addr && l.Running() {
					found = l
					return nil
				}
			}
		}
		return errors.New("no running server names a running leader")
	})
	if err != nil {
		return nil, fmt.Errorf("no leader: %w", errors.Join(err, ctx.Err()))
	}
	return found, nil
}

// WaitHealthy waits until every running server agrees on a leader and lists
// every server as a peer, a fresh write through the leader is visible on
// every running server, and every running client agent knows the leader.
// The write makes sure a restarted or wiped server has caught up before the
// next fault.
func (c *Cluster) WaitHealthy(ctx context.Context) error {
	if err := wait.Until(ctx, maxWait, func() error { return c.healthy(ctx) }); err != nil {
		return fmt.Errorf("cluster not healthy: %w", err)
	}
	return nil
}

func (c *Cluster) healthy(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var leader string
	for _, s := range c.Servers {
		if !s.Running() {
			continue
		}
		l, err := leaderOf(ctx, s)
		if err != nil || l == "" {
			return fmt.Errorf("%s: no leader (%v)", s.Name, err)
		}
		if leader != "" && l != leader {
			return fmt.Errorf("%s names leader %s, another names %s", s.Name, l, leader)
		}
		leader = l
		var peers []string
		if err := getJSON(ctx, s, "/v1/status/peers", &peers); err != nil || len(peers) != len(c.Servers) {
			return fmt.Errorf("%s: peers %v (%v)", s.Name, peers, err)
		}
	}
	var la *Agent
	for _, s := range c.Servers {
		if s.RPCAddr() == leader {
			la = s
		}
	}
	if la == nil {
		return fmt.Errorf("leader %q is not a server of this cluster", leader)
	}
	mark := strconv.FormatInt(c.marker.Add(1), 10)
	if _, err := la.ctl.KV().Put(&api.KVPair{Key: "jepsen-health", Value: []byte(mark)}, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("health write through %s: %w", la.Name, err)
	}
	for _, s := range c.Servers {
		if !s.Running() {
			continue
		}
		if err := waitValue(ctx, s, "jepsen-health", mark); err != nil {
			return err
		}
	}
	for _, a := range c.Clients {
		if !a.Running() {
			continue
		}
		if l, err := leaderOf(ctx, a); err != nil || l == "" {
			return fmt.Errorf("%s: no leader (%v)", a.Name, err)
		}
	}
	return nil
}

// waitValue waits until a's own store (?stale) has key = want.
func waitValue(ctx context.Context, a *Agent, key, want string) error {
	return wait.Until(ctx, maxWait, func() error {
		p, _, err := a.ctl.KV().Get(key, (&api.QueryOptions{AllowStale: true}).WithContext(ctx))
		if err == nil && p != nil && string(p.Value) == want {
			return nil
		}
		return fmt.Errorf("%s has not caught up (%s=%v, %v)", a.Name, key, p, err)
	})
}

func leaderOf(ctx context.Context, a *Agent) (string, error) {
	var l string
	err := getJSON(ctx, a, "/v1/status/leader", &l)
	return l, err
}

// getJSON GETs path from a's HTTP API into out.
func getJSON(ctx context.Context, a *Agent, path string, out any) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err := a.ctl.Raw().Query(path, out, (&api.QueryOptions{}).WithContext(ctx))
	return err
}

// APIClient returns an official API client for a, with its own connection
// pool. timeout bounds each request (0: none); blocking queries without an
// explicit wait block for 2s at most.
func APIClient(a *Agent, timeout time.Duration) *api.Client {
	return apiClientDC(a, timeout, "")
}

// apiClientDC is APIClient for requests about datacenter dc (?dc=; ""
// for the agent's own), with a's token.
func apiClientDC(a *Agent, timeout time.Duration, dc string) *api.Client {
	cl, err := api.NewClient(&api.Config{
		Address:    a.HTTPAddr(),
		Datacenter: dc,
		Token:      a.Token,
		WaitTime:   2 * time.Second,
		HttpClient: &http.Client{Timeout: timeout, Transport: &http.Transport{MaxIdleConnsPerHost: 16, IdleConnTimeout: 30 * time.Second}},
	})
	if err != nil {
		// NewClient fails only on a malformed address or TLS setup,
		// neither of which this package builds.
		panic(fmt.Sprintf("api client for %s: %v", a.Name, err))
	}
	return cl
}

// routeAgent makes connections opened by a's uid leave from a's address.
func routeAgent(a *Agent) error {
	table := strconv.Itoa(tableBase + a.UID - uidBase)
	uid := strconv.Itoa(a.UID)
	if err := runCmd("ip", "route", "replace", "local", "127.0.0.0/8", "dev", "lo", "src", a.Addr, "table", table); err != nil {
		return err
	}
	_ = runCmd("ip", "rule", "del", "pref", "100", "uidrange", uid+"-"+uid)
	return runCmd("ip", "rule", "add", "pref", "100", "uidrange", uid+"-"+uid, "lookup", table)
}

// moveLocalRule moves the rule that looks up the local table from priority
// 0 to 1000, so that the per-uid rules (priority 100) come first.
func moveLocalRule() error {
	out, err := exec.Command("ip", "rule", "show", "pref", "0").Output()
	if err != nil {
		return fmt.Errorf("ip rule show: %w", err)
	}
	if !strings.Contains(string(out), "lookup local") {
		return nil
	}
	if err := runCmd("ip", "rule", "add", "pref", "1000", "lookup", "local"); err != nil {
		return err
	}
	return runCmd("ip", "rule", "del", "pref", "0", "lookup", "local")
}

// runCmd runs a command, folding its output into the error.
func runCmd(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func copyFile(from, to string, mode os.FileMode) error {
	src, err := os.Open(from)
	if err != nil {
		return fmt.Errorf("copy %s: %w", from, err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return fmt.Errorf("copy to %s: %w", to, err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return fmt.Errorf("copy to %s: %w", to, err)
	}
	return errors.Join(dst.Close(), os.Chmod(to, mode))
}
