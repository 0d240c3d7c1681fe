//go:build unix

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// watchRun is a "watch" running in the background until stopped.
type watchRun struct {
	cancel         context.CancelFunc
	done           chan int
	stdout, stderr *bytes.Buffer
}

// startWatch runs "watch" with args in a goroutine; the test reads its
// output only after it returned.
func startWatch(t *testing.T, args ...string) *watchRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &watchRun{cancel: cancel, done: make(chan int, 1), stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}
	go func() { w.done <- watchMain(ctx, args, w.stdout, w.stderr) }()
	t.Cleanup(func() { w.stop(t) })
	return w
}

// stop interrupts the watch and returns its exit code.
func (w *watchRun) stop(t *testing.T) int {
	t.Helper()
	w.cancel()
	select {
	case code := <-w.done:
		w.done <- code
		return code
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not stop within 10s of the interrupt")
	}
	return -1
}

// handlerLines waits until file holds at least n lines and returns them.
func handlerLines(t *testing.T, file string, n int) []string {
	t.Helper()
	var lines []string
	waitFor(t, 10*time.Second, func() (bool, string) {
		b, err := os.ReadFile(file)
		if err != nil {
			return false, err.Error()
		}
		lines = strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		if len(b) == 0 {
			lines = nil
		}
		return len(lines) >= n, fmt.Sprintf("%d handler invocations: %q", len(lines), b)
	})
	return lines
}

func apiFor(t *testing.T, addr string) *api.Client {
	t.Helper()
	c, err := api.NewClient(&api.Config{Address: strings.TrimPrefix(addr, "-http-addr=")})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestWatchKeyHandler(t *testing.T) {
	addr := startAgent(t)
	client := apiFor(t, addr)
	if _, err := client.KV().Put(&api.KVPair{Key: "app/config", Value: []byte("v1")}, nil); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out")
	idx := filepath.Join(t.TempDir(), "index")
	// As typed in a shell: tribune watch -type=key -key=app/config sh -c '...'
	w := startWatch(t, addr, "-type=key", "-key=app/config", "sh", "-c", fmt.Sprintf("cat >> %s; echo $CONSUL_INDEX >> %s", out, idx))

	handlerLines(t, out, 1)
	if _, err := client.KV().Put(&api.KVPair{Key: "app/config", Value: []byte("v2")}, nil); err != nil {
		t.Fatal(err)
	}
	lines := handlerLines(t, out, 2)
	// The handler writes the index after the value: wait for it before
	// interrupting the watch (and its handler).
	indexes := handlerLines(t, idx, 2)
	if code := w.stop(t); code != watchExitOK {
		t.Errorf("exit %d after interrupt, want 0; stderr %s", code, w.stderr)
	}
	if len(lines) != 2 {
		t.Fatalf("handler ran %d times, want 2: %q", len(lines), lines)
	}
	for i, want := range []string{"v1", "v2"} {
		var p api.KVPair
		if err := json.Unmarshal([]byte(lines[i]), &p); err != nil {
			t.Fatalf("invocation %d: %v in %q", i+1, err, lines[i])
		}
		if p.Key != "app/config" || string(p.Value) != want {
			t.Errorf("invocation %d got %s=%q, want app/config=%q", i+1, p.Key, p.Value, want)
		}
		if indexes[i] != fmt.Sprint(p.ModifyIndex) {
			t.Errorf("invocation %d: CONSUL_INDEX=%s, want the key's ModifyIndex %d", i+1, indexes[i], p.ModifyIndex)
		}
	}
}

func TestWatchServiceHandler(t *testing.T) {
	addr := startAgent(t)
	client := apiFor(t, addr)
	reg := func(id string) {
		t.Helper()
		if err := client.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: id, Name: "web", Tags: []string{"v1"}, Port: 80}); err != nil {
			t.Fatal(err)
		}
	}
	reg("web-1")
	waitFor(t, 10*time.Second, func() (bool, string) {
		es, _, err := client.Health().Service("web", "", false, nil)
		return err == nil && len(es) == 1, fmt.Sprintf("%d instances, %v", len(es), err)
	})

	// Without a child the current view is printed and the watch ends.
	r := mustExec(t, runWatch, addr, "-type=service", "-service=web", "-tag=v1", "-passingonly=false")
	var entries []*api.ServiceEntry
	if err := json.Unmarshal([]byte(r.stdout), &entries); err != nil || len(entries) != 1 || entries[0].Service.ID != "web-1" {
		t.Fatalf("printed view %q (%v), want the one instance", r.stdout, err)
	}
	if !strings.Contains(r.stdout, "\n    {") {
		t.Errorf("view not indented by four spaces: %q", r.stdout)
	}

	// A child run without a shell gets each new view.
	out := filepath.Join(t.TempDir(), "out")
	w := startWatch(t, addr, "-shell=false", "-type=service", "-service=web", "sh", "-c", "cat >> "+out)
	handlerLines(t, out, 1)
	reg("web-2")
	waitFor(t, 10*time.Second, func() (bool, string) {
		lines := handlerLines(t, out, 1)
		last := lines[len(lines)-1]
		if err := json.Unmarshal([]byte(last), &entries); err != nil {
			return false, err.Error()
		}
		return len(entries) == 2, fmt.Sprintf("last of %d views: %s", len(lines), last)
	})
	if code := w.stop(t); code != watchExitOK {
		t.Errorf("exit %d, want 0; stderr %s", code, w.stderr)
	}
}

