package fault

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// regInput and regOutput are a register operation as porcupine sees it.
type regInput struct {
	Kind   OpKind
	Value  int // written (write, cas)
	Expect int // cas
}

type regOutput struct {
	Value   int  // read
	Swapped bool // cas
	// Unknown: the operation's outcome is unknown (Info). It returns at
	// the end of the history, so it may take effect at any point after
	// its call, or (placed last) not be observed at all.
	Unknown bool
}

// registerModel is one register (a KV key) with read, write and
// compare-and-set. The state is the value; 0 means "no value".
var registerModel = porcupine.Model{
	Init: func() any { return 0 },
	Step: func(state, input, output any) (bool, any) {
		st, in, out := state.(int), input.(regInput), output.(regOutput)
		switch in.Kind {
		case ReadOp:
			return out.Value == st, st
		case WriteOp:
			return true, in.Value
		default: // CASOp
			match := st == in.Expect
			switch {
			case out.Unknown && match:
				return true, in.Value
			case out.Unknown:
				return true, st
			case out.Swapped:
				return match, in.Value
			default:
				return !match, st
			}
		}
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(regInput), output.(regOutput)
		suffix := ""
		if out.Unknown {
			suffix = " (unknown)"
		}
		switch in.Kind {
		case ReadOp:
			return fmt.Sprintf("read() -> %d", out.Value)
		case WriteOp:
			return fmt.Sprintf("write(%d)%s", in.Value, suffix)
		default:
			if out.Unknown {
				return fmt.Sprintf("cas(%d, %d)%s", in.Expect, in.Value, suffix)
			}
			return fmt.Sprintf("cas(%d, %d) -> %v", in.Expect, in.Value, out.Swapped)
		}
	},
	DescribeState: func(state any) string { return fmt.Sprint(state.(int)) },
	DescribeOperationMetadata: func(m any) string {
		if m == nil {
			return ""
		}
		return fmt.Sprint(m)
	},
}

// LinearResult is the verdict of a linearizability check of a register
// history.
type LinearResult struct {
	// Result is porcupine.Ok, Illegal, or Unknown (the check timed out).
	Result porcupine.CheckResult
	// Checked is how many operations the check covered.
	Checked int
	// Key is the first key found not linearizable.
	Key string
	// Counterexample explains where the history of Key cannot be
	// linearized.
	Counterexample string

	info porcupine.LinearizationInfo
}

// CheckLinearizable checks a register history key by key with porcupine.
// Reads count only in the given modes; failed operations are left out and
// operations of unknown outcome return at the end of the history. The
// timeout bounds each key's check.
func CheckLinearizable(ops []KVOp, modes []ReadMode, timeout time.Duration) LinearResult {
	byKey := toPorcupine(ops, modes)
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	res := LinearResult{Result: porcupine.Ok}
	for _, k := range keys {
		h := byKey[k]
		res.Checked += len(h)
		switch porcupine.CheckOperationsTimeout(registerModel, h, timeout) {
		case porcupine.Illegal:
			r, info := porcupine.CheckOperationsVerbose(registerModel, h, timeout)
			if r != porcupine.Illegal {
				// The verbose check timed out first: still a
				// violation, without the details.
				info = porcupine.LinearizationInfo{}
			}
			return LinearResult{Result: porcupine.Illegal, Checked: res.Checked, Key: k, Counterexample: counterexample(k, h, info), info: info}
		case porcupine.Unknown:
			res.Result = porcupine.Unknown
		}
	}
	return res
}

// Visualize writes porcupine's HTML rendering of the failing key's history
// and its longest partial linearizations.
func (r LinearResult) Visualize(path string) error {
	if r.Result != porcupine.Illegal || len(r.info.PartialLinearizations()) == 0 {
		return nil
	}
	if err := porcupine.VisualizePath(registerModel, r.info, path); err != nil {
		return fmt.Errorf("visualize %s: %w", r.Key, err)
	}
	return nil
}

// toPorcupine turns the register history into porcupine operations, one
// list per key.
func toPorcupine(ops []KVOp, modes []ReadMode) map[string][]porcupine.Operation {
	var end int64
	for _, op := range ops {
		end = max(end, op.Return)
	}
	end++
	out := map[string][]porcupine.Operation{}
	for _, op := range ops {
		if op.Result == Fail {
			continue
		}
		in := regInput{Kind: op.Kind, Value: op.Value, Expect: op.Expect}
		var o regOutput
		ret := op.Return
		switch {
		case op.Kind == ReadOp:
			if !slices.Contains(modes, op.Mode) || op.Result != OK {
				continue
			}
			in.Value, o.Value = 0, op.Value
		case op.Result == Info:
			o.Unknown, ret = true, end
		default:
			o.Swapped = op.Swapped
		}
		meta := op.Agent
		if op.Mode != "" {
			meta += " " + string(op.Mode)
		}
		out[op.Key] = append(out[op.Key], porcupine.Operation{
			ClientId: op.Process, Input: in, Call: op.Call, Output: o, Return: ret, Metadata: meta,
		})
	}
	return out
}

// counterexample describes where a key's history stops being linearizable:
// the end of the longest linearizable prefix porcupine found, and the
// first operation to complete that could not be placed after it.
func counterexample(key string, h []porcupine.Operation, info porcupine.LinearizationInfo) string {
	var b strings.Builder
	fmt.Fprintf(&b, "key %s: not linearizable (%d operations)", key, len(h))
	partials := info.PartialLinearizationsOperations()
	if len(partials) == 0 || len(partials[0]) == 0 {
		return b.String()
	}
	longest := partials[0][0]
	for _, p := range partials[0] {
		if len(p) > len(longest) {
			longest = p
		}
	}
	type id struct {
		client    int
		call, ret int64
	}
	placed := map[id]bool{}
	state := registerModel.Init()
	states := make([]any, len(longest))
	for i, op := range longest {
		placed[id{op.ClientId, op.Call, op.Return}] = true
		_, state = registerModel.Step(state, op.Input, op.Output)
		states[i] = state
	}
	fmt.Fprintf(&b, "; the longest linearizable prefix has %d:\n", len(longest))
	from := max(0, len(longest)-6)
	for i := from; i < len(longest); i++ {
		fmt.Fprintf(&b, "    %s  => %v\n", describeOp(longest[i]), states[i])
	}
	var stuck *porcupine.Operation
	for i := range h {
		op := &h[i]
		if placed[id{op.ClientId, op.Call, op.Return}] {
			continue
		}
		if stuck == nil || op.Return < stuck.Return {
			stuck = op
		}
	}
	if stuck != nil {
		fmt.Fprintf(&b, "  no operation can go next; the first one to complete that was not placed:\n    %s  while the register holds %v", describeOp(*stuck), state)
	}
	return b.String()
}

func describeOp(op porcupine.Operation) string {
	return fmt.Sprintf("p%d %s [%s] %s..%s", op.ClientId, registerModel.DescribeOperation(op.Input, op.Output),
		op.Metadata, fmtNanos(op.Call), fmtNanos(op.Return))
}

// fmtNanos renders a history timestamp as seconds since the run started.
func fmtNanos(ns int64) string { return fmt.Sprintf("%.3fs", float64(ns)/1e9) }
