package httpapi

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/tribune-mesh/tribune/agent/viewcache"
	"github.com/tribune-mesh/tribune/catalog"
)

// TestParkedResponseShared checks the rendering of parked queries'
// answers: queries of one shape share one rendering of a result (the same
// bytes, within a second), each shape renders what it must (HEAD: no body,
// the body's Content-Length; no keep-alive: Connection: close; configured
// headers; the ACL filter header only with a token), and every rendering is
// a well-formed HTTP/1.1 response.
func TestParkedResponseShared(t *testing.T) {
	resp := &catalog.ReadResponse{
		KV:   &catalog.KVEntry{Key: "k", Value: []byte("v"), RaftIndex: catalog.RaftIndex{CreateIndex: 3, ModifyIndex: 7}},
		Meta: catalog.QueryMeta{Index: 7, KnownLeader: true, ResultsFilteredByACLs: true},
	}
	memo := &viewcache.Memo{}
	body := memoJSON(memo, memoKVGetJSON, []*catalog.KVEntry{resp.KV}).body
	render := func(shape parkedShape, hdr http.Header) []byte {
		return kvGetParked.response(memo, any(shape), shape, hdr, resp)
	}
	parse := func(b []byte, method string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(method, "/", nil)
		r, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(b)), req)
		if err != nil {
			t.Fatalf("rendered answer %q: %v", b, err)
		}
		got, err := io.ReadAll(r.Body)
		if err != nil {
			t.Fatal(err)
		}
		return r, string(got)
	}

	plain := parkedShape{answer: memoKVGetParked, keepAlive: true}
	for {
		// Two renderings within one second share their bytes.
		sec := time.Now().Unix()
		a, b := render(plain, http.Header{}), render(plain, http.Header{})
		if time.Now().Unix() != sec {
			continue
		}
		if &a[0] != &b[0] {
			t.Fatal("two queries of one shape got two renderings")
		}
		r, got := parse(a, http.MethodGet)
		if r.StatusCode != http.StatusOK || got != string(body) || r.Close ||
			r.Header.Get("X-Consul-Index") != "7" || r.Header.Get("X-Consul-Knownleader") != "true" ||
			r.Header.Get("Content-Type") != "application/json" || r.Header.Get(headerFilteredByACLs) != "" {
			t.Fatalf("plain answer: %q", a)
		}
		if _, err := http.ParseTime(r.Header.Get("Date")); err != nil {
			t.Fatalf("plain answer's Date: %v", err)
		}
		break
	}

	head := parkedShape{answer: memoKVGetParked, head: true, keepAlive: true}
	r, got := parse(render(head, http.Header{}), http.MethodHead)
	if got != "" || r.Header.Get("Content-Length") != strconv.Itoa(len(body)) {
		t.Fatalf("HEAD answer: body %q, Content-Length %q, want none and %d", got, r.Header.Get("Content-Length"), len(body))
	}

	closing := parkedShape{answer: memoKVGetParked, token: true}
	r, got = parse(render(closing, http.Header{}), http.MethodGet)
	if !r.Close || got != string(body) || r.Header.Get(headerFilteredByACLs) != "true" {
		t.Fatalf("answer without keep-alive, with a token: close=%v filtered=%q %q", r.Close, r.Header.Get(headerFilteredByACLs), got)
	}

	configured := http.Header{"X-Frame-Options": []string{"DENY"}}
	withHeaders := parkedShape{answer: memoKVGetParked, keepAlive: true, pre: wireHeader(configured)}
	r, got = parse(render(withHeaders, configured), http.MethodGet)
	if r.Header.Get("X-Frame-Options") != "DENY" || got != string(body) {
		t.Fatalf("answer with configured headers: %v %q", r.Header, got)
	}

	// Without a Memo (a result read for this caller alone) each renders
	// its own.
	if a, b := kvGetParked.response(nil, any(plain), plain, http.Header{}, resp), kvGetParked.response(nil, any(plain), plain, http.Header{}, resp); &a[0] == &b[0] {
		t.Fatal("renderings without a Memo shared")
	}
}

// TestWriteParkedFullSocket writes an answer larger than the socket takes
// at once: what the first, non-waiting write leaves is written with a
// deadline, in order, and the connection is then closed (no keep-alive).
func TestWriteParkedFullSocket(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	raw := socketOf(server)
	if raw == nil {
		t.Fatal("no socket under a TCP connection")
	}
	if socketOf(tls.Server(server, &tls.Config{})) != nil {
		t.Fatal("a socket under a TLS connection: its answers would go out in clear")
	}
	want := bytes.Repeat([]byte("0123456789abcdef"), 1<<19) // 8 MiB: more than the buffers hold
	n, err := writeNow(raw, want)
	if err != nil || n >= len(want) {
		t.Fatalf("first write took %d of %d bytes (%v): want part of them, without waiting", n, len(want), err)
	}
	got := make(chan []byte, 1)
	go func() {
		_ = client.SetReadDeadline(time.Now().Add(30 * time.Second))
		b, _ := io.ReadAll(client)
		got <- b
	}()
	writeParked(server, raw, want[n:], false, nil)
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("client read %d bytes, want the %d written, in order", len(b), len(want))
	}
}
