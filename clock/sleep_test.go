package clock

import (
	"context"
	"testing"
	"time"
)

// Sleep ends when its context does, long before its duration.
func TestSleepEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		Sleep(ctx, time.Hour)
		close(done)
	}()
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Sleep of an hour did not end with its context")
	}
}
