package fault

import (
	"encoding/json"
	"fmt"
	"sort"

	"github.com/hashicorp/consul/api"
)

// LockVerdict is the lock checker's verdict.
type LockVerdict struct {
	Valid bool
	// Problems lists every violation found, the first one first.
	Problems []string
	// Holds, Acked and Logged count acquisitions, acknowledged appends
	// and entries in the final log.
	Holds, Acked, Logged int
}

// CheckLock checks the lock log read after the faults healed:
//
//   - no acknowledged append is lost: each is in the log with its value;
//   - one holder at a time: in log (Raft) order the fencing tokens
//     (sessions) form runs that never come back, and LockIndex only grows
//     from one run to the next;
//   - in real time: no append of a holder was invoked after the lock's next
//     holder had been told it held the lock (the fence must have refused
//     it).
func CheckLock(holds []Hold, appends []Append, final api.KVPairs) LockVerdict {
	v := LockVerdict{Holds: len(holds), Logged: len(final)}
	byKey := map[string]Append{}
	for _, a := range appends {
		byKey[a.Key] = a
	}
	acquired := map[string]int64{}
	for _, h := range holds {
		acquired[h.Session] = h.Acquired
	}
	logged := map[string]logEntry{}
	entries := append(api.KVPairs(nil), final...)
	sort.Slice(entries, func(i, j int) bool { return entries[i].CreateIndex < entries[j].CreateIndex })
	for _, p := range entries {
		var e logEntry
		if err := json.Unmarshal(p.Value, &e); err != nil {
			v.Problems = append(v.Problems, fmt.Sprintf("log key %s holds %q, not an entry", p.Key, p.Value))
			continue
		}
		logged[p.Key] = e
	}
	for _, a := range appends {
		if a.Result != OK {
			continue
		}
		v.Acked++
		e, ok := logged[a.Key]
		if !ok {
			v.Problems = append(v.Problems, fmt.Sprintf("acknowledged append %s (session %s, acked at %s) is lost", a.Key, a.Session, fmtNanos(a.Return)))
			continue
		}
		if e.Session != a.Session || e.LockIndex != a.LockIndex {
			v.Problems = append(v.Problems, fmt.Sprintf("append %s: logged %+v, acknowledged session %s lock index %d", a.Key, e, a.Session, a.LockIndex))
		}
	}
	var cur logEntry
	var prev []logEntry          // the runs so far, in log order
	ended := map[string]uint64{} // session -> create index of the entry that ended its run
	for _, p := range entries {
		e, ok := logged[p.Key]
		if !ok {
			continue
		}
		if e.Session != cur.Session {
			if at, seen := ended[e.Session]; seen {
				v.Problems = append(v.Problems, fmt.Sprintf("log index %d: session %s appends again after session %s took over at index %d", p.CreateIndex, e.Session, cur.Session, at))
			}
			if cur.Session != "" {
				ended[cur.Session] = p.CreateIndex
				if e.LockIndex <= cur.LockIndex {
					v.Problems = append(v.Problems, fmt.Sprintf("log index %d: LockIndex %d of session %s does not follow %d of session %s", p.CreateIndex, e.LockIndex, e.Session, cur.LockIndex, cur.Session))
				}
			}
			prev = append(prev, e)
			cur = e
		}
	}
	// Real time: every append of a run was invoked before the next run's
	// holder had the lock.
	runOf := map[string]int{}
	for i, e := range prev {
		runOf[e.Session] = i
	}
	for _, p := range entries {
		key := p.Key
		e, ok := logged[key]
		if !ok {
			continue
		}
		i := runOf[e.Session]
		if i+1 >= len(prev) {
			continue
		}
		next := prev[i+1].Session
		a, known := byKey[key]
		at, held := acquired[next]
		if known && held && a.Call > at {
			v.Problems = append(v.Problems, fmt.Sprintf("append %s of session %s was invoked at %s, after session %s acquired the lock at %s, and was applied", key, e.Session, fmtNanos(a.Call), next, fmtNanos(at)))
		}
	}
	v.Valid = len(v.Problems) == 0
	return v
}
