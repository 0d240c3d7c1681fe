package bench

import (
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/exp/trace"
)

// wakeTimeline reads the agent's execution trace of a watchers' wake
// (BENCH_WATCH_PPROF's <prefix>.trace) and returns the agent's side of the
// wake: the PUT's handler -> the view goroutine unblocked by the write ->
// its wake of the parked queries begins -> the first and the last answer
// written (write system calls made from httpapi.writeParked), and on how
// many goroutines the answers were written. It goes by function names, so
// it follows the code it measures (agent/httpapi, agent/viewcache).
func wakeTimeline(file string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	r, err := trace.NewReader(f)
	if err != nil {
		return "", fmt.Errorf("read trace %s: %w", file, err)
	}
	var (
		put, notified, wake, first, last trace.Time
		writes                           int
		writers                          = map[trace.GoID]bool{}
		unblocked                        = map[trace.GoID]trace.Time{}
	)
	for {
		ev, err := r.ReadEvent()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", fmt.Errorf("read trace %s: %w", file, err)
		}
		if ev.Kind() == trace.EventStateTransition {
			if st := ev.StateTransition(); st.Resource.Kind == trace.ResourceGoroutine {
				if from, to := st.Goroutine(); from == trace.GoWaiting && to == trace.GoRunnable {
					unblocked[st.Resource.Goroutine()] = ev.Time()
				}
			}
		}
		stk := ev.Stack()
		if stk == trace.NoStack {
			continue
		}
		switch {
		case put == 0:
			if stackHas(stk, "httpapi.(*Handler).kvPut") {
				put = ev.Time()
			}
		case wake == 0:
			if stackHas(stk, "viewcache.(*Cache).wakeParked") {
				wake = ev.Time()
				notified = unblocked[ev.Goroutine()]
			}
		}
		if wake != 0 && stackHas(stk, "httpapi.writeParked") && stackHas(stk, "syscall.write") {
			if first == 0 {
				first = ev.Time()
			}
			last = ev.Time()
			writes++
			writers[ev.Goroutine()] = true
		}
	}
	if put == 0 || wake == 0 || writes == 0 {
		return "", fmt.Errorf("trace %s: no PUT, wake or answer found", file)
	}
	ms := func(a, b trace.Time) string {
		if a == 0 || b < a {
			return "?"
		}
		return fmt.Sprintf("%.2f", float64(b-a)/1e6)
	}
	return fmt.Sprintf("agent_trace: put->notified_ms=%s notified->wake_ms=%s wake->first_write_ms=%s first->last_write_ms=%s writes=%d writer_goroutines=%d",
		ms(put, notified), ms(notified, wake), ms(wake, first), ms(first, last), writes, len(writers)), nil
}

// stackHas reports whether a frame of s is in a function whose name
// contains name.
func stackHas(s trace.Stack, name string) bool {
	for f := range s.Frames() {
		if strings.Contains(f.Func, name) {
			return true
		}
	}
	return false
}
