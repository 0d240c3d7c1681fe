package agent_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/agent"
	"github.com/tribune-mesh/tribune/agent/agenttest"
	"github.com/tribune-mesh/tribune/agent/config"
	"github.com/tribune-mesh/tribune/test/wait"
)

// startHardened starts an agent with its configuration changed by edit.
func startHardened(t *testing.T, edit func(c *config.Config)) (*agent.Agent, *api.Client) {
	t.Helper()
	cfg := agenttest.Config(t)
	if edit != nil {
		edit(cfg)
	}
	a := agenttest.Start(t, cfg)
	c, err := api.NewClient(&api.Config{Address: a.HTTPAddr()})
	if err != nil {
		t.Fatalf("api client: %v", err)
	}
	return a, c
}

// sendHTTP sends one request with headers and returns the response.
func sendHTTP(t *testing.T, a *agent.Agent, method, path, body string, hdr map[string]string) httpResult {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://"+a.HTTPAddr()+path, rd)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return httpResult{code: resp.StatusCode, header: resp.Header, body: string(b)}
}

// Issue 10 #10: a request for a datacenter other than the local one is
// answered 500 "No path to datacenter" by every endpoint family, and a write
// is never applied locally.
func TestHarden_UnknownDatacenterEveryFamily(t *testing.T) {
	t.Parallel()
	a, c := startAPI(t)
	self := selfNode(t, c)
	cases := []struct{ family, method, path, body string }{
		{"kv", "GET", "/v1/kv/zz", ""},
		{"kv", "GET", "/v1/kv/?recurse", ""},
		{"kv", "PUT", "/v1/kv/zz", "v"},
		{"kv", "DELETE", "/v1/kv/zz", ""},
		{"txn", "PUT", "/v1/txn", `[{"KV":{"Verb":"set","Key":"zt","Value":"dg=="}}]`},
		{"catalog", "GET", "/v1/catalog/nodes", ""},
		{"catalog", "GET", "/v1/catalog/services", ""},
		{"catalog", "GET", "/v1/catalog/service/web", ""},
		{"catalog", "GET", "/v1/catalog/node/" + self, ""},
		{"catalog", "PUT", "/v1/catalog/register", `{"Node":"far","Address":"10.0.0.1"}`},
		{"catalog", "PUT", "/v1/catalog/deregister", `{"Node":"` + self + `"}`},
		{"health", "GET", "/v1/health/service/web", ""},
		{"health", "GET", "/v1/health/node/" + self, ""},
		{"health", "GET", "/v1/health/state/any", ""},
		{"session", "PUT", "/v1/session/create", "{}"},
		{"session", "GET", "/v1/session/list", ""},
		{"query", "GET", "/v1/query", ""},
		{"query", "POST", "/v1/query", `{"Name":"far","Service":{"Service":"web"}}`},
		{"event", "PUT", "/v1/event/fire/far", ""},
		{"event", "GET", "/v1/event/list", ""},
		{"agent", "GET", "/v1/agent/members", ""},
		{"agent", "PUT", "/v1/agent/service/register", `{"Name":"far"}`},
		{"status", "GET", "/v1/status/leader", ""},
		{"status", "GET", "/v1/status/peers", ""},
		{"coordinate", "GET", "/v1/coordinate/nodes", ""},
		{"operator", "GET", "/v1/operator/raft/configuration", ""},
		{"operator", "GET", "/v1/operator/autopilot/health", ""},
		{"snapshot", "GET", "/v1/snapshot", ""},
		{"snapshot", "PUT", "/v1/snapshot", "junk"},
	}
	families := map[string]bool{}
	for _, tc := range cases {
		families[tc.family] = true
		sep := "?"
		if strings.Contains(tc.path, "?") {
			sep = "&"
		}
		r := httpString(t, a, tc.method, tc.path+sep+"dc=nowhere", tc.body)
		if r.code != http.StatusInternalServerError || !strings.Contains(r.body, "No path to datacenter") {
			t.Errorf("%s %s?dc=nowhere = %d %q, want 500 No path to datacenter", tc.method, tc.path, r.code, r.body)
		}
	}
	for _, f := range []string{"kv", "txn", "catalog", "health", "session", "query", "event", "agent", "status", "coordinate", "operator", "snapshot"} {
		if !families[f] {
			t.Errorf("family %s not covered", f)
		}
	}
	// Nothing was applied locally.
	if p, _, err := c.KV().Get("zz", nil); err != nil || p != nil {
		t.Errorf("zz written locally: %+v %v", p, err)
	}
	if p, _, err := c.KV().Get("zt", nil); err != nil || p != nil {
		t.Errorf("zt written locally by txn: %+v %v", p, err)
	}
	if n, _, err := c.Catalog().Node("far", nil); err != nil || n != nil {
		t.Errorf("node far registered locally: %+v %v", n, err)
	}
	if n, _, err := c.Catalog().Node(self, nil); err != nil || n == nil {
		t.Errorf("own node deregistered: %+v %v", n, err)
	}
	if s, _, err := c.Session().List(nil); err != nil || len(s) != 0 {
		t.Errorf("sessions created locally: %+v %v", s, err)
	}
	if q, _, err := c.PreparedQuery().List(nil); err != nil || len(q) != 0 {
		t.Errorf("queries created locally: %+v %v", q, err)
	}
	if ev, _, err := c.Event().List("far", nil); err != nil || len(ev) != 0 {
		t.Errorf("event fired locally: %+v %v", ev, err)
	}
	if s, err := c.Agent().Services(); err != nil || s["far"] != nil {
		t.Errorf("agent service registered: %+v %v", s, err)
	}
	// The local datacenter by name is served.
	if r := httpString(t, a, "PUT", "/v1/kv/local?dc=dc1", "v"); r.code != http.StatusOK {
		t.Errorf("PUT ?dc=dc1 = %d %q", r.code, r.body)
	}
	if r := httpString(t, a, "GET", "/v1/kv/local?dc=dc1", ""); r.code != http.StatusOK {
		t.Errorf("GET ?dc=dc1 = %d %q", r.code, r.body)
	}
}

