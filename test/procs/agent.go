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
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/test/wait"
)

// DefaultRestartDelay is how long a supervised process stays down after a
// crash before it is started again.
const DefaultRestartDelay = 500 * time.Millisecond

// startMarker begins every run of the process in its log; CrashReason
// reads the log from the last one.
const startMarker = "==== procs: start "

// Agent is one supervised process, usually a tribune agent. Its exported
// fields describe the process and are set before the first Start and not
// changed afterwards: StartCluster fills them for a loopback cluster on
// free ports, and harnesses with needs of their own (a network namespace,
// a uid and an address per agent, fixed ports, another binary) build
// Agents themselves.
//
// Every exit that Kill or Stop did not cause is a crash: it is counted with
// its reason (Crashes), and a Supervise'd process is started again.
type Agent struct {
	// Name names the process in logs and errors.
	Name   string
	Server bool
	// Bin is the program to run and Args its arguments.
	Bin  string
	Args []string
	// Wrapper, when set, is a command line that Bin and Args are appended
	// to, such as "ip netns exec NS" or "nice -n 5". The wrapper should
	// exec the program rather than fork it, so that Pid is the program's
	// own; signals go to the whole process group either way.
	Wrapper []string
	// UID, when not 0, is the uid and gid the process runs as (the test
	// process must be root). DataDir is then created owned by it.
	UID int
	// Addr is the address the agent serves its ports on (default
	// 127.0.0.1); the ports are its HTTP, DNS, server RPC and Serf LAN
	// ports.
	Addr     string
	HTTPPort int
	DNSPort  int
	RPCPort  int
	SerfPort int
	// DataDir is the agent's data directory, removed by Wipe.
	DataDir string
	// LogPath receives the process's stdout and stderr, appended across
	// restarts, with a marker line at each start and exit.
	LogPath string
	// Supervise starts the process again, RestartDelay after it crashed,
	// as systemd would; Kill and Stop end that.
	Supervise    bool
	RestartDelay time.Duration
	// Logf, when set, is told of every crash.
	Logf func(format string, args ...any)

	// wg counts the goroutines that wait for a process (and restart it);
	// Kill and Stop wait for them.
	wg sync.WaitGroup

	// mu guards the process state below.
	mu  sync.Mutex
	cmd *exec.Cmd
	// exited is closed when the current process has exited and its log
	// is closed; exitErr is then its status.
	exited  chan struct{}
	exitErr error
	// stopping is set by Kill and Stop, so that an exit without it is a
	// crash; quit is closed with it, to cancel a pending restart.
	stopping bool
	quit     chan struct{}
	paused   bool
	crashes  []string
}

// host is the agent's address.
func (a *Agent) host() string {
	if a.Addr == "" {
		return "127.0.0.1"
	}
	return a.Addr
}

// HTTPAddr is the agent's HTTP API address.
func (a *Agent) HTTPAddr() string { return net.JoinHostPort(a.host(), strconv.Itoa(a.HTTPPort)) }

// DNSAddr is the agent's DNS address.
func (a *Agent) DNSAddr() string { return net.JoinHostPort(a.host(), strconv.Itoa(a.DNSPort)) }

// RPCAddr is the agent's server RPC / Raft address, as /v1/status/leader
// reports it.
func (a *Agent) RPCAddr() string { return net.JoinHostPort(a.host(), strconv.Itoa(a.RPCPort)) }

// SerfAddr is the agent's Serf LAN address, the one others join.
func (a *Agent) SerfAddr() string { return net.JoinHostPort(a.host(), strconv.Itoa(a.SerfPort)) }

