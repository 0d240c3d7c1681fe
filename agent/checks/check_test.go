package checks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/tribune-mesh/tribune/test/wait"
)

type nopSource struct{}

func (nopSource) Watch(ctx context.Context, _, _ string, _ func(string)) error {
	<-ctx.Done()
	return ctx.Err()
}

func TestNewValidates(t *testing.T) {
	ok := Definition{CheckID: "c", TCP: "127.0.0.1:1", Interval: time.Second}
	with := func(f func(*Definition)) Definition { d := ok; f(&d); return d }
	cases := []struct {
		name string
		def  Definition
		opts Options
		want error
		msg  string
	}{
		{"no id", with(func(d *Definition) { d.CheckID = "" }), Options{}, ErrInvalidDefinition, "CheckID is required"},
		{"no type", Definition{CheckID: "c", Interval: time.Second}, Options{}, ErrInvalidDefinition, "no check type set"},
		{"two types", with(func(d *Definition) { d.HTTP = "http://x" }), Options{}, ErrInvalidDefinition, "more than one check type set: http, tcp"},
		{"no interval", with(func(d *Definition) { d.Interval = 0 }), Options{}, ErrInvalidDefinition, "Interval is required"},
		{"interval below 1s", with(func(d *Definition) { d.Interval = 500 * time.Millisecond }), Options{}, ErrInvalidDefinition, "below the minimum 1s"},
		{"negative timeout", with(func(d *Definition) { d.Timeout = -1 }), Options{}, ErrInvalidDefinition, "Timeout"},
		{"negative counter", with(func(d *Definition) { d.SuccessBeforePassing = -1 }), Options{}, ErrInvalidDefinition, "negative"},
		{"warning above critical", with(func(d *Definition) { d.FailuresBeforeWarning, d.FailuresBeforeCritical = 3, 2 }), Options{}, ErrInvalidDefinition, "exceeds FailuresBeforeCritical"},
		{"negative output size", with(func(d *Definition) { d.OutputMaxSize = -5 }), Options{}, ErrInvalidDefinition, "OutputMaxSize"},
		{"tcp without port", with(func(d *Definition) { d.TCP = "localhost" }), Options{}, ErrInvalidDefinition, "TCP"},
		{"udp without port", Definition{CheckID: "c", UDP: "127.0.0.1:", Interval: time.Second}, Options{}, ErrInvalidDefinition, "missing port"},
		{"grpc bad addr", Definition{CheckID: "c", GRPC: "nohost/svc", Interval: time.Second}, Options{}, ErrInvalidDefinition, "GRPC"},
		{"h2ping bad addr", Definition{CheckID: "c", H2PING: "x", Interval: time.Second}, Options{}, ErrInvalidDefinition, "H2PING"},
		{"relative url", Definition{CheckID: "c", HTTP: "/health", Interval: time.Second}, Options{}, ErrInvalidDefinition, "not an absolute http or https URL"},
		{"ftp url", Definition{CheckID: "c", HTTP: "ftp://x/y", Interval: time.Second}, Options{}, ErrInvalidDefinition, "not an absolute"},
		{"bad method", Definition{CheckID: "c", HTTP: "http://x/", Method: "GE T", Interval: time.Second}, Options{}, ErrInvalidDefinition, "invalid method"},
		{"script disabled", Definition{CheckID: "c", ScriptArgs: []string{"true"}, Interval: time.Second}, Options{}, ErrScriptChecksDisabled, "enable_script_checks"},
		{"empty script command", Definition{CheckID: "c", ScriptArgs: []string{""}, Interval: time.Second}, Options{EnableScriptChecks: true}, ErrInvalidDefinition, "empty"},
		{"alias without source", Definition{CheckID: "c", AliasService: "web"}, Options{}, ErrInvalidDefinition, "AliasSource"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.def, newRecorder(), tc.opts)
			if !errors.Is(err, tc.want) {
				t.Fatalf("New error = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.msg) || !strings.Contains(err.Error(), `check "`) {
				t.Fatalf("New error = %q, want it to name the check and contain %q", err, tc.msg)
			}
		})
	}
	if _, err := New(ok, nil, Options{}); !errors.Is(err, ErrInvalidDefinition) {
		t.Fatalf("New with nil Notifier: %v", err)
	}
	if _, err := New(Definition{CheckID: "c", TCP: "127.0.0.1:1", Interval: 10 * time.Millisecond}, newRecorder(), Options{MinInterval: time.Millisecond}); err != nil {
		t.Fatalf("Options.MinInterval should allow 10ms: %v", err)
	}
	if _, err := New(Definition{CheckID: "c", AliasService: "web"}, newRecorder(), Options{AliasSource: nopSource{}}); err != nil {
		t.Fatalf("alias check needs no interval: %v", err)
	}
}

func TestNewAppliesDefaults(t *testing.T) {
	header := map[string][]string{"X": {"1"}}
	c, err := New(Definition{CheckID: "h", HTTP: "http://127.0.0.1/", Interval: time.Second, Header: header, FailuresBeforeCritical: 3}, newRecorder(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	d := c.Definition()
	if d.Method != "GET" || d.Timeout != DefaultTimeout || d.OutputMaxSize != DefaultOutputMaxSize || d.FailuresBeforeWarning != 3 {
		t.Fatalf("defaults not applied: method %q timeout %s output %d warning %d", d.Method, d.Timeout, d.OutputMaxSize, d.FailuresBeforeWarning)
	}
	if d.Type() != TypeHTTP {
		t.Fatalf("Type() = %q", d.Type())
	}
	header["X"][0] = "changed"
	if got := c.Definition().Header["X"][0]; got != "1" {
		t.Fatalf("Check shares the caller's header map: %q", got)
	}

	s, err := New(Definition{CheckID: "s", ScriptArgs: []string{"true"}, Interval: time.Second}, newRecorder(), Options{EnableScriptChecks: true, OutputMaxSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	if d := s.Definition(); d.Timeout != DefaultScriptTimeout || d.OutputMaxSize != 100 {
		t.Fatalf("script defaults: timeout %s output %d", d.Timeout, d.OutputMaxSize)
	}
}

// TestThresholds drives the success/failure counters with scripted results,
// as Consul documents them: a status flips only after enough consecutive
// results agree, and only changes are reported.
func TestThresholds(t *testing.T) {
	const p, w, c = StatusPassing, StatusWarning, StatusCritical
	cases := []struct {
		name           string
		sbp, fbw, fbc  int
		results, wants []string // wants[i] is what result i reports, "" for nothing
	}{
		{"defaults report every change", 0, 0, 0,
			[]string{p, p, c, c, w, p}, []string{p, "", c, "", w, p}},
		{"failures_before_critical 3", 0, 0, 3,
			[]string{p, c, c, c, c, p, c, c, p}, []string{p, "", "", c, "", p, "", "", ""}},
		{"failures_before_warning 1, critical 3", 0, 1, 3,
			[]string{p, c, c, c, p}, []string{p, w, "", c, p}},
		{"warning results count as failures", 0, 0, 2,
			[]string{p, w, w, c}, []string{p, "", w, c}},
		{"success_before_passing 2", 2, 0, 0,
			[]string{c, p, p, p, c, p, c, p, p}, []string{c, "", p, "", c, "", "", "", p}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecorder()
			chk, err := New(Definition{CheckID: "t", TCP: "127.0.0.1:1", Interval: time.Second,
				SuccessBeforePassing: tc.sbp, FailuresBeforeWarning: tc.fbw, FailuresBeforeCritical: tc.fbc}, rec, Options{})
			if err != nil {
				t.Fatal(err)
			}
			for i, r := range tc.results {
				before := len(rec.all())
				chk.record(context.Background(), r, "out")
				got := ""
				if all := rec.all(); len(all) > before {
					got = all[len(all)-1].Status
				}
				if got != tc.wants[i] {
					t.Fatalf("result %d (%s): reported %q, want %q; all: %v", i, r, got, tc.wants[i], rec.all())
				}
			}
		})
	}
}

func TestOutputChangeIsReported(t *testing.T) {
	rec := newRecorder()
	chk, err := New(Definition{CheckID: "t", TCP: "127.0.0.1:1", Interval: time.Second}, rec, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{"a", "a", "b", "b", "a"} {
		chk.record(context.Background(), StatusPassing, out)
	}
	var outs []string
	for _, u := range rec.all() {
		outs = append(outs, u.Output)
	}
	if got := strings.Join(outs, ","); got != "a,b,a" {
		t.Fatalf("reported outputs %q, want a,b,a", got)
	}
}

func TestTruncate(t *testing.T) {
	cases := []struct {
		in    string
		limit int
		want  string
	}{
		{"hello", 10, "hello"},
		{"hello", 5, "hello"},
		{"hello", 3, "hel"},
		{"héllo", 2, "h"}, // é is 2 bytes: never split it
		{"héllo", 3, "hé"},
		{"日本", 4, "日"},
		{"日本", 2, ""},
		{"abc", 0, ""},
	}
	for _, tc := range cases {
		got := truncate(tc.in, tc.limit)
		if got != tc.want || len(got) > tc.limit || !utf8.ValidString(got) {
			t.Errorf("truncate(%q, %d) = %q, want %q", tc.in, tc.limit, got, tc.want)
		}
	}
}

// TestScheduleFollowsClock checks the stagger and the interval against an
// injected clock: no probe happens before its timer fires.
func TestScheduleFollowsClock(t *testing.T) {
	leakCheck(t)
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	t.Cleanup(srv.Close)

	clk := newClock()
	opts := Options{Clock: clk, Stagger: func(iv time.Duration) time.Duration { return iv / 4 }}
	_, rec := startCheck(t, Definition{CheckID: "web", HTTP: srv.URL, Interval: 10 * time.Second}, opts)

	// The first probe waits for the stagger, 2.5s.
	waitArmed(t, clk, 1)
	clk.Advance(2499 * time.Millisecond)
	if clk.Pending() != 1 || hits.Load() != 0 {
		t.Fatalf("probed before the stagger elapsed (hits %d)", hits.Load())
	}
	clk.Advance(time.Millisecond)
	rec.waitStatus(t, StatusPassing)
	if hits.Load() != 1 {
		t.Fatalf("hits %d after first probe", hits.Load())
	}
	// The next one waits for the interval, 10s.
	waitArmed(t, clk, 1)
	clk.Advance(10*time.Second - time.Millisecond)
	if clk.Pending() != 1 || hits.Load() != 1 {
		t.Fatalf("probed before the interval elapsed (hits %d)", hits.Load())
	}
	clk.Advance(time.Millisecond)
	wait.For(t, waitTimeout, func() error {
		if n := hits.Load(); n != 2 {
			return fmt.Errorf("hits %d after the second interval, want 2", n)
		}
		return nil
	})

	// A stagger beyond the interval is clamped into it.
	clk2 := newClock()
	opts.Clock = clk2
	opts.Stagger = func(time.Duration) time.Duration { return time.Hour }
	_, rec2 := startCheck(t, Definition{CheckID: "web2", HTTP: srv.URL, Interval: 10 * time.Second}, opts)
	waitArmed(t, clk2, 1)
	clk2.Advance(10*time.Second - time.Nanosecond)
	rec2.waitStatus(t, StatusPassing)
}

func TestDefaultStaggerWithinInterval(t *testing.T) {
	for range 1000 {
		if d := randomStagger(time.Second); d < 0 || d >= time.Second {
			t.Fatalf("randomStagger(1s) = %s", d)
		}
	}
}

// TestOnlyChangesAreReported probes a steady target many times and expects
// one update.
func TestOnlyChangesAreReported(t *testing.T) {
	leakCheck(t)
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Write([]byte("steady"))
	}))
	t.Cleanup(srv.Close)
	opts := testOptions()
	_, rec := startCheck(t, Definition{CheckID: "web", HTTP: srv.URL, Interval: 10 * time.Second}, opts)
	rec.waitStatus(t, StatusPassing)
	// A probe's result is recorded before the next probe starts, so by the
	// sixth request five identical results have been recorded.
	advanceUntil(t, fakeClock(t, opts), 10*time.Second, "six probes", func() bool { return hits.Load() >= 6 })
	if n := len(rec.all()); n != 1 {
		t.Fatalf("%d updates for a steady target, want 1: %v", n, rec.all())
	}
}

func TestStartStopIdempotent(t *testing.T) {
	leakCheck(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	rec := newRecorder()
	c, err := New(Definition{CheckID: "tcp", TCP: ln.Addr().String(), Interval: 10 * time.Millisecond}, rec, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	c.Stop() // before Start: harmless
	c.Start()
	if len(rec.all()) != 0 {
		// Stop before Start ends the check for good.
		t.Fatal("update after Stop")
	}

	c2, rec2 := startCheck(t, Definition{CheckID: "tcp2", TCP: ln.Addr().String(), Interval: 10 * time.Millisecond}, testOptions())
	c2.Start() // second Start: no second goroutine
	rec2.waitStatus(t, StatusPassing)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(c2.Stop)
	}
	wg.Wait()
	c2.Stop()
	n := len(rec2.all())
	c2.Start() // after Stop: no-op
	wait.For(t, waitTimeout, func() error {
		if g := packageGoroutines(); g != nil {
			return fmt.Errorf("goroutines of the stopped check: %v", g)
		}
		return nil
	})
	if len(rec2.all()) != n {
		t.Fatal("update after Stop")
	}
}

// TestStopLeavesNoGoroutine starts many checks and expects the goroutine
// count back at its baseline once they are stopped.
func TestStopLeavesNoGoroutine(t *testing.T) {
	leakCheck(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan struct{})
	go func() { // accept and drop, so the backlog never fills; ends with ln
		defer close(accepted)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conn.Close()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-accepted
	})
	closedAddr := closedAddr(t, "tcp")

	baseline := runtime.NumGoroutine()
	var checks []*Check
	var recs []*recorder
	for i := range 20 {
		addr := ln.Addr().String()
		if i%2 == 1 {
			addr = closedAddr
		}
		rec := newRecorder()
		c, err := New(Definition{CheckID: "c", TCP: addr, Interval: 5 * time.Millisecond}, rec, testOptions())
		if err != nil {
			t.Fatal(err)
		}
		c.Start()
		t.Cleanup(c.Stop)
		checks = append(checks, c)
		recs = append(recs, rec)
	}
	for i, rec := range recs {
		want := StatusPassing
		if i%2 == 1 {
			want = StatusCritical
		}
		rec.waitStatus(t, want)
	}
	for _, c := range checks {
		c.Stop()
	}
	wait.For(t, waitTimeout, func() error {
		if n := runtime.NumGoroutine(); n > baseline {
			return fmt.Errorf("%d goroutines, baseline %d", n, baseline)
		}
		return nil
	})
}