// Issue 10, security posture: http_config.allow_write_http_from refuses
// writes from other networks with 403 (an HTTP check aimed at
// /v1/agent/leave from elsewhere cannot stop the agent); reads still work.
func TestHarden_AllowWriteHTTPFrom(t *testing.T) {
	t.Parallel()
	a, c := startHardened(t, func(c *config.Config) {
		c.HTTP.AllowWriteHTTPFrom = []string{"10.0.0.0/8"}
	})
	for _, w := range []struct{ method, path, body string }{
		{"PUT", "/v1/kv/x", "v"},
		{"PUT", "/v1/agent/leave", ""},
		{"POST", "/v1/query", `{"Service":{"Service":"web"}}`},
		{"DELETE", "/v1/kv/x", ""},
	} {
		if r := httpString(t, a, w.method, w.path, w.body); r.code != http.StatusForbidden {
			t.Errorf("%s %s from 127.0.0.1 = %d %q, want 403", w.method, w.path, r.code, r.body)
		}
	}
	select {
	case <-a.LeaveCh():
		t.Fatal("agent leaving after a refused /v1/agent/leave")
	default:
	}
	if _, err := c.Status().Leader(); err != nil {
		t.Errorf("read refused: %v", err)
	}

	// Loopback in the list: writes pass.
	b, cb := startHardened(t, func(c *config.Config) {
		c.HTTP.AllowWriteHTTPFrom = []string{"10.0.0.0/8", "127.0.0.1"}
	})
	if _, err := cb.KV().Put(&api.KVPair{Key: "x", Value: []byte("v")}, nil); err != nil {
		t.Errorf("write from an allowed network: %v", err)
	}
	_ = b
}

// Issue 10, security posture: a browser page on another site cannot write
// (a text/plain POST needs no CORS preflight); curl and the agent's own UI
// can; allowed_origins adds origins; no CORS headers are sent by default;
// response_headers are added to every response, refusals included.
func TestHarden_CrossOriginWritesAndHeaders(t *testing.T) {
	t.Parallel()
	a, _ := startHardened(t, func(c *config.Config) {
		c.HTTP.AllowedOrigins = []string{"https://ops.example.com"}
		c.HTTP.ResponseHeaders = map[string]string{"X-Frame-Options": "DENY"}
	})
	self := "http://" + a.HTTPAddr()
	query := `{"Name":"q%d","Service":{"Service":"web"}}`
	cases := []struct {
		origin string
		want   int
	}{
		{"http://evil.example", http.StatusForbidden},
		{"null", http.StatusForbidden},
		{"http://localhost.evil.example:1234", http.StatusForbidden},
		{"", http.StatusOK},
		{self, http.StatusOK},
		{"https://ops.example.com", http.StatusOK},
	}
	for i, tc := range cases {
		hdr := map[string]string{"Content-Type": "text/plain"}
		if tc.origin != "" {
			hdr["Origin"] = tc.origin
		}
		r := sendHTTP(t, a, "POST", "/v1/query", fmt.Sprintf(query, i), hdr)
		if r.code != tc.want {
			t.Errorf("POST /v1/query Origin %q = %d %q, want %d", tc.origin, r.code, r.body, tc.want)
		}
		if r.header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("CORS header sent: %q", r.header.Get("Access-Control-Allow-Origin"))
		}
		if r.header.Get("X-Frame-Options") != "DENY" {
			t.Errorf("response_headers missing on %d answer: %v", r.code, r.header)
		}
	}
	// A cross-site read is not a write: allowed.
	if r := sendHTTP(t, a, "GET", "/v1/status/leader", "", map[string]string{"Origin": "http://evil.example"}); r.code != http.StatusOK {
		t.Errorf("cross-site read = %d", r.code)
	}
	if r := sendHTTP(t, a, "GET", "/v1/nope", "", nil); r.header.Get("X-Frame-Options") != "DENY" {
		t.Errorf("response_headers missing on 404: %v", r.header)
	}
}

