//go:build unix

package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// lockRun is a "lock" run in the background.
type lockRun struct {
	interrupt      chan struct{}
	done           chan int
	stdout, stderr *bytes.Buffer
}

// startLock runs "lock" with args in a goroutine; the test reads its output
// only after it returned.
func startLock(t *testing.T, grace time.Duration, args ...string) *lockRun {
	t.Helper()
	lr := &lockRun{interrupt: make(chan struct{}), done: make(chan int, 1), stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}
	r := &lockRunner{stdout: lr.stdout, stderr: lr.stderr, interrupt: lr.interrupt, killGrace: grace}
	go func() { lr.done <- r.run(args) }()
	t.Cleanup(func() {
		select {
		case <-lr.done:
		default:
			close(lr.interrupt)
			<-lr.done
		}
	})
	return lr
}

// wait returns the exit code, failing the test if it takes too long.
func (lr *lockRun) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case code := <-lr.done:
		lr.done <- code // for the cleanup
		return code
	case <-time.After(d):
		t.Fatalf("lock did not return within %v", d)
	}
	return -1
}

func waitFile(t *testing.T, path string) string {
	t.Helper()
	var data []byte
	waitFor(t, 15*time.Second, func() (bool, string) {
		b, err := os.ReadFile(path)
		if err != nil || len(b) == 0 {
			return false, fmt.Sprintf("%s: %v", path, err)
		}
		data = b
		return true, ""
	})
	return strings.TrimSpace(string(data))
}

func lockClient(t *testing.T, addrFlag string) *api.Client {
	t.Helper()
	c, err := api.NewClient(&api.Config{Address: strings.TrimPrefix(addrFlag, "-http-addr=")})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestLockUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "Key prefix and child command must be specified"},
		{[]string{"prefix"}, "Key prefix and child command must be specified"},
		{[]string{"-n=0", "prefix", "true"}, "limit must be positive"},
		{[]string{"-timeout=-1s", "prefix", "true"}, "-timeout must not be negative"},
		{[]string{"/", "true"}, "prefix must not be empty"},
	} {
		r := runCmd(lockCommand(strings.NewReader("")), tc.args...)
		if r.code != 1 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("lock %v: %v; want exit 1 with %q", tc.args, r, tc.want)
		}
	}
	if r := runCmd(run, "lock", "-h"); r.code != 0 || !strings.Contains(r.stderr, "-child-exit-code") {
		t.Errorf("lock -h: %v", r)
	}
}

