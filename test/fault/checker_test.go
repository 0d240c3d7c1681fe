package fault

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/hashicorp/consul/api"
)

// Synthetic histories for the checkers: they need no cluster and run
// everywhere. Times are in arbitrary units.

func w(proc, v int, call, ret int64, res Result) KVOp {
	return KVOp{Process: proc, Kind: WriteOp, Key: "k", Value: v, Call: call, Return: ret, Result: res}
}

func rd(proc, v int, call, ret int64, mode ReadMode) KVOp {
	return KVOp{Process: proc, Kind: ReadOp, Mode: mode, Key: "k", Value: v, Index: uint64(v), Call: call, Return: ret, Result: OK}
}

func cas(proc, from, to int, swapped bool, call, ret int64, res Result) KVOp {
	return KVOp{Process: proc, Kind: CASOp, Key: "k", Value: to, Expect: from, Swapped: swapped, Call: call, Return: ret, Result: res}
}

func TestRegisterChecker(t *testing.T) {
	for _, tc := range []struct {
		name string
		ops  []KVOp
		want porcupine.CheckResult
	}{
		{"sequential", []KVOp{w(0, 1, 0, 10, OK), rd(1, 1, 20, 30, Consistent), cas(0, 1, 2, true, 40, 50, OK), rd(1, 2, 60, 70, Consistent)}, porcupine.Ok},
		{"stale read after an acknowledged write", []KVOp{w(0, 1, 0, 10, OK), w(0, 2, 20, 30, OK), rd(1, 1, 40, 50, Consistent)}, porcupine.Illegal},
		{"read of a value never written", []KVOp{w(0, 1, 0, 10, OK), rd(1, 7, 20, 30, Consistent)}, porcupine.Illegal},
		{"concurrent read may see either", []KVOp{w(0, 1, 0, 10, OK), w(0, 2, 20, 50, OK), rd(1, 1, 25, 30, Consistent), rd(2, 2, 26, 31, Consistent)}, porcupine.Ok},
		{"reads must not go back in time", []KVOp{w(0, 1, 0, 10, OK), w(0, 2, 20, 50, OK), rd(1, 2, 25, 30, Consistent), rd(2, 1, 35, 40, Consistent)}, porcupine.Illegal},
		{"unknown write may apply late", []KVOp{w(0, 1, 0, 10, OK), w(1, 2, 20, 25, Info), rd(2, 1, 30, 40, Consistent), rd(2, 2, 100, 110, Consistent)}, porcupine.Ok},
		{"unknown write may never apply", []KVOp{w(0, 1, 0, 10, OK), w(1, 2, 20, 25, Info), rd(2, 1, 100, 110, Consistent)}, porcupine.Ok},
		{"an applied unknown write stays applied", []KVOp{w(0, 1, 0, 10, OK), w(1, 2, 20, 25, Info), rd(2, 2, 30, 40, Consistent), rd(2, 1, 50, 60, Consistent)}, porcupine.Illegal},
		{"failed write has no effect", []KVOp{w(0, 1, 0, 10, OK), w(1, 2, 20, 25, Fail), rd(2, 2, 30, 40, Consistent)}, porcupine.Illegal},
		{"cas false while the value matched", []KVOp{w(0, 1, 0, 10, OK), cas(1, 1, 2, false, 20, 30, OK)}, porcupine.Illegal},
		{"cas true while the value differed", []KVOp{w(0, 1, 0, 10, OK), cas(1, 5, 2, true, 20, 30, OK)}, porcupine.Illegal},
		{"unknown cas", []KVOp{w(0, 1, 0, 10, OK), cas(1, 1, 2, false, 20, 30, Info), rd(2, 2, 40, 50, Consistent)}, porcupine.Ok},
		{"stale-mode reads are not checked", []KVOp{w(0, 1, 0, 10, OK), rd(1, 0, 40, 50, Stale)}, porcupine.Ok},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := CheckLinearizable(tc.ops, []ReadMode{Consistent}, 10*time.Second)
			if res.Result != tc.want {
				t.Fatalf("got %s, want %s\n%s", res.Result, tc.want, res.Counterexample)
			}
			if tc.want == porcupine.Illegal && !strings.Contains(res.Counterexample, "no operation can go next") {
				t.Fatalf("counterexample lacks the stuck operation:\n%s", res.Counterexample)
			}
		})
	}
}