// Issue 10 #6: limits.http_max_conns_per_client is enforced: a connection
// over the limit from one address is answered 429 and closed; a slot freed
// is usable again.
func TestHarden_HTTPMaxConnsPerClient(t *testing.T) {
	t.Parallel()
	const limit = 5
	a, _ := startHardened(t, func(c *config.Config) { c.Limits.HTTPMaxConnsPerClient = limit })
	var held []net.Conn
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	for i := 0; i < limit; i++ {
		c, err := net.DialTimeout("tcp", a.HTTPAddr(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		// A served request proves the connection was accepted.
		if code := rawGet(t, c, "/v1/status/leader"); code != http.StatusOK {
			t.Fatalf("connection %d: status %d", i, code)
		}
	}
	c, err := net.DialTimeout("tcp", a.HTTPAddr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if code := rawGet(t, c, "/v1/status/leader"); code != http.StatusTooManyRequests {
		t.Fatalf("connection over the limit: status %d, want 429", code)
	}
	held[0].Close()
	held = held[1:]
	wait.For(t, 10*time.Second, func() error {
		c, err := net.DialTimeout("tcp", a.HTTPAddr(), 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		if code := rawGet(t, c, "/v1/status/leader"); code != http.StatusOK {
			return fmt.Errorf("status %d after a slot was freed", code)
		}
		return nil
	})
}

// rawGet sends a keep-alive GET on c and returns the status.
func rawGet(t *testing.T, c net.Conn, path string) int {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path); err != nil {
		return 0
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// closedWithin reports how long it took the server to close c (reading
// and discarding whatever it sends), failing after max.
func closedWithin(t *testing.T, c net.Conn, max time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(max))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %v", max)
	}
	return time.Since(start)
}

// Issue 10 #6: a body trickled byte by byte is cut at http_read_timeout;
// slow headers at http_read_header_timeout; an idle keep-alive connection
// is closed at http_idle_timeout. A blocking query that outlives the body
// deadline is not cut.
func TestHarden_HTTPTimeouts(t *testing.T) {
	t.Parallel()
	a, c := startHardened(t, func(c *config.Config) {
		c.Limits.HTTPReadTimeout = time.Second
		c.Limits.HTTPReadHeaderTimeout = time.Second
		c.Limits.HTTPIdleTimeout = time.Second
	})

	t.Run("trickled body", func(t *testing.T) {
		conn, err := net.Dial("tcp", a.HTTPAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "PUT /v1/kv/trickle HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 0; i < 1000; i++ {
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
				if _, err := conn.Write([]byte("x")); err != nil {
					return
				}
			}
		}()
		d := closedWithin(t, conn, 8*time.Second)
		close(stop)
		<-done
		t.Logf("trickled body cut after %v", d)
		if p, _, err := c.KV().Get("trickle", nil); err != nil || p != nil {
			t.Errorf("trickled key written: %+v %v", p, err)
		}
	})

	t.Run("large body at a steady pace", func(t *testing.T) {
		// 400 KB in 8 chunks over 1.6 s: longer than http_read_timeout,
		// but faster than httpguard.MinBodyRate: accepted.
		conn, err := net.Dial("tcp", a.HTTPAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		const chunk, chunks = 50 << 10, 8
		fmt.Fprintf(conn, "PUT /v1/kv/paced HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", chunk*chunks)
		for i := 0; i < chunks; i++ {
			time.Sleep(200 * time.Millisecond) // the pace is what is under test
			if _, err := conn.Write(bytes.Repeat([]byte("p"), chunk)); err != nil {
				t.Fatalf("chunk %d: %v", i, err)
			}
		}
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("paced body: %d", resp.StatusCode)
		}
		if p, _, err := c.KV().Get("paced", nil); err != nil || p == nil || len(p.Value) != chunk*chunks {
			t.Fatalf("paced key: %v %v", p != nil, err)
		}
	})

	t.Run("slow headers", func(t *testing.T) {
		conn, err := net.Dial("tcp", a.HTTPAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n")
		t.Logf("slow headers cut after %v", closedWithin(t, conn, 8*time.Second))
	})

	t.Run("idle keep-alive", func(t *testing.T) {
		conn, err := net.Dial("tcp", a.HTTPAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if code := rawGet(t, conn, "/v1/status/leader"); code != http.StatusOK {
			t.Fatalf("status %d", code)
		}
		t.Logf("idle connection closed after %v", closedWithin(t, conn, 8*time.Second))
	})

	t.Run("blocking query outlives the body deadline", func(t *testing.T) {
		// A PUT with a body, then a blocking query on the same
		// connection longer than http_read_timeout.
		if _, err := c.KV().Put(&api.KVPair{Key: "b", Value: []byte("1")}, nil); err != nil {
			t.Fatal(err)
		}
		p, meta, err := c.KV().Get("b", nil)
		if err != nil || p == nil {
			t.Fatal(p, err)
		}
		start := time.Now()
		_, meta2, err := c.KV().Get("b", &api.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 2500 * time.Millisecond})
		if err != nil {
			t.Fatalf("blocking query: %v", err)
		}
		if el := time.Since(start); el < 2*time.Second {
			t.Errorf("blocking query returned after %v (index %d), want ~2.5s", el, meta2.LastIndex)
		}
	})
}
