// Package procs is the repository's one harness for real processes, used by
// the integration tests (test/cluster, test/deploy), the fault tests
// (test/fault) and the benchmarks (test/bench). It builds the tribune binary
// once, hands out free loopback ports, and runs each process as an Agent:
// start, SIGKILL, SIGTERM with a deadline, SIGSTOP/SIGCONT, restart with its
// data or after a Wipe, crash detection with the reason from the log,
// supervised restarts, its pid for probes and its log kept across restarts.
// An Agent may run any binary, through a wrapper command, under another uid
// and on a fixed address and ports. StartCluster makes a loopback cluster of
// them that is killed when the test ends.
//
// It never decides what a test checks: it starts, stops and reports.
package procs

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tribune-mesh/tribune/test/freeport"
	"github.com/tribune-mesh/tribune/test/wait"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary builds ./cmd/tribune once per test process and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "tribune-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "tribune")
		root, err := moduleRoot()
		if err != nil {
			buildErr = err
			return
		}
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/tribune")
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatalf("build tribune: %v", buildErr)
	}
	return binPath
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("go.mod not found")
		}
		dir = parent
	}
}

// FreePorts returns n distinct free ports of 127.0.0.1 (freeport.Take:
// never the same one twice in a test process, so a restarted agent does not
// find its old port taken by another's).
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	return freeport.Take(t, n)
}

func freePort(t testing.TB) int { return FreePorts(t, 1)[0] }

// Cluster is a set of agents.
type Cluster struct {
	Servers []*Agent
	Clients []*Agent
	Dir     string
}

// Options shape a cluster.
type Options struct {
	Servers, Clients int
	// ExtraArgs are appended to every agent's command line.
	ExtraArgs []string
	// AgentArgs, when set, gives arguments appended to one agent's
	// command line after ExtraArgs (certificates that differ between
	// servers and clients, ports of its own).
	AgentArgs func(name string, server bool) []string
}

// StartCluster starts servers with bootstrap_expect and clients, all
// retry-joining the first server, and waits for a leader with every server
// as a peer. Every process is killed when the test ends.
func StartCluster(t testing.TB, opts Options) *Cluster {
	t.Helper()
	bin := Binary(t)
	c := &Cluster{Dir: t.TempDir()}
	var join string
	mk := func(name string, server bool) *Agent {
		a := &Agent{Name: name, Server: server, DataDir: filepath.Join(c.Dir, name), Bin: bin,
			HTTPPort: freePort(t), DNSPort: freePort(t), RPCPort: freePort(t), SerfPort: freePort(t),
			LogPath: filepath.Join(c.Dir, name+".log")}
		if join == "" {
			join = fmt.Sprintf("127.0.0.1:%d", a.SerfPort)
		}
		a.Args = []string{"agent", "-node", name, "-bind", "127.0.0.1", "-client", "127.0.0.1",
			"-data-dir", a.DataDir, "-http-port", strconv.Itoa(a.HTTPPort), "-dns-port", strconv.Itoa(a.DNSPort),
			"-server-port", strconv.Itoa(a.RPCPort), "-serf-lan-port", strconv.Itoa(a.SerfPort),
			"-serf-wan-port", strconv.Itoa(freePort(t)), "-grpc-port", strconv.Itoa(freePort(t)),
			"-retry-join", join, "-retry-interval", "200ms", "-log-level", "info",
			"-hcl", "performance { raft_multiplier = 1 }"}
		if server {
			a.Args = append(a.Args, "-server", "-bootstrap-expect", strconv.Itoa(opts.Servers))
		}
		a.Args = append(a.Args, opts.ExtraArgs...)
		if opts.AgentArgs != nil {
			a.Args = append(a.Args, opts.AgentArgs(name, server)...)
		}
		return a
	}
	for i := 0; i < opts.Servers; i++ {
		c.Servers = append(c.Servers, mk(fmt.Sprintf("s%d", i+1), true))
	}
	for i := 0; i < opts.Clients; i++ {
		c.Clients = append(c.Clients, mk(fmt.Sprintf("c%d", i+1), false))
	}
	t.Cleanup(func() {
		for _, a := range c.all() {
			for _, crash := range a.Crashes() {
				t.Errorf("crash: %s", crash)
			}
		}
		for _, a := range c.all() {
			a.Kill()
		}
		if t.Failed() {
			for _, a := range c.all() {
				if b, err := os.ReadFile(a.LogPath); err == nil {
					t.Logf("---- %s log (last 3000 bytes) ----\n%s", a.Name, tail(b, 3000))
				}
			}
		}
	})
	for _, a := range c.all() {
		a.Start(t)
	}
	c.WaitForLeader(t, 60*time.Second)
	return c
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func (c *Cluster) all() []*Agent { return append(append([]*Agent{}, c.Servers...), c.Clients...) }

// WaitForLeader waits until a running server reports a leader and every
// server is a peer.
func (c *Cluster) WaitForLeader(t testing.TB, d time.Duration) {
	t.Helper()
	wait.For(t, d, func() error {
		var last error = errors.New("no server running")
		for _, s := range c.Servers {
			if !s.Running() {
				continue
			}
			leader, peers, err := Status(s.HTTPAddr())
			if err == nil && leader != "" && len(peers) == len(c.Servers) {
				return nil
			}
			last = fmt.Errorf("%s: leader=%q peers=%v err=%v; want %d peers", s.Name, leader, peers, err, len(c.Servers))
		}
		return last
	})
}

// Leader returns the server that currently leads, asking the running ones.
func (c *Cluster) Leader(t testing.TB, d time.Duration) *Agent {
	t.Helper()
	var found *Agent
	wait.For(t, d, func() error {
		for _, s := range c.Servers {
			if !s.Running() {
				continue
			}
			leader, _, err := Status(s.HTTPAddr())
			if err != nil || leader == "" {
				continue
			}
			for _, l := range c.Servers {
				if l.RPCAddr() == leader && l.Running() {
					found = l
					return nil
				}
			}
		}
		return errors.New("no running server reports a running leader")
	})
	return found
}

// statusClient is shared by every Status call, so that polling reuses
// its connections.
var statusClient = &http.Client{Timeout: 2 * time.Second}

// Status returns the leader and the Raft peers that the agent whose HTTP
// API is at addr reports; each of the two requests takes 2 s at most.
func Status(addr string) (leader string, peers []string, err error) {
	get := func(path string, v any) error {
		resp, err := statusClient.Get("http://" + addr + path)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", path, resp.Status)
		}
		if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(v); err != nil {
			return fmt.Errorf("GET %s: %w", path, err)
		}
		return nil
	}
	if err := get("/v1/status/leader", &leader); err != nil {
		return "", nil, err
	}
	if err := get("/v1/status/peers", &peers); err != nil {
		return leader, nil, err
	}
	return leader, peers, nil
}
