package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tribune-mesh/tribune/agent/agenttest"
)

// TestWANCommands: join -wan federates two -dev datacenters, members -wan
// lists both servers, and force-leave -wan -prune of a server that is gone
// drops it from the WAN pool.
func TestWANCommands(t *testing.T) {
	c1, c2 := agenttest.Config(t), agenttest.Config(t)
	c2.Datacenter, c2.PrimaryDatacenter = "dc2", "dc1"
	a1 := agenttest.Start(t, c1)
	a2 := agenttest.Start(t, c2)
	addr := "-http-addr=" + a1.HTTPAddr()

	r := mustExec(t, runJoin, addr, "-wan", fmt.Sprintf("127.0.0.1:%d", c2.Ports.SerfWAN))
	assertContains(t, "join -wan", r.stdout, "Successfully joined cluster by contacting 1 nodes")
	wan2 := c2.NodeName + ".dc2"
	waitFor(t, 10*time.Second, func() (bool, string) {
		r := runCmd(runMembers, addr, "-wan")
		return r.code == 0 && strings.Contains(r.stdout, wan2) && strings.Contains(r.stdout, c1.NodeName+".dc1"), r.stdout
	})
	if r := mustExec(t, runMembers, addr); strings.Contains(r.stdout, wan2) {
		t.Fatalf("the LAN list shows a WAN member:\n%s", r.stdout)
	}

	if err := a2.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, func() (bool, string) {
		r := runCmd(runMembers, addr, "-wan", "-status=failed")
		return r.code == 0 && strings.Contains(r.stdout, wan2), r.stdout
	})
	mustExec(t, runForceLeave, addr, "-wan", "-prune", wan2)
	waitFor(t, 10*time.Second, func() (bool, string) {
		r := runCmd(runMembers, addr, "-wan")
		return !strings.Contains(r.stdout, wan2), r.stdout
	})
}
