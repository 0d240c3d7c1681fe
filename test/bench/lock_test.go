package bench

import (
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// BenchmarkClusterLockCycles: two contenders on the 3-server cluster take
// and release api.Lock on one key as fast as they can, each through the
// client agent with its own session; reports acquire/release cycles per
// second and checks that the holders never overlap.
func BenchmarkClusterLockCycles(b *testing.B) {
	runOnce(b, func() {
		c := getCluster(b)
		dur := benchDuration(b)
		var cycles atomic.Int64
		var holding atomic.Int32
		var overlap atomic.Bool
		var wg sync.WaitGroup
		deadline := time.Now().Add(dur)
		errs := make(chan error, 2)
		for i := 0; i < 2; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				cl, err := api.NewClient(&api.Config{Address: c.client.HTTPAddr(), Transport: &http.Transport{MaxIdleConnsPerHost: 4}})
				if err != nil {
					errs <- err
					return
				}
				lock, err := cl.LockOpts(&api.LockOptions{Key: "bench/lock", SessionName: fmt.Sprintf("contender-%d", i),
					LockWaitTime: 5 * time.Second, SessionTTL: "15s"})
				if err != nil {
					errs <- err
					return
				}
				for time.Now().Before(deadline) {
					lost, err := lock.Lock(nil)
					if err != nil {
						errs <- err
						return
					}
					if lost == nil {
						continue
					}
					if holding.Add(1) != 1 {
						overlap.Store(true)
					}
					holding.Add(-1)
					if err := lock.Unlock(); err != nil {
						errs <- err
						return
					}
					cycles.Add(1)
				}
			}(i)
		}
		wg.Wait()
		select {
		case err := <-errs:
			b.Fatalf("lock contender: %v", err)
		default:
		}
		if overlap.Load() {
			b.Fatal("two contenders held the lock at once")
		}
		record(b, kindTribune, "cluster lock cycles contenders=2", "cycles/s", float64(cycles.Load())/dur.Seconds(), fmt.Sprintf("cycles=%d", cycles.Load()))
	})
}
