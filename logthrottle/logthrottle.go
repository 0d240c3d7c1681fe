// Package logthrottle keeps log lines that the network can provoke from
// flooding the log. It wraps an hclog.Logger: a line at or above a level
// (WARN by default) that repeats the same message from the same source
// within a window passes once (or Burst times); the repeats are counted,
// and when the window ends one summary line says how many were suppressed.
// One bad connection or junk gossip packet per second from a peer then
// costs one line per window, not one per packet.
//
// The source of a line is the value of one of its source keys ("remote",
// "from", "addr", ...), with the port dropped, so that a host's many
// connections count as one source; memberlist's standard log lines carry
// it as text ("... from=10.0.0.5:8301"). Numbers in a message are not part
// of its identity ("packet too short (3 bytes)" and "(9 bytes)" are one
// message).
//
// Memory is bounded: at most MaxKeys message+source pairs are tracked;
// past that, lines of new pairs share one overflow pair per level. The package owns
// no goroutine: each window ends in a timer callback of the injected
// clock, and Close stops them and writes the pending summaries.
package logthrottle

import (
	"fmt"
	"io"
	"log"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tribune-mesh/tribune/clock"
)

// Config says what is throttled and how much. Start from DefaultConfig.
type Config struct {
	// Window is how long repeats of a line are counted instead of logged
	// after the line first passes.
	Window time.Duration
	// Burst is how many lines of one message+source pass per window.
	Burst int
	// MinLevel is the lowest level throttled; lines below it always pass.
	MinLevel hclog.Level
	// SourceKeys are the argument keys that name where a line comes from.
	SourceKeys []string
	// MaxKeys bounds the message+source pairs tracked at once.
	MaxKeys int
	// Clock times the windows; nil means the real clock.
	Clock clock.Clock
}

// DefaultConfig returns the defaults: WARN and above, one line per message
// and source per 30 seconds, at most 1024 pairs tracked.
func DefaultConfig() Config {
	return Config{
		Window:     30 * time.Second,
		Burst:      1,
		MinLevel:   hclog.Warn,
		SourceKeys: []string{"remote", "remote_addr", "from", "addr", "source", "client", "peer"},
		MaxKeys:    1024,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Window <= 0 {
		c.Window = d.Window
	}
	if c.Burst <= 0 {
		c.Burst = d.Burst
	}
	if c.MinLevel == hclog.NoLevel {
		c.MinLevel = d.MinLevel
	}
	if c.SourceKeys == nil {
		c.SourceKeys = d.SourceKeys
	}
	if c.MaxKeys <= 0 {
		c.MaxKeys = d.MaxKeys
	}
	if c.Clock == nil {
		c.Clock = clock.New()
	}
	return c
}

// overflowSource and overflowMessage name the pair that lines of new
// pairs share (one per level) once MaxKeys pairs are tracked.
const (
	overflowSource  = "(other sources)"
	overflowMessage = "(other lines past the tracking limit)"
)

// SummaryMessage is the message of the line that closes a window in which
// repeats were suppressed. Its arguments are "message" (the suppressed
// line's), "source", "suppressed" (how many) and "window".
const SummaryMessage = "repeated log lines suppressed"

// key identifies the lines counted together.
type key struct {
	name   string // logger name
	level  hclog.Level
	msg    string // normalised
	source string
}

// window is the state of one key: lines passed and suppressed since it
// opened, and the timer that closes it.
type window struct {
	passed     int
	suppressed int
	msg        string       // the first line's message, for the summary
	logger     hclog.Logger // the logger the first line went to
	timer      clock.Timer
}

// throttle is the state every Logger derived from one New shares.
type throttle struct {
	cfg Config

	mu      sync.Mutex
	closed  bool
	windows map[key]*window
}

// Logger is an hclog.Logger that throttles repeated lines. Loggers derived
// from it (With, Named, ResetNamed) share its counts. It is safe for
// concurrent use.
type Logger struct {
	hclog.Logger
	t *throttle
}

// New wraps inner.
func New(inner hclog.Logger, cfg Config) *Logger {
	return &Logger{Logger: inner, t: &throttle{cfg: cfg.withDefaults(), windows: make(map[key]*window)}}
}

var _ hclog.Logger = (*Logger)(nil)

// Close ends every open window now, writing the summaries of those that
// suppressed lines, and stops throttling: later lines pass unchanged.
func (l *Logger) Close() {
	t := l.t
	t.mu.Lock()
	t.closed = true
	var done []*window
	var keys []key
	for k, w := range t.windows {
		w.timer.Stop()
		done = append(done, w)
		keys = append(keys, k)
	}
	clear(t.windows)
	t.mu.Unlock()
	for i, w := range done {
		t.summarize(keys[i], w)
	}
}

// Tracked returns the number of message+source pairs with an open window.
func (l *Logger) Tracked() int {
	l.t.mu.Lock()
	defer l.t.mu.Unlock()
	return len(l.t.windows)
}

// Log implements hclog.Logger.
func (l *Logger) Log(level hclog.Level, msg string, args ...interface{}) {
	if l.t.admit(l.Logger, level, msg, args) {
		l.Logger.Log(level, msg, args...)
	}
}

// Trace implements hclog.Logger.
func (l *Logger) Trace(msg string, args ...interface{}) { l.Log(hclog.Trace, msg, args...) }

// Debug implements hclog.Logger.
func (l *Logger) Debug(msg string, args ...interface{}) { l.Log(hclog.Debug, msg, args...) }

// Info implements hclog.Logger.
func (l *Logger) Info(msg string, args ...interface{}) { l.Log(hclog.Info, msg, args...) }

// Warn implements hclog.Logger.
func (l *Logger) Warn(msg string, args ...interface{}) { l.Log(hclog.Warn, msg, args...) }

// Error implements hclog.Logger.
func (l *Logger) Error(msg string, args ...interface{}) { l.Log(hclog.Error, msg, args...) }

// With implements hclog.Logger; the result shares l's counts.
func (l *Logger) With(args ...interface{}) hclog.Logger {
	return &Logger{Logger: l.Logger.With(args...), t: l.t}
}

// Named implements hclog.Logger; the result shares l's counts.
func (l *Logger) Named(name string) hclog.Logger {
	return &Logger{Logger: l.Logger.Named(name), t: l.t}
}

// ResetNamed implements hclog.Logger; the result shares l's counts.
func (l *Logger) ResetNamed(name string) hclog.Logger {
	return &Logger{Logger: l.Logger.ResetNamed(name), t: l.t}
}

// StandardLogger implements hclog.Logger: a *log.Logger whose lines go
// through l, and so are throttled (memberlist logs this way).
func (l *Logger) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(l.StandardWriter(opts), "", 0)
}

