// Package procs runs real tribune processes for integration and fault tests:
// it builds the binary once, gives every agent its own loopback ports and
// data directory, and kills every process when the test ends.
package procs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

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

var (
	portMu   sync.Mutex
	usedPort = map[int]bool{}
)

// FreePorts returns n distinct ports of 127.0.0.1 free for both TCP and
// UDP, never the same one twice in a test process (a restarted agent must
// not find its old port taken by another's).
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	portMu.Lock()
	defer portMu.Unlock()
	var ports []int
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	for tries := 0; len(ports) < n; tries++ {
		if tries > 1000 {
			t.Fatalf("no free ports")
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("free port: %v", err)
		}
		p := ln.Addr().(*net.TCPAddr).Port
		if usedPort[p] {
			ln.Close()
			continue
		}
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			ln.Close()
			continue
		}
		u.Close()
		held = append(held, ln)
		usedPort[p] = true
		ports = append(ports, p)
	}
	return ports
}

func freePort(t testing.TB) int { return FreePorts(t, 1)[0] }

// Agent is one tribune process.
type Agent struct {
	Name     string
	Server   bool
	DataDir  string
	HTTPPort int
	DNSPort  int
	RPCPort  int
	SerfPort int
	LogPath  string
	args     []string
	bin      string

	mu  sync.Mutex
	cmd *exec.Cmd
	log *os.File
	// exited is closed when the running process exits; exitErr is then
	// its status. stopping is set by Kill and Stop, so that an exit
	// without it is a crash.
	exited   chan struct{}
	exitErr  error
	stopping bool
	crashes  []string
}

// HTTPAddr is the agent's HTTP API address.
func (a *Agent) HTTPAddr() string { return fmt.Sprintf("127.0.0.1:%d", a.HTTPPort) }

// RPCAddr is the agent's server RPC / Raft address.
func (a *Agent) RPCAddr() string { return fmt.Sprintf("127.0.0.1:%d", a.RPCPort) }

// Client returns an official API client for the agent.
func (a *Agent) Client(t testing.TB) *api.Client {
	t.Helper()
	c, err := api.NewClient(&api.Config{Address: a.HTTPAddr(), Transport: &http.Transport{MaxIdleConnsPerHost: 64}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Start starts (or restarts) the process with its data directory. A
// process that exits without Kill or Stop is recorded as a crash (Crashes).
func (a *Agent) Start(t testing.TB) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	f, err := os.OpenFile(a.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(a.bin, a.args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", a.Name, err)
	}
	exited := make(chan struct{})
	a.cmd, a.log, a.exited, a.stopping = cmd, f, exited, false
	go func() {
		err := cmd.Wait()
		a.mu.Lock()
		a.exitErr = err
		if !a.stopping {
			a.crashes = append(a.crashes, fmt.Sprintf("%s exited on its own: %v", a.Name, err))
		}
		f.Close()
		a.mu.Unlock()
		close(exited)
	}()
}

// Signal sends sig to the running process.
func (a *Agent) Signal(sig syscall.Signal) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd == nil || a.cmd.Process == nil {
		return fmt.Errorf("%s is not running", a.Name)
	}
	return a.cmd.Process.Signal(sig)
}

// Pause SIGSTOPs the process; Resume SIGCONTs it.
func (a *Agent) Pause() error { return a.Signal(syscall.SIGSTOP) }

// Resume continues a paused process.
func (a *Agent) Resume() error { return a.Signal(syscall.SIGCONT) }

// Kill SIGKILLs the process and waits for it.
func (a *Agent) Kill() { a.stop(syscall.SIGKILL, 0) }

// Stop sends SIGTERM and waits up to d, then kills.
func (a *Agent) Stop(d time.Duration) { a.stop(syscall.SIGTERM, d) }

func (a *Agent) stop(sig syscall.Signal, d time.Duration) {
	a.mu.Lock()
	cmd, exited := a.cmd, a.exited
	a.stopping = true
	a.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGCONT) // a paused process cannot exit
	_ = cmd.Process.Signal(sig)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-exited:
	case <-t.C:
		_ = cmd.Process.Kill()
		<-exited
	}
	a.mu.Lock()
	a.cmd, a.log = nil, nil
	a.mu.Unlock()
}

// Exited returns a channel closed when the current process exits (nil
// when none was started), and its exit status once it has.
func (a *Agent) Exited() (<-chan struct{}, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.exited, a.exitErr
}

// Crashes returns a line for every exit that no Kill or Stop caused.
func (a *Agent) Crashes() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.crashes...)
}

// Running reports whether the process was started and has neither been
// stopped nor exited.
func (a *Agent) Running() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd == nil {
		return false
	}
	select {
	case <-a.exited:
		return false
	default:
		return true
	}
}

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
		a := &Agent{Name: name, Server: server, DataDir: filepath.Join(c.Dir, name), bin: bin,
			HTTPPort: freePort(t), DNSPort: freePort(t), RPCPort: freePort(t), SerfPort: freePort(t),
			LogPath: filepath.Join(c.Dir, name+".log")}
		if join == "" {
			join = fmt.Sprintf("127.0.0.1:%d", a.SerfPort)
		}
		a.args = []string{"agent", "-node", name, "-bind", "127.0.0.1", "-client", "127.0.0.1",
			"-data-dir", a.DataDir, "-http-port", strconv.Itoa(a.HTTPPort), "-dns-port", strconv.Itoa(a.DNSPort),
			"-server-port", strconv.Itoa(a.RPCPort), "-serf-lan-port", strconv.Itoa(a.SerfPort),
			"-serf-wan-port", strconv.Itoa(freePort(t)), "-grpc-port", strconv.Itoa(freePort(t)),
			"-retry-join", join, "-retry-interval", "200ms", "-log-level", "info",
			"-hcl", "performance { raft_multiplier = 1 }"}
		if server {
			a.args = append(a.args, "-server", "-bootstrap-expect", strconv.Itoa(opts.Servers))
		}
		a.args = append(a.args, opts.ExtraArgs...)
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
			leader, peers, err := status(s.HTTPAddr())
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
			leader, _, err := status(s.HTTPAddr())
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

func status(addr string) (string, []string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := api.NewClient(&api.Config{Address: addr})
	if err != nil {
		return "", nil, err
	}
	leader, err := c.Status().LeaderWithQueryOptions((&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return "", nil, err
	}
	peers, err := c.Status().PeersWithQueryOptions((&api.QueryOptions{}).WithContext(ctx))
	return leader, peers, err
}

// Log returns an agent's log so far.
func (a *Agent) Log() string {
	b, _ := os.ReadFile(a.LogPath)
	return string(bytes.TrimSpace(b))
}

// Contains reports whether the log contains s.
func (a *Agent) Contains(s string) bool { return strings.Contains(a.Log(), s) }
