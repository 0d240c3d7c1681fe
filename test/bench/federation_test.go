package bench

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/test/wait"
)

// BenchmarkReplicationLag: two -dev datacenters, dc1 the primary, dc2 a
// secondary WAN-joined to it with ACLs and token replication on. 100 times,
// an ACL policy is written in dc1 and dc2's HTTP API is polled (every
// millisecond, stale reads) until it serves it: the lag from the write's
// answer to the first read that sees it. Also the added latency of a
// ?dc=dc2 KV read through dc1 over a local one.
func BenchmarkReplicationLag(b *testing.B) {
	runOnce(b, func() {
		const token = "11111111-2222-3333-4444-000000000000"
		acl := func(extra string) string {
			return `acl { enabled = true default_policy = "allow" enable_token_replication = true ` + extra + ` }`
		}
		dc1 := startDev(b, kindTribune, "-datacenter", "dc1", "-hcl", acl(`tokens { initial_management = "`+token+`" }`))
		dc2 := startDev(b, kindTribune, "-datacenter", "dc2", "-primary-datacenter", "dc1",
			"-hcl", acl(`tokens { replication = "`+token+`" }`))
		c1, c2 := apiWithToken(b, dc1, token), apiWithToken(b, dc2, token)
		// dc2 does not know the token yet: its WAN port is read
		// anonymously, and dc1 joins it.
		members, err := apiWithToken(b, dc2, "").Agent().Members(true)
		if err != nil || len(members) != 1 {
			b.Fatalf("dc2 WAN members %v %v", members, err)
		}
		start := time.Now()
		if err := c1.Agent().Join(fmt.Sprintf("127.0.0.1:%d", members[0].Port), true); err != nil {
			b.Fatalf("WAN join: %v", err)
		}
		// Ready once dc2 knows dc1's management token (replicated).
		if err := wait.Until(context.Background(), 30*time.Second, func() error {
			_, _, err := c2.ACL().PolicyList(&api.QueryOptions{AllowStale: true})
			return err
		}); err != nil {
			b.Fatalf("dc2 never served dc1's token: %v", err)
		}
		fmt.Printf("bench: federation dc2 replicated dc1's token %s after the WAN join\n", time.Since(start).Round(time.Millisecond))

		var lags []time.Duration
		for i := 0; i < 100; i++ {
			p, _, err := c1.ACL().PolicyCreate(&api.ACLPolicy{Name: fmt.Sprintf("bench-%d", i), Rules: `key_prefix "" { policy = "read" }`}, nil)
			if err != nil {
				b.Fatalf("policy create: %v", err)
			}
			written := time.Now()
			deadline := written.Add(10 * time.Second)
			for {
				got, _, err := c2.ACL().PolicyRead(p.ID, &api.QueryOptions{AllowStale: true})
				if err == nil && got != nil {
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("policy %s not in dc2 after 10s (%v)", p.ID, err)
				}
				time.Sleep(time.Millisecond)
			}
			lags = append(lags, time.Since(written))
		}
		p50, p99 := percentile(lags, 0.5), percentile(lags, 0.99)
		record(b, kindTribune, "federation replication-lag policy n=100", "p99_ms", p99, fmt.Sprintf("p50_ms=%.2f max_ms=%.2f", p50, percentile(lags, 1)))

		// The added cost of a cross-datacenter read.
		if _, err := c2.KV().Put(&api.KVPair{Key: "k", Value: []byte("v")}, nil); err != nil {
			b.Fatal(err)
		}
		if _, err := c1.KV().Put(&api.KVPair{Key: "k", Value: []byte("v")}, nil); err != nil {
			b.Fatal(err)
		}
		read := func(dc string) time.Duration {
			var lat []time.Duration
			for i := 0; i < 200; i++ {
				t0 := time.Now()
				if _, _, err := c1.KV().Get("k", &api.QueryOptions{Datacenter: dc}); err != nil {
					b.Fatalf("get dc=%s: %v", dc, err)
				}
				lat = append(lat, time.Since(t0))
			}
			return time.Duration(percentile(lat, 0.5) * float64(time.Millisecond))
		}
		local, remote := read("dc1"), read("dc2")
		record(b, kindTribune, "federation cross-dc-read added-latency p50", "ms", float64((remote-local).Microseconds())/1000,
			fmt.Sprintf("local_p50_ms=%.3f dc2_p50_ms=%.3f", float64(local.Microseconds())/1000, float64(remote.Microseconds())/1000))
	})
}

func apiWithToken(b *testing.B, p *proc, token string) *api.Client {
	b.Helper()
	c, err := api.NewClient(&api.Config{Address: p.HTTPAddr(), Token: token})
	if err != nil {
		b.Fatal(err)
	}
	return c
}
