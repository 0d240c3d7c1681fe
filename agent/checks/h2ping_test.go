package checks

import (
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestH2PingCleartext(t *testing.T) {
	leakCheck(t)
	// An h2c server: HTTP/2 with prior knowledge, no TLS.
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()

	_, rec := startCheck(t, Definition{CheckID: "h2c", H2PING: addr, Interval: time.Second}, testOptions())
	if u := rec.waitStatus(t, StatusPassing); u.Output != "H2PING "+addr+": Success" {
		t.Fatalf("output %q", u.Output)
	}
}

func TestH2PingNeedsHTTP2(t *testing.T) {
	leakCheck(t)
	srv := httptest.NewServer(http.NotFoundHandler()) // HTTP/1.1 only
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()
	_, rec := startCheck(t, Definition{CheckID: "h1", H2PING: addr, Interval: time.Second}, testOptions())
	if u := rec.waitStatus(t, StatusCritical); !strings.HasPrefix(u.Output, "H2PING "+addr+": ") {
		t.Fatalf("output %q", u.Output)
	}
}

func TestH2PingTLS(t *testing.T) {
	leakCheck(t)
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.EnableHTTP2 = true
	srv.Config.ErrorLog = quietLog()
	srv.StartTLS()
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()

	_, rec := startCheck(t, Definition{CheckID: "h2", H2PING: addr, H2PingUseTLS: true, TLSSkipVerify: true, Interval: time.Second}, testOptions())
	rec.waitStatus(t, StatusPassing)

	_, strict := startCheck(t, Definition{CheckID: "h2-strict", H2PING: addr, H2PingUseTLS: true, Interval: time.Second}, testOptions())
	if u := strict.waitStatus(t, StatusCritical); !strings.Contains(u.Output, "certificate") {
		t.Fatalf("output %q", u.Output)
	}

	// A TLS server without h2 in ALPN does not speak HTTP/2: Go's refuses
	// the handshake, others complete it without a protocol.
	h1 := httptest.NewUnstartedServer(http.NotFoundHandler())
	h1.Config.ErrorLog = quietLog()
	h1.StartTLS()
	t.Cleanup(h1.Close)
	_, noALPN := startCheck(t, Definition{CheckID: "h1-tls", H2PING: h1.Listener.Addr().String(), H2PingUseTLS: true, TLSSkipVerify: true, Interval: time.Second}, testOptions())
	if u := noALPN.waitStatus(t, StatusCritical); !strings.Contains(u.Output, "no application protocol") && !strings.Contains(u.Output, "did not negotiate HTTP/2") {
		t.Fatalf("output %q", u.Output)
	}
}

// TestH2PingSilentServerTimesOut probes a server that accepts connections
// and never answers: the probe must end at its timeout.
func TestH2PingSilentServerTimesOut(t *testing.T) {
	leakCheck(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	addr := ln.Addr().String()
	start := time.Now()
	_, rec := startCheck(t, Definition{CheckID: "silent", H2PING: addr, Interval: time.Second, Timeout: 100 * time.Millisecond}, testOptions())
	if u := rec.waitStatus(t, StatusCritical); u.Output != "H2PING "+addr+": timed out after 100ms" {
		t.Fatalf("output %q", u.Output)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("reported after %s", el)
	}
}

// quietLog silences the handshake errors a TLS test server logs when a
// check rightly refuses its certificate.
func quietLog() *log.Logger { return log.New(io.Discard, "", 0) }
