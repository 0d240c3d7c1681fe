package procs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tribune-mesh/tribune/test/wait"
)

// shAgent is an Agent that runs script with /bin/sh.
func shAgent(t *testing.T, script string) *Agent {
	t.Helper()
	dir := t.TempDir()
	a := &Agent{Name: "sh", Bin: "/bin/sh", Args: []string{"-c", script},
		DataDir: filepath.Join(dir, "data"), LogPath: filepath.Join(dir, "sh.log")}
	t.Cleanup(a.Kill)
	return a
}

// procState is the state letter of /proc/<pid>/stat (S, R, T, Z...).
func procState(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", err
	}
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) == 0 {
		return "", fmt.Errorf("malformed stat %q", b)
	}
	return f[0], nil
}

func waitState(t *testing.T, pid int, want string) {
	t.Helper()
	wait.For(t, 10*time.Second, func() error {
		got, err := procState(pid)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("pid %d in state %s, want %s", pid, got, want)
		}
		return nil
	})
}

func TestKillPauseResumeAreNotCrashes(t *testing.T) {
	a := shAgent(t, "exec sleep 600")
	a.Start(t)
	if err := a.Launch(); err == nil {
		t.Fatal("second Launch of a running agent: no error")
	}
	pid := a.Pid()
	if pid == 0 || !a.Running() {
		t.Fatalf("pid %d running %v after Start", pid, a.Running())
	}
	if err := a.Pause(); err != nil {
		t.Fatal(err)
	}
	waitState(t, pid, "T")
	if err := a.Resume(); err != nil {
		t.Fatal(err)
	}
	waitState(t, pid, "S")
	// Paused, a Kill still ends it; so does a Stop after a restart.
	if err := a.Pause(); err != nil {
		t.Fatal(err)
	}
	a.Kill()
	if a.Running() || a.Pid() != 0 {
		t.Fatalf("running %v pid %d after Kill", a.Running(), a.Pid())
	}
	if err := a.Resume(); err != nil {
		t.Fatalf("Resume of a killed agent: %v, want a no-op", err)
	}
	if err := a.Pause(); err == nil {
		t.Fatal("Pause of a killed agent: no error")
	}
	a.Start(t)
	a.Stop(10 * time.Second)
	if a.Running() {
		t.Fatal("running after Stop")
	}
	if c := a.Crashes(); len(c) != 0 {
		t.Fatalf("crashes %v after Kill and Stop, want none", c)
	}
	if n := strings.Count(a.Log(), startMarker); n != 2 {
		t.Fatalf("%d start markers in the log, want 2:\n%s", n, a.Log())
	}
}

func TestCrashIsCountedWithItsReason(t *testing.T) {
	a := shAgent(t, "echo starting; echo 'panic: boom' >&2; echo 'github.com/tribune-mesh/tribune/server.(*Server).apply(...)' >&2; exit 2")
	a.Start(t)
	exited, _ := a.Exited()
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("the script did not exit")
	}
	if _, err := a.Exited(); err == nil {
		t.Fatal("exit status: nil, want exit status 2")
	}
	crashes := a.Crashes()
	if len(crashes) != 1 {
		t.Fatalf("crashes %v, want 1", crashes)
	}
	want := "panic: boom at github.com/tribune-mesh/tribune/server.(*Server).apply(...)"
	if !strings.Contains(crashes[0], want) || !strings.Contains(crashes[0], "exit status 2") {
		t.Fatalf("crash %q does not say %q and its status", crashes[0], want)
	}
	if a.Running() {
		t.Fatal("an unsupervised agent was restarted")
	}
}

func TestSuperviseRestartsUntilKilled(t *testing.T) {
	a := shAgent(t, "exec sleep 600")
	a.Supervise, a.RestartDelay = true, 10*time.Millisecond
	var logged []string
	logs := make(chan string, 16)
	a.Logf = func(format string, args ...any) {
		select {
		case logs <- fmt.Sprintf(format, args...):
		default:
		}
	}
	a.Start(t)
	for i := 1; i <= 2; i++ {
		pid := a.Pid()
		// A SIGKILL from outside the harness is a crash.
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		wait.For(t, 10*time.Second, func() error {
			if p := a.Pid(); p == 0 || p == pid {
				return fmt.Errorf("not restarted yet (pid %d)", p)
			}
			return nil
		})
		if n := len(a.Crashes()); n != i {
			t.Fatalf("%d crashes after %d kills", n, i)
		}
		logged = append(logged, <-logs)
	}
	if !strings.Contains(logged[0], "restarting it") {
		t.Fatalf("crash log line %q does not say it restarts", logged[0])
	}
	a.Kill()
	if a.Running() {
		t.Fatal("running after Kill")
	}
	if n := len(a.Crashes()); n != 2 {
		t.Fatalf("%d crashes after Kill, want still 2", n)
	}
}

