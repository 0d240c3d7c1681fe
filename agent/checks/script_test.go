//go:build unix

package checks

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tribune-mesh/tribune/test/wait"
)

func scriptOptions() Options {
	o := testOptions()
	o.EnableScriptChecks = true
	return o
}

func sh(script string) []string { return []string{"/bin/sh", "-c", script} }

// processGone reports whether pid has exited (or is a zombie awaiting its
// reaper), using /proc.
func processGone(t *testing.T, pid int) bool {
	t.Helper()
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc to inspect processes")
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	// pid (comm) state ...: the state follows the last ')'.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(fields) > 0 && (fields[0] == "Z" || fields[0] == "X")
}

func TestScriptExitCodes(t *testing.T) {
	leakCheck(t)
	cases := []struct {
		script, status string
	}{
		{"echo all good; exit 0", StatusPassing},
		{"echo degraded; exit 1", StatusWarning},
		{"echo broken; exit 2", StatusCritical},
		{"exit 127", StatusCritical},
	}
	for _, tc := range cases {
		_, rec := startCheck(t, Definition{CheckID: tc.script, ScriptArgs: sh(tc.script), Interval: time.Second}, scriptOptions())
		u := rec.waitStatus(t, tc.status)
		if want, _, _ := strings.Cut(strings.TrimPrefix(tc.script, "echo "), ";"); !strings.HasPrefix(tc.script, "exit") && u.Output != want+"\n" {
			t.Errorf("%q: output %q, want %q", tc.script, u.Output, want+"\n")
		}
	}
}

func TestScriptCombinedOutput(t *testing.T) {
	leakCheck(t)
	_, rec := startCheck(t, Definition{CheckID: "both", ScriptArgs: sh("echo to-stdout; echo to-stderr >&2"), Interval: time.Second}, scriptOptions())
	if u := rec.waitStatus(t, StatusPassing); u.Output != "to-stdout\nto-stderr\n" {
		t.Fatalf("output %q", u.Output)
	}
}

func TestScriptOutputTruncated(t *testing.T) {
	leakCheck(t)
	loud := `i=0; while [ $i -lt 2000 ]; do echo 0123456789012345678901234567890123456789012345678; i=$((i+1)); done`
	_, rec := startCheck(t, Definition{CheckID: "loud", ScriptArgs: sh(loud), Interval: time.Second, OutputMaxSize: 64}, scriptOptions())
	u := rec.waitStatus(t, StatusPassing)
	if len(u.Output) != 64 || !strings.HasPrefix(u.Output, "0123456789") {
		t.Fatalf("output of %d bytes: %q", len(u.Output), u.Output)
	}
}

func TestScriptMissingCommand(t *testing.T) {
	leakCheck(t)
	_, rec := startCheck(t, Definition{CheckID: "missing", ScriptArgs: []string{"/nonexistent/check-script"}, Interval: time.Second}, scriptOptions())
	if u := rec.waitStatus(t, StatusCritical); !strings.HasPrefix(u.Output, `Failed to run check "/nonexistent/check-script"`) {
		t.Fatalf("output %q", u.Output)
	}
}

func TestScriptRefusedWhenDisabled(t *testing.T) {
	_, err := New(Definition{CheckID: "s", ScriptArgs: sh("exit 0"), Interval: time.Second}, newRecorder(), testOptions())
	if !errors.Is(err, ErrScriptChecksDisabled) {
		t.Fatalf("New = %v, want ErrScriptChecksDisabled", err)
	}
}

// TestScriptTimeoutKillsProcessGroup runs a script whose child sleeps past
// the timeout: the check reports critical at the timeout and the child dies
// with the script.
func TestScriptTimeoutKillsProcessGroup(t *testing.T) {
	leakCheck(t)
	start := time.Now()
	_, rec := startCheck(t, Definition{
		CheckID:    "hang",
		ScriptArgs: sh("sleep 60 & echo $!; wait"),
		Interval:   time.Minute,
		Timeout:    200 * time.Millisecond,
	}, scriptOptions())
	u := rec.waitStatus(t, StatusCritical)
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("timeout reported after %s", el)
	}
	first, rest, _ := strings.Cut(u.Output, "\n")
	if first != "Timed out (200ms) running check" {
		t.Fatalf("output %q", u.Output)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(rest))
	if err != nil {
		t.Fatalf("no child pid in output %q", u.Output)
	}
	wait.For(t, waitTimeout, func() error {
		if !processGone(t, pid) {
			return fmt.Errorf("the script's child %d still runs", pid)
		}
		return nil
	})
}

// TestStopKillsRunningScript stops a check while its script runs: Stop
// returns promptly, the script's process group is gone, and nothing is
// reported for the interrupted run.
func TestStopKillsRunningScript(t *testing.T) {
	leakCheck(t)
	pidFile := filepath.Join(t.TempDir(), "pid")
	c, rec := startCheck(t, Definition{
		CheckID:    "long",
		ScriptArgs: sh("sleep 60 & echo $! > " + pidFile + "; wait"),
		Interval:   time.Minute,
		Timeout:    time.Minute,
	}, scriptOptions())
	var pid int
	wait.For(t, waitTimeout, func() error {
		b, err := os.ReadFile(pidFile)
		if err != nil || !strings.HasSuffix(string(b), "\n") {
			return fmt.Errorf("the script has not started: %q, %v", b, err)
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err
	})
	start := time.Now()
	c.Stop()
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("Stop took %s", el)
	}
	wait.For(t, waitTimeout, func() error {
		if !processGone(t, pid) {
			return fmt.Errorf("the script's child %d still runs", pid)
		}
		return nil
	})
	if got := rec.all(); len(got) != 0 {
		t.Fatalf("updates from an interrupted run: %v", got)
	}
}
