package httpguard

import (
	"errors"
	"net"
	"sync"
	"time"
)

// Reinjectable wraps ln so that a connection a handler hijacked can be given
// back to the server that accepted it: its Accept returns the connection
// again, and the server serves its next request as it would a new
// connection's. The HTTP API hijacks the connections of parked blocking
// queries so that none holds a goroutine or buffers while it waits, then
// answers each and hands it back for keep-alive.
//
// The connections Accept returns implement Reinject() bool: it reports
// false when the listener is closed (the caller then closes the
// connection); otherwise the connection waits, on a small goroutine of the
// listener's and without the server's buffers, for the first byte of its
// next request (at most idle, when positive), and is then queued for
// Accept. Close closes the waiting and queued connections and waits for
// the listener's goroutines.
func Reinjectable(ln net.Listener, idle time.Duration) net.Listener {
	l := &reinjectListener{Listener: ln, idle: idle, accepted: make(chan accepted), notify: make(chan struct{}, 1), done: make(chan struct{}),
		waiting: map[*reinjectConn]struct{}{}}
	l.wg.Add(1)
	go l.pump()
	return l
}

type accepted struct {
	c   net.Conn
	err error
}

type reinjectListener struct {
	net.Listener
	idle     time.Duration
	accepted chan accepted
	notify   chan struct{}
	done     chan struct{}
	wg       sync.WaitGroup
	once     sync.Once

	mu      sync.Mutex
	queue   []net.Conn                 // handed back, readable, not yet accepted again
	waiting map[*reinjectConn]struct{} // handed back, waiting for a byte
	closed  bool
}

// pump accepts from the wrapped listener until it fails for good or the
// listener is closed.
func (l *reinjectListener) pump() {
	defer l.wg.Done()
	for {
		c, err := l.Listener.Accept()
		select {
		case l.accepted <- accepted{c, err}:
		case <-l.done:
			if c != nil {
				c.Close()
			}
			return
		}
		if errors.Is(err, net.ErrClosed) {
			return
		}
	}
}

// Accept implements net.Listener.
func (l *reinjectListener) Accept() (net.Conn, error) {
	for {
		l.mu.Lock()
		if len(l.queue) > 0 {
			c := l.queue[0]
			l.queue[0] = nil
			l.queue = l.queue[1:]
			l.mu.Unlock()
			return c, nil
		}
		l.mu.Unlock()
		select {
		case a := <-l.accepted:
			if a.err != nil {
				return nil, a.err
			}
			return &reinjectConn{Conn: a.c, l: l}, nil
		case <-l.notify:
		case <-l.done:
			return nil, net.ErrClosed
		}
	}
}

// Close implements net.Listener: it closes the wrapped listener and the
// connections handed back and not accepted again, and waits for its
// goroutine.
func (l *reinjectListener) Close() error {
	var err error
	l.once.Do(func() {
		l.mu.Lock()
		l.closed = true
		queue := l.queue
		l.queue = nil
		for c := range l.waiting {
			queue = append(queue, c)
		}
		l.waiting = nil
		l.mu.Unlock()
		close(l.done)
		err = l.Listener.Close()
		for _, c := range queue {
			c.Close()
		}
		l.wg.Wait()
	})
	return err
}

// reinjectConn is a connection of a Reinjectable listener.
type reinjectConn struct {
	net.Conn
	l *reinjectListener
	// first holds the byte read while the connection waited; pending is
	// the part of it not yet returned by Read. Only the goroutine that
	// waits writes them, before the connection is queued; the server
	// reads them after Accept (the listener's lock orders the two).
	first   [1]byte
	pending []byte
}

// Read implements net.Conn: the byte read while waiting comes first.
func (c *reinjectConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 && len(p) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// NetConn returns the connection it wraps (as tls.Conn.NetConn does), for
// writes straight to its socket; reads must go through c.
func (c *reinjectConn) NetConn() net.Conn { return c.Conn }

// Reinject hands the connection back to its listener; false when the
// listener is closed.
func (c *reinjectConn) Reinject() bool {
	l := c.l
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return false
	}
	l.waiting[c] = struct{}{}
	l.wg.Add(1)
	l.mu.Unlock()
	go c.wait()
	return true
}

// wait waits for the first byte of the connection's next request, then
// queues it for Accept; it closes the connection when the client closes it
// or stays idle too long.
func (c *reinjectConn) wait() {
	l := c.l
	defer l.wg.Done()
	if l.idle > 0 {
		_ = c.Conn.SetReadDeadline(time.Now().Add(l.idle))
	}
	n, err := c.Conn.Read(c.first[:])
	_ = c.Conn.SetReadDeadline(time.Time{})
	l.mu.Lock()
	if _, ok := l.waiting[c]; !ok {
		// Close took it.
		l.mu.Unlock()
		return
	}
	delete(l.waiting, c)
	if err != nil || n == 0 || l.closed {
		l.mu.Unlock()
		c.Close()
		return
	}
	c.pending = c.first[:n]
	l.queue = append(l.queue, c)
	l.mu.Unlock()
	select {
	case l.notify <- struct{}{}:
	default:
	}
}
