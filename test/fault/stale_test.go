package fault

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// TestStaleFollowerReadsAreCaught proves the register checker fails on a
// real violation: ?stale reads served by a follower cut off from the
// cluster while writes go on through the majority are not linearizable,
// and the checker must say so.
func TestStaleFollowerReadsAreCaught(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes in a network namespace")
	}
	env := Enter(t)
	if env == nil {
		return
	}
	dir, err := os.MkdirTemp(env.WorkDir, "stale-")
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewCluster(env, dir, ClusterOptions{Servers: 3, Clients: 2, LogLevel: os.Getenv("JEPSEN_LOG_LEVEL")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	leader, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	follower := others(c.Servers, leader)[0]
	if err := c.Net.Partition([]*Agent{follower}, others(c.All(), follower)); err != nil {
		t.Fatal(err)
	}
	t.Logf("partitioned follower %s away; %s leads", follower.Name, leader.Name)

	reg := &Register{Prefix: "stale-follower", Keys: 1, Clock: NewClock(), Think: 5 * time.Millisecond}
	writers := Mix{Write: 60, CAS: 40}
	readers := Mix{Stale: 1}
	specs := []ClientSpec{{leader, writers}, {others(c.Servers, leader, follower)[0], writers}, {c.Clients[0], writers},
		{follower, readers}, {follower, readers}, {follower, readers}}
	wctx, stop := context.WithTimeout(ctx, 6*time.Second)
	reg.Run(wctx, specs, 1)
	stop()
	if err := c.Net.Heal(); err != nil {
		t.Fatal(err)
	}

	ops := reg.Ops.Items()
	for _, s := range MeasureStaleness(ops, Consistent, Stale) {
		t.Logf("%s", s)
	}
	res := CheckLinearizable(ops, []ReadMode{Consistent, Stale}, time.Minute)
	if res.Result != porcupine.Illegal {
		t.Fatalf("?stale reads through partitioned follower %s: checker says %s over %d operations, want Illegal", follower.Name, res.Result, res.Checked)
	}
	fmt.Printf("jepsen: ?stale reads through partitioned follower %s caught as not linearizable (%d operations):\n%s\n", follower.Name, res.Checked, res.Counterexample)
	// The same history without the stale reads is linearizable.
	if r := CheckLinearizable(ops, []ReadMode{Consistent}, time.Minute); r.Result != porcupine.Ok {
		t.Fatalf("the history without ?stale reads: %s\n%s", r.Result, r.Counterexample)
	}
}
