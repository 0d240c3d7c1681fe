package httpguard

import (
	"errors"
	"io"
	"net/http"
	"time"
)

// MinBodyRate is the pace, in bytes per second, at which a request body
// earns time beyond BodyTimeout's d: a large upload (a snapshot restore) on
// a slow link is not cut while it keeps arriving at this rate, while a body
// trickled a few bytes at a time is cut at about d.
const MinBodyRate = 64 << 10

// BodyTimeout returns h with a deadline on reading each request's body: d
// after the request starts, plus one second per MinBodyRate bytes received.
// A client that trickles its body is cut off, and the handler's read fails
// with a timeout. The deadline is lifted as soon as the body has been read
// to its end, so that a long blocking query that follows is not affected:
// unlike http.Server.ReadTimeout, whose deadline stays on the connection
// and cancels the request's context when it passes while the handler
// still runs.
//
// Requests without a body are untouched; d <= 0 means no deadline.
func BodyTimeout(h http.Handler, d time.Duration) http.Handler {
	if d <= 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
			h.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		start := time.Now()
		if err := rc.SetReadDeadline(start.Add(d)); err != nil {
			// Not a connection we can set deadlines on (a test
			// recorder, HTTP/2): serve without one.
			h.ServeHTTP(w, r)
			return
		}
		r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc, base: start.Add(d)}
		h.ServeHTTP(w, r)
	})
}

// deadlineBody moves the read deadline as the body arrives and lifts it
// once the body has been read to its end. A body left unread keeps the
// deadline, which then also bounds the server's discarding of it.
type deadlineBody struct {
	io.ReadCloser
	rc    *http.ResponseController
	base  time.Time
	total int64
	done  bool
}

// Read implements io.Reader. The handler reads its body from one goroutine.
func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if b.done {
		return n, err
	}
	if errors.Is(err, io.EOF) {
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
		return n, err
	}
	if n > 0 {
		b.total += int64(n)
		_ = b.rc.SetReadDeadline(b.base.Add(time.Duration(float64(b.total) / MinBodyRate * float64(time.Second))))
	}
	return n, err
}
