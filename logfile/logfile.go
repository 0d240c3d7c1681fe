// Package logfile is the agent's log file (log_file) with Consul's rotation
// rules: the active file is <name>.log; it is rotated by size
// (log_rotate_bytes) and by age (log_rotate_duration) into
// <name>-<unix nanoseconds>.log, and only the newest log_rotate_max_files
// rotated files are kept.
//
// Rotation is decided at write time from an injected clock, so the writer
// needs no goroutine or timer of its own and tests drive it with a fake
// clock. It owns only the files it names; it must not log (it is the log).
package logfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tribune-mesh/tribune/clock"
)

// Defaults, as Consul's.
const (
	// DefaultName is the file name when the path names a directory.
	DefaultName = "consul"
	// DefaultRotateDuration is log_rotate_duration's default.
	DefaultRotateDuration = 24 * time.Hour
)

// Config says where the log goes and when it rotates.
type Config struct {
	// Path is log_file: a file path, or a directory when it ends in a
	// path separator (the file is then consul.log in it). A name without
	// an extension gets ".log".
	Path string
	// RotateBytes rotates the file before a write would take it past this
	// size; 0 never rotates by size.
	RotateBytes int64
	// RotateDuration rotates the file once it is this old; 0 never
	// rotates by age.
	RotateDuration time.Duration
	// MaxFiles is how many rotated files are kept: 0 keeps every one, -1
	// none (each rotation deletes the file it rotated).
	MaxFiles int
	// Clock decides rotation by age; the real clock when nil.
	Clock clock.Clock
}

// Writer is an io.Writer onto the rotating log file, safe for concurrent
// use. A write error is returned to the caller (hclog drops it); after a
// failed rotation the next write tries to open the file again.
type Writer struct {
	dir, base, ext string
	maxBytes       int64
	maxAge         time.Duration
	maxFiles       int
	clock          clock.Clock

	mu       sync.Mutex
	f        *os.File
	size     int64
	openedAt time.Time
	closed   bool
}

// New opens (appending) or creates the log file.
func New(cfg Config) (*Writer, error) {
	if cfg.Path == "" {
		return nil, errors.New("log_file: empty path")
	}
	if cfg.RotateBytes < 0 {
		return nil, fmt.Errorf("log_rotate_bytes: must not be negative, got %d", cfg.RotateBytes)
	}
	if cfg.RotateDuration < 0 {
		return nil, fmt.Errorf("log_rotate_duration: must not be negative, got %s", cfg.RotateDuration)
	}
	if cfg.MaxFiles < -1 {
		return nil, fmt.Errorf("log_rotate_max_files: must be -1 or more, got %d", cfg.MaxFiles)
	}
	dir, name := filepath.Split(cfg.Path)
	if name == "" {
		name = DefaultName
	}
	ext := filepath.Ext(name)
	if ext == "" {
		ext = ".log"
	}
	w := &Writer{
		dir: dir, base: strings.TrimSuffix(name, filepath.Ext(name)), ext: ext,
		maxBytes: cfg.RotateBytes, maxAge: cfg.RotateDuration, maxFiles: cfg.MaxFiles, clock: cfg.Clock,
	}
	if w.clock == nil {
		w.clock = clock.New()
	}
	if w.dir == "" {
		w.dir = "."
	}
	if err := os.MkdirAll(w.dir, 0o755); err != nil {
		return nil, fmt.Errorf("log_file: %w", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.openLocked(); err != nil {
		return nil, err
	}
	return w, nil
}

// Path is the active file's path.
func (w *Writer) Path() string { return filepath.Join(w.dir, w.base+w.ext) }

func (w *Writer) openLocked() error {
	f, err := os.OpenFile(w.Path(), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o640)
	if err != nil {
		return fmt.Errorf("open log file: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("open log file: %w", err)
	}
	w.f, w.size, w.openedAt = f, st.Size(), w.clock.Now()
	return nil
}

// Write appends p, rotating first when p would take the file past
// RotateBytes (unless the file is empty: a line longer than the limit is
// written whole) or when the file is older than RotateDuration.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return 0, fmt.Errorf("write log file: %w", os.ErrClosed)
	}
	if w.f == nil {
		// A failed rotation left no file open: try again.
		if err := w.openLocked(); err != nil {
			return 0, err
		}
	}
	bySize := w.maxBytes > 0 && w.size > 0 && w.size+int64(len(p)) > w.maxBytes
	byAge := w.maxAge > 0 && !w.clock.Now().Before(w.openedAt.Add(w.maxAge))
	if bySize || byAge {
		if err := w.rotateLocked(); err != nil {
			return 0, err
		}
	}
	n, err := w.f.Write(p)
	w.size += int64(n)
	if err != nil {
		return n, fmt.Errorf("write log file: %w", err)
	}
	return n, nil
}

// rotateLocked closes the active file, renames it with the rotation time,
// opens a fresh one and prunes the rotated files beyond MaxFiles.
func (w *Writer) rotateLocked() error {
	if err := w.f.Close(); err != nil {
		w.f = nil
		return fmt.Errorf("close log file: %w", err)
	}
	w.f = nil
	now := w.clock.Now().UnixNano()
	var target string
	for i := 0; ; i++ {
		// A fake clock (or a coarse one) can rotate twice in the same
		// nanosecond: the next free name keeps both.
		target = filepath.Join(w.dir, fmt.Sprintf("%s-%d%s", w.base, now+int64(i), w.ext))
		if _, err := os.Lstat(target); errors.Is(err, os.ErrNotExist) {
			break
		}
	}
	if err := os.Rename(w.Path(), target); err != nil {
		return fmt.Errorf("rotate log file: %w", err)
	}
	if err := w.openLocked(); err != nil {
		return err
	}
	return w.pruneLocked()
}

// Rotated lists the rotated files, oldest first.
func (w *Writer) Rotated() ([]string, error) {
	entries, err := os.ReadDir(w.dir)
	if err != nil {
		return nil, fmt.Errorf("list log files: %w", err)
	}
	type rotated struct {
		path string
		at   int64
	}
	var found []rotated
	prefix := w.base + "-"
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasPrefix(name, prefix) || !strings.HasSuffix(name, w.ext) {
			continue
		}
		at, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(name, prefix), w.ext), 10, 64)
		if err != nil {
			continue // not one of ours
		}
		found = append(found, rotated{filepath.Join(w.dir, name), at})
	}
	sort.Slice(found, func(i, j int) bool { return found[i].at < found[j].at })
	out := make([]string, len(found))
	for i, r := range found {
		out[i] = r.path
	}
	return out, nil
}

func (w *Writer) pruneLocked() error {
	if w.maxFiles == 0 {
		return nil
	}
	keep := max(w.maxFiles, 0)
	files, err := w.Rotated()
	if err != nil {
		return err
	}
	for len(files) > keep {
		if err := os.Remove(files[0]); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove old log file: %w", err)
		}
		files = files[1:]
	}
	return nil
}

// Close closes the active file; later writes fail with os.ErrClosed.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	if err != nil {
		return fmt.Errorf("close log file: %w", err)
	}
	return nil
}
