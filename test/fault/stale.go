package fault

import (
	"fmt"
	"time"
)

// Staleness summarises how stale the completed reads of one mode were.
type Staleness struct {
	Mode ReadMode
	// Reads is how many reads completed.
	Reads int
	// Stale is how many returned a value older than a write that was
	// acknowledged before the read was invoked.
	Stale int
	// Max is the largest staleness: the read's invocation minus the
	// acknowledgement of the earliest acknowledged write it missed.
	Max time.Duration
	// Worst describes the stalest read.
	Worst string
}

func (s Staleness) String() string {
	out := fmt.Sprintf("%s reads: %d/%d stale, max %v", s.Mode, s.Stale, s.Reads, s.Max.Round(time.Millisecond))
	if s.Worst != "" {
		out += " (" + s.Worst + ")"
	}
	return out
}

// MeasureStaleness measures, for each of the given read modes, the reads that returned a value
// older than the latest write acknowledged before they were invoked.
//
// "Older" is decided by the ModifyIndex when both values were seen by some
// read (every read returns the index of its value), else by real time: a
// write invoked after the write of the value read had been acknowledged.
// Both only ever count reads that no linearizable read could return.
func MeasureStaleness(ops []KVOp, modes ...ReadMode) []Staleness {
	type ack struct {
		value         int
		call, returns int64
		agent         string
	}
	acked := map[string][]ack{}  // key -> acknowledged writes
	wrote := map[[2]int]int64{}  // {key id, value} -> ack time of its write
	index := map[[2]int]uint64{} // {key id, value} -> ModifyIndex seen
	keyID := map[string]int{}
	id := func(k string) int {
		if n, ok := keyID[k]; ok {
			return n
		}
		keyID[k] = len(keyID)
		return keyID[k]
	}
	for _, op := range ops {
		k := id(op.Key)
		switch {
		case op.Result != OK:
		case op.Kind == ReadOp && op.Value != 0:
			index[[2]int{k, op.Value}] = op.Index
		case op.Kind == WriteOp || (op.Kind == CASOp && op.Swapped):
			acked[op.Key] = append(acked[op.Key], ack{op.Value, op.Call, op.Return, op.Agent})
			wrote[[2]int{k, op.Value}] = op.Return
		}
	}
	newer := func(k int, w ack, v int) bool {
		if v == 0 {
			return true // nothing deletes: any acknowledged write is newer
		}
		iw, okw := index[[2]int{k, w.value}]
		iv, okv := index[[2]int{k, v}]
		if okw && okv {
			return iw > iv
		}
		ret, ok := wrote[[2]int{k, v}]
		return ok && w.call > ret
	}
	var out []Staleness
	for _, mode := range modes {
		s := Staleness{Mode: mode}
		for _, r := range ops {
			if r.Kind != ReadOp || r.Mode != mode || r.Result != OK {
				continue
			}
			s.Reads++
			k := id(r.Key)
			var first *ack
			for i, w := range acked[r.Key] {
				if w.returns < r.Call && w.value != r.Value && newer(k, w, r.Value) && (first == nil || w.returns < first.returns) {
					first = &acked[r.Key][i]
				}
			}
			if first == nil {
				continue
			}
			s.Stale++
			if d := time.Duration(r.Call - first.returns); d > s.Max {
				s.Max = d
				s.Worst = fmt.Sprintf("%s via %s at %s read %d (index %d), missing write %d acknowledged via %s at %s; the answer claimed LastContact=%v KnownLeader=%v",
					r.Key, r.Agent, fmtNanos(r.Call), r.Value, r.Index, first.value, first.agent, fmtNanos(first.returns), r.LastContact, r.KnownLeader)
			}
		}
		out = append(out, s)
	}
	return out
}
