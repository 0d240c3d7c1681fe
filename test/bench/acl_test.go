package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// aclRoot is the management token of the ACL benchmarks' agents.
const aclRoot = "b0a7c0de-0000-4000-8000-00000000acl1"

var aclConfigOnce struct {
	sync.Once
	path string
	err  error
}

// aclConfigFile writes (once) an agent config turning ACLs on with
// default_policy deny, aclRoot as management and agent token.
func aclConfigFile(tb testing.TB) string {
	tb.Helper()
	aclConfigOnce.Do(func() {
		cfg := map[string]any{"acl": map[string]any{"enabled": true, "default_policy": "deny",
			"tokens": map[string]any{"initial_management": aclRoot, "agent": aclRoot}}}
		b, _ := json.Marshal(cfg)
		aclConfigOnce.path = filepath.Join(workDir, "acl.json")
		aclConfigOnce.err = os.WriteFile(aclConfigOnce.path, b, 0o600)
	})
	if aclConfigOnce.err != nil {
		tb.Fatal(aclConfigOnce.err)
	}
	return aclConfigOnce.path
}

// aclToken creates a policy with rules and a token linking it, through
// the agent at addr, once the leader has created the management token.
func aclToken(tb testing.TB, addr, name, rules string) *api.ACLToken {
	tb.Helper()
	acls := newTokenClient(tb, addr, aclRoot).ACL()
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, _, err := acls.PolicyCreate(&api.ACLPolicy{Name: name, Rules: rules}, nil)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			tb.Fatalf("create policy %s: %v", name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	tok, _, err := acls.TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{Name: name}}}, nil)
	if err != nil {
		tb.Fatalf("create token: %v", err)
	}
	return tok
}

// agentSelfStatus is the status of GET /v1/agent/self with a token: an
// endpoint the agent answers from its own state, so that only its token
// cache decides.
func agentSelfStatus(hc *http.Client, addr, secret string) (int, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/v1/agent/self", nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("X-Consul-Token", secret)
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// BenchmarkACLRevocation: 3 servers + 1 client agent with ACLs on; a token
// allowed to read the client agent is used there, deleted through a server
// agent, and the time until the client agent first refuses it is measured,
// 10 times. Consul caches a resolved token on a client agent for token_ttl
// (30 s) without invalidation.
func BenchmarkACLRevocation(b *testing.B) {
	runOnce(b, func() {
		start := time.Now()
		c, err := startCluster(b, tribuneBin(b), "acl-", "-config-file", aclConfigFile(b))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() {
			for _, p := range c.all() {
				p.Kill()
			}
		})
		fmt.Printf("bench: ACL cluster of 3 servers + 1 client ready in %s\n", time.Since(start).Round(time.Millisecond))
		srv, cli := c.servers[0].HTTPAddr(), c.client.HTTPAddr()
		aclToken(b, srv, "agent-read", `agent_prefix "" { policy = "read" }`)
		acls := newTokenClient(b, srv, aclRoot).ACL()
		hc := &http.Client{Timeout: 5 * time.Second}
		const runs = 10
		var times []float64
		for i := 0; i < runs; i++ {
			tok, _, err := acls.TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{Name: "agent-read"}}}, nil)
			if err != nil {
				b.Fatalf("create token: %v", err)
			}
			// Warm the client agent's cache with the token.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			for {
				code, err := agentSelfStatus(hc, cli, tok.SecretID)
				if err == nil && code == http.StatusOK {
					break
				}
				if ctx.Err() != nil {
					cancel()
					b.Fatalf("token never accepted by the client agent: %d %v", code, err)
				}
				time.Sleep(5 * time.Millisecond)
			}
			cancel()
			t0 := time.Now()
			if _, err := acls.TokenDelete(tok.AccessorID, nil); err != nil {
				b.Fatalf("delete token: %v", err)
			}
			for {
				code, err := agentSelfStatus(hc, cli, tok.SecretID)
				if err == nil && code == http.StatusForbidden {
					break
				}
				if time.Since(t0) > 40*time.Second {
					b.Fatalf("deleted token still accepted by the client agent after %s", time.Since(t0))
				}
				time.Sleep(time.Millisecond)
			}
			times = append(times, ms(time.Since(t0)))
		}
		mx := 0.0
		for _, t := range times {
			mx = max(mx, t)
		}
		record(b, kindTribune, "acl revocation delete->first-403 client-agent median", "ms", median(times),
			fmt.Sprintf("runs=%d max_ms=%.1f all_ms=%v", runs, mx, times))
	})
}

// BenchmarkACLOverhead: two -dev agents in one run, one with ACLs off and
// one with default_policy=deny and a token allowed on the benchmark's
// keys; KV writes then reads with 16 clients on each, alternating in
// slices, and the ratio on/off of each.
func BenchmarkACLOverhead(b *testing.B) {
	runOnce(b, func() {
		d := benchDuration(b)
		off := startDev(b, kindTribune)
		on := startDev(b, kindTribune, "-config-file", aclConfigFile(b))
		tok := aclToken(b, on.HTTPAddr(), "bench-kv", fmt.Sprintf(`key_prefix %q { policy = "write" }`, keyPrefix))
		const clients = 16
		// Off and on alternate in slices, so that a change of the
		// machine's load during the run weighs on both alike.
		const slices = 4
		var w0, w1, r0, r1 loadResult
		for i := 0; i < slices; i++ {
			w0 = w0.add(kvWriteLoadAs(b, off.HTTPAddr(), "", clients, d/slices, []*proc{off}))
			w1 = w1.add(kvWriteLoadAs(b, on.HTTPAddr(), tok.SecretID, clients, d/slices, []*proc{on}))
		}
		populateAs(b, off.HTTPAddr(), "")
		populateAs(b, on.HTTPAddr(), tok.SecretID)
		for i := 0; i < slices; i++ {
			r0 = r0.add(kvReadLoadAs(b, off.HTTPAddr(), "", readDefault, clients, d/slices, []*proc{off}))
			r1 = r1.add(kvReadLoadAs(b, on.HTTPAddr(), tok.SecretID, readDefault, clients, d/slices, []*proc{on}))
		}
		for _, r := range []loadResult{w1, r1} {
			if r.errs > 0 {
				b.Fatalf("requests with the token failed: %v", r)
			}
		}
		record(b, kindTribune, fmt.Sprintf("dev kv-write acl=off clients=%d", clients), "ops/s", w0.opsPerSec(), w0.String())
		record(b, kindTribune, fmt.Sprintf("dev kv-write acl=deny+token clients=%d", clients), "ops/s", w1.opsPerSec(), w1.String())
		record(b, kindTribune, fmt.Sprintf("dev kv-read acl=off clients=%d", clients), "ops/s", r0.opsPerSec(), r0.String())
		record(b, kindTribune, fmt.Sprintf("dev kv-read acl=deny+token clients=%d", clients), "ops/s", r1.opsPerSec(), r1.String())
		record(b, kindTribune, "acl overhead kv-write on/off", "ratio", w1.opsPerSec()/w0.opsPerSec(), "")
		record(b, kindTribune, "acl overhead kv-read on/off", "ratio", r1.opsPerSec()/r0.opsPerSec(), "")
	})
}

// add sums two runs of one workload: operations, errors and time; the
// latency percentiles and CPU shares are those of the later run.
func (r loadResult) add(o loadResult) loadResult {
	o.ops += r.ops
	o.errs += r.errs
	o.elapsed += r.elapsed
	if o.firstErr == nil {
		o.firstErr = r.firstErr
	}
	return o
}
