package checks

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// aliasFeed is an AliasSource fed by the test: each value sent on statuses
// is passed to fn, and "fail" makes Watch return an error.
type aliasFeed struct {
	statuses chan string

	mu    sync.Mutex
	calls []string // "node/service" of every Watch call
}

func (f *aliasFeed) Watch(ctx context.Context, node, serviceID string, fn func(string)) error {
	f.mu.Lock()
	f.calls = append(f.calls, node+"/"+serviceID)
	f.mu.Unlock()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case s := <-f.statuses:
			if s == "fail" {
				return errors.New("servers unreachable")
			}
			fn(s)
		}
	}
}

func (f *aliasFeed) numCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

func TestAlias(t *testing.T) {
	leakCheck(t)
	feed := &aliasFeed{statuses: make(chan string)}
	clk := newClock()
	opts := Options{AliasSource: feed, Clock: clk}
	_, rec := startCheck(t, Definition{CheckID: "web-alias", AliasNode: "node-2", AliasService: "web"}, opts)

	feed.statuses <- StatusPassing
	if u := rec.waitStatus(t, StatusPassing); !strings.Contains(u.Output, `service "web" on node "node-2"`) {
		t.Fatalf("output %q", u.Output)
	}
	feed.statuses <- StatusWarning
	rec.waitStatus(t, StatusWarning)
	feed.statuses <- StatusCritical
	rec.waitStatus(t, StatusCritical)
	feed.statuses <- StatusPassing
	rec.waitStatus(t, StatusPassing)
	feed.statuses <- "bogus"
	if u := rec.waitStatus(t, StatusCritical); !strings.Contains(u.Output, `unknown status "bogus"`) {
		t.Fatalf("output %q", u.Output)
	}

	// A failed watch is critical and retried after AliasRetryWait.
	feed.statuses <- StatusPassing
	rec.waitStatus(t, StatusPassing)
	feed.statuses <- "fail"
	if u := rec.waitStatus(t, StatusCritical); !strings.Contains(u.Output, "servers unreachable") {
		t.Fatalf("output %q", u.Output)
	}
	waitArmed(t, clk, 1)
	clk.Advance(AliasRetryWait - time.Millisecond)
	if feed.numCalls() != 1 || clk.Pending() != 1 {
		t.Fatalf("watched again before the retry wait")
	}
	clk.Advance(time.Millisecond)
	feed.statuses <- StatusPassing // received by the second Watch
	rec.waitStatus(t, StatusPassing)
	feed.mu.Lock()
	got := append([]string(nil), feed.calls...)
	feed.mu.Unlock()
	if len(got) != 2 || got[0] != "node-2/web" || got[1] != "node-2/web" {
		t.Fatalf("Watch calls %v", got)
	}
}

func TestAliasLocalServiceStop(t *testing.T) {
	leakCheck(t)
	feed := &aliasFeed{statuses: make(chan string)}
	c, rec := startCheck(t, Definition{CheckID: "a", AliasService: "db"}, Options{AliasSource: feed})
	feed.statuses <- StatusCritical
	if u := rec.waitStatus(t, StatusCritical); u.Output != `Checks of service "db" are critical` {
		t.Fatalf("output %q", u.Output)
	}
	c.Stop()
	c.Stop()
	// Stop has waited for Watch to return, so nobody receives any more.
	select {
	case feed.statuses <- StatusPassing:
		t.Fatal("Watch still running after Stop")
	default:
	}
	if n := len(rec.all()); n != 1 {
		t.Fatalf("%d updates", n)
	}
}
