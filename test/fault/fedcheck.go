package fault

import (
	"fmt"
	"slices"
	"strconv"
	"time"
)

// OneWriterVerdict is the one-writer checker's verdict on the global
// state's history.
type OneWriterVerdict struct {
	Valid bool
	// Writes is how many writes were made; ViaSecondary how many of them
	// went through dc2 and were acknowledged.
	Writes, ViaSecondary int
	// SecondaryReads counts the objects read in dc2.
	SecondaryReads int
	// CutWrites is how many writes through dc2 ran entirely inside a WAN
	// cut; each must fail with an answer, the slowest in MaxCutFail.
	CutWrites  int
	MaxCutFail time.Duration
	Problems   []string
}

// CheckOneWriter checks that dc2 never shows global state that dc1 did not
// commit: every version read in dc2 is one that a write through dc1 was
// acknowledged for or may have committed, or that a read of dc1 showed; a
// write acknowledged through dc2 is in dc1 when the writer reads dc1 right
// after it (Check);
// and that writes through dc2 while the WAN was cut (cuts) failed with an
// error, none acknowledged (it could only have been written in dc2) and
// none left hanging until the client gave up. Versions are unique, so a
// version names one write; one version at two ModifyIndexes in dc1 would
// be one write applied twice.
func CheckOneWriter(writes []GlobalWrite, reads []GlobalRead, cuts []Window) OneWriterVerdict {
	v := OneWriterVerdict{Writes: len(writes)}
	problem := func(format string, args ...any) {
		if len(v.Problems) < 10 {
			v.Problems = append(v.Problems, fmt.Sprintf(format, args...))
		}
	}
	written := map[string]GlobalWrite{}
	committed := map[string]bool{}
	for _, w := range writes {
		written[w.Version] = w
		// A write acknowledged through dc2 counts only once a read of
		// dc1 shows it: dc2 could have applied it itself.
		if w.Via == primaryDC && w.Result != Fail {
			committed[w.Version] = true
		}
		if w.Via != primaryDC && w.Result == OK {
			v.ViaSecondary++
		}
		if w.Via == primaryDC || !inWindow(cuts, w.Call, w.Return) {
			continue
		}
		v.CutWrites++
		switch {
		case w.Result == OK:
			problem("%s version %s written through %s (%s) was acknowledged at %s while the WAN was cut: it cannot have reached the primary",
				w.Object, w.Version, w.Agent, w.Via, fmtNanos(w.Return))
		case isTimeout(w.Error):
			problem("%s version %s written through %s during the WAN cut did not fail cleanly: no answer after %v (%s)",
				w.Object, w.Version, w.Agent, time.Duration(w.Return-w.Call).Round(time.Millisecond), w.Error)
		default:
			v.MaxCutFail = max(v.MaxCutFail, time.Duration(w.Return-w.Call))
		}
	}
	primaryIndex := map[string]uint64{}
	for _, r := range reads {
		if r.DC != primaryDC || r.Version == "" {
			continue
		}
		w, ok := written[r.Version]
		if !ok || w.Object != r.Object {
			problem("%s read at %s through %s shows %s version %q, which no write wrote", primaryDC, fmtNanos(r.Call), r.Agent, r.Object, r.Version)
			continue
		}
		committed[r.Version] = true
		if idx, ok := primaryIndex[r.Version]; ok && idx != r.Index && r.Index != 0 {
			problem("%s version %s is at ModifyIndex %d and %d in %s: one write applied twice", r.Object, r.Version, idx, r.Index, primaryDC)
		} else if !ok {
			primaryIndex[r.Version] = r.Index
		}
	}
	for _, r := range reads {
		w, ok := written[r.Check]
		if r.Check == "" || !ok || r.Object != w.Object || w.Result != OK || w.Via == primaryDC {
			continue
		}
		if r.Version != w.Version {
			problem("%s version %s was acknowledged through %s (%s) at %s, but %s's ?consistent read right after shows %q: it was not written by the primary",
				w.Object, w.Version, w.Agent, w.Via, fmtNanos(w.Return), primaryDC, r.Version)
		}
	}
	for _, r := range reads {
		if r.DC == primaryDC {
			continue
		}
		v.SecondaryReads++
		if r.Version == "" {
			continue
		}
		w, ok := written[r.Version]
		switch {
		case !ok || w.Object != r.Object:
			problem("%s read at %s through %s shows %s version %q, which no write wrote", r.DC, fmtNanos(r.Call), r.Agent, r.Object, r.Version)
		case !committed[r.Version]:
			problem("%s read at %s through %s shows %s version %s, which %s never committed (written through %s via %s: %s %s)",
				r.DC, fmtNanos(r.Call), r.Agent, r.Object, r.Version, primaryDC, w.Agent, w.Via, w.Result, w.Error)
		}
	}
	v.Valid = len(v.Problems) == 0
	return v
}