// StandardWriter implements hclog.Logger: each write is one line logged
// through l, at opts.ForceLevel, else (with opts.InferLevels) at the level
// its "[WARN]"-style prefix names, else at INFO.
func (l *Logger) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	if opts == nil {
		opts = &hclog.StandardLoggerOptions{}
	}
	return &stdWriter{l: l, opts: *opts}
}

type stdWriter struct {
	l    *Logger
	opts hclog.StandardLoggerOptions
}

var levelPrefixes = []struct {
	prefix string
	level  hclog.Level
}{
	{"[TRACE]", hclog.Trace}, {"[DEBUG]", hclog.Debug}, {"[INFO]", hclog.Info},
	{"[WARN]", hclog.Warn}, {"[ERROR]", hclog.Error}, {"[ERR]", hclog.Error},
}

func (w *stdWriter) Write(b []byte) (int, error) {
	msg := strings.TrimRight(string(b), "\r\n")
	level := hclog.Info
	for _, p := range levelPrefixes {
		if rest, ok := strings.CutPrefix(msg, p.prefix); ok {
			msg = strings.TrimLeft(rest, " ")
			if w.opts.InferLevels {
				level = p.level
			}
			break
		}
	}
	if w.opts.ForceLevel != hclog.NoLevel {
		level = w.opts.ForceLevel
	}
	w.l.Log(level, msg)
	return len(b), nil
}

// admit counts one line and reports whether it is to be written.
func (t *throttle) admit(logger hclog.Logger, level hclog.Level, msg string, args []interface{}) bool {
	if level < t.cfg.MinLevel {
		return true
	}
	k := key{name: logger.Name(), level: level, msg: normalize(msg), source: t.source(msg, logger.ImpliedArgs(), args)}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return true
	}
	w := t.windows[k]
	if w == nil && len(t.windows) >= t.cfg.MaxKeys {
		// One pair per level for everything past the limit, so the map
		// stays within MaxKeys plus the number of levels.
		k = key{level: level, source: overflowSource}
		msg = overflowMessage
		w = t.windows[k]
	}
	if w == nil {
		w = &window{msg: msg, logger: logger}
		t.windows[k] = w
		w.timer = t.cfg.Clock.AfterFunc(t.cfg.Window, func() { t.expire(k, w) })
	}
	if w.passed < t.cfg.Burst {
		w.passed++
		return true
	}
	w.suppressed++
	return false
}

// expire closes the window w of k when its timer fires.
func (t *throttle) expire(k key, w *window) {
	t.mu.Lock()
	if t.windows[k] != w {
		t.mu.Unlock()
		return // closed by Close
	}
	delete(t.windows, k)
	t.mu.Unlock()
	t.summarize(k, w)
}

// summarize writes the summary of a closed window that suppressed lines.
func (t *throttle) summarize(k key, w *window) {
	if w.suppressed == 0 {
		return
	}
	w.logger.Log(k.level, SummaryMessage, "message", w.msg, "source", k.source,
		"suppressed", w.suppressed, "window", t.cfg.Window)
}

// source returns where a line comes from: the first source key among its
// arguments (the call's, then the implied ones), else a "from=" word in
// its text, else "". A host:port is reduced to its host.
func (t *throttle) source(msg string, implied, args []interface{}) string {
	for _, list := range [][]interface{}{args, implied} {
		for i := 0; i+1 < len(list); i += 2 {
			name, ok := list[i].(string)
			if !ok {
				continue
			}
			for _, sk := range t.cfg.SourceKeys {
				if name == sk {
					return hostOf(fmt.Sprint(list[i+1]))
				}
			}
		}
	}
	if _, rest, ok := strings.Cut(msg, "from="); ok {
		if i := strings.IndexAny(rest, " \t,;"); i >= 0 {
			rest = rest[:i]
		}
		return hostOf(rest)
	}
	return ""
}

// hostOf drops the port of a host:port.
func hostOf(s string) string {
	if h, _, err := net.SplitHostPort(s); err == nil {
		return h
	}
	return s
}

// normalize returns the identity of a message: its text without the
// "from=" word (the source is kept apart) and with every run of digits
// written as one "#".
func normalize(msg string) string {
	if before, rest, ok := strings.Cut(msg, "from="); ok {
		if i := strings.IndexAny(rest, " \t,;"); i >= 0 {
			msg = before + rest[i:]
		} else {
			msg = before
		}
	}
	var b strings.Builder
	b.Grow(len(msg))
	digits := false
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c >= '0' && c <= '9' {
			if !digits {
				b.WriteByte('#')
			}
			digits = true
			continue
		}
		digits = false
		b.WriteByte(c)
	}
	return strings.TrimSpace(b.String())
}
