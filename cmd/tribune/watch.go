package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"reflect"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
)

// Exit codes of "watch".
const (
	// watchExitOK: the view was printed (no handler), or the command was
	// interrupted.
	watchExitOK = 0
	// watchExitError: usage error, the agent could not be reached at
	// start, the output could not be encoded, or a handler could not run
	// or exited with an error (the watch then stops).
	watchExitError = 1
)

// Watch timings.
const (
	// watchRetryBase and watchRetryMax shape the back-off after a failed
	// query: base * failures², capped (Consul's watch plan retries so).
	watchRetryBase = 5 * time.Second
	watchRetryMax  = 3 * time.Minute
	// handlerKillGrace is how long an interrupted handler has to exit
	// after SIGINT before it is killed.
	handlerKillGrace = 5 * time.Second
)

// runWatch implements "watch"; SIGINT and SIGTERM stop it.
func runWatch(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return watchMain(ctx, args, stdout, stderr)
}

// stringsFlag is a flag that may be given several times.
type stringsFlag []string

func (s *stringsFlag) String() string { return strings.Join(*s, ",") }
func (s *stringsFlag) Set(v string) error {
	*s = append(*s, v)
	return nil
}

// watchQuery fetches a watched view: a blocking query at waitIndex, with
// prev the index of the last result seen (0 for none). It returns the
// view's index and the value handlers receive.
type watchQuery func(ctx context.Context, waitIndex, prev uint64) (uint64, any, error)

// watchParams are the type-specific options given on the command line.
type watchParams struct {
	key, prefix, service, state, name, filter string
	tags                                      []string
	passingOnly, stale                        bool
}

// watchTypeOptions returns the options type typ accepts beyond the HTTP API
// options, and whether the type exists.
func watchTypeOptions(typ string) ([]string, bool) {
	switch typ {
	case "key":
		return []string{"key"}, true
	case "keyprefix":
		return []string{"prefix"}, true
	case "services", "nodes":
		return []string{"filter"}, true
	case "service":
		return []string{"service", "tag", "passingonly", "filter"}, true
	case "checks":
		return []string{"service", "state", "filter"}, true
	case "event":
		return []string{"name"}, true
	}
	return nil, false
}

// watchMain runs "watch" until the handler fails, the view was printed
// (without a handler), or ctx ends.
func watchMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var hf httpFlags
	fs := newFlagSet("watch", "watch [options] [child...]",
		"Watches a view of the data (a key, a key prefix, the services or nodes of the catalog,\n"+
			"a service's instances, health checks, or user events) with blocking queries. With a\n"+
			"child command, runs it with the view's JSON on stdin (and CONSUL_INDEX set) every time\n"+
			"the view changes, until interrupted; without one, prints the current view and exits.\n"+
			"Exit codes: 0 when the view was printed or on interrupt, 1 on errors or when the\n"+
			"child command fails.", stderr, &hf)
	typ := fs.String("type", "", "Watch type: one of key, keyprefix, services, nodes, service, checks or event. Required.")
	var p watchParams
	fs.StringVar(&p.key, "key", "", "Key to watch. Only for type key.")
	fs.StringVar(&p.prefix, "prefix", "", "Key prefix to watch. Only for type keyprefix.")
	fs.StringVar(&p.service, "service", "", "Service to watch. Required for type service, optional for checks.")
	fs.Var((*stringsFlag)(&p.tags), "tag", "Service `tag` to filter on; may be repeated. Optional for type service.")
	passingOnly := fs.String("passingonly", "", "Only instances passing all their checks: `true|false`. Optional for type service; defaults to false.")
	fs.StringVar(&p.state, "state", "", "Check state to filter on (any, passing, warning, critical). Optional for type checks.")
	fs.StringVar(&p.name, "name", "", "Event name to watch. Only for type event.")
	fs.StringVar(&p.filter, "filter", "", "Filter `expression` applied to the results. Optional for types services, nodes, service and checks.")
	shell := fs.Bool("shell", true, "Run the child command through a shell ($SHELL, else /bin/sh) with -c.")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if *typ == "" {
		fmt.Fprintln(stderr, "Watch type must be specified")
		return watchExitError
	}
	if *passingOnly != "" {
		b, err := strconv.ParseBool(*passingOnly)
		if err != nil {
			fmt.Fprintf(stderr, "Failed to parse passingonly flag: %v\n", err)
			return watchExitError
		}
		p.passingOnly = b
	}
	p.stale = hf.stale
	client, err := hf.client()
	if err != nil {
		fmt.Fprintf(stderr, "Error connecting to agent: %v\n", err)
		return watchExitError
	}
	query, err := newWatchQuery(client, *typ, p, fs)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return watchExitError
	}
	if _, err := client.Agent().NodeName(); err != nil {
		fmt.Fprintf(stderr, "Error querying agent: %v\n", err)
		return watchExitError
	}

	w := &watcher{typ: *typ, query: query, stderr: stderr}
	if fs.NArg() == 0 {
		// Without a child the first view is printed and the watch ends.
		w.handle = func(_ context.Context, _ uint64, v any) (bool, error) {
			buf, err := json.MarshalIndent(v, "", "    ")
			if err != nil {
				return false, fmt.Errorf("Error encoding output: %w", err)
			}
			fmt.Fprintln(stdout, string(buf))
			return false, nil
		}
	} else {
		h := &watchHandler{args: fs.Args(), shell: *shell, stdout: stdout, stderr: stderr}
		w.handle = h.run
	}
	if err := w.run(ctx); err != nil {
		fmt.Fprintln(stderr, err)
		return watchExitError
	}
	return watchExitOK
}

