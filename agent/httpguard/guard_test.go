package httpguard

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tribune-mesh/tribune/test/wait"
)

func TestGuardTable(t *testing.T) {
	prefixes, err := ParsePrefixes([]string{"10.0.0.0/8", "192.168.1.7"})
	if err != nil {
		t.Fatal(err)
	}
	g := New(Config{
		Datacenter:      "dc1",
		AllowWriteFrom:  prefixes,
		AllowedOrigins:  []string{"https://ui.example.com"},
		ResponseHeaders: map[string]string{"X-Frame-Options": "DENY"},
	})
	acted := 0
	h := g.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { acted++; w.WriteHeader(200) }))
	cases := []struct {
		name, method, target, remote, host, origin string
		want                                       int
	}{
		{"read from anywhere", "GET", "/v1/kv/a", "203.0.113.9:5000", "", "", 200},
		{"write from allowed network", "PUT", "/v1/kv/a", "10.1.2.3:5000", "", "", 200},
		{"write from allowed address", "PUT", "/v1/kv/a", "192.168.1.7:5000", "", "", 200},
		{"write from elsewhere", "PUT", "/v1/kv/a", "203.0.113.9:5000", "", "", 403},
		{"delete from elsewhere", "DELETE", "/v1/kv/a", "192.168.1.8:5000", "", "", 403},
		{"v4-mapped v6 peer", "PUT", "/v1/kv/a", "[::ffff:10.0.0.1]:5000", "", "", 200},
		{"cross-site write", "POST", "/v1/query", "10.0.0.1:1", "127.0.0.1:8500", "http://evil.example", 403},
		{"same-origin write", "POST", "/v1/query", "10.0.0.1:1", "127.0.0.1:8500", "http://127.0.0.1:8500", 200},
		{"localhost origin", "PUT", "/v1/kv/a", "10.0.0.1:1", "localhost:8500", "http://localhost:8500", 200},
		{"rebound DNS name posing as the agent", "PUT", "/v1/kv/a", "10.0.0.1:1", "evil.example:8500", "http://evil.example:8500", 403},
		{"configured origin", "PUT", "/v1/kv/a", "10.0.0.1:1", "127.0.0.1:8500", "https://ui.example.com", 200},
		{"null origin", "PUT", "/v1/kv/a", "10.0.0.1:1", "127.0.0.1:8500", "null", 403},
		{"cross-site read is not refused", "GET", "/v1/kv/a", "10.0.0.1:1", "127.0.0.1:8500", "http://evil.example", 200},
		{"unknown datacenter read", "GET", "/v1/kv/a?dc=nowhere", "10.0.0.1:1", "", "", 500},
		{"unknown datacenter write", "PUT", "/v1/kv/zz?dc=nowhere", "10.0.0.1:1", "", "", 500},
		{"local datacenter", "GET", "/v1/kv/a?dc=dc1", "10.0.0.1:1", "", "", 200},
		{"huge filter", "GET", "/v1/catalog/nodes?filter=" + strings.Repeat("(", MaxFilterBytes+1), "10.0.0.1:1", "", "", 400},
		{"deep filter", "GET", "/v1/catalog/nodes?filter=" + strings.Repeat("(", MaxFilterDepth+1), "10.0.0.1:1", "", "", 400},
		{"parens in a string do not count", "GET", "/v1/catalog/nodes?filter=" + urlq(`Node == "`+strings.Repeat("(", 40)+`"`), "10.0.0.1:1", "", "", 200},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := acted
			r := httptest.NewRequest(c.method, c.target, nil)
			r.RemoteAddr = c.remote
			if c.host != "" {
				r.Host = c.host
			}
			if c.origin != "" {
				r.Header.Set("Origin", c.origin)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != c.want {
				t.Fatalf("status %d (%s), want %d", w.Code, strings.TrimSpace(w.Body.String()), c.want)
			}
			if (acted > before) != (c.want == 200) {
				t.Fatalf("handler ran=%v for status %d", acted > before, w.Code)
			}
			if w.Header().Get("X-Frame-Options") != "DENY" {
				t.Fatal("configured response header missing")
			}
			if w.Header().Get("Access-Control-Allow-Origin") != "" {
				t.Fatal("CORS header answered by default")
			}
		})
	}
	if _, err := ParsePrefixes([]string{"not-an-ip"}); err == nil {
		t.Fatal("bad allow_write_http_from entry parsed")
	}
}

func urlq(s string) string {
	return strings.NewReplacer(" ", "%20", `"`, "%22", "=", "%3D").Replace(s)
}

// TestLimitListener: with a limit of 3, a fourth connection from the same
// address is answered 429 and closed while the first three are served; when
// one closes, a new one is served, and the count returns to zero.
func TestLimitListener(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := LimitListener(raw, 3, Refuse429).(*limitListener)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	get := func(c net.Conn) (int, error) {
		if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return 0, err
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	var conns []net.Conn
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		if code, err := get(c); err != nil || code != 200 {
			t.Fatalf("conn %d: %d %v", i, code, err)
		}
	}
	extra, err := net.Dial("tcp", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	code, err := get(extra)
	if err != nil || code != 429 {
		t.Fatalf("fourth connection: %d %v, want 429", code, err)
	}
	extra.Close()
	conns[0].Close()
	local := netip.MustParseAddr("127.0.0.1")
	wait.For(t, 5*time.Second, func() error {
		if n := ln.OpenFrom(local); n != 2 {
			return fmt.Errorf("%d open", n)
		}
		return nil
	})
	again, err := net.Dial("tcp", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if code, err := get(again); err != nil || code != 200 {
		t.Fatalf("after a close: %d %v", code, err)
	}
	again.Close()
	for _, c := range conns[1:] {
		c.Close()
	}
	wait.For(t, 5*time.Second, func() error {
		if n := ln.OpenFrom(local); n != 0 {
			return fmt.Errorf("%d open after all closed", n)
		}
		return nil
	})
	ln.mu.Lock()
	left := len(ln.open)
	ln.mu.Unlock()
	if left != 0 {
		t.Fatalf("map keeps %d entries after all connections closed", left)
	}
}
