package catalog_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/tribune-mesh/tribune/catalog"
)

// The autopilot configuration is set through the FSM with CAS semantics,
// refuses bad durations, and survives a snapshot and restore.
func TestAutopilotConfigCASAndSnapshot(t *testing.T) {
	s := newStore(t)
	a := &applier{t: t, fsm: catalog.NewFSM(s, nil)}
	if _, c, err := s.AutopilotConfig(ws()); err != nil || c != nil {
		t.Fatalf("fresh store config = %+v, %v", c, err)
	}
	set := func(cas bool, idx uint64, cleanup bool, stab string) catalog.KVResult {
		t.Helper()
		r, ok := a.apply(catalog.CmdAutopilotConfig, &catalog.AutopilotConfigRequest{CAS: cas, Config: catalog.AutopilotConfig{
			CleanupDeadServers: cleanup, ServerStabilizationTime: stab, RaftIndex: catalog.RaftIndex{ModifyIndex: idx}}}).(catalog.KVResult)
		if !ok {
			t.Fatal("autopilot config result is not a KVResult")
		}
		return r
	}
	if r := set(true, 5, true, "10s"); r.OK || r.Err != nil {
		t.Fatalf("CAS on an unset config with index 5 = %+v", r)
	}
	if r := set(true, 0, true, "10s"); !r.OK {
		t.Fatalf("CAS on an unset config with index 0 = %+v", r)
	}
	first := a.idx
	if r := set(true, 0, false, "1s"); r.OK {
		t.Fatalf("second CAS with index 0 = %+v", r)
	}
	if r := set(true, first, false, "1s"); !r.OK {
		t.Fatalf("CAS with the current index = %+v", r)
	}
	if r := set(false, 0, false, "soon"); r.OK || !errors.Is(r.Err, catalog.ErrInvalidRequest) {
		t.Fatalf("bad duration = %+v", r)
	}
	idx, c, err := s.AutopilotConfig(ws())
	if err != nil || c == nil || c.CleanupDeadServers || c.ServerStabilizationTime != "1s" || c.CreateIndex != first ||
		c.ModifyIndex != a.idx-1 || idx != a.idx-1 {
		t.Fatalf("config = %+v at %d, %v", c, idx, err)
	}

	snap := dump(t, s)
	dst := newStore(t)
	if err := catalog.NewFSM(dst, nil).Restore(&trackCloser{Reader: bytes.NewReader(snap)}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if _, got, err := dst.AutopilotConfig(ws()); err != nil || got == nil || *got != *c {
		t.Fatalf("restored config = %+v, %v; want %+v", got, err, c)
	}
}
