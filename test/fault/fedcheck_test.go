package fault

import (
	"strings"
	"testing"
	"time"
)

func TestCheckOneWriter(t *testing.T) {
	s := int64(time.Second)
	cut := []Window{{Kind: WANPartition, From: 10 * s, To: 20 * s}}
	base := []GlobalWrite{
		{Object: "policy/p-0", Version: "1", Via: primaryDC, Call: 1 * s, Return: 2 * s, Result: OK},
		{Object: "policy/p-0", Version: "2", Via: secondaryDC, Call: 3 * s, Return: 4 * s, Result: OK},
		{Object: "policy/p-0", Version: "3", Via: primaryDC, Call: 5 * s, Return: 6 * s, Result: Info},
		{Object: "policy/p-0", Version: "4", Via: secondaryDC, Call: 11 * s, Return: 18 * s, Result: Info, Error: "Unexpected response code: 500 (datacenter dc1: i/o timeout)"},
		{Object: "policy/p-0", Version: "5", Via: secondaryDC, Call: 21 * s, Return: 22 * s, Result: Info},
	}
	read := func(dc, ver string, idx uint64) GlobalRead {
		return GlobalRead{Object: "policy/p-0", Version: ver, DC: dc, Index: idx, Call: 30 * s, Return: 30 * s}
	}
	check := func(wrote, ver string) GlobalRead {
		r := read(primaryDC, ver, 11)
		r.Check, r.Mode = wrote, Consistent
		return r
	}
	cases := []struct {
		name   string
		writes []GlobalWrite
		reads  []GlobalRead
		want   string // "" for valid, else a part of the problem
	}{
		{"valid", base, []GlobalRead{read(primaryDC, "1", 10), check("2", "2"), read(secondaryDC, "1", 3), read(secondaryDC, "2", 4),
			read(secondaryDC, "3", 5), read(secondaryDC, "", 0)}, ""},
		{"acknowledged through dc2, not in dc1 right after", base, []GlobalRead{check("2", "1")}, "not written by the primary"},
		{"acknowledged through dc2, never seen in dc1, seen in dc2", base, []GlobalRead{read(secondaryDC, "2", 4)}, "never committed"},
		{"a server's answer about its own timeout", append(append([]GlobalWrite{}, base...),
			GlobalWrite{Object: "policy/p-0", Version: "6", Via: secondaryDC, Call: 12 * s, Return: 13 * s, Result: Info,
				Error: "Unexpected response code: 500 (datacenter dc1: rpc Apply: context deadline exceeded)"}), nil, ""},
		{"info via dc2 seen in dc1 first", base, []GlobalRead{read(primaryDC, "5", 20), read(secondaryDC, "5", 7)}, ""},
		{"info via dc2 seen only in dc2", base, []GlobalRead{read(secondaryDC, "5", 7)}, "never committed"},
		{"failed cut write seen in dc2", base, []GlobalRead{read(secondaryDC, "4", 7)}, "never committed"},
		{"unknown version", base, []GlobalRead{read(secondaryDC, "99", 7)}, "no write wrote"},
		{"applied twice", base, []GlobalRead{read(primaryDC, "1", 10), read(primaryDC, "1", 12)}, "applied twice"},
		{"acknowledged during the cut", append(append([]GlobalWrite{}, base...),
			GlobalWrite{Object: "policy/p-0", Version: "6", Via: secondaryDC, Call: 12 * s, Return: 13 * s, Result: OK}), nil, "while the WAN was cut"},
		{"hung during the cut", append(append([]GlobalWrite{}, base...),
			GlobalWrite{Object: "policy/p-0", Version: "6", Via: secondaryDC, Call: 12 * s, Return: 19 * s, Result: Info,
				Error: "context deadline exceeded (Client.Timeout exceeded while awaiting headers)"}), nil, "did not fail cleanly"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := CheckOneWriter(c.writes, c.reads, cut)
			checkVerdict(t, v.Valid, v.Problems, c.want)
		})
	}
	if v := CheckOneWriter(base, nil, cut); v.CutWrites != 1 || v.MaxCutFail != 7*time.Second || v.ViaSecondary != 1 {
		t.Fatalf("figures: %+v", v)
	}
}

func TestCheckCrossDC(t *testing.T) {
	ops := []KVOp{
		{Kind: ReadOp, Result: OK, Value: 0},
		{Kind: ReadOp, Result: OK, Value: valueSpan + 5},
		{Kind: WriteOp, Result: OK, Value: 3},
		{Kind: ReadOp, Result: Fail, Value: 7},
	}
	if p := CheckCrossDC(ops, primaryDC, valueSpan); len(p) != 0 {
		t.Fatalf("valid history: %v", p)
	}
	ops = append(ops, KVOp{Kind: ReadOp, Mode: Stale, Result: OK, Value: 2*valueSpan + 1, Key: "k", Agent: "dc1-c1"})
	if p := CheckCrossDC(ops, primaryDC, valueSpan); len(p) != 1 || !strings.Contains(p[0], "another datacenter") {
		t.Fatalf("a dc2 value read from dc1's register: %v", p)
	}
}

func TestCheckFailover(t *testing.T) {
	s := int64(time.Second)
	cut := []Window{{Kind: WANPartition, From: 10 * s, To: 20 * s}}
	updates := []FailoverUpdate{{Version: "1", Call: 0, Return: 1 * s, Result: OK}, {Version: "2", Call: 2 * s, Return: 3 * s, Result: OK}}
	good := FailoverExec{Call: 4 * s, Return: 5 * s, Result: OK, Datacenter: primaryDC, Failovers: 1, Nodes: []string{"fo-dc1"}, Versions: []string{"2"}}
	with := func(f func(e *FailoverExec)) []FailoverExec {
		e := good
		f(&e)
		return []FailoverExec{good, e}
	}
	cases := []struct {
		name  string
		execs []FailoverExec
		want  string
	}{
		{"valid", with(func(e *FailoverExec) { e.Call, e.Return, e.Nodes, e.Versions = 11*s, 18*s, nil, nil }), ""},
		{"error", with(func(e *FailoverExec) { e.Result, e.Nodes = Fail, nil }), ""},
		{"answer during the cut", with(func(e *FailoverExec) { e.Call, e.Return = 11*s, 12*s }), "presented as fresh"},
		{"critical local instance", with(func(e *FailoverExec) { e.Nodes = []string{"fo-dc2"} }), "critical"},
		{"no failover", with(func(e *FailoverExec) { e.Datacenter, e.Failovers = secondaryDC, 0 }), "after a failover"},
		{"unknown version", with(func(e *FailoverExec) { e.Versions = []string{"9"} }), "no update wrote"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := CheckFailover(c.execs, updates, cut, "fo-dc1")
			checkVerdict(t, v.Valid, v.Problems, c.want)
		})
	}
	stale := with(func(e *FailoverExec) { e.Versions = []string{"1"} })
	if v := CheckFailover(stale, updates, cut, "fo-dc1"); !v.Valid || v.Stale != 1 || v.MaxStale != time.Second {
		t.Fatalf("a stale answer is measured, not judged: %+v", v)
	}
}

func checkVerdict(t *testing.T, valid bool, problems []string, want string) {
	t.Helper()
	switch {
	case want == "" && !valid:
		t.Fatalf("want valid, got %v", problems)
	case want != "" && valid:
		t.Fatalf("want a problem with %q, got valid", want)
	case want != "" && !strings.Contains(strings.Join(problems, "\n"), want):
		t.Fatalf("want a problem with %q, got %v", want, problems)
	}
}
