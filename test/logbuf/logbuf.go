// Package logbuf is a log sink for tests: loggers write to a Buffer from
// any goroutine, and the test waits until a line it expects shows up.
package logbuf

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/tribune-mesh/tribune/test/wait"
)

// Buffer collects log output; it is safe for concurrent writers.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write implements io.Writer.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// WaitFor waits up to timeout until the output holds every one of subs on
// one line, and fails the test otherwise.
func (b *Buffer) WaitFor(t wait.TB, timeout time.Duration, subs ...string) {
	t.Helper()
	wait.For(t, timeout, func() error {
		for _, line := range strings.Split(b.String(), "\n") {
			all := true
			for _, s := range subs {
				all = all && strings.Contains(line, s)
			}
			if all {
				return nil
			}
		}
		return fmt.Errorf("no log line with %q", subs)
	})
}
