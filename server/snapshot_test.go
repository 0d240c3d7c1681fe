package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/test/wait"
)

func putKV(t *testing.T, s *Server, key string, value []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := s.Apply(ctx, catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVSet, Entry: catalog.KVEntry{Key: key, Value: value}})
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := res.(catalog.KVResult); !ok || !r.OK || r.Err != nil {
		t.Fatalf("put %s: %+v", key, res)
	}
}

// TestRestoreLimitFollowsTheState: an archive may decompress to a multiple
// of the current state's size, never less than the floor; beyond it the
// restore is refused with ErrSnapshotTooLarge and nothing changes.
func TestRestoreLimitFollowsTheState(t *testing.T) {
	const floor = 256 << 10
	s := startTestServer(t, func(c *Config) { c.RestoreMinLimit = floor; c.RestoreLimitFactor = 4 })
	if got := s.restoreLimit(); got != floor {
		t.Fatalf("limit of an empty state = %d, want the floor %d", got, floor)
	}
	value := []byte(strings.Repeat("v", 16<<10))
	for i := 0; i < 64; i++ { // ~1.4 MiB of state records
		putKV(t, s, fmt.Sprintf("big/%02d", i), value)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The leader's own writes (its Connect CA root, its node) may land
	// between the snapshot and the limit's reading of the state: compare
	// the two once they are taken with nothing in between.
	var big []byte
	var stateSize int64
	wait.For(t, 10*time.Second, func() error {
		var err error
		if big, err = s.SaveSnapshot(ctx); err != nil {
			return err
		}
		if _, stateSize, err = validateArchive(big, 1<<30); err != nil {
			return err
		}
		if got := s.restoreLimit(); got < 4*stateSize-4096 || got > 4*stateSize+4096 {
			return fmt.Errorf("limit = %d, want about 4 x %d", got, stateSize)
		}
		return nil
	})

	// A second server with a small state refuses the big archive.
	small := startTestServer(t, func(c *Config) { c.NodeName = "small"; c.RestoreMinLimit = floor; c.RestoreLimitFactor = 4 })
	putKV(t, small, "mine", []byte("1"))
	if err := small.RestoreSnapshot(ctx, big); !errors.Is(err, ErrSnapshotTooLarge) {
		t.Fatalf("restore of a %d-byte state under a %d-byte limit: %v", stateSize, floor, err)
	}
	if _, e, _ := small.Store().KVGet(nil, "mine"); e == nil {
		t.Fatal("refused restore changed the state")
	}
	// With a larger floor it restores.
	small.config.RestoreMinLimit = 8 << 20
	if err := small.RestoreSnapshot(ctx, big); err != nil {
		t.Fatalf("restore within the limit: %v", err)
	}
	if _, e, _ := small.Store().KVGet(nil, "big/63"); e == nil {
		t.Fatal("restored state misses big/63")
	}
}

// TestRestoreRefusesConcurrent: a restore while another holds the server's
// restore slot gets ErrRestoreInProgress.
func TestRestoreRefusesConcurrent(t *testing.T) {
	s := startTestServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	archive, err := s.SaveSnapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.restoreMu.Lock()
	err = s.RestoreSnapshot(ctx, archive)
	s.restoreMu.Unlock()
	if !errors.Is(err, ErrRestoreInProgress) {
		t.Fatalf("concurrent restore: %v", err)
	}
	if err := s.RestoreSnapshot(ctx, archive); err != nil {
		t.Fatalf("restore: %v", err)
	}
}
