package main

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
)

// The targets `debug -capture` accepts, as Consul's command names them.
var debugTargets = []string{"agent", "host", "members", "metrics", "logs", "pprof"}

// Bounds of `debug`.
const (
	debugMinInterval = time.Second
	// debugMaxProfileSeconds is the agent's limit on one CPU profile or
	// trace (agent/httpapi); a longer capture profiles its first part.
	debugMaxProfileSeconds = 300
)

// debugIndex is index.json: what the archive holds.
type debugIndex struct {
	Version      int
	AgentVersion string
	Interval     string
	Duration     string
	Targets      []string
}

// runDebug implements "debug": it captures the agent's state, metrics, logs
// and profiles for -duration into a directory and archives it as
// <output>.tar.gz. An interrupt ends the capture early and archives what
// was captured.
func runDebug(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return debugCommand(ctx, args, stdout, stderr)
}

func debugCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var hf httpFlags
	fs := newFlagSet("debug", "debug [options]",
		"Monitors an agent for -duration, recording its configuration, host, members, metrics\n"+
			"(every -interval), logs and Go profiles into an archive in the current directory.\n"+
			"Needs operator:read with ACLs on; profiles need enable_debug (or ACLs) on the agent.", stderr, &hf)
	duration := fs.Duration("duration", 5*time.Minute, "How long to capture.")
	interval := fs.Duration("interval", 30*time.Second, "How often to capture metrics.")
	output := fs.String("output", "", "The `path` of the capture directory (and of the archive, with .tar.gz). "+
		"Defaults to consul-debug-<unix time> in the current directory.")
	archive := fs.Bool("archive", true, "Archive the capture into <output>.tar.gz and remove the directory.")
	var capture listFlag
	fs.Var(&capture, "capture", "A `target` to capture (repeatable): "+strings.Join(debugTargets, ", ")+". Defaults to all.")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "Too many arguments (expected 0, got %d)\n", fs.NArg())
		return 1
	}
	if *interval < debugMinInterval {
		fmt.Fprintf(stderr, "-interval must be at least %s, got %s\n", debugMinInterval, *interval)
		return 1
	}
	if *duration < *interval {
		fmt.Fprintf(stderr, "-duration (%s) must be at least -interval (%s)\n", *duration, *interval)
		return 1
	}
	targets, err := debugCaptureTargets(capture)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	dir := *output
	if dir == "" {
		dir = fmt.Sprintf("consul-debug-%d", time.Now().Unix())
	}
	dir = filepath.Clean(dir)
	for _, p := range []string{dir, dir + ".tar.gz"} {
		if _, err := os.Stat(p); err == nil {
			fmt.Fprintf(stderr, "Output %s already exists: choose another -output\n", p)
			return 1
		}
	}
	client, err := hf.client()
	if err != nil {
		fmt.Fprintf(stderr, "Error connecting to agent: %v\n", err)
		return 1
	}
	self, err := client.Agent().Self()
	if err != nil {
		fmt.Fprintf(stderr, "Error querying the target agent: %v\n", err)
		return 1
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		fmt.Fprintf(stderr, "Error creating the output directory: %v\n", err)
		return 1
	}
	agentVersion, _ := self["Config"]["Version"].(string)
	c := &debugCapture{client: client, dir: dir, targets: targets, stderr: stderr}
	c.writeJSON("index.json", &debugIndex{Version: 2, AgentVersion: agentVersion,
		Interval: interval.String(), Duration: duration.String(), Targets: slices.Sorted(maps.Keys(targets))})

	fmt.Fprintf(stdout, "==> Capturing %s for %s (metrics every %s) into %s\n", strings.Join(slices.Sorted(maps.Keys(targets)), ", "), *duration, *interval, dir)
	if targets["agent"] {
		c.writeJSON("agent.json", self)
	}
	if targets["host"] {
		host, err := client.Agent().Host()
		c.record("host", err)
		if err == nil {
			c.writeJSON("host.json", host)
		}
	}
	if targets["members"] {
		members, err := client.Agent().Members(false)
		c.record("members", err)
		if err == nil {
			c.writeJSON("members.json", members)
		}
	}
	capCtx, cancel := context.WithTimeout(ctx, *duration)
	defer cancel()
	var wg sync.WaitGroup
	run := func(f func(context.Context)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(capCtx)
		}()
	}
	if targets["metrics"] {
		run(func(ctx context.Context) { c.metrics(ctx, *interval) })
	}
	if targets["logs"] {
		run(c.logs)
	}
	if targets["pprof"] {
		// The agent ends a CPU profile or trace after seconds: the request
		// gets that and some slack, and ends early only on an interrupt.
		secs := min(max(int(duration.Seconds()), 1), debugMaxProfileSeconds)
		profCtx, profCancel := context.WithTimeout(ctx, time.Duration(secs)*time.Second+30*time.Second)
		defer profCancel()
		for _, p := range []struct{ name, file string }{{"profile", "profile.prof"}, {"trace", "trace.out"}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.profile(profCtx, p.name, secs, p.file)
			}()
		}
	}
	wg.Wait()
	if targets["pprof"] {
		// One heap and one goroutine profile, at the end of the capture.
		heap, err := c.client.Debug().Heap()
		c.record("pprof heap", err)
		if err == nil {
			c.writeFile("heap.prof", heap)
		}
		goroutines, err := c.client.Debug().Goroutine()
		c.record("pprof goroutine", err)
		if err == nil {
			c.writeFile("goroutine.prof", goroutines)
		}
	}
	if ctx.Err() != nil {
		fmt.Fprintln(stdout, "==> Interrupted: archiving what was captured")
	}
	for _, e := range c.errors() {
		fmt.Fprintf(stderr, "Warning: %s\n", e)
	}
	if !*archive {
		fmt.Fprintf(stdout, "Saved debug capture to %s\n", dir)
		return 0
	}
	if err := archiveDir(dir, dir+".tar.gz"); err != nil {
		fmt.Fprintf(stderr, "Error archiving the capture (kept in %s): %v\n", dir, err)
		return 1
	}
	if err := os.RemoveAll(dir); err != nil {
		fmt.Fprintf(stderr, "Warning: removing %s: %v\n", dir, err)
	}
	fmt.Fprintf(stdout, "Saved debug archive: %s.tar.gz\n", dir)
	return 0
}

