package httpguard

import (
	"errors"
	"io"
	"net/http"
	"sync"
	"time"
)

// BodyTimeout returns h with a deadline of d on reading each request's body:
// a client that trickles its body is cut off after d, and the handler's read
// fails with a timeout. The deadline is lifted as soon as the body has been
// read (or closed), so that a long blocking query that follows is not
// affected: unlike http.Server.ReadTimeout, whose deadline stays on the
// connection and cancels the request's context when it passes while the
// handler still runs.
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
		if err := rc.SetReadDeadline(time.Now().Add(d)); err != nil {
			// Not a connection we can set deadlines on (a test
			// recorder, HTTP/2): serve without one.
			h.ServeHTTP(w, r)
			return
		}
		r.Body = &deadlineBody{ReadCloser: r.Body, lift: func() { _ = rc.SetReadDeadline(time.Time{}) }}
		h.ServeHTTP(w, r)
	})
}

// deadlineBody lifts the read deadline once the body has been read to its
// end. A body left unread keeps the deadline, which then also bounds the
// server's discarding of it.
type deadlineBody struct {
	io.ReadCloser
	once sync.Once
	lift func()
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if errors.Is(err, io.EOF) {
		b.once.Do(b.lift)
	}
	return n, err
}
