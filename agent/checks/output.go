package checks

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
	"unicode/utf8"
)

// truncate returns s cut to at most limit bytes. A multi-byte character split
// by the cut is dropped whole, so valid UTF-8 stays valid.
func truncate(s string, limit int) string {
	if len(s) <= limit {
		return s
	}
	s = s[:limit]
	i := len(s) - 1
	for i > 0 && i > len(s)-utf8.UTFMax && !utf8.RuneStart(s[i]) {
		i--
	}
	if i >= 0 && !utf8.FullRuneInString(s[i:]) {
		s = s[:i]
	}
	return s
}

// cappedBuffer keeps the first max bytes written to it and discards the
// rest while still reporting every write as complete, so a chatty script is
// not killed by a broken pipe and cannot grow the agent's memory.
type cappedBuffer struct {
	max int

	mu  sync.Mutex
	buf []byte
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.max - len(b.buf); room > 0 {
		b.buf = append(b.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (b *cappedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// failure formats the output of a failed probe, saying plainly when the
// probe ran out of time rather than showing the error the cancellation
// happened to surface as.
func failure(ctx context.Context, prefix string, err error, timeout time.Duration) string {
	// A socket deadline copied from ctx can expire a moment before ctx
	// itself reports it, so the error counts as well.
	if errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Sprintf("%s: timed out after %s", prefix, timeout)
	}
	return fmt.Sprintf("%s: %v", prefix, err)
}

// checkTLSConfig returns a clone of base (or a new config) with a check's
// own verification settings applied.
func checkTLSConfig(base *tls.Config, skipVerify bool, serverName string) *tls.Config {
	cfg := &tls.Config{}
	if base != nil {
		cfg = base.Clone()
	}
	if skipVerify {
		cfg.InsecureSkipVerify = true
	}
	if serverName != "" {
		cfg.ServerName = serverName
	}
	return cfg
}
