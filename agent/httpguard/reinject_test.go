package httpguard

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestReinjectable serves a connection, takes it from the server
// (hijack), answers it by hand and hands it back: the server serves its next
// request. Close closes a connection handed back and still waiting, and
// stops the listener's goroutines.
func TestReinjectable(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := Reinjectable(raw, time.Minute)
	handedBack := make(chan bool, 4)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/hijack" {
			_, _ = io.WriteString(w, "served "+r.URL.Path)
			return
		}
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nbyhand")
		handedBack <- conn.(interface{ Reinject() bool }).Reinject()
	})}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	get := func(path string) string {
		t.Helper()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for i := 0; i < 3; i++ {
		if got := get("/hijack"); got != "byhand" {
			t.Fatalf("hijacked answer %q", got)
		}
		if !<-handedBack {
			t.Fatal("Reinject refused on an open listener")
		}
		if got := get("/next"); got != "served /next" {
			t.Fatalf("next request on the connection handed back: %q", got)
		}
	}
	// Handed back and waiting for a request when the listener closes.
	if got := get("/hijack"); got != "byhand" {
		t.Fatalf("hijacked answer %q", got)
	}
	<-handedBack
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	<-served
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("connection still open after Close (read %d bytes)", n)
	}
	if conn, ok := any(&reinjectConn{l: ln.(*reinjectListener)}).(interface{ Reinject() bool }); !ok || conn.Reinject() {
		t.Fatal("Reinject accepted after Close")
	}
}
