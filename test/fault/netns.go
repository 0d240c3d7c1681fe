package fault

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tribune-mesh/tribune/test/procs"
	"github.com/tribune-mesh/tribune/test/wait"
)

// Environment variables that mark the run inside the namespace.
const (
	envNamespace = "TRIBUNE_FAULT_NETNS"
	envBinary    = "TRIBUNE_FAULT_BIN"
	envWorkDir   = "TRIBUNE_FAULT_DIR"
	// nsPrefix names every namespace this package makes:
	// tribune-<pid of the host test process>-<random>.
	nsPrefix = "tribune-"
)

// Env is what a test body running inside the namespace gets.
type Env struct {
	// Namespace is the network namespace the test runs in.
	Namespace string
	// Binary is the tribune binary, built once by the host process.
	Binary string
	// WorkDir holds the runs' binaries, data and logs. The host process
	// removes it with the namespace.
	WorkDir string
}

// Enter runs the calling test inside a fresh network namespace.
//
// In the host process it creates the namespace, runs this same test binary
// inside it restricted to the calling test, streams its output, and removes
// every process in the namespace and then the namespace itself, on failure,
// on timeout and on SIGINT/SIGTERM too. It then returns nil and the caller
// must return. In the run inside the namespace it returns the Env.
//
// The test is skipped when the machine cannot do this: not Linux, not root,
// no ip (iproute2) or iptables, or namespaces refused.
func Enter(t *testing.T) *Env {
	t.Helper()
	if ns := os.Getenv(envNamespace); ns != "" {
		return &Env{Namespace: ns, Binary: os.Getenv(envBinary), WorkDir: os.Getenv(envWorkDir)}
	}
	if reason := unsupported(); reason != "" {
		t.Skip(reason)
	}
	bin := procs.Binary(t)
	reapStaleNamespaces(t)
	// The agents run under their own uids and must reach their run
	// directories inside the work dir.
	work, err := os.MkdirTemp("", "tribune-jepsen-")
	if err == nil {
		err = os.Chmod(work, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(work) })
	ns := newNamespaceName()
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Skipf("cannot create a network namespace (ip netns add: %v: %s)", err, strings.TrimSpace(string(out)))
	}
	var once sync.Once
	cleanup := func() {
		once.Do(func() {
			removeNamespace(t, ns)
			os.RemoveAll(work)
		})
	}
	t.Cleanup(cleanup)
	if out, err := exec.Command("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("bring lo up in %s: %v: %s", ns, err, out)
	}

	stop := cleanupOnSignal(cleanup)
	defer stop()

	skipped, err := runInside(t, ns, bin, work)
	switch {
	case err != nil:
		t.Errorf("test inside namespace %s: %v", ns, err)
	case skipped != "":
		t.Skip(skipped)
	}
	return nil
}

// unsupported says why this machine cannot run the fault tests, or "".
func unsupported() string {
	if runtime.GOOS != "linux" {
		return "fault tests need Linux network namespaces"
	}
	if os.Geteuid() != 0 {
		return "fault tests need root (ip netns, iptables, per-agent uids)"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "fault tests need ip (Debian package iproute2)"
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		return "fault tests need iptables (Debian package iptables)"
	}
	return ""
}

func newNamespaceName() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s%d-%s", nsPrefix, os.Getpid(), hex.EncodeToString(b))
}

// runInside re-runs the calling test inside ns. It returns the skip reason
// when the inner test skipped, and an error when it failed.
func runInside(t *testing.T, ns, bin, work string) (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find test binary: %w", err)
	}
	ctx := context.Background()
	args := []string{"netns", "exec", ns, exe, "-test.run=" + runPattern(t.Name()), "-test.v=true", "-test.count=1"}
	if d, ok := t.Deadline(); ok {
		// The inner run gets a shorter timeout, so it fails with its own
		// goroutine dump first; the outer one kills it just after.
		left := time.Until(d)
		args = append(args, "-test.timeout="+(left-20*time.Second).String())
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, left-10*time.Second)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.Env = append(os.Environ(), envNamespace+"="+ns, envBinary+"="+bin, envWorkDir+"="+work)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", fmt.Errorf("pipe: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start %s: %w", exe, err)
	}
	skipped := relayOutput(out, os.Stdout, t.Name())
	if err := cmd.Wait(); err != nil {
		return "", fmt.Errorf("inner run: %w", err)
	}
	return skipped, nil
}

// relayOutput copies the inner run's output to w, less the test framework's
// own lines (=== RUN, --- PASS, PASS, ok ...) that the outer run prints
// itself, and returns the inner test's skip reason, if it skipped.
func relayOutput(r io.Reader, w io.Writer, name string) string {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	var skipped, skipReason bool
	var reason []string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "--- SKIP: "+name+" "):
			skipped, skipReason = true, true
			continue
		case skipReason && strings.HasPrefix(line, "    "):
			reason = append(reason, strings.TrimSpace(line))
			continue
		case frameworkLine(line):
			skipReason = false
			continue
		}
		skipReason = false
		fmt.Fprintln(w, line)
	}
	if !skipped {
		return ""
	}
	if len(reason) == 0 {
		return "skipped inside the namespace"
	}
	return strings.Join(reason, "; ")
}

func frameworkLine(line string) bool {
	for _, p := range []string{"=== RUN", "=== PAUSE", "=== CONT", "=== NAME", "--- PASS", "--- FAIL", "--- SKIP"} {
		if strings.HasPrefix(line, p) {
			return true
		}
	}
	return line == "PASS" || line == "FAIL" || strings.HasPrefix(line, "ok ") || strings.HasPrefix(line, "FAIL\t")
}

// runPattern is a -test.run pattern that selects exactly the named test.
func runPattern(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return strings.Join(parts, "/")
}

// cleanupOnSignal runs cleanup and exits when the host test process is
// interrupted. The returned func stops watching and waits for the watcher.
func cleanupOnSignal(cleanup func()) func() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case sig := <-ch:
			fmt.Fprintf(os.Stderr, "fault: %v: removing the test namespace\n", sig)
			cleanup()
			os.Exit(2)
		case <-done:
		}
	}()
	return func() {
		signal.Stop(ch)
		close(done)
		wg.Wait()
	}
}

// removeNamespace kills every process in ns (the inner test and the agents),
// then deletes ns. A namespace cannot go while processes still use it.
func removeNamespace(t testing.TB, ns string) {
	err := wait.Until(context.Background(), 5*time.Second, func() error {
		pids := namespacePids(ns)
		if len(pids) == 0 {
			return nil
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		return fmt.Errorf("processes %v still in %s", pids, ns)
	})
	if err != nil {
		t.Logf("emptying namespace %s: %v", ns, err)
	}
	if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
		t.Logf("ip netns del %s: %v: %s", ns, err, out)
	}
}

func namespacePids(ns string) []int {
	out, err := exec.Command("ip", "netns", "pids", ns).Output()
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// reapStaleNamespaces removes the namespaces of earlier test processes that
// died without cleaning up (a SIGKILL, a go test timeout panic).
func reapStaleNamespaces(t testing.TB) {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], nsPrefix) {
			continue
		}
		rest := strings.SplitN(strings.TrimPrefix(f[0], nsPrefix), "-", 2)
		pid, err := strconv.Atoi(rest[0])
		if err != nil || len(rest) != 2 {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			t.Logf("removing stale namespace %s", f[0])
			removeNamespace(t, f[0])
		}
	}
}
