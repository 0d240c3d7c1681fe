package gossip

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestUserEventValidate(t *testing.T) {
	for _, tc := range []struct {
		ev      UserEvent
		wantErr string
	}{
		{UserEvent{Name: "deploy"}, ""},
		{UserEvent{Name: "deploy", NodeFilter: "^web-", ServiceFilter: "api", TagFilter: "v[0-9]+"}, ""},
		{UserEvent{}, "missing name"},
		{UserEvent{Name: "x", TagFilter: "v1"}, "tag filter without service filter"},
		{UserEvent{Name: "x", NodeFilter: "("}, "invalid node filter"},
		{UserEvent{Name: "x", ServiceFilter: "[a-"}, "invalid service filter"},
		{UserEvent{Name: "x", ServiceFilter: "a", TagFilter: "*"}, "invalid tag filter"},
	} {
		err := tc.ev.Validate()
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%+v: unexpected error %v", tc.ev, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%+v: error %v, want one containing %q", tc.ev, err, tc.wantErr)
		}
	}
}

func TestUserEventMatches(t *testing.T) {
	services := map[string][]string{
		"web":   {"v1", "primary"},
		"redis": nil,
	}
	for _, tc := range []struct {
		name string
		ev   UserEvent
		node string
		want bool
	}{
		{"no filters", UserEvent{}, "n1", true},
		{"node matches", UserEvent{NodeFilter: "^n[0-9]$"}, "n1", true},
		{"node unanchored", UserEvent{NodeFilter: "1"}, "n1", true},
		{"node does not match", UserEvent{NodeFilter: "^db"}, "n1", false},
		{"service matches", UserEvent{ServiceFilter: "^web$"}, "n1", true},
		{"service does not match", UserEvent{ServiceFilter: "^api$"}, "n1", false},
		{"tag matches", UserEvent{ServiceFilter: "web", TagFilter: "^prim"}, "n1", true},
		{"tag on another service", UserEvent{ServiceFilter: "redis", TagFilter: "v1"}, "n1", false},
		{"tag does not match", UserEvent{ServiceFilter: "web", TagFilter: "^v2$"}, "n1", false},
		{"node and service", UserEvent{NodeFilter: "n1", ServiceFilter: "redis"}, "n1", true},
		{"node fails, service matches", UserEvent{NodeFilter: "n2", ServiceFilter: "redis"}, "n1", false},
		{"bad expression matches nothing", UserEvent{NodeFilter: "("}, "n1", false},
	} {
		if got := tc.ev.Matches(tc.node, services); got != tc.want {
			t.Errorf("%s: Matches = %v, want %v", tc.name, got, tc.want)
		}
	}
	if (&UserEvent{ServiceFilter: "."}).Matches("n1", nil) {
		t.Error("a service filter matched a member without services")
	}
}

func TestUserEventSeenRing(t *testing.T) {
	u := newUserEvents()
	if !u.firstSight("a") || u.firstSight("a") {
		t.Fatal("first sight of a not reported exactly once")
	}
	// Push "a" out of the ring: it becomes new again.
	for i := 0; i < seenEventIDs; i++ {
		u.firstSight(fmt.Sprintf("id-%d", i))
	}
	if !u.firstSight("a") {
		t.Error("an ID pushed out of the ring is still remembered")
	}
	if len(u.seen) != seenEventIDs {
		t.Errorf("seen holds %d IDs, want %d", len(u.seen), seenEventIDs)
	}
	u.witness(10)
	u.witness(5)
	if got := u.clock.Load(); got != 10 {
		t.Errorf("clock = %d after witnessing 10 and 5, want 10", got)
	}
}

// recvEvents collects what arrives on p's channel within d.
func recvEvents(p *Pool, d time.Duration) []UserEvent {
	var out []UserEvent
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case ev := <-p.UserEvents():
			out = append(out, ev)
		case <-timer.C:
			return out
		}
	}
}

func TestUserEventsSpreadOnce(t *testing.T) {
	a := newPool(t, "a", nil)
	b := newPool(t, "b", nil)
	c := newPool(t, "c", nil)
	for _, p := range []*Pool{b, c} {
		if _, err := p.Join([]string{addr(a)}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "three members everywhere", func() bool {
		return a.NumMembers() == 3 && b.NumMembers() == 3 && c.NumMembers() == 3
	})

	fired, err := a.FireUserEvent(UserEvent{Name: "deploy", Payload: []byte("v2"), NodeFilter: "b|c"})
	if err != nil {
		t.Fatal(err)
	}
	if len(fired.ID) != 36 || fired.Version != userEventVersion || fired.LTime != 1 {
		t.Fatalf("fired event %+v: want a UUID, version %d, LTime 1", fired, userEventVersion)
	}
	for _, p := range []*Pool{a, b, c} {
		// Every member gets it once, the sender too: the filters are
		// the owner's business.
		got := recvEvents(p, 1500*time.Millisecond)
		if len(got) != 1 {
			t.Fatalf("%s received %d events, want 1: %+v", p.cfg.NodeName, len(got), got)
		}
		if got[0].ID != fired.ID || got[0].Name != "deploy" || string(got[0].Payload) != "v2" ||
			got[0].NodeFilter != "b|c" || got[0].LTime != 1 {
			t.Errorf("%s received %+v, want %+v", p.cfg.NodeName, got[0], fired)
		}
	}
	// The receivers witnessed the sender's clock: their next event is later.
	next, err := c.FireUserEvent(UserEvent{Name: "after"})
	if err != nil {
		t.Fatal(err)
	}
	if next.LTime <= fired.LTime {
		t.Errorf("LTime of a later event from another member = %d, want > %d", next.LTime, fired.LTime)
	}
}

func TestFireUserEventLimits(t *testing.T) {
	p := newPool(t, "solo", nil)
	if _, err := p.FireUserEvent(UserEvent{Name: "big", Payload: make([]byte, UserEventSizeLimit)}); !errors.Is(err, ErrUserEventTooLarge) {
		t.Errorf("name+payload over the limit: error %v, want ErrUserEventTooLarge", err)
	}
	if _, err := p.FireUserEvent(UserEvent{Name: "ok", Payload: make([]byte, UserEventSizeLimit-2)}); err != nil {
		t.Errorf("name+payload at the limit: %v", err)
	}
	long := strings.Repeat("x", maxUserEventMsg)
	if _, err := p.FireUserEvent(UserEvent{Name: "f", NodeFilter: long}); !errors.Is(err, ErrUserEventTooLarge) {
		t.Errorf("huge filter: error %v, want ErrUserEventTooLarge", err)
	}
	if _, err := p.FireUserEvent(UserEvent{Name: "f", TagFilter: "x"}); err == nil {
		t.Error("tag filter without service filter accepted")
	}
	// Only the event that was fired reached the owner.
	if got := recvEvents(p, 200*time.Millisecond); len(got) != 1 || got[0].Name != "ok" {
		t.Errorf("delivered %+v, want only the event named ok", got)
	}
}
