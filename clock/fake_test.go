package clock

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestFakeTimerFiresOnlyWhenDue(t *testing.T) {
	f := NewFake(epoch)
	tm := f.NewTimer(10 * time.Second)
	f.Advance(9 * time.Second)
	select {
	case <-tm.C():
		t.Fatal("timer fired before it was due")
	default:
	}
	f.Advance(time.Second)
	select {
	case got := <-tm.C():
		if !got.Equal(epoch.Add(10 * time.Second)) {
			t.Fatalf("fired at %v, want %v", got, epoch.Add(10*time.Second))
		}
	default:
		t.Fatal("timer did not fire when due")
	}
	if f.Pending() != 0 {
		t.Fatalf("Pending = %d after the timer fired, want 0", f.Pending())
	}
}

func TestFakeTimerStopAndReset(t *testing.T) {
	f := NewFake(epoch)
	tm := f.NewTimer(time.Second)
	if !tm.Stop() {
		t.Fatal("Stop of an active timer reported false")
	}
	if tm.Stop() {
		t.Fatal("second Stop reported true")
	}
	f.Advance(time.Hour)
	select {
	case <-tm.C():
		t.Fatal("stopped timer fired")
	default:
	}
	tm.Reset(time.Minute)
	f.Advance(time.Minute)
	select {
	case <-tm.C():
	default:
		t.Fatal("reset timer did not fire")
	}
}

func TestFakeTickerDropsMissedTicks(t *testing.T) {
	f := NewFake(epoch)
	tk := f.NewTicker(time.Second)
	defer tk.Stop()
	f.Advance(5 * time.Second) // five ticks, channel holds one
	n := 0
	for {
		select {
		case <-tk.C():
			n++
			continue
		default:
		}
		break
	}
	if n != 1 {
		t.Fatalf("got %d buffered ticks, want 1", n)
	}
	f.Advance(time.Second)
	select {
	case got := <-tk.C():
		if !got.Equal(epoch.Add(6 * time.Second)) {
			t.Fatalf("tick at %v, want %v", got, epoch.Add(6*time.Second))
		}
	default:
		t.Fatal("no tick after another period")
	}
}

func TestFakeAfterFuncAndWaitForPending(t *testing.T) {
	f := NewFake(epoch)
	var fired atomic.Int32
	done := make(chan struct{})
	go func() {
		f.AfterFunc(time.Minute, func() { fired.Add(1); close(done) })
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.WaitForPending(ctx, 1); err != nil {
		t.Fatalf("WaitForPending: %v", err)
	}
	f.Advance(time.Minute)
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("AfterFunc callback did not run")
	}
	if fired.Load() != 1 {
		t.Fatalf("callback ran %d times", fired.Load())
	}
}

func TestFakeOrder(t *testing.T) {
	f := NewFake(epoch)
	a := f.NewTimer(3 * time.Second)
	b := f.NewTimer(1 * time.Second)
	var seenAt []time.Time
	f.AfterFunc(2*time.Second, func() {})
	f.Advance(10 * time.Second)
	seenAt = append(seenAt, <-b.C(), <-a.C())
	if !seenAt[0].Before(seenAt[1]) {
		t.Fatalf("timers fired out of order: %v", seenAt)
	}
	if !f.Now().Equal(epoch.Add(10 * time.Second)) {
		t.Fatalf("Now = %v after Advance", f.Now())
	}
}

func TestRealClock(t *testing.T) {
	c := New()
	start := c.Now()
	tm := c.NewTimer(time.Millisecond)
	<-tm.C()
	if c.Since(start) < time.Millisecond {
		t.Fatal("real timer fired early")
	}
}
