package bench

import (
	"testing"
)

// TestHelpers checks the harness's parsing and arithmetic; it is the only
// test that runs without -bench and takes milliseconds.
func TestHelpers(t *testing.T) {
	status := []byte("Name:\ttribune\nVmPeak:\t  123456 kB\nVmRSS:\t   54321 kB\nThreads:\t9\n")
	if got, err := parseStatusKiB(status, "VmRSS"); err != nil || got != 54321 {
		t.Errorf("VmRSS = %d, %v; want 54321", got, err)
	}
	if _, err := parseStatusKiB(status, "VmSwap"); err == nil {
		t.Error("missing field: no error")
	}
	stat := []byte("4242 (tri bune) S 1 4242 4242 0 -1 4194560 100 0 0 0 17 5 0 0 20 0 9 0 1000 2000 300 18446744073709551615")
	if got, err := parseStatTicks(stat); err != nil || got != 22 {
		t.Errorf("ticks = %d, %v; want 22", got, err)
	}
	for _, c := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
	if got := metricUnit(kindConsul, "dev kv-write clients=64", "ops/s"); got != "consul-ops/s" {
		t.Errorf("metricUnit = %q", got)
	}
	if got := metricUnit(kindTribune, "cluster failover run=3 leader-kill->write-ok", "s"); got != "s-run3" {
		t.Errorf("metricUnit = %q", got)
	}
}
