package checks

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestHTTPStatusFollowsResponseCode(t *testing.T) {
	leakCheck(t)
	var code atomic.Int64
	code.Store(200)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(int(code.Load()))
		io.WriteString(w, "body text")
	}))
	t.Cleanup(srv.Close)
	url := srv.URL + "/health"
	opts := testOptions()
	clk := fakeClock(t, opts)
	_, rec := startCheck(t, Definition{CheckID: "web", HTTP: url, Interval: 10 * time.Second}, opts)

	u := rec.waitStatus(t, StatusPassing)
	if want := "HTTP GET " + url + ": 200 OK Output: body text"; u.Output != want || u.ID != "web" {
		t.Fatalf("update %v, want output %q", u, want)
	}
	code.Store(429)
	u = rec.advanceToStatus(t, clk, 10*time.Second, StatusWarning)
	if !strings.Contains(u.Output, ": 429 Too Many Requests Output: body text") {
		t.Fatalf("429 output %q", u.Output)
	}
	code.Store(503)
	u = rec.advanceToStatus(t, clk, 10*time.Second, StatusCritical)
	if !strings.Contains(u.Output, ": 503 Service Unavailable Output: body text") {
		t.Fatalf("503 output %q", u.Output)
	}
	code.Store(204)
	rec.advanceToStatus(t, clk, 10*time.Second, StatusPassing)
}

func TestHTTPSendsMethodHeadersAndBody(t *testing.T) {
	leakCheck(t)
	type seen struct {
		method, host, ua, body string
		foo                    []string
	}
	got := make(chan seen, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.Host, r.UserAgent(), string(b), r.Header.Values("X-Foo")}
	}))
	t.Cleanup(srv.Close)
	startCheck(t, Definition{
		CheckID:  "api",
		HTTP:     srv.URL,
		Method:   "POST",
		Header:   map[string][]string{"x-foo": {"bar", "baz"}, "host": {"api.example"}},
		Body:     `{"method":"health"}`,
		Interval: time.Second,
	}, testOptions())
	var s seen
	select {
	case s = <-got:
	case <-time.After(waitTimeout):
		t.Fatal("no request")
	}
	if s.method != "POST" || s.host != "api.example" || s.body != `{"method":"health"}` || strings.Join(s.foo, ",") != "bar,baz" || s.ua != userAgent {
		t.Fatalf("request seen %+v", s)
	}
}

func TestHTTPRedirects(t *testing.T) {
	leakCheck(t)
	mux := http.NewServeMux()
	mux.Handle("/old", http.RedirectHandler("/new", http.StatusFound))
	mux.HandleFunc("/new", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "moved here") })
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	_, follow := startCheck(t, Definition{CheckID: "follow", HTTP: srv.URL + "/old", Interval: time.Second}, testOptions())
	if u := follow.waitStatus(t, StatusPassing); !strings.Contains(u.Output, "moved here") {
		t.Fatalf("followed redirect output %q", u.Output)
	}
	_, stay := startCheck(t, Definition{CheckID: "stay", HTTP: srv.URL + "/old", Interval: time.Second, DisableRedirects: true}, testOptions())
	if u := stay.waitStatus(t, StatusCritical); !strings.Contains(u.Output, "302 Found") {
		t.Fatalf("unfollowed redirect output %q", u.Output)
	}
}

func TestHTTPTimeout(t *testing.T) {
	leakCheck(t)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	start := time.Now()
	_, rec := startCheck(t, Definition{CheckID: "slow", HTTP: srv.URL, Interval: time.Second, Timeout: 100 * time.Millisecond}, testOptions())
	u := rec.waitStatus(t, StatusCritical)
	if want := "HTTP GET " + srv.URL + ": timed out after 100ms"; u.Output != want {
		t.Fatalf("output %q, want %q", u.Output, want)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("hanging probe reported after %s", el)
	}
}

func TestHTTPConnectionRefused(t *testing.T) {
	leakCheck(t)
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	_, rec := startCheck(t, Definition{CheckID: "down", HTTP: url, Interval: time.Second}, testOptions())
	if u := rec.waitStatus(t, StatusCritical); !strings.Contains(u.Output, "connection refused") || !strings.HasPrefix(u.Output, "HTTP GET "+url+": ") {
		t.Fatalf("output %q", u.Output)
	}
}

func TestHTTPSVerification(t *testing.T) {
	leakCheck(t)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "secure") }))
	srv.Config.ErrorLog = quietLog()
	srv.StartTLS()
	t.Cleanup(srv.Close)
	_, strict := startCheck(t, Definition{CheckID: "strict", HTTP: srv.URL, Interval: time.Second}, testOptions())
	if u := strict.waitStatus(t, StatusCritical); !strings.Contains(u.Output, "certificate") {
		t.Fatalf("self-signed certificate accepted: %q", u.Output)
	}
	_, skip := startCheck(t, Definition{CheckID: "skip", HTTP: srv.URL, Interval: time.Second, TLSSkipVerify: true}, testOptions())
	skip.waitStatus(t, StatusPassing)
	// With the server's own root, verification succeeds.
	opts := testOptions()
	opts.TLSConfig = srv.Client().Transport.(*http.Transport).TLSClientConfig
	_, trusted := startCheck(t, Definition{CheckID: "trusted", HTTP: srv.URL, Interval: time.Second}, opts)
	trusted.waitStatus(t, StatusPassing)
}

func TestHTTPOutputTruncated(t *testing.T) {
	leakCheck(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strings.Repeat("a", 100_000))
	}))
	t.Cleanup(srv.Close)
	_, rec := startCheck(t, Definition{CheckID: "big", HTTP: srv.URL, Interval: time.Second, OutputMaxSize: 200}, testOptions())
	u := rec.waitStatus(t, StatusPassing)
	if len(u.Output) != 200 || !strings.HasPrefix(u.Output, "HTTP GET "+srv.URL+": 200 OK Output: aaa") {
		t.Fatalf("output of %d bytes: %.80q...", len(u.Output), u.Output)
	}

	_, def := startCheck(t, Definition{CheckID: "big-default", HTTP: srv.URL, Interval: time.Second}, testOptions())
	if u := def.waitStatus(t, StatusPassing); len(u.Output) != DefaultOutputMaxSize {
		t.Fatalf("default limit: output of %d bytes", len(u.Output))
	}
}

// TestHTTPFailuresBeforeCritical runs the counters against a real server:
// after a passing probe, critical is reported exactly when the third
// consecutive failing response has been served.
func TestHTTPFailuresBeforeCritical(t *testing.T) {
	leakCheck(t)
	var hits atomic.Int64
	var mu sync.Mutex
	codes := []int{200, 503, 503, 503} // then 503 forever
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := hits.Add(1)
		mu.Lock()
		code := codes[min(int(n), len(codes))-1]
		mu.Unlock()
		w.WriteHeader(code)
	}))
	t.Cleanup(srv.Close)
	rec := newRecorder()
	rec.hook = hits.Load
	opts := testOptions()
	c, err := New(Definition{CheckID: "flappy", HTTP: srv.URL, Interval: 10 * time.Second, FailuresBeforeCritical: 3}, rec, opts)
	if err != nil {
		t.Fatal(err)
	}
	c.Start()
	t.Cleanup(c.Stop)
	rec.advanceToStatus(t, fakeClock(t, opts), 10*time.Second, StatusCritical)
	got := rec.all()
	if len(got) != 2 || got[0].Status != StatusPassing || got[0].Seen != 1 || got[1].Seen != 4 {
		t.Fatalf("updates %+v, want passing at request 1 and critical at request 4", got)
	}
}
