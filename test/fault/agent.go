package fault

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
)

// Consul's default ports; every agent has its own address, so all of them
// use the defaults.
const (
	httpPort   = "8500"
	serverPort = "8300"
	serfPort   = "8301"
)

// Agent is one tribune process inside the namespace, on its own loopback
// address and under its own uid (see Cluster for why).
type Agent struct {
	Name    string
	Addr    string // 127.0.0.x: bind, client and advertise address
	UID     int
	Server  bool
	DataDir string
	LogPath string

	bin  string
	args []string
	// ctl is the harness's own API client (health, leader, final reads).
	ctl *api.Client

	// mu guards the process state below.
	mu     sync.Mutex
	cmd    *exec.Cmd
	log    *os.File
	done   chan struct{} // closed when the process has exited
	paused bool

	// stopping is set before the harness signals the process to end;
	// an exit without it is a crash.
	stopping atomic.Bool
	crashes  atomic.Int32
}

// HTTPAddr is the agent's HTTP API address.
func (a *Agent) HTTPAddr() string { return net.JoinHostPort(a.Addr, httpPort) }

// RPCAddr is the agent's server RPC / Raft address, as /v1/status/leader
// reports it.
func (a *Agent) RPCAddr() string { return net.JoinHostPort(a.Addr, serverPort) }

// Start starts (or restarts) the process with its data directory.
func (a *Agent) Start() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd != nil {
		select {
		case <-a.done: // it crashed: start it again
			a.releaseLocked()
		default:
			return fmt.Errorf("start %s: already running", a.Name)
		}
	}
	if err := a.ensureDataDirLocked(); err != nil {
		return err
	}
	f, err := os.OpenFile(a.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open log of %s: %w", a.Name, err)
	}
	fmt.Fprintf(f, "==== jepsen: start %s at %s\n", a.Name, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(a.bin, a.args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:    true,
		Credential: &syscall.Credential{Uid: uint32(a.UID), Gid: uint32(a.UID), NoSetGroups: true},
	}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", a.Name, err)
	}
	a.stopping.Store(false)
	done := make(chan struct{})
	go func() {
		// Owned by the process: it ends when the process exits.
		err := cmd.Wait()
		if !a.stopping.Load() {
			a.crashes.Add(1)
			fmt.Fprintf(f, "==== jepsen: %s exited by itself: %v\n", a.Name, err)
		}
		close(done)
	}()
	a.cmd, a.log, a.done, a.paused = cmd, f, done, false
	return nil
}

// Kill SIGKILLs the process and waits for it to exit.
func (a *Agent) Kill() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.killLocked()
}

func (a *Agent) killLocked() {
	if a.cmd == nil {
		return
	}
	a.stopping.Store(true)
	_ = a.cmd.Process.Signal(syscall.SIGKILL)
	<-a.done
	a.releaseLocked()
}

func (a *Agent) releaseLocked() {
	if a.log != nil {
		fmt.Fprintf(a.log, "==== jepsen: %s stopped at %s\n", a.Name, time.Now().Format(time.RFC3339Nano))
		a.log.Close()
	}
	a.cmd, a.log, a.done, a.paused = nil, nil, nil, false
}

// Stop sends SIGTERM (a graceful shutdown without leave, as a server does by
// default) and waits up to d, then SIGKILLs.
func (a *Agent) Stop(d time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd == nil {
		return
	}
	a.stopping.Store(true)
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	if a.paused {
		_ = a.cmd.Process.Signal(syscall.SIGCONT)
	}
	select {
	case <-a.done:
		a.releaseLocked()
	case <-time.After(d):
		a.killLocked()
	}
}

// Pause SIGSTOPs the process.
func (a *Agent) Pause() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd == nil {
		return fmt.Errorf("pause %s: not running", a.Name)
	}
	if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		return fmt.Errorf("pause %s: %w", a.Name, err)
	}
	a.paused = true
	return nil
}

// Resume SIGCONTs a paused process; it does nothing to a running one.
func (a *Agent) Resume() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd == nil || !a.paused {
		return nil
	}
	if err := a.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		return fmt.Errorf("resume %s: %w", a.Name, err)
	}
	a.paused = false
	return nil
}

// Running reports whether the process is started and has not exited.
func (a *Agent) Running() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd == nil {
		return false
	}
	select {
	case <-a.done:
		return false
	default:
		return true
	}
}

// Crashes is how many times the process exited without being told to.
func (a *Agent) Crashes() int { return int(a.crashes.Load()) }

// Wipe removes the agent's data directory; the process must be stopped.
// Started again, the agent is a new node with a new node ID.
func (a *Agent) Wipe() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd != nil {
		return fmt.Errorf("wipe %s: still running", a.Name)
	}
	if err := os.RemoveAll(a.DataDir); err != nil {
		return fmt.Errorf("wipe %s: %w", a.Name, err)
	}
	return a.ensureDataDirLocked()
}

// ensureDataDirLocked makes the data directory, owned by the agent's uid.
func (a *Agent) ensureDataDirLocked() error {
	if err := os.MkdirAll(a.DataDir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("data dir of %s: %w", a.Name, err)
	}
	if err := os.Chown(a.DataDir, a.UID, a.UID); err != nil {
		return fmt.Errorf("chown data dir of %s: %w", a.Name, err)
	}
	return nil
}
