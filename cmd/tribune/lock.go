package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
)

// Exit codes of "lock", as Consul documents them where it does.
const (
	// lockExitOK: the child ran and exited (or the command was
	// interrupted and shut down cleanly).
	lockExitOK = 0
	// lockExitError: usage error, the lock could not be acquired or
	// released, the child could not start, or the lock was lost while the
	// child ran (the child was then terminated).
	lockExitError = 1
	// lockExitChild: the child exited with an error and -child-exit-code
	// was given.
	lockExitChild = 2
)

// Child termination, as Consul documents it: SIGTERM, then SIGKILL after a
// grace period.
const (
	defaultKillGrace = 5 * time.Second
	// childIOWait bounds how long output is copied after the child exits,
	// for grandchildren that keep its stdout open.
	childIOWait = 2 * time.Second
	// monitorRetryTime is the wait between -monitor-retry attempts.
	monitorRetryTime = time.Second
)

// lockCommand returns the "lock" command; the child reads stdin when
// -pass-stdin is set. SIGINT and SIGTERM stop the child and release the
// lock.
func lockCommand(stdin io.Reader) func(args []string, stdout, stderr io.Writer) int {
	return func(args []string, stdout, stderr io.Writer) int {
		sigCh := make(chan os.Signal, 1)
		signal.Notify(sigCh, os.Interrupt, syscall.SIGTERM)
		defer signal.Stop(sigCh)
		stop := make(chan struct{})
		done := make(chan struct{})
		defer func() {
			close(done)
		}()
		go func() {
			select {
			case <-sigCh:
				close(stop)
			case <-done:
			}
		}()
		r := &lockRunner{stdin: stdin, stdout: stdout, stderr: stderr, interrupt: stop, killGrace: defaultKillGrace}
		return r.run(args)
	}
}

// lockRunner is one run of "lock". interrupt is closed to shut it down as
// SIGINT would.
type lockRunner struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	interrupt      <-chan struct{}
	killGrace      time.Duration
	verbose        bool
}

// lockHandle is a held-or-wanted lock or semaphore.
type lockHandle struct {
	// acquire blocks until held (the channel closes when the hold is lost),
	// stop is closed, or the try-once wait ends (nil channel, nil error).
	acquire func(stop <-chan struct{}) (<-chan struct{}, error)
	release func() error
	// cleanup deletes the lock's keys when no one else uses them.
	cleanup func() error
	inUse   error
}

func (r *lockRunner) info(format string, args ...any) {
	if r.verbose {
		fmt.Fprintf(r.stderr, format+"\n", args...)
	}
}

func (r *lockRunner) run(args []string) int {
	// The child's output and this command's messages share the writers.
	r.stdout, r.stderr = lockedWriter(r.stdout), lockedWriter(r.stderr)
	var hf httpFlags
	fs := newFlagSet("lock", "lock [options] PREFIX CHILD...",
		"Runs CHILD while holding a lock (or, with -n above 1, a semaphore) on PREFIX in the\n"+
			"key-value store. The child sees CONSUL_LOCK_HELD=true. If the lock is lost or the\n"+
			"command is interrupted, the child gets SIGTERM, then SIGKILL after 5 seconds.\n"+
			"Exit codes: 0 when the child ran (or on interrupt), 1 on errors or when the lock\n"+
			"was lost, 2 with -child-exit-code when the child failed.", r.stderr, &hf)
	limit := fs.Int("n", 1, "Maximum number of lock holders. Above 1 a semaphore is used; every holder of the prefix must agree on it.")
	name := fs.String("name", "", "Name of the underlying session. Defaults to one made from the child command.")
	passStdin := fs.Bool("pass-stdin", false, "Pass stdin to the child. The child then stays in this process group, so only it (not its own children) is signalled.")
	shell := fs.Bool("shell", true, "Run the child through a shell ($SHELL, else /bin/sh) with -c.")
	timeout := fs.Duration("timeout", 0, "Give up acquiring the lock after this long (0: wait forever).")
	monitorRetry := fs.Int("monitor-retry", 3, "Retry this many times, 1s apart, when the agent answers 500 while the lock is watched.")
	childExitCode := fs.Bool("child-exit-code", false, "Exit 2 if the child exited with an error; otherwise its failure is not propagated.")
	fs.BoolVar(&r.verbose, "verbose", false, "Print what the command does.")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() < 2 {
		fmt.Fprintln(r.stderr, "Error! Key prefix and child command must be specified")
		return lockExitError
	}
	if *limit < 1 {
		fmt.Fprintln(r.stderr, "Error! Lock holder limit must be positive")
		return lockExitError
	}
	if *timeout < 0 {
		fmt.Fprintln(r.stderr, "Error! -timeout must not be negative")
		return lockExitError
	}
	if *monitorRetry < 0 {
		fmt.Fprintln(r.stderr, "Error! -monitor-retry must not be negative")
		return lockExitError
	}
	prefix := kvKey(fs.Arg(0))
	if prefix == "" {
		fmt.Fprintln(r.stderr, "Error! Key prefix must not be empty")
		return lockExitError
	}
	child := fs.Args()[1:]
	script := strings.Join(child, " ")
	if *name == "" {
		*name = fmt.Sprintf("Tribune lock for %q at %q", script, prefix)
	}
	client, err := hf.client()
	if err != nil {
		fmt.Fprintf(r.stderr, "Error connecting to agent: %v\n", err)
		return lockExitError
	}
	var h *lockHandle
	if *limit == 1 {
		h, err = r.setupLock(client, prefix, *name, *timeout, *monitorRetry)
	} else {
		h, err = r.setupSemaphore(client, prefix, *name, *limit, *timeout, *monitorRetry)
	}
	if err != nil {
		fmt.Fprintf(r.stderr, "Lock setup failed: %v\n", err)
		return lockExitError
	}

	r.info("Attempting lock acquisition")
	lost, err := h.acquire(r.interrupt)
	if err != nil {
		fmt.Fprintf(r.stderr, "Lock acquisition failed: %v\n", err)
		return lockExitError
	}
	if lost == nil {
		fmt.Fprintln(r.stderr, "Shutdown triggered or timeout during lock acquisition")
		return lockExitError
	}
	r.info("Lock acquisition successful")

	code := r.runChild(child, script, *shell, *passStdin, *childExitCode, lost)

	r.info("Releasing the lock")
	if err := h.release(); err != nil && code != lockExitError {
		fmt.Fprintf(r.stderr, "Lock release failed: %v\n", err)
		return lockExitError
	}
	if err := h.cleanup(); err != nil && !errors.Is(err, h.inUse) {
		r.info("Lock cleanup failed: %v", err)
	}
	return code
}