// Client returns an official API client for the agent.
func (a *Agent) Client(t testing.TB) *api.Client {
	t.Helper()
	c, err := api.NewClient(&api.Config{Address: a.HTTPAddr(), Transport: &http.Transport{MaxIdleConnsPerHost: 64}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Start starts (or restarts) the process with its data directory and fails
// the test if it cannot.
func (a *Agent) Start(t testing.TB) {
	t.Helper()
	if err := a.Launch(); err != nil {
		t.Fatal(err)
	}
}

// Launch starts (or restarts) the process with its data directory. It
// fails if the process is running.
func (a *Agent) Launch() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.runningLocked() {
		return fmt.Errorf("start %s: already running", a.Name)
	}
	a.stopping, a.quit = false, make(chan struct{})
	return a.launchLocked()
}

func (a *Agent) launchLocked() error {
	if a.UID != 0 && a.DataDir != "" {
		if err := a.ensureDataDirLocked(); err != nil {
			return err
		}
	}
	f, err := os.OpenFile(a.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open log of %s: %w", a.Name, err)
	}
	argv := append(append(append([]string{}, a.Wrapper...), a.Bin), a.Args...)
	fmt.Fprintf(f, "\n%s%s at %s: %s\n", startMarker, a.Name, time.Now().Format(time.RFC3339Nano), strings.Join(argv, " "))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group, so that signals reach whatever a wrapper
	// started; and if this test process dies (a -timeout panic, a
	// SIGKILL), so does the agent: nothing is left listening.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if a.UID != 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(a.UID), Gid: uint32(a.UID), NoSetGroups: true}
	}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", a.Name, err)
	}
	exited, quit := make(chan struct{}), a.quit
	a.cmd, a.exited, a.exitErr, a.paused = cmd, exited, nil, false
	a.wg.Add(1)
	go func() {
		// Owned by the agent: it ends when the process has exited and,
		// if it was restarted, the restart is done or cancelled.
		defer a.wg.Done()
		a.waitExit(cmd, f, exited, quit)
	}()
	return nil
}

// waitExit waits for cmd to exit, records a crash when nobody stopped it,
// and starts it again if it is supervised.
func (a *Agent) waitExit(cmd *exec.Cmd, f *os.File, exited, quit chan struct{}) {
	err := cmd.Wait()
	a.mu.Lock()
	crashed := !a.stopping
	a.mu.Unlock()
	var line string
	if crashed {
		line = fmt.Sprintf("%s exited on its own (%v): %s", a.Name, err, a.CrashReason())
		fmt.Fprintf(f, "==== procs: %s\n", line)
	} else {
		fmt.Fprintf(f, "==== procs: %s stopped at %s (%v)\n", a.Name, time.Now().Format(time.RFC3339Nano), err)
	}
	f.Close()
	a.mu.Lock()
	a.exitErr, a.paused = err, false
	if crashed {
		a.crashes = append(a.crashes, line)
	}
	a.mu.Unlock()
	close(exited)
	if !crashed {
		return
	}
	if a.Logf != nil {
		restart := ""
		if a.Supervise {
			restart = "; restarting it"
		}
		a.Logf("WARNING %s%s", line, restart)
	}
	if !a.Supervise {
		return
	}
	delay := a.RestartDelay
	if delay <= 0 {
		delay = DefaultRestartDelay
	}
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-quit:
		return
	case <-t.C:
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stopping || a.cmd != cmd {
		return
	}
	if err := a.launchLocked(); err != nil && a.Logf != nil {
		a.Logf("restarting %s: %v", a.Name, err)
	}
}

// Signal sends sig to the running process and its process group.
func (a *Agent) Signal(sig syscall.Signal) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.signalLocked(sig)
}

func (a *Agent) signalLocked(sig syscall.Signal) error {
	if !a.runningLocked() {
		return fmt.Errorf("signal %s: not running", a.Name)
	}
	if err := syscall.Kill(-a.cmd.Process.Pid, sig); err != nil {
		return fmt.Errorf("signal %v to %s: %w", sig, a.Name, err)
	}
	return nil
}

// Pause SIGSTOPs the process.
func (a *Agent) Pause() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.signalLocked(syscall.SIGSTOP); err != nil {
		return fmt.Errorf("pause: %w", err)
	}
	a.paused = true
	return nil
}

// Resume SIGCONTs a paused process; it does nothing to a process that is
// not paused or not running.
func (a *Agent) Resume() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.paused || !a.runningLocked() {
		return nil
	}
	if err := a.signalLocked(syscall.SIGCONT); err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	a.paused = false
	return nil
}

// Kill SIGKILLs the process, waits for it and cancels a pending restart.
func (a *Agent) Kill() { a.stop(syscall.SIGKILL, 0) }

// Stop sends SIGTERM and waits up to d for the process to exit, then
// SIGKILLs it.
func (a *Agent) Stop(d time.Duration) { a.stop(syscall.SIGTERM, d) }

