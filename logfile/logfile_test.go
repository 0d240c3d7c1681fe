package logfile_test

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tribune-mesh/tribune/clock"
	"github.com/tribune-mesh/tribune/logfile"
)

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func write(t *testing.T, w *logfile.Writer, s string) {
	t.Helper()
	if _, err := w.Write([]byte(s)); err != nil {
		t.Fatalf("write %q: %v", s, err)
	}
}

func TestNames(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ path, want string }{
		{dir + "/", filepath.Join(dir, "consul.log")},
		{filepath.Join(dir, "agent"), filepath.Join(dir, "agent.log")},
		{filepath.Join(dir, "agent.txt"), filepath.Join(dir, "agent.txt")},
		{filepath.Join(dir, "sub", "tribune.log"), filepath.Join(dir, "sub", "tribune.log")},
	} {
		w, err := logfile.New(logfile.Config{Path: tc.path})
		if err != nil {
			t.Fatalf("%s: %v", tc.path, err)
		}
		if w.Path() != tc.want {
			t.Errorf("log_file %q writes %q, want %q", tc.path, w.Path(), tc.want)
		}
		write(t, w, "x\n")
		w.Close()
		if _, err := os.Stat(tc.want); err != nil {
			t.Errorf("%s: %v", tc.want, err)
		}
	}
}

func TestBadConfig(t *testing.T) {
	dir := t.TempDir()
	for _, cfg := range []logfile.Config{
		{},
		{Path: dir + "/a", RotateBytes: -1},
		{Path: dir + "/a", RotateDuration: -time.Second},
		{Path: dir + "/a", MaxFiles: -2},
	} {
		if _, err := logfile.New(cfg); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
}

// Size rotation: a write that would pass the limit goes to a fresh file; a
// line longer than the limit is written whole; the rotated files keep
// their order and only the newest MaxFiles survive.
func TestRotateBySize(t *testing.T) {
	dir := t.TempDir()
	fc := clock.NewFake(time.Unix(1_700_000_000, 0))
	w, err := logfile.New(logfile.Config{Path: filepath.Join(dir, "agent.log"), RotateBytes: 10, MaxFiles: 2, Clock: fc})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	write(t, w, "aaaa\n")        // 5
	write(t, w, "bbbb\n")        // 10: fits exactly
	write(t, w, "cccc\n")        // rotates
	write(t, w, "a long line\n") // 17 > 10: rotates, written whole
	write(t, w, "dd\n")          // rotates (file not empty)
	rotated, err := w.Rotated()
	if err != nil {
		t.Fatal(err)
	}
	if len(rotated) != 2 {
		t.Fatalf("rotated = %v, want the 2 newest", rotated)
	}
	if got := read(t, rotated[0]); got != "cccc\n" {
		t.Errorf("older kept file = %q", got)
	}
	if got := read(t, rotated[1]); got != "a long line\n" {
		t.Errorf("newer kept file = %q", got)
	}
	if got := read(t, w.Path()); got != "dd\n" {
		t.Errorf("active file = %q", got)
	}
}

// Age rotation follows the injected clock; -1 keeps no rotated file; an
// existing file is appended to, and its age counts from the open.
func TestRotateByAge(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "agent.log")
	if err := os.WriteFile(path, []byte("old\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	fc := clock.NewFake(time.Unix(1_700_000_000, 0))
	w, err := logfile.New(logfile.Config{Path: path, RotateDuration: time.Hour, Clock: fc})
	if err != nil {
		t.Fatal(err)
	}
	write(t, w, "one\n")
	fc.Advance(59 * time.Minute)
	write(t, w, "two\n")
	if got := read(t, path); got != "old\none\ntwo\n" {
		t.Fatalf("before an hour: %q", got)
	}
	fc.Advance(time.Minute)
	write(t, w, "three\n")
	rotated, _ := w.Rotated()
	if len(rotated) != 1 || read(t, rotated[0]) != "old\none\ntwo\n" || read(t, path) != "three\n" {
		t.Fatalf("after an hour: rotated %v, active %q", rotated, read(t, path))
	}
	want := filepath.Join(dir, "agent-"+strconv.FormatInt(fc.Now().UnixNano(), 10)+".log")
	if rotated[0] != want {
		t.Errorf("rotated name %q, want %q", rotated[0], want)
	}
	w.Close()
	if _, err := w.Write([]byte("late\n")); !errors.Is(err, os.ErrClosed) {
		t.Errorf("write after close: %v", err)
	}

	// -1: rotated files are deleted at once.
	w, err = logfile.New(logfile.Config{Path: path, RotateDuration: time.Hour, MaxFiles: -1, Clock: fc})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	fc.Advance(2 * time.Hour)
	write(t, w, "four\n")
	if rotated, _ := w.Rotated(); len(rotated) != 0 {
		t.Errorf("max files -1 kept %v", rotated)
	}
	if got := read(t, path); got != "four\n" {
		t.Errorf("active = %q", got)
	}
}

// Concurrent writers never lose or split a line across files.
func TestConcurrentWrites(t *testing.T) {
	dir := t.TempDir()
	w, err := logfile.New(logfile.Config{Path: filepath.Join(dir, "agent.log"), RotateBytes: 256})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				if _, err := w.Write([]byte("0123456789abcdef\n")); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	w.Close()
	rotated, _ := w.Rotated()
	total := 0
	for _, p := range append(rotated, w.Path()) {
		s := read(t, p)
		if len(s) > 256 {
			t.Errorf("%s has %d bytes", p, len(s))
		}
		for _, line := range strings.SplitAfter(s, "\n") {
			if line != "" && line != "0123456789abcdef\n" {
				t.Errorf("%s: torn line %q", p, line)
			}
		}
		total += strings.Count(s, "\n")
	}
	if total != 400 {
		t.Errorf("%d lines, want 400", total)
	}
}