// TestKillCancelsPendingRestart kills a supervised agent while it waits to
// restart after a crash: it must stay down.
func TestKillCancelsPendingRestart(t *testing.T) {
	a := shAgent(t, "exit 3")
	a.Supervise, a.RestartDelay = true, time.Hour
	a.Start(t)
	wait.For(t, 10*time.Second, func() error {
		if len(a.Crashes()) == 0 {
			return errors.New("no crash yet")
		}
		return nil
	})
	done := make(chan struct{})
	go func() {
		a.Kill()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Kill waited for the restart delay")
	}
	if a.Running() {
		t.Fatal("restarted after Kill")
	}
}

func TestWrapperAndUID(t *testing.T) {
	a := shAgent(t, `echo "uid=$(id -u) via=$VIA"; exec sleep 600`)
	a.Wrapper = []string{"env", "VIA=wrapper"}
	want := fmt.Sprintf("uid=%d via=wrapper", os.Getuid())
	if os.Geteuid() == 0 {
		a.UID = 41999
		want = "uid=41999 via=wrapper"
	}
	a.Start(t)
	wait.For(t, 10*time.Second, func() error {
		if !a.Contains(want) {
			return fmt.Errorf("log %q lacks %q", a.Log(), want)
		}
		return nil
	})
	// env execs the program: Pid is sleep's own.
	wait.For(t, 10*time.Second, func() error {
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", a.Pid()))
		if err != nil || !bytes.HasPrefix(cmdline, []byte("sleep\x00")) {
			return fmt.Errorf("pid %d runs %q (%v), want sleep", a.Pid(), cmdline, err)
		}
		return nil
	})
	if a.UID != 0 {
		st, err := os.Stat(a.DataDir)
		if err != nil {
			t.Fatal(err)
		}
		if uid := st.Sys().(*syscall.Stat_t).Uid; uid != uint32(a.UID) {
			t.Fatalf("data dir owned by %d, want %d", uid, a.UID)
		}
	}
}

func TestWipe(t *testing.T) {
	a := shAgent(t, `mkdir -p "$0" && echo state > "$0/raft" && exec sleep 600`)
	a.Args = append(a.Args, a.DataDir)
	a.Start(t)
	wait.For(t, 10*time.Second, func() error {
		_, err := os.Stat(filepath.Join(a.DataDir, "raft"))
		return err
	})
	if err := a.Wipe(); err == nil {
		t.Fatal("Wipe of a running agent: no error")
	}
	a.Kill()
	if err := a.Wipe(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(a.DataDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("data dir still there after Wipe: %v", err)
	}
}

func TestCrashReasonReadsTheLastRun(t *testing.T) {
	log := []byte(startMarker + "s1 at t0: tribune agent\npanic: old\n" +
		startMarker + "s1 at t1: tribune agent\n==> Error starting agent: bind: address already in use\n" +
		"goroutine 1 [running]:\ngithub.com/tribune-mesh/tribune/agent.(*Agent).Start(...)\n\t/src/agent/agent.go:10\n")
	want := "==> Error starting agent: bind: address already in use at github.com/tribune-mesh/tribune/agent.(*Agent).Start(...)"
	if got := crashReason(log); got != want {
		t.Fatalf("crashReason = %q, want %q", got, want)
	}
	if got := crashReason([]byte(startMarker + "s1\nall fine\n")); got != "no panic in its log" {
		t.Fatalf("crashReason of a clean log = %q", got)
	}
}

func TestAddresses(t *testing.T) {
	a := &Agent{HTTPPort: 8500, DNSPort: 8600, RPCPort: 8300, SerfPort: 8301}
	if got := a.HTTPAddr(); got != "127.0.0.1:8500" {
		t.Errorf("HTTPAddr = %s", got)
	}
	a.Addr = "127.0.0.11"
	for got, want := range map[string]string{a.HTTPAddr(): "127.0.0.11:8500", a.DNSAddr(): "127.0.0.11:8600",
		a.RPCAddr(): "127.0.0.11:8300", a.SerfAddr(): "127.0.0.11:8301"} {
		if got != want {
			t.Errorf("address %s, want %s", got, want)
		}
	}
}
