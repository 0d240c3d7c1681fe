package servertest_test

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/tribune-mesh/tribune/server"
	"github.com/tribune-mesh/tribune/server/servertest"
	"github.com/tribune-mesh/tribune/test/wait"
)

// TestSnapshotAtThresholdWithoutWaitingForTheInterval: a server snapshots
// (and compacts its log) once SnapshotThreshold entries are applied, even
// when Raft's own periodic check is an hour away, so the log stays bounded
// whatever the write rate.
func TestSnapshotAtThresholdWithoutWaitingForTheInterval(t *testing.T) {
	c := servertest.New(t, servertest.Options{Servers: 1, Persistent: true, Configure: func(_ int, cfg *server.Config) {
		cfg.SnapshotThreshold = 64
		cfg.SnapshotInterval = time.Hour
		cfg.TrailingLogs = 16
	}})
	s := c.WaitForLeader(servertest.DefaultTimeout)
	for i := 0; i < 300; i++ {
		put(t, s, fmt.Sprintf("k%d", i%10), "v")
	}
	wait.For(t, 10*time.Second, func() error {
		st := s.Raft().Stats()
		snap, _ := strconv.ParseUint(st["last_snapshot_index"], 10, 64)
		last, _ := strconv.ParseUint(st["last_log_index"], 10, 64)
		if snap == 0 || last-snap >= 2*64 {
			return fmt.Errorf("last snapshot at %d, last log %d", snap, last)
		}
		return nil
	})
}