func debugCaptureTargets(capture []string) (map[string]bool, error) {
	targets := map[string]bool{}
	if len(capture) == 0 {
		capture = debugTargets
	}
	for _, t := range capture {
		known := false
		for _, k := range debugTargets {
			known = known || k == t
		}
		if !known {
			return nil, fmt.Errorf("unknown -capture target %q: want one of %s", t, strings.Join(debugTargets, ", "))
		}
		targets[t] = true
	}
	return targets, nil
}

// debugCapture writes one capture's files and collects what failed.
type debugCapture struct {
	client  *api.Client
	dir     string
	targets map[string]bool
	stderr  io.Writer

	mu   sync.Mutex
	errs []string
}

func (c *debugCapture) record(what string, err error) {
	if err == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.errs = append(c.errs, fmt.Sprintf("%s: %v", what, err))
}

func (c *debugCapture) errors() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.errs...)
}

func (c *debugCapture) writeJSON(name string, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		c.record(name, err)
		return
	}
	c.writeFile(name, append(b, '\n'))
}

func (c *debugCapture) writeFile(name string, b []byte) {
	c.record(name, os.WriteFile(filepath.Join(c.dir, name), b, 0o600))
}

// metrics appends the agent's metrics to metrics.json at the start and
// every interval, one JSON object per capture, until ctx ends.
func (c *debugCapture) metrics(ctx context.Context, interval time.Duration) {
	f, err := os.OpenFile(filepath.Join(c.dir, "metrics.json"), os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
	if err != nil {
		c.record("metrics", err)
		return
	}
	defer f.Close()
	enc := json.NewEncoder(f)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		m, err := c.client.Agent().Metrics()
		if err != nil {
			c.record("metrics", err)
		} else if err := enc.Encode(m); err != nil {
			c.record("metrics", err)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// logs streams the agent's DEBUG logs into consul.log until ctx ends.
func (c *debugCapture) logs(ctx context.Context) {
	f, err := os.OpenFile(filepath.Join(c.dir, "consul.log"), os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
	if err != nil {
		c.record("logs", err)
		return
	}
	defer f.Close()
	// The request carries ctx: the client's reader checks stop only
	// between lines, so ending the request is what ends a quiet stream.
	stop := make(chan struct{})
	lines, err := c.client.Agent().Monitor("DEBUG", stop, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		c.record("logs", err)
		return
	}
	defer func() {
		close(stop)
		// Drain until the client's reader sees stop and closes lines, so
		// that its goroutine never blocks on a send.
		for range lines {
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case line, ok := <-lines:
			if !ok || line == "" { // "" is the client's end of stream
				return
			}
			if _, err := io.WriteString(f, strings.TrimSuffix(line, "\n")+"\n"); err != nil {
				c.record("logs", err)
				return
			}
		}
	}
}

// profile saves one Go profile from /debug/pprof/<name>.
func (c *debugCapture) profile(ctx context.Context, name string, seconds int, file string) {
	rc, err := c.client.Debug().PProf(ctx, name, seconds)
	if err != nil {
		if strings.Contains(err.Error(), "404") {
			err = errors.New("the agent serves no profiles: set enable_debug = true on it (or turn ACLs on)")
		}
		c.record("pprof "+name, err)
		return
	}
	defer rc.Close()
	f, err := os.OpenFile(filepath.Join(c.dir, file), os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
	if err != nil {
		c.record("pprof "+name, err)
		return
	}
	defer f.Close()
	if _, err := io.Copy(f, rc); err != nil && !errors.Is(err, context.Canceled) {
		c.record("pprof "+name, err)
	}
}

// archiveDir writes dir as a gzipped tar whose entries sit under dir's base
// name, as Consul's debug archive does.
func archiveDir(dir, dst string) (err error) {
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create archive: %w", err)
	}
	defer func() {
		if cerr := out.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("close archive: %w", cerr)
		}
		if err != nil {
			_ = os.Remove(dst)
		}
	}()
	gz := gzip.NewWriter(out)
	tw := tar.NewWriter(gz)
	root := filepath.Base(dir)
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(filepath.Join(root, rel))
		if d.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return fmt.Errorf("archive %s: %w", dir, err)
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	if err := gz.Close(); err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	return nil
}