func TestWatchEventHandler(t *testing.T) {
	addr := startAgent(t)
	out := filepath.Join(t.TempDir(), "out")
	w := startWatch(t, addr, "-type=event", "-name=deploy", "cat >> "+out)
	// The first view: no event yet.
	if lines := handlerLines(t, out, 1); lines[0] != "[]" {
		t.Fatalf("first view %q, want []", lines[0])
	}
	fired := func(payload string) string {
		t.Helper()
		r := mustExec(t, runEvent, addr, "-name=deploy", payload)
		return strings.TrimSpace(strings.TrimPrefix(r.stdout, "Event ID: "))
	}
	mustExec(t, runEvent, addr, "-name=other")
	id1 := fired("one")
	lines := handlerLines(t, out, 2)
	id2 := fired("two")
	lines = handlerLines(t, out, len(lines)+1)
	if code := w.stop(t); code != watchExitOK {
		t.Errorf("exit %d, want 0; stderr %s", code, w.stderr)
	}
	// Each view holds only the events after the previous view.
	var last []*api.UserEvent
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil {
		t.Fatal(err)
	}
	if len(last) != 1 || last[0].ID != id2 || string(last[0].Payload) != "two" {
		t.Errorf("last view %s, want only event %s", lines[len(lines)-1], id2)
	}
	var seen []string
	for _, l := range lines {
		var evs []*api.UserEvent
		if err := json.Unmarshal([]byte(l), &evs); err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			if e.Name != "deploy" {
				t.Errorf("view holds event %s named %s", e.ID, e.Name)
			}
			seen = append(seen, e.ID)
		}
	}
	if strings.Join(seen, ",") != id1+","+id2 {
		t.Errorf("events handed over %v, want %s then %s, each once", seen, id1, id2)
	}
}

func TestWatchErrors(t *testing.T) {
	addr := startAgent(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{addr}, "Watch type must be specified"},
		{[]string{addr, "-type=nope"}, "Unsupported watch type: nope"},
		{[]string{addr, "-type=key"}, "Must specify a single key to watch"},
		{[]string{addr, "-type=keyprefix"}, "Must specify a single prefix to watch"},
		{[]string{addr, "-type=service"}, "Must specify a single service to watch"},
		{[]string{addr, "-type=key", "-key=k", "-prefix=p", "-name=n"}, "Invalid parameters for watch type key: [name prefix]"},
		{[]string{addr, "-type=checks", "-service=a", "-state=passing"}, "Cannot specify service and state"},
		{[]string{addr, "-type=service", "-service=a", "-passingonly=maybe"}, "Failed to parse passingonly flag"},
		{[]string{"-http-addr=" + unreachableAddr(t), "-type=nodes"}, "Error querying agent"},
		// A child that fails stops the watch.
		{[]string{addr, "-type=nodes", "exit 3"}, "Error executing handler"},
	} {
		r := runCmd(runWatch, tc.args...)
		if r.code != watchExitError {
			t.Errorf("%q: %v, want exit 1", tc.args, r)
		}
		assertContains(t, "stderr", r.stderr, tc.want)
	}

	// A missing key is printed as null; checks default to every state.
	r := mustExec(t, runWatch, addr, "-type=key", "-key=no/such/key")
	if r.stdout != "null\n" {
		t.Errorf("missing key printed %q, want null", r.stdout)
	}
	r = mustExec(t, runWatch, addr, "-type=checks")
	var checks []*api.HealthCheck
	if err := json.Unmarshal([]byte(r.stdout), &checks); err != nil {
		t.Errorf("checks view %q: %v", r.stdout, err)
	}
	for _, typ := range []string{"nodes", "services"} {
		r = mustExec(t, runWatch, addr, "-type="+typ)
		if !json.Valid([]byte(r.stdout)) || len(r.stdout) < 3 {
			t.Errorf("%s view %q", typ, r.stdout)
		}
	}
}