// newWatchQuery checks the options given for type typ and returns its query.
func newWatchQuery(client *api.Client, typ string, p watchParams, fs *flag.FlagSet) (watchQuery, error) {
	allowed, ok := watchTypeOptions(typ)
	if !ok {
		return nil, fmt.Errorf("Unsupported watch type: %s", typ)
	}
	var invalid []string
	for _, opt := range []string{"key", "prefix", "service", "tag", "passingonly", "state", "name", "filter"} {
		if flagWasSet(fs, opt) && !slices.Contains(allowed, opt) {
			invalid = append(invalid, opt)
		}
	}
	if len(invalid) > 0 {
		sort.Strings(invalid)
		return nil, fmt.Errorf("Invalid parameters for watch type %s: %v", typ, invalid)
	}
	opts := func(ctx context.Context, waitIndex uint64) *api.QueryOptions {
		q := &api.QueryOptions{AllowStale: p.stale, WaitIndex: waitIndex, Filter: p.filter}
		return q.WithContext(ctx)
	}
	switch typ {
	case "key":
		if p.key == "" {
			return nil, errors.New("Must specify a single key to watch")
		}
		return func(ctx context.Context, wait, _ uint64) (uint64, any, error) {
			pair, meta, err := client.KV().Get(p.key, opts(ctx, wait))
			if err != nil {
				return 0, nil, err
			}
			if pair == nil {
				// A missing key is JSON null, not a typed nil.
				return meta.LastIndex, nil, nil
			}
			return meta.LastIndex, pair, nil
		}, nil
	case "keyprefix":
		if p.prefix == "" {
			return nil, errors.New("Must specify a single prefix to watch")
		}
		return func(ctx context.Context, wait, _ uint64) (uint64, any, error) {
			pairs, meta, err := client.KV().List(p.prefix, opts(ctx, wait))
			if err != nil {
				return 0, nil, err
			}
			return meta.LastIndex, pairs, nil
		}, nil
	case "services":
		return func(ctx context.Context, wait, _ uint64) (uint64, any, error) {
			svcs, meta, err := client.Catalog().Services(opts(ctx, wait))
			if err != nil {
				return 0, nil, err
			}
			return meta.LastIndex, svcs, nil
		}, nil
	case "nodes":
		return func(ctx context.Context, wait, _ uint64) (uint64, any, error) {
			nodes, meta, err := client.Catalog().Nodes(opts(ctx, wait))
			if err != nil {
				return 0, nil, err
			}
			return meta.LastIndex, nodes, nil
		}, nil
	case "service":
		if p.service == "" {
			return nil, errors.New("Must specify a single service to watch")
		}
		return func(ctx context.Context, wait, _ uint64) (uint64, any, error) {
			entries, meta, err := client.Health().ServiceMultipleTags(p.service, p.tags, p.passingOnly, opts(ctx, wait))
			if err != nil {
				return 0, nil, err
			}
			return meta.LastIndex, entries, nil
		}, nil
	case "checks":
		if p.service != "" && p.state != "" {
			return nil, errors.New("Cannot specify service and state")
		}
		state := p.state
		if p.service == "" && state == "" {
			state = api.HealthAny
		}
		return func(ctx context.Context, wait, _ uint64) (uint64, any, error) {
			var checks api.HealthChecks
			var meta *api.QueryMeta
			var err error
			if state != "" {
				checks, meta, err = client.Health().State(state, opts(ctx, wait))
			} else {
				checks, meta, err = client.Health().Checks(p.service, opts(ctx, wait))
			}
			if err != nil {
				return 0, nil, err
			}
			return meta.LastIndex, checks, nil
		}, nil
	default: // event
		return func(ctx context.Context, wait, prev uint64) (uint64, any, error) {
			// Stale reads do not apply: every agent keeps its own events.
			q := (&api.QueryOptions{WaitIndex: wait}).WithContext(ctx)
			events, meta, err := client.Event().List(p.name, q)
			if err != nil {
				return 0, nil, err
			}
			// Only the events after the last one already handled.
			for i, e := range events {
				if prev != 0 && client.Event().IDToIndex(e.ID) == prev {
					events = events[i+1:]
					break
				}
			}
			return meta.LastIndex, events, nil
		}, nil
	}
}

