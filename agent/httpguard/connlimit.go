package httpguard

import (
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// LimitListener wraps ln so that at most max connections from one source
// address are open at once (limits.http_max_conns_per_client,
// limits.rpc_max_conns_per_client); max <= 0 means no limit. A connection
// over the limit is handed to refuse (which may write an answer, such as
// HTTP 429) and closed; Accept goes on with the next one.
func LimitListener(ln net.Listener, max int, refuse func(net.Conn)) net.Listener {
	if max <= 0 {
		return ln
	}
	return &limitListener{Listener: ln, max: max, refuse: refuse, open: map[netip.Addr]int{}}
}

type limitListener struct {
	net.Listener
	max    int
	refuse func(net.Conn)

	mu   sync.Mutex
	open map[netip.Addr]int // source address -> open connections; entries at 0 are deleted
}

// Accept implements net.Listener.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		addr, ok := sourceAddr(c)
		if !ok {
			return c, nil // unix sockets: local, unlimited
		}
		l.mu.Lock()
		n := l.open[addr]
		if n >= l.max {
			l.mu.Unlock()
			if l.refuse != nil {
				_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
				l.refuse(c)
			}
			c.Close()
			continue
		}
		l.open[addr] = n + 1
		l.mu.Unlock()
		return &limitedConn{Conn: c, l: l, addr: addr}, nil
	}
}

// OpenFrom returns the number of open connections from addr.
func (l *limitListener) OpenFrom(addr netip.Addr) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open[addr]
}

func (l *limitListener) release(addr netip.Addr) {
	l.mu.Lock()
	if l.open[addr] <= 1 {
		delete(l.open, addr)
	} else {
		l.open[addr]--
	}
	l.mu.Unlock()
}

func sourceAddr(c net.Conn) (netip.Addr, bool) {
	tcp, ok := c.RemoteAddr().(*net.TCPAddr)
	if !ok {
		return netip.Addr{}, false
	}
	a, ok := netip.AddrFromSlice(tcp.IP)
	return a.Unmap(), ok
}

type limitedConn struct {
	net.Conn
	l    *limitListener
	addr netip.Addr
	once sync.Once
}

// NetConn returns the connection it wraps (as tls.Conn.NetConn does); it
// must not be closed but through c.
func (c *limitedConn) NetConn() net.Conn { return c.Conn }

// Close implements net.Conn; the slot is released once.
func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.addr) })
	return err
}

// Refuse429 answers a connection refused for its source's limit with HTTP
// 429, as Consul does for http_max_conns_per_client.
func Refuse429(c net.Conn) {
	const body = "Your IP is issuing too many concurrent connections, please rate limit your calls\n"
	_, _ = c.Write([]byte("HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n" + body))
}
