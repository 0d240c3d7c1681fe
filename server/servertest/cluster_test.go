package servertest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/server/servertest"
	"github.com/tribune-mesh/tribune/test/wait"
)

func put(t *testing.T, s *servertest.Server, key, value string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := s.Apply(ctx, catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVSet, Entry: catalog.KVEntry{Key: key, Value: []byte(value)}})
	if err != nil {
		t.Fatalf("put %s through %s: %v", key, s.Name, err)
	}
	if r, ok := res.(catalog.KVResult); !ok || !r.OK || r.Err != nil {
		t.Fatalf("put %s through %s: %+v", key, s.Name, res)
	}
}

func TestPartitionedLeaderIsReplaced(t *testing.T) {
	c := servertest.New(t, servertest.Options{})
	old := c.WaitForLeader(servertest.DefaultTimeout)
	put(t, c.Followers()[0], "before", "1")

	var rest []*servertest.Server
	for _, s := range c.Servers {
		if s != old {
			rest = append(rest, s)
		}
	}
	c.Partition([]*servertest.Server{old}, rest)
	c.WaitForLeaderAmong(servertest.DefaultTimeout, rest)
	put(t, rest[0], "during", "2")
	// The old leader steps down once its lease runs out.
	wait.For(t, 5*time.Second, func() error {
		if old.IsLeader() {
			return errors.New("the partitioned leader still leads")
		}
		return nil
	})
	c.Heal()
	c.WaitForReplication(servertest.DefaultTimeout)
	for _, s := range c.Servers {
		_, e, err := s.Store().KVGet(nil, "during")
		if err != nil || e == nil || string(e.Value) != "2" {
			t.Fatalf("%s: during = %+v, %v", s.Name, e, err)
		}
	}
}
