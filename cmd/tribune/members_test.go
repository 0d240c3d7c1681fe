package main

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tribune-mesh/tribune/agent/agenttest"
)

func TestMembers(t *testing.T) {
	cfg := agenttest.Config(t)
	a := agenttest.Start(t, cfg)
	addr := "-http-addr=" + a.HTTPAddr()

	r := mustExec(t, runMembers, addr)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 2 {
		t.Fatalf("stdout = %q, want a header and one member", r.stdout)
	}
	if got := strings.Join(strings.Fields(lines[0]), " "); got != "Node Address Status Type Build Protocol DC" {
		t.Errorf("header = %q", lines[0])
	}
	row := strings.Fields(lines[1])
	if len(row) != 7 {
		t.Fatalf("row = %q, want 7 columns", lines[1])
	}
	if row[0] != cfg.NodeName || row[2] != "alive" || row[3] != "server" || row[6] != cfg.Datacenter {
		t.Errorf("row = %q, want %s ... alive server ... %s", row, cfg.NodeName, cfg.Datacenter)
	}
	if !strings.HasSuffix(row[1], ":"+strconv.Itoa(cfg.Ports.SerfLAN)) {
		t.Errorf("address %q, want the Serf LAN port %d", row[1], cfg.Ports.SerfLAN)
	}

	r = mustExec(t, runMembers, addr, "-detailed")
	assertContains(t, "detailed", r.stdout, "Tags")
	assertContains(t, "detailed", r.stdout, "role=consul")

	mustExec(t, runMembers, addr, "-status=alive")
	// No member matches: nothing printed, exit 2 as Consul.
	r = runCmd(runMembers, addr, "-status=failed")
	if r.code != 2 || r.stdout != "" {
		t.Errorf("-status=failed: %v", r)
	}
	r = runCmd(runMembers, addr, "-status=[")
	if r.code != 1 || !strings.Contains(r.stderr, "regexp") {
		t.Errorf("bad regexp: %v", r)
	}
}

func TestLeave(t *testing.T) {
	a := agenttest.Start(t, nil)
	r := mustExec(t, runLeave, "-http-addr="+a.HTTPAddr())
	if r.stdout != "Graceful leave complete\n" {
		t.Errorf("stdout = %q", r.stdout)
	}
	select {
	case <-a.LeaveCh():
	case <-time.After(5 * time.Second):
		t.Fatal("agent was not asked to leave")
	}
	if r := runCmd(runLeave, "-http-addr="+a.HTTPAddr(), "extra"); r.code != 1 {
		t.Errorf("extra argument: %v", r)
	}
}
