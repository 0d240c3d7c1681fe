package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

	procharness "github.com/tribune-mesh/tribune/test/procs"
	"github.com/tribune-mesh/tribune/test/wait"
)

// workDir is the temporary directory of this run: the built binary, the
// agents' logs and data directories.
var workDir string

// tribuneBin returns the tribune binary: BENCH_TRIBUNE when set, else
// ./cmd/tribune built once by the shared process harness.
func tribuneBin(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv("BENCH_TRIBUNE"); p != "" {
		return p
	}
	return procharness.Binary(tb)
}

// ports are one agent's ports.
type ports struct {
	HTTP, DNS, Server, SerfLAN, SerfWAN, GRPC int
}

func newPorts(tb testing.TB) ports {
	p := procharness.FreePorts(tb, 6)
	return ports{HTTP: p[0], DNS: p[1], Server: p[2], SerfLAN: p[3], SerfWAN: p[4], GRPC: p[5]}
}

func (p ports) flags() []string {
	return []string{
		"-http-port", strconv.Itoa(p.HTTP),
		"-dns-port", strconv.Itoa(p.DNS),
		"-server-port", strconv.Itoa(p.Server),
		"-serf-lan-port", strconv.Itoa(p.SerfLAN),
		"-serf-wan-port", strconv.Itoa(p.SerfWAN),
		"-grpc-port", strconv.Itoa(p.GRPC),
	}
}

// proc is one agent process.
type proc struct {
	name    string // for logs: "tribune-dev", "s1", ...
	bin     string
	args    []string
	ports   ports
	logPath string

	// supervise restarts the process when it exits without being killed,
	// as systemd would; every crash is printed.
	supervise bool

	mu        sync.Mutex
	cmd       *exec.Cmd
	exited    chan struct{}
	err       error // exit status once exited is closed
	killed    bool  // kill was called since the last start
	crashes   int
	lastCrash string
}

var (
	procsMu sync.Mutex
	procs   = map[*proc]bool{}
)

// killAll SIGKILLs every process this run started and still runs.
func killAll() {
	procsMu.Lock()
	all := make([]*proc, 0, len(procs))
	for p := range procs {
		all = append(all, p)
	}
	procsMu.Unlock()
	for _, p := range all {
		p.kill()
	}
}

func newProc(name, bin string, pp ports, args []string) *proc {
	return &proc{
		name:    name,
		bin:     bin,
		args:    args,
		ports:   pp,
		logPath: filepath.Join(workDir, name+".log"),
	}
}

// start starts (or restarts) the process, appending its output to its log.
func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.startLocked()
}

func (p *proc) startLocked() error {
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(f, "\n=== %s: %s %s\n", time.Now().Format(time.RFC3339Nano), p.bin, strings.Join(p.args, " "))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout = f
	cmd.Stderr = f
	// If this test binary dies (a -timeout panic, a SIGKILL), so do the
	// agents: nothing is left listening on the machine.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	exited := make(chan struct{})
	p.cmd, p.exited, p.killed = cmd, exited, false
	procsMu.Lock()
	procs[p] = true
	procsMu.Unlock()
	go func() {
		err := cmd.Wait()
		f.Close()
		p.mu.Lock()
		p.err = err
		restart := p.supervise && !p.killed
		if restart {
			p.crashes++
		}
		p.mu.Unlock()
		close(exited)
		if restart {
			reason := p.crashReason()
			p.mu.Lock()
			p.lastCrash = reason
			p.mu.Unlock()
			fmt.Printf("bench: WARNING %s exited unexpectedly (%v): %s; restarting it\n", p.name, err, reason)
			time.Sleep(500 * time.Millisecond)
			p.mu.Lock()
			if !p.killed {
				if err := p.startLocked(); err != nil {
					fmt.Printf("bench: restarting %s: %v\n", p.name, err)
				}
			}
			p.mu.Unlock()
		}
	}()
	return nil
}

// crashReason returns the first panic or fatal line of the last run in
// the log, with the frame of the agent code it came from.
func (p *proc) crashReason() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return err.Error()
	}
	if i := bytes.LastIndex(b, []byte("\n=== ")); i >= 0 {
		b = b[i:]
	}
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "panic:") || strings.HasPrefix(l, "fatal error:") || strings.HasPrefix(l, "==> ") && strings.Contains(l, "rror") {
			reason := l
			for _, f := range lines[i+1:] {
				if strings.Contains(f, "tribune-mesh/tribune/") && !strings.HasPrefix(f, "\t") {
					reason += " at " + strings.TrimSpace(f)
					break
				}
			}
			return reason
		}
	}
	return "no panic in its log"
}

