package server

import (
	"testing"
	"time"
)

func TestCommitTrackerBoundedAndOldestPending(t *testing.T) {
	var c commitTracker
	t0 := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	if _, _, heard := c.oldestPending(func(uint64) bool { return true }); heard {
		t.Fatal("heard before any announcement")
	}
	// Announcements every millisecond for a minute: one mark per granule,
	// never more than the cap.
	for i := range 60_000 {
		c.announce(uint64(i+1), t0.Add(time.Duration(i)*time.Millisecond))
	}
	if n := c.pending(); n > maxCommitMarks {
		t.Fatalf("%d marks kept, want at most %d", n, maxCommitMarks)
	}
	// The FSM has applied up to 30,000 (announced at 29.999s): the oldest
	// pending mark was seen no earlier than that, and never later than the
	// first announcement of anything past it.
	at, behind, heard := c.oldestPending(func(i uint64) bool { return i <= 30_000 })
	if !heard || !behind {
		t.Fatalf("heard %v behind %v, want both", heard, behind)
	}
	if lo, hi := t0.Add(29_990*time.Millisecond), t0.Add(30_000*time.Millisecond); at.Before(lo) || at.After(hi) {
		t.Fatalf("oldest pending seen at %v, want within [%v, %v]", at.Sub(t0), lo.Sub(t0), hi.Sub(t0))
	}
	if _, behind, _ := c.oldestPending(func(uint64) bool { return true }); behind || c.pending() != 0 {
		t.Fatalf("behind %v with %d marks after applying everything", behind, c.pending())
	}
	// An old announcement never goes backwards.
	c.announce(5, t0.Add(time.Hour))
	if c.pending() != 0 {
		t.Fatal("an older commit index was tracked")
	}
}

func TestStreamDelayDrains(t *testing.T) {
	var c commitTracker
	now := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	if d := c.streamDelay(now); d != 0 {
		t.Fatalf("delay %v before any entry", d)
	}
	c.received(now.Add(-3*time.Second), now)
	for _, tc := range []struct {
		after, want time.Duration
	}{{0, 3 * time.Second}, {time.Second, 2 * time.Second}, {5 * time.Second, 0}} {
		if d := c.streamDelay(now.Add(tc.after)); d != tc.want {
			t.Fatalf("delay %v after %v, want %v", d, tc.after, tc.want)
		}
	}
}