// watcher runs one watch: blocking queries one after the other, the handler
// on every change.
type watcher struct {
	typ   string
	query watchQuery
	// handle receives each changed view; it returns whether to go on, and
	// an error that ends the watch.
	handle func(ctx context.Context, idx uint64, v any) (bool, error)
	stderr io.Writer
}

// run queries until ctx ends or the handler stops the watch, and returns the
// handler's error. A view is handed over when its index moved and its value
// differs from the last one handed over (the first view always is); failed
// queries are retried with back-off.
func (w *watcher) run(ctx context.Context) error {
	var (
		last       uint64 // index of the last view seen
		wait       uint64 // index the next query blocks on
		have       bool
		lastResult any
		failures   int
	)
	for ctx.Err() == nil {
		idx, v, err := w.query(ctx, wait, last)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			failures++
			retry := min(watchRetryBase*time.Duration(failures*failures), watchRetryMax)
			fmt.Fprintf(w.stderr, "Watch (type: %s) errored: %v, retry in %v\n", w.typ, err, retry)
			// The next query answers at once, whatever the index.
			wait = 0
			t := time.NewTimer(retry)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
			continue
		}
		failures = 0
		// The next query blocks on the index just returned; an index
		// of 0 (never sent by a healthy agent) would make every query
		// return at once, so 1 is used instead, as Consul advises.
		wait = max(idx, 1)
		if have && idx == last {
			continue
		}
		last = idx
		if have && reflect.DeepEqual(lastResult, v) {
			continue
		}
		have, lastResult = true, v
		more, err := w.handle(ctx, idx, v)
		if err != nil {
			return err
		}
		if !more {
			return nil
		}
	}
	return nil
}

// watchHandler runs the child command of a watch for each changed view.
type watchHandler struct {
	args           []string
	shell          bool
	stdout, stderr io.Writer
}

// run runs the child once with the view's JSON on stdin. An interrupted
// child is not an error; a child that fails stops the watch, as Consul's
// does.
func (h *watchHandler) run(ctx context.Context, idx uint64, v any) (bool, error) {
	var in bytes.Buffer
	if err := json.NewEncoder(&in).Encode(v); err != nil {
		return false, fmt.Errorf("Error encoding output: %w", err)
	}
	var cmd *exec.Cmd
	switch {
	case !h.shell:
		cmd = exec.CommandContext(ctx, h.args[0], h.args[1:]...)
	case runtime.GOOS == "windows":
		cmd = exec.CommandContext(ctx, "cmd", "/C", strings.Join(h.args, " "))
	default:
		sh := os.Getenv("SHELL")
		if sh == "" {
			sh = "/bin/sh"
		}
		cmd = exec.CommandContext(ctx, sh, "-c", strings.Join(h.args, " "))
	}
	index := strconv.FormatUint(idx, 10)
	cmd.Env = append(os.Environ(), "CONSUL_INDEX="+index, "TRIBUNE_INDEX="+index)
	cmd.Stdin = &in
	cmd.Stdout, cmd.Stderr = h.stdout, h.stderr
	// Interrupted: ask the child to stop as a terminal's ^C would, then
	// kill it after the grace period.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = handlerKillGrace
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return false, nil
		}
		return false, fmt.Errorf("Error executing handler: %w", err)
	}
	return true, nil
}