// setupLock prepares a single-holder lock at <prefix>/.lock, as Consul's
// lock command does.
func (r *lockRunner) setupLock(client *api.Client, prefix, name string, timeout time.Duration, retries int) (*lockHandle, error) {
	key := path.Join(prefix, ".lock")
	r.info("Setting up lock at path: %s", key)
	opts := &api.LockOptions{
		Key:              key,
		SessionName:      name,
		MonitorRetries:   retries,
		MonitorRetryTime: monitorRetryTime,
	}
	if timeout > 0 {
		opts.LockTryOnce = true
		opts.LockWaitTime = timeout
	}
	l, err := client.LockOpts(opts)
	if err != nil {
		return nil, fmt.Errorf("lock at %s: %w", key, err)
	}
	return &lockHandle{acquire: l.Lock, release: l.Unlock, cleanup: l.Destroy, inUse: api.ErrLockInUse}, nil
}

// setupSemaphore prepares a semaphore of limit holders under prefix.
func (r *lockRunner) setupSemaphore(client *api.Client, prefix, name string, limit int, timeout time.Duration, retries int) (*lockHandle, error) {
	r.info("Setting up semaphore (limit %d) at prefix: %s", limit, prefix)
	opts := &api.SemaphoreOptions{
		Prefix:           prefix,
		Limit:            limit,
		SessionName:      name,
		MonitorRetries:   retries,
		MonitorRetryTime: monitorRetryTime,
	}
	if timeout > 0 {
		opts.SemaphoreTryOnce = true
		opts.SemaphoreWaitTime = timeout
	}
	s, err := client.SemaphoreOpts(opts)
	if err != nil {
		return nil, fmt.Errorf("semaphore at %s: %w", prefix, err)
	}
	return &lockHandle{acquire: s.Acquire, release: s.Release, cleanup: s.Destroy, inUse: api.ErrSemaphoreInUse}, nil
}

// runChild runs the child while the lock is held and returns the exit
// code. When the lock is lost or the command is interrupted the child is
// terminated first.
func (r *lockRunner) runChild(child []string, script string, shell, passStdin, childExitCode bool, lost <-chan struct{}) int {
	var cmd *exec.Cmd
	if shell {
		sh := os.Getenv("SHELL")
		if sh == "" {
			sh = "/bin/sh"
		}
		cmd = exec.Command(sh, "-c", script)
	} else {
		cmd = exec.Command(child[0], child[1:]...)
	}
	cmd.Env = append(os.Environ(), "CONSUL_LOCK_HELD=true", "TRIBUNE_LOCK_HELD=true")
	cmd.Stdout, cmd.Stderr = r.stdout, r.stderr
	if passStdin {
		cmd.Stdin = r.stdin
	} else {
		// A process group of its own lets one signal reach the whole
		// tree, even through shells that do not pass SIGTERM on.
		cmd.SysProcAttr = childSysProcAttr()
	}
	cmd.WaitDelay = childIOWait
	r.info("Starting handler: %s", script)
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(r.stderr, "Error starting handler: %v\n", err)
		return lockExitError
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	select {
	case err := <-exited:
		if err != nil {
			fmt.Fprintf(r.stderr, "Child terminated: %v\n", err)
			if childExitCode {
				return lockExitChild
			}
		}
		return lockExitOK
	case <-lost:
		fmt.Fprintln(r.stderr, "Lock lost, killing child")
		r.stopChild(cmd, exited, !passStdin)
		return lockExitError
	case <-r.interrupt:
		r.info("Shutdown triggered, killing child")
		r.stopChild(cmd, exited, !passStdin)
		return lockExitOK
	}
}

// stopChild sends SIGTERM (to the child's process group when it has one),
// then SIGKILL once the grace period ends, and waits for the child.
func (r *lockRunner) stopChild(cmd *exec.Cmd, exited <-chan error, group bool) {
	if err := signalChild(cmd.Process, syscall.SIGTERM, group); err != nil {
		r.info("Signal child: %v", err)
	}
	t := time.NewTimer(r.killGrace)
	defer t.Stop()
	select {
	case <-exited:
		return
	case <-t.C:
	}
	r.info("Child still running after %v, sending SIGKILL", r.killGrace)
	if err := signalChild(cmd.Process, syscall.SIGKILL, group); err != nil {
		fmt.Fprintf(r.stderr, "Kill child: %v\n", err)
	}
	<-exited
}

// syncWriter serializes writes to a writer shared by goroutines.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// lockedWriter makes w safe for the child's output copier and this
// command's messages to share. Files are left as they are: the child then
// writes to the file itself (and sees a terminal if it is one).
func lockedWriter(w io.Writer) io.Writer {
	switch w.(type) {
	case *os.File, *syncWriter:
		return w
	}
	return &syncWriter{w: w}
}
