package servertest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/server/servertest"
	"github.com/tribune-mesh/tribune/test/wait"
)

// TestDataDirWithJSONEntriesKeepsWorking: a data directory whose Raft log
// holds JSON entries (every entry before the binary format) replays them
// after a restart, next to the binary entries written since.
func TestDataDirWithJSONEntriesKeepsWorking(t *testing.T) {
	c := servertest.New(t, servertest.Options{Servers: 1, Persistent: true})
	s := c.WaitForLeader(servertest.DefaultTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	want := map[string]string{}
	for i, enc := range []func(catalog.CommandType, any) ([]byte, error){catalog.EncodeJSON, catalog.Encode, catalog.EncodeJSON, catalog.Encode} {
		key, val := fmt.Sprintf("k%d", i), fmt.Sprintf("v%d", i)
		data, err := enc(catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVSet, Entry: catalog.KVEntry{Key: key, Value: []byte(val)}})
		if err != nil {
			t.Fatal(err)
		}
		res, err := s.ApplyRaw(ctx, data)
		if err != nil || res != (catalog.KVResult{OK: true}) {
			t.Fatalf("apply %s: %v %v", key, res, err)
		}
		want[key] = val
	}
	c.Restart(s, false)
	c.WaitForLeader(servertest.DefaultTimeout)
	wait.For(t, 10*time.Second, func() error {
		for k, v := range want {
			_, e, err := s.Store().KVGet(nil, k)
			if err != nil {
				return err
			}
			if e == nil || string(e.Value) != v {
				return fmt.Errorf("%s = %+v after the restart, want %q", k, e, v)
			}
		}
		return nil
	})
	if n := s.SkippedEntries(); n != 0 {
		t.Fatalf("%d entries skipped on replay", n)
	}
}