func (a *Agent) stop(sig syscall.Signal, d time.Duration) {
	a.mu.Lock()
	if !a.stopping && a.quit != nil {
		close(a.quit)
	}
	a.stopping = true
	cmd, exited := a.cmd, a.exited
	if a.runningLocked() {
		pgid := -cmd.Process.Pid
		_ = syscall.Kill(pgid, syscall.SIGCONT) // a paused process cannot exit
		_ = syscall.Kill(pgid, sig)
	}
	a.mu.Unlock()
	if cmd != nil {
		t := time.NewTimer(d)
		select {
		case <-exited:
		case <-t.C:
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		t.Stop()
	}
	a.wg.Wait()
}

// Exited returns a channel closed when the current process exits (nil
// when none was started), and its exit status once it has.
func (a *Agent) Exited() (<-chan struct{}, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.exited, a.exitErr
}

// Crashes returns a line for every exit that no Kill or Stop caused, with
// its status and reason (see CrashReason).
func (a *Agent) Crashes() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.crashes...)
}

// Running reports whether the process was started and has not exited.
func (a *Agent) Running() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.runningLocked()
}

func (a *Agent) runningLocked() bool {
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

// Pid returns the process id of the running process (of the wrapper, if
// there is one and it forks), or 0.
func (a *Agent) Pid() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.runningLocked() {
		return 0
	}
	return a.cmd.Process.Pid
}

// Wipe removes the agent's data directory; the process must not be
// running. Started again, the agent is a new node with a new node ID.
func (a *Agent) Wipe() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.runningLocked() {
		return fmt.Errorf("wipe %s: still running", a.Name)
	}
	if a.DataDir == "" {
		return fmt.Errorf("wipe %s: no data directory", a.Name)
	}
	if err := os.RemoveAll(a.DataDir); err != nil {
		return fmt.Errorf("wipe %s: %w", a.Name, err)
	}
	return nil
}

// ensureDataDirLocked makes the data directory, owned by the agent's uid.
func (a *Agent) ensureDataDirLocked() error {
	if err := os.MkdirAll(a.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir of %s: %w", a.Name, err)
	}
	if err := os.Chown(a.DataDir, a.UID, a.UID); err != nil {
		return fmt.Errorf("chown data dir of %s: %w", a.Name, err)
	}
	return nil
}

// WaitReady waits up to timeout until the agent reports a leader and
// peers Raft peers. It gives up early when the process exits and is not
// supervised. Its error carries the end of the agent's log.
func (a *Agent) WaitReady(ctx context.Context, peers int, timeout time.Duration) error {
	var exited error
	err := wait.Until(ctx, timeout, func() error {
		if !a.Running() && !a.Supervise {
			_, status := a.Exited()
			exited = fmt.Errorf("%s exited (%v)", a.Name, status)
			return nil
		}
		leader, got, err := Status(a.HTTPAddr())
		switch {
		case err != nil:
			return err
		case leader == "":
			return errors.New("no leader yet")
		case len(got) != peers:
			return fmt.Errorf("%d peers, want %d: %v", len(got), peers, got)
		}
		return nil
	})
	if exited != nil {
		return fmt.Errorf("%w; log:\n%s", exited, a.Tail(3000))
	}
	if err != nil {
		return fmt.Errorf("%s not ready after %s: %w; log:\n%s", a.Name, timeout, err, a.Tail(3000))
	}
	return nil
}

// Log returns an agent's log so far.
func (a *Agent) Log() string {
	b, _ := os.ReadFile(a.LogPath)
	return string(bytes.TrimSpace(b))
}

// Tail returns the last n bytes of the agent's log.
func (a *Agent) Tail(n int) string {
	b, err := os.ReadFile(a.LogPath)
	if err != nil {
		return err.Error()
	}
	return string(tail(b, n))
}

// Contains reports whether the log contains s.
func (a *Agent) Contains(s string) bool {
	b, err := os.ReadFile(a.LogPath)
	return err == nil && bytes.Contains(b, []byte(s))
}

// CrashReason returns the first panic, fatal error or error line of the
// process's last run in its log, with the frame of tribune code it came
// from, or says that there is none.
func (a *Agent) CrashReason() string {
	b, err := os.ReadFile(a.LogPath)
	if err != nil {
		return err.Error()
	}
	return crashReason(b)
}

func crashReason(log []byte) string {
	if i := bytes.LastIndex(log, []byte(startMarker)); i >= 0 {
		log = log[i:]
	}
	lines := strings.Split(string(log), "\n")
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
