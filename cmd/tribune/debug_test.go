package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/agent/agenttest"
)

// readArchive returns the files of a .tar.gz by name.
func readArchive(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	out := map[string][]byte{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out[hdr.Name] = b
	}
}

// `debug` against a real agent: the archive holds Consul's files (index,
// agent, host, members, metrics at every interval, the logs written
// during the capture, and the Go profiles), under the output's name.
func TestDebugArchive(t *testing.T) {
	cfg := agenttest.Config(t)
	cfg.EnableDebug = true
	a := agenttest.Start(t, cfg)
	out := filepath.Join(t.TempDir(), "capture")

	done := make(chan result, 1)
	go func() {
		var o, e bytes.Buffer
		code := debugCommand(context.Background(), []string{"-http-addr=" + a.HTTPAddr(),
			"-duration=3s", "-interval=1s", "-output=" + out}, &o, &e)
		done <- result{code: code, stdout: o.String(), stderr: e.String()}
	}()
	// Something to log while the capture runs: a service registered (and
	// synced, which the agent logs at DEBUG) every 200ms until it ends.
	client, err := api.NewClient(&api.Config{Address: a.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	var r result
	deadline := time.After(60 * time.Second)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for i, finished := 0, false; !finished; i++ {
		select {
		case r = <-done:
			finished = true
		case <-deadline:
			t.Fatal("debug did not end")
		case <-tick.C:
			if err := client.Agent().ServiceRegister(&api.AgentServiceRegistration{Name: fmt.Sprintf("web-%d", i), Port: 80}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("debug: %v", r)
	}
	assertContains(t, "stdout", r.stdout, "capture.tar.gz")
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("the capture directory was not removed: %v", err)
	}
	files := readArchive(t, out+".tar.gz")
	for _, name := range []string{"index.json", "agent.json", "host.json", "members.json", "metrics.json",
		"consul.log", "profile.prof", "trace.out", "heap.prof", "goroutine.prof"} {
		if len(files["capture/"+name]) == 0 {
			t.Errorf("archive: capture/%s missing or empty (have %d files)", name, len(files))
		}
	}
	var index debugIndex
	if err := json.Unmarshal(files["capture/index.json"], &index); err != nil || index.Duration != "3s" || len(index.Targets) != 6 {
		t.Errorf("index.json = %+v, %v", index, err)
	}
	var self map[string]map[string]any
	if err := json.Unmarshal(files["capture/agent.json"], &self); err != nil || self["Config"]["NodeName"] != cfg.NodeName {
		t.Errorf("agent.json: %v %v", self["Config"], err)
	}
	dec := json.NewDecoder(bytes.NewReader(files["capture/metrics.json"]))
	n := 0
	for {
		var m api.MetricsInfo
		if err := dec.Decode(&m); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("metrics.json: %v", err)
		}
		if m.Timestamp == "" {
			t.Errorf("metrics capture without a timestamp: %+v", m)
		}
		n++
	}
	if n < 3 {
		t.Errorf("metrics.json has %d captures, want one at the start and one per interval (>= 3)", n)
	}
	if !strings.Contains(string(files["capture/consul.log"]), "web-") {
		t.Errorf("consul.log does not show the service registered during the capture:\n%s", files["capture/consul.log"])
	}
}

// Targets narrow the capture; a bad target, a short interval or an
// existing output is refused before anything is written.
func TestDebugFlags(t *testing.T) {
	addr := startAgent(t)
	out := filepath.Join(t.TempDir(), "small")
	r := runCmd(func(args []string, stdout, stderr io.Writer) int {
		return debugCommand(context.Background(), args, stdout, stderr)
	}, addr, "-duration=1s", "-interval=1s", "-capture=agent", "-capture=members", "-output="+out)
	if r.code != 0 {
		t.Fatalf("%v", r)
	}
	files := readArchive(t, out+".tar.gz")
	if len(files["small/agent.json"]) == 0 || len(files["small/members.json"]) == 0 || files["small/host.json"] != nil || files["small/consul.log"] != nil {
		names := []string{}
		for n := range files {
			names = append(names, n)
		}
		t.Errorf("archive files %v", names)
	}
	for _, args := range [][]string{
		{addr, "-capture=nope"},
		{addr, "-interval=100ms"},
		{addr, "-duration=1s", "-interval=2s"},
		{addr, "-duration=1s", "-interval=1s", "-output=" + out}, // the archive exists
		{"-http-addr=" + unreachableAddr(t), "-duration=1s", "-interval=1s", "-output=" + filepath.Join(t.TempDir(), "x")},
	} {
		r := runCmd(runDebug, args...)
		if r.code == 0 {
			t.Errorf("%v: accepted: %v", args, r)
		}
	}
}