// CheckCrossDC checks that every read of the register of datacenter dc
// (reg's clients, many of them in the other datacenter with ?dc=) returned
// that datacenter's data: no value, or a value its register wrote (in
// [base, base+valueSpan)). A value of another datacenter's register means
// a request went to the wrong datacenter.
func CheckCrossDC(ops []KVOp, dc string, base int) []string {
	var out []string
	for _, op := range ops {
		if op.Kind != ReadOp || op.Result != OK || op.Value == 0 || (op.Value >= base && op.Value < base+valueSpan) {
			continue
		}
		if len(out) < 5 {
			out = append(out, fmt.Sprintf("%s read of %s's %s through %s at %s returned %d, another datacenter's value",
				op.Mode, dc, op.Key, op.Agent, fmtNanos(op.Call), op.Value))
		}
	}
	return out
}

// valueSpan is how many values each datacenter's register may write.
const valueSpan = 1_000_000

// FailoverVerdict is the prepared-query failover checker's verdict.
type FailoverVerdict struct {
	Valid bool
	// Execs is how many executions answered; Failedover how many of them
	// answered with dc1's instance, Empty with nothing, Errors failed.
	Execs, FailedOver, Empty, Errors int
	// Stale counts answers older than an update of dc1's instance
	// acknowledged before the execution began (reported, not judged:
	// executions read in the default mode); MaxStale is the largest gap.
	Stale    int
	MaxStale time.Duration
	Problems []string
}

// CheckFailover checks the failover query's answers in dc2, where the
// service's only instance is critical: each answer is empty, an error, or
// dc1's instance (node want) with a version dc1 wrote, answered from
// dc1 (Datacenter) after a failover; and no answer with an instance comes
// from an execution that ran entirely inside a WAN cut, when dc1 could not
// have been asked: that would be old data presented as fresh.
func CheckFailover(execs []FailoverExec, updates []FailoverUpdate, cuts []Window, want string) FailoverVerdict {
	v := FailoverVerdict{}
	problem := func(format string, args ...any) {
		if len(v.Problems) < 10 {
			v.Problems = append(v.Problems, fmt.Sprintf(format, args...))
		}
	}
	written := map[string]FailoverUpdate{}
	for _, u := range updates {
		if u.Result != Fail {
			written[u.Version] = u
		}
	}
	for _, e := range execs {
		if e.Result != OK {
			v.Errors++
			continue
		}
		v.Execs++
		if len(e.Nodes) == 0 {
			v.Empty++
			continue
		}
		v.FailedOver++
		if e.Datacenter != primaryDC || e.Failovers < 1 {
			problem("execution through %s at %s answered %v from datacenter %q after %d failovers, want %s after a failover",
				e.Agent, fmtNanos(e.Call), e.Nodes, e.Datacenter, e.Failovers, primaryDC)
		}
		if inWindow(cuts, e.Call, e.Return) {
			problem("execution through %s at %s-%s answered %v (version %v) while the WAN was cut: old data presented as fresh",
				e.Agent, fmtNanos(e.Call), fmtNanos(e.Return), e.Nodes, e.Versions)
		}
		for i, n := range e.Nodes {
			if n != want {
				problem("execution through %s at %s answered node %s, want only %s (dc2's instance is critical)", e.Agent, fmtNanos(e.Call), n, want)
				continue
			}
			u, ok := written[e.Versions[i]]
			if !ok {
				problem("execution through %s at %s answered version %q of %s, which no update wrote", e.Agent, fmtNanos(e.Call), e.Versions[i], n)
				continue
			}
			got, _ := strconv.Atoi(u.Version)
			for _, later := range updates {
				lv, _ := strconv.Atoi(later.Version)
				if later.Result == OK && lv > got && later.Return < e.Call {
					v.Stale++
					v.MaxStale = max(v.MaxStale, time.Duration(e.Call-later.Return))
					break
				}
			}
		}
	}
	v.Valid = len(v.Problems) == 0
	return v
}

// ReplicationLag measures, for every write acknowledged through dc1, how
// long after its acknowledgement a read of dc2 first showed it or a later
// version of the object (faults included; bounded below by the readers'
// pace). It returns "" without such writes.
func ReplicationLag(writes []GlobalWrite, reads []GlobalRead) string {
	var lags []time.Duration
	missed := 0
	for _, w := range writes {
		if w.Result != OK || w.Via != primaryDC {
			continue
		}
		wv, _ := strconv.Atoi(w.Version)
		found := false
		for _, r := range reads {
			rv, err := strconv.Atoi(r.Version)
			if r.DC == primaryDC || r.Object != w.Object || r.Call < w.Return || err != nil || rv < wv {
				continue
			}
			lags = append(lags, time.Duration(r.Return-w.Return))
			found = true
			break
		}
		if !found {
			missed++
		}
	}
	if len(lags) == 0 {
		return ""
	}
	slices.Sort(lags)
	q := func(p float64) time.Duration { return lags[int(p*float64(len(lags)-1))].Round(time.Millisecond) }
	return fmt.Sprintf("replication to dc2 seen by its readers: %d writes through dc1, median %v, p99 %v, max %v (%d never seen before the run ended)",
		len(lags), q(0.5), q(0.99), lags[len(lags)-1].Round(time.Millisecond), missed)
}