// crashCount returns how many times the process exited by itself, and
// why the last time.
func (p *proc) crashCount() (int, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.crashes, p.lastCrash
}

func (p *proc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// running reports whether the process has been started and not exited.
func (p *proc) running() bool {
	p.mu.Lock()
	ch := p.exited
	p.mu.Unlock()
	if ch == nil {
		return false
	}
	select {
	case <-ch:
		return false
	default:
		return true
	}
}

// kill SIGKILLs the process and waits until it is reaped.
func (p *proc) kill() {
	p.mu.Lock()
	p.killed = true
	cmd, ch := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil || ch == nil {
		return
	}
	select {
	case <-ch:
	default:
		_ = cmd.Process.Signal(syscall.SIGKILL)
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
		}
	}
	procsMu.Lock()
	delete(procs, p)
	procsMu.Unlock()
}

func (p *proc) httpAddr() string { return "127.0.0.1:" + strconv.Itoa(p.ports.HTTP) }

// serverAddr is the address /v1/status/leader reports for this server.
func (p *proc) serverAddr() string { return "127.0.0.1:" + strconv.Itoa(p.ports.Server) }

// logTail returns the last n bytes of the process's log.
func (p *proc) logTail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return err.Error()
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// logContains reports whether the process's log has s in it.
func (p *proc) logContains(s string) bool {
	b, err := os.ReadFile(p.logPath)
	return err == nil && bytes.Contains(b, []byte(s))
}

var statusClient = &http.Client{Timeout: 2 * time.Second}

// status returns the leader and peers the agent reports.
func status(addr string) (leader string, peers []string, err error) {
	get := func(path string, v any) error {
		resp, err := statusClient.Get("http://" + addr + path)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", path, resp.Status)
		}
		return json.NewDecoder(resp.Body).Decode(v)
	}
	if err := get("/v1/status/leader", &leader); err != nil {
		return "", nil, err
	}
	if err := get("/v1/status/peers", &peers); err != nil {
		return leader, nil, err
	}
	return leader, peers, nil
}

// waitReady polls the agent until it reports a leader and wantPeers peers.
func (p *proc) waitReady(wantPeers int, timeout time.Duration) error {
	var exited error
	err := wait.Until(context.Background(), timeout, func() error {
		if !p.running() && !p.supervise {
			p.mu.Lock()
			exited = fmt.Errorf("%s exited (%v)", p.name, p.err)
			p.mu.Unlock()
			return nil
		}
		leader, peers, err := status(p.httpAddr())
		switch {
		case err != nil:
			return err
		case leader == "":
			return errors.New("no leader yet")
		case len(peers) != wantPeers:
			return fmt.Errorf("%d peers, want %d: %v", len(peers), wantPeers, peers)
		}
		return nil
	})
	if exited != nil {
		return fmt.Errorf("%w; log:\n%s", exited, p.logTail(3000))
	}
	if err != nil {
		return fmt.Errorf("%s not ready after %s: %w; log:\n%s", p.name, timeout, err, p.logTail(3000))
	}
	return nil
}

// procStatusKiB returns a "Vm..." field of /proc/<pid>/status in KiB.
func procStatusKiB(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return parseStatusKiB(b, field)
}

func parseStatusKiB(status []byte, field string) (int64, error) {
	for _, line := range strings.Split(string(status), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || name != field {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			break
		}
		return strconv.ParseInt(f[0], 10, 64)
	}
	return 0, fmt.Errorf("no %s in /proc status", field)
}

// cpuTicks returns utime+stime of a process in clock ticks.
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatTicks(b)
}

func parseStatTicks(stat []byte) (int64, error) {
	// The command name (field 2) may hold spaces; fields count from the
	// last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("malformed stat")
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, errors.New("short stat")
	}
	u, err := strconv.ParseInt(f[11], 10, 64)
	if err != nil {
		return 0, err
	}
	s, err := strconv.ParseInt(f[12], 10, 64)
	if err != nil {
		return 0, err
	}
	return u + s, nil
}

// socketFDs counts the open sockets of a process.
func socketFDs(pid int) (int, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range ents {
		l, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err == nil && strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n, nil
}

// raiseFDLimit sets the soft open-file limit to the hard one. Calling
// Setrlimit also makes the agents started afterwards inherit the raised
// limit (Go otherwise restores the original one in children).
func raiseFDLimit() (uint64, error) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, err
	}
	r.Cur = r.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, err
	}
	return r.Cur, nil
}