func TestLockRunsChild(t *testing.T) {
	addr := startAgent(t)
	c := lockClient(t, addr)
	dir := t.TempDir()

	t.Run("child sees the lock held; lock released after", func(t *testing.T) {
		out := filepath.Join(dir, "held")
		r := runCmd(lockCommand(strings.NewReader("")), addr, "app/job", "echo $CONSUL_LOCK_HELD > "+out+"; echo child-ran")
		if r.code != 0 || !strings.Contains(r.stdout, "child-ran") {
			t.Fatalf("lock: %v", r)
		}
		if b, _ := os.ReadFile(out); strings.TrimSpace(string(b)) != "true" {
			t.Fatalf("child saw CONSUL_LOCK_HELD=%q", b)
		}
		p, _, err := c.KV().Get("app/job/.lock", nil)
		if err != nil || (p != nil && p.Session != "") {
			t.Fatalf("lock key after exit = %+v, %v; want released", p, err)
		}
		if sessions, _, _ := c.Session().List(nil); len(sessions) != 0 {
			waitFor(t, 5*time.Second, func() (bool, string) {
				s, _, _ := c.Session().List(nil)
				return len(s) == 0, fmt.Sprintf("%d sessions left", len(s))
			})
		}
	})

	t.Run("without a shell", func(t *testing.T) {
		r := runCmd(lockCommand(strings.NewReader("")), addr, "-shell=false", "app/noshell", "echo", "a;b")
		if r.code != 0 || r.stdout != "a;b\n" {
			t.Fatalf("lock -shell=false: %v", r)
		}
	})

	t.Run("child exit code", func(t *testing.T) {
		r := runCmd(lockCommand(strings.NewReader("")), addr, "app/fail", "exit 3")
		if r.code != 0 {
			t.Fatalf("failing child without -child-exit-code: %v, want 0", r)
		}
		r = runCmd(lockCommand(strings.NewReader("")), addr, "-child-exit-code", "app/fail", "exit 3")
		if r.code != 2 {
			t.Fatalf("failing child with -child-exit-code: %v, want 2", r)
		}
		r = runCmd(lockCommand(strings.NewReader("")), addr, "-child-exit-code", "app/fail", "true")
		if r.code != 0 {
			t.Fatalf("succeeding child with -child-exit-code: %v, want 0", r)
		}
	})

	t.Run("pass stdin", func(t *testing.T) {
		r := runCmd(lockCommand(strings.NewReader("from-stdin\n")), addr, "-pass-stdin", "app/stdin", "cat")
		if r.code != 0 || r.stdout != "from-stdin\n" {
			t.Fatalf("lock -pass-stdin: %v", r)
		}
	})

	t.Run("timeout while another holds it", func(t *testing.T) {
		l, err := c.LockOpts(&api.LockOptions{Key: "app/busy/.lock", SessionTTL: "10s"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.Lock(nil); err != nil {
			t.Fatal(err)
		}
		defer l.Unlock()
		start := time.Now()
		r := runCmd(lockCommand(strings.NewReader("")), addr, "-timeout=500ms", "app/busy", "echo should-not-run")
		if r.code != 1 || strings.Contains(r.stdout, "should-not-run") || !strings.Contains(r.stderr, "timeout") {
			t.Fatalf("lock on a held prefix: %v", r)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Fatalf("-timeout=500ms took %v", d)
		}
	})

	t.Run("semaphore", func(t *testing.T) {
		hold := func() *api.Semaphore {
			s, err := c.SemaphoreOpts(&api.SemaphoreOptions{Prefix: "app/pool", Limit: 2, SessionTTL: "10s"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Acquire(nil); err != nil {
				t.Fatal(err)
			}
			return s
		}
		first := hold()
		defer first.Release()
		r := runCmd(lockCommand(strings.NewReader("")), addr, "-n=2", "-timeout=5s", "app/pool", "echo got-slot")
		if r.code != 0 || !strings.Contains(r.stdout, "got-slot") {
			t.Fatalf("lock -n=2 with one slot free: %v", r)
		}
		second := hold()
		defer second.Release()
		r = runCmd(lockCommand(strings.NewReader("")), addr, "-n=2", "-timeout=500ms", "app/pool", "echo should-not-run")
		if r.code != 1 || strings.Contains(r.stdout, "should-not-run") {
			t.Fatalf("lock -n=2 with both slots held: %v", r)
		}
		// A plain lock on the semaphore's prefix conflicts.
		r = runCmd(lockCommand(strings.NewReader("")), addr, "-timeout=500ms", "app/pool", "true")
		if r.code != 1 {
			t.Fatalf("lock -n=1 on a semaphore prefix: %v", r)
		}
	})
}

func TestLockLostStopsChild(t *testing.T) {
	addr := startAgent(t)
	c := lockClient(t, addr)
	dir := t.TempDir()
	started, termed := filepath.Join(dir, "started"), filepath.Join(dir, "termed")
	script := fmt.Sprintf(`trap 'echo term > %s; exit 0' TERM; echo $$ > %s; while true; do sleep 0.05; done`, termed, started)
	lr := startLock(t, 5*time.Second, addr, "-shell=false", "jobs/critical", "/bin/sh", "-c", script)
	waitFile(t, started)

	p, _, err := c.KV().Get("jobs/critical/.lock", nil)
	if err != nil || p == nil || p.Session == "" {
		t.Fatalf("lock key while the child runs = %+v, %v", p, err)
	}
	// The session goes away under the running command.
	if _, err := c.Session().Destroy(p.Session, nil); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	code := lr.wait(t, 20*time.Second)
	if code != 1 {
		t.Fatalf("exit code after the lock was lost: %d, want 1\nstderr: %s", code, lr.stderr)
	}
	if !strings.Contains(lr.stderr.String(), "Lock lost") {
		t.Fatalf("stderr %q does not say the lock was lost", lr.stderr)
	}
	if got := waitFile(t, termed); got != "term" {
		t.Fatalf("child did not get SIGTERM: %q", got)
	}
	t.Logf("child stopped %v after its session was destroyed", time.Since(begin))
}

func TestLockKillsStubbornChild(t *testing.T) {
	addr := startAgent(t)
	c := lockClient(t, addr)
	dir := t.TempDir()
	started := filepath.Join(dir, "started")
	// The child ignores SIGTERM: SIGKILL follows after the grace period.
	script := fmt.Sprintf(`trap '' TERM; echo $$ > %s; while true; do sleep 0.05; done`, started)
	lr := startLock(t, 300*time.Millisecond, addr, "-shell=false", "jobs/stubborn", "/bin/sh", "-c", script)
	pid, err := strconv.Atoi(waitFile(t, started))
	if err != nil {
		t.Fatal(err)
	}
	p, _, err := c.KV().Get("jobs/stubborn/.lock", nil)
	if err != nil || p == nil || p.Session == "" {
		t.Fatalf("lock key = %+v, %v", p, err)
	}
	if _, err := c.Session().Destroy(p.Session, nil); err != nil {
		t.Fatal(err)
	}
	if code := lr.wait(t, 20*time.Second); code != 1 {
		t.Fatalf("exit code: %d, want 1\nstderr: %s", code, lr.stderr)
	}
	// The child was reaped, so its PID is gone.
	if err := syscall.Kill(pid, 0); err == nil {
		t.Fatalf("child %d still exists after SIGKILL", pid)
	}
}

func TestLockInterruptStopsChildAndReleases(t *testing.T) {
	addr := startAgent(t)
	c := lockClient(t, addr)
	dir := t.TempDir()
	started, termed := filepath.Join(dir, "started"), filepath.Join(dir, "termed")
	script := fmt.Sprintf(`trap 'echo term > %s; exit 0' TERM; echo $$ > %s; while true; do sleep 0.05; done`, termed, started)
	lr := startLock(t, 5*time.Second, addr, "jobs/interrupted", script)
	waitFile(t, started)
	close(lr.interrupt)
	if code := lr.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("exit code after interrupt: %d, want 0\nstderr: %s", code, lr.stderr)
	}
	if got := waitFile(t, termed); got != "term" {
		t.Fatalf("child did not get SIGTERM: %q", got)
	}
	p, _, err := c.KV().Get("jobs/interrupted/.lock", nil)
	if err != nil || (p != nil && p.Session != "") {
		t.Fatalf("lock key after interrupt = %+v, %v; want released", p, err)
	}
}
