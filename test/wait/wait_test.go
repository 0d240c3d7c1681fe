package wait

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

type fakeTB struct{ failed string }

func (f *fakeTB) Helper()                        {}
func (f *fakeTB) Fatalf(format string, a ...any) { f.failed = fmt.Sprintf(format, a...) }

func TestForSucceedsOnceConditionHolds(t *testing.T) {
	n := 0
	tb := &fakeTB{}
	For(tb, time.Second, func() error {
		n++
		if n < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if tb.failed != "" || n != 3 {
		t.Fatalf("failed=%q calls=%d, want success on the third call", tb.failed, n)
	}
}

func TestForFailsWithLastError(t *testing.T) {
	tb := &fakeTB{}
	For(tb, 20*time.Millisecond, func() error { return errors.New("still 4 members") })
	if tb.failed == "" {
		t.Fatal("For did not fail the test after the deadline")
	}
	if want := "still 4 members"; !strings.Contains(tb.failed, want) {
		t.Fatalf("failure %q does not name the last error %q", tb.failed, want)
	}
}

func TestUntilStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := Until(ctx, time.Hour, func() error { return errors.New("never") })
	if err == nil {
		t.Fatal("Until returned nil for a condition that never holds")
	}
}