func TestRegisterCheckerVisualizes(t *testing.T) {
	res := CheckLinearizable([]KVOp{w(0, 1, 0, 10, OK), w(0, 2, 20, 30, OK), rd(1, 1, 40, 50, Consistent)}, []ReadMode{Consistent}, 10*time.Second)
	path := t.TempDir() + "/kv.html"
	if err := res.Visualize(path); err != nil {
		t.Fatal(err)
	}
}

func TestMeasureStaleness(t *testing.T) {
	ops := []KVOp{
		w(0, 1, 0, 10, OK),
		rd(1, 0, 5, 6, Stale),     // concurrent with the write: not stale
		rd(1, 0, 40, 50, Stale),   // 30 after the write was acknowledged
		w(0, 2, 60, 70, OK),       // index 2 > 1
		rd(1, 1, 100, 110, Stale), // misses write 2 by 30
		rd(1, 2, 120, 130, Default),
		rd(1, 2, 130, 140, Final),
	}
	got := MeasureStaleness(ops, Stale, Default, Final)
	if got[0].Reads != 3 || got[0].Stale != 2 || got[0].Max != 30 {
		t.Fatalf("stale: %+v", got[0])
	}
	if got[1].Stale != 0 || got[2].Stale != 0 {
		t.Fatalf("default/final: %+v %+v", got[1], got[2])
	}
	// A final read that lost an acknowledged write is what CheckDurable
	// flags.
	lost := append(ops, rd(2, 1, 200, 210, Final))
	if s := MeasureStaleness(lost, Final)[0]; s.Stale != 1 {
		t.Fatalf("lost write not seen: %+v", s)
	}
}

func logPair(key string, idx uint64, session string, lockIndex uint64) *api.KVPair {
	b, _ := json.Marshal(logEntry{Session: session, LockIndex: lockIndex})
	return &api.KVPair{Key: key, Value: b, CreateIndex: idx, ModifyIndex: idx}
}

func TestLockChecker(t *testing.T) {
	holds := []Hold{{Session: "A", LockIndex: 1, Acquired: 0}, {Session: "B", LockIndex: 2, Acquired: 100}}
	appends := []Append{
		{Session: "A", LockIndex: 1, Key: "a1", Call: 10, Return: 20, Result: OK},
		{Session: "A", LockIndex: 1, Key: "a2", Call: 30, Return: 40, Result: OK},
		{Session: "B", LockIndex: 2, Key: "b1", Call: 110, Return: 120, Result: OK},
	}
	good := api.KVPairs{logPair("a1", 5, "A", 1), logPair("a2", 6, "A", 1), logPair("b1", 9, "B", 2)}
	if v := CheckLock(holds, appends, good); !v.Valid {
		t.Fatalf("good history: %v", v.Problems)
	}
	for name, tc := range map[string]struct {
		appends []Append
		final   api.KVPairs
		want    string
	}{
		"lost acknowledged append": {appends, good[:2], "is lost"},
		"interleaved holders":      {appends, api.KVPairs{logPair("a1", 5, "A", 1), logPair("b1", 6, "B", 2), logPair("a2", 7, "A", 1)}, "appends again"},
		"lock index goes back":     {appends, api.KVPairs{logPair("b1", 5, "B", 2), logPair("a1", 6, "A", 1), logPair("a2", 7, "A", 1)}, "does not follow"},
		"append after the next holder acquired": {
			append(appends[:1:1], Append{Session: "A", LockIndex: 1, Key: "a2", Call: 105, Return: 106, Result: OK}, appends[2]),
			good, "after session B acquired"},
	} {
		t.Run(name, func(t *testing.T) {
			v := CheckLock(holds, tc.appends, tc.final)
			if v.Valid || !strings.Contains(strings.Join(v.Problems, "\n"), tc.want) {
				t.Fatalf("want a problem with %q, got valid=%v %v", tc.want, v.Valid, v.Problems)
			}
		})
	}
}

func TestRunPattern(t *testing.T) {
	if got := runPattern("TestA/sub case"); got != "^TestA$/^sub case$" {
		t.Fatal(got)
	}
}

func TestRelayOutput(t *testing.T) {
	in := "=== RUN   TestX\njepsen: hello\n    x_test.go:1: log\n--- SKIP: TestX (0.00s)\n    x_test.go:2: no root\nPASS\n"
	var out strings.Builder
	reason := relayOutput(strings.NewReader(in), &out, "TestX")
	if reason != "x_test.go:2: no root" {
		t.Fatalf("reason %q", reason)
	}
	if out.String() != "jepsen: hello\n    x_test.go:1: log\n" {
		t.Fatalf("relayed %q", out.String())
	}
}
