package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/tribune-mesh/tribune/agent/agenttest"
	"github.com/tribune-mesh/tribune/test/wait"
)

// result is what one command invocation produced.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%sstderr:\n%s", r.code, r.stdout, r.stderr)
}

// runCmd runs cmd in-process with args and captures its output.
func runCmd(cmd func(args []string, stdout, stderr io.Writer) int, args ...string) result {
	var out, errb bytes.Buffer
	code := cmd(args, &out, &errb)
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// mustExec runs cmd and fails the test unless it exits 0.
func mustExec(t *testing.T, cmd func(args []string, stdout, stderr io.Writer) int, args ...string) result {
	t.Helper()
	r := runCmd(cmd, args...)
	if r.code != 0 {
		t.Fatalf("%v: %v", args, r)
	}
	return r
}

// startAgent starts a real dev agent for the test and returns the
// -http-addr flag that points a command at it.
func startAgent(t *testing.T) string {
	t.Helper()
	a := agenttest.Start(t, nil)
	return "-http-addr=" + a.HTTPAddr()
}

// waitFor retries cond until it holds or the deadline passes; cond returns a
// description of the last state for the failure message.
func waitFor(t *testing.T, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	wait.For(t, timeout, func() error {
		if ok, last := cond(); !ok {
			return errors.New(last)
		}
		return nil
	})
}

// unreachableAddr is a loopback address nothing listens on.
func unreachableAddr(t *testing.T) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", agenttest.FreePorts(t, 1)[0])
}

func assertContains(t *testing.T, what, got, want string) {
	t.Helper()
	if !strings.Contains(got, want) {
		t.Errorf("%s = %q, want it to contain %q", what, got, want)
	}
}
