package servertest

import (
	"context"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"
)

// ErrUnreachable is the error of a dial across a cut link. It wraps
// syscall.ECONNREFUSED, as a dial to a closed port does.
var ErrUnreachable = fmt.Errorf("servertest: link cut: %w", syscall.ECONNREFUSED)

// Network is an in-process switchboard of server ports (and of gossip,
// see GossipTransport). Links join hosts, the IP part of the addresses.
// Every connection between two addresses runs through two pumps, one per direction, that the
// test can hold (a cut link: bytes wait, as TCP's retransmissions would,
// until the link heals), slow down (delay) or close. Dials across a link
// cut in either direction fail with ErrUnreachable.
//
// A Network owns the goroutines of its pumps; Close stops them and waits.
// Its methods are safe for concurrent use.
type Network struct {
	mu        sync.Mutex
	listeners map[string]*listener
	// links holds the state of each direction (from, to) that is not a
	// plain working link.
	links map[link]linkState
	// changed is closed and replaced whenever a link changes, waking
	// held pumps.
	changed chan struct{}
	conns   map[*pipe]struct{}
	// refused counts the dials refused per link.
	refused map[link]int
	// sinks receive the packets sent to each gossip address.
	sinks  map[string]*GossipTransport
	closed bool
	wg     sync.WaitGroup
}

// link is one direction between two hosts (the IP part of addresses):
// a server's RPC port and its gossip port share the fate of their host.
type link struct{ from, to string }

// host returns the host part of addr, or addr when it has no port.
func host(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

func linkOf(from, to string) link { return link{host(from), host(to)} }

type linkState struct {
	cut   bool
	delay time.Duration
}

// NewNetwork returns an empty network.
func NewNetwork() *Network {
	return &Network{listeners: map[string]*listener{}, links: map[link]linkState{},
		changed: make(chan struct{}), conns: map[*pipe]struct{}{}, refused: map[link]int{}, sinks: map[string]*GossipTransport{}}
}

// Listen returns the listener of addr ("ip:port"). The address must be
// free on the network.
func (n *Network) Listen(addr string) (net.Listener, error) {
	tcp, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("servertest: listen %s: %w", addr, err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, net.ErrClosed
	}
	if _, ok := n.listeners[addr]; ok {
		return nil, fmt.Errorf("servertest: listen %s: %w", addr, syscall.EADDRINUSE)
	}
	l := &listener{net: n, name: addr, addr: tcp, ch: make(chan net.Conn), done: make(chan struct{})}
	n.listeners[addr] = l
	return l, nil
}

// Dialer returns the dial function of the server at from.
func (n *Network) Dialer(from string) func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) { return n.dial(ctx, from, addr) }
}

func (n *Network) dial(ctx context.Context, from, to string) (net.Conn, error) {
	n.mu.Lock()
	l, ok := n.listeners[to]
	if n.closed || !ok {
		n.mu.Unlock()
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	}
	if n.links[linkOf(from, to)].cut || n.links[linkOf(to, from)].cut {
		n.refused[linkOf(from, to)]++
		n.mu.Unlock()
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: ErrUnreachable}
	}
	client, a := net.Pipe()
	b, server := net.Pipe()
	p := &pipe{from: from, to: to, ends: [4]net.Conn{client, a, b, server}, done: make(chan struct{})}
	n.conns[p] = struct{}{}
	n.wg.Add(2)
	n.mu.Unlock()
	go n.pump(p, linkOf(from, to), a, b)
	go n.pump(p, linkOf(to, from), b, a)
	select {
	case l.ch <- &addrConn{Conn: server, local: l.addr, remote: fakeAddr(from)}:
		return &addrConn{Conn: client, local: fakeAddr(from), remote: l.addr}, nil
	case <-l.done:
	case <-ctx.Done():
	}
	p.close()
	return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
}

// pump copies one direction of p until either end closes, holding bytes
// while the link is cut and delaying them by the link's delay.
func (n *Network) pump(p *pipe, l link, src, dst net.Conn) {
	defer n.wg.Done()
	defer func() {
		p.close()
		n.mu.Lock()
		delete(n.conns, p)
		n.mu.Unlock()
	}()
	buf := make([]byte, 32<<10)
	for {
		k, err := src.Read(buf)
		if err != nil {
			return
		}
		for {
			n.mu.Lock()
			st, changed, closed := n.links[l], n.changed, n.closed
			n.mu.Unlock()
			if closed {
				return
			}
			if !st.cut {
				if st.delay > 0 {
					t := time.NewTimer(st.delay)
					select {
					case <-t.C:
					case <-p.done:
						t.Stop()
						return
					}
				}
				break
			}
			select {
			case <-changed:
			case <-p.done:
				return
			}
		}
		if _, err := dst.Write(buf[:k]); err != nil {
			return
		}
	}
}

// Refused returns how many dials from from to to a cut link refused.
func (n *Network) Refused(from, to string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.refused[linkOf(from, to)]
}

// Cut breaks the link between the hosts of a and b in both directions.
func (n *Network) Cut(a, b string) { n.CutOneWay(a, b); n.CutOneWay(b, a) }

// CutOneWay holds every byte sent from from to to; the other direction
// keeps working (new connections still fail, as their handshake would).
func (n *Network) CutOneWay(from, to string) {
	n.update(linkOf(from, to), func(s *linkState) { s.cut = true })
}

// Heal restores the link between a and b in both directions, with no
// delay.
func (n *Network) Heal(a, b string) {
	n.update(linkOf(a, b), func(s *linkState) { *s = linkState{} })
	n.update(linkOf(b, a), func(s *linkState) { *s = linkState{} })
}

// HealAll restores every link.
func (n *Network) HealAll() {
	n.mu.Lock()
	defer n.mu.Unlock()
	clear(n.links)
	n.notifyLocked()
}

// Delay makes every chunk of bytes sent from from to to wait d.
func (n *Network) Delay(from, to string, d time.Duration) {
	n.update(linkOf(from, to), func(s *linkState) { s.delay = d })
}

// Isolate cuts addr's host from every other host of the network.
func (n *Network) Isolate(addr string) {
	n.mu.Lock()
	var others []string
	for a := range n.listeners {
		if host(a) != host(addr) {
			others = append(others, a)
		}
	}
	n.mu.Unlock()
	for _, o := range others {
		n.Cut(addr, o)
	}
}

// Disconnect closes every open connection from or to addr's host, as a
// crash or a reset would.
func (n *Network) Disconnect(addr string) {
	n.mu.Lock()
	var victims []*pipe
	for p := range n.conns {
		if host(p.from) == host(addr) || host(p.to) == host(addr) {
			victims = append(victims, p)
		}
	}
	n.mu.Unlock()
	for _, p := range victims {
		p.close()
	}
}

func (n *Network) update(l link, f func(*linkState)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	st := n.links[l]
	f(&st)
	if st == (linkState{}) {
		delete(n.links, l)
	} else {
		n.links[l] = st
	}
	n.notifyLocked()
}

func (n *Network) notifyLocked() {
	close(n.changed)
	n.changed = make(chan struct{})
}

// Close closes every connection and listener and waits for the pumps.
func (n *Network) Close() {
	n.mu.Lock()
	n.closed = true
	n.notifyLocked()
	var ps []*pipe
	for p := range n.conns {
		ps = append(ps, p)
	}
	var ls []*listener
	for _, l := range n.listeners {
		ls = append(ls, l)
	}
	n.mu.Unlock()
	for _, p := range ps {
		p.close()
	}
	for _, l := range ls {
		l.Close()
	}
	n.wg.Wait()
}

// pipe is one connection: client <-> a, pumps, b <-> server.
type pipe struct {
	from, to string
	ends     [4]net.Conn
	once     sync.Once
	done     chan struct{}
}

func (p *pipe) close() {
	p.once.Do(func() {
		close(p.done)
		for _, c := range p.ends {
			c.Close()
		}
	})
}

// listener is a server port on the Network.
type listener struct {
	net  *Network
	name string
	addr *net.TCPAddr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func (l *listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close frees the address; connections already accepted stay open.
func (l *listener) Close() error {
	l.once.Do(func() {
		close(l.done)
		l.net.mu.Lock()
		if l.net.listeners[l.name] == l {
			delete(l.net.listeners, l.name)
		}
		l.net.mu.Unlock()
	})
	return nil
}

func (l *listener) Addr() net.Addr { return l.addr }

// addrConn gives a pipe end the addresses of the servers it joins.
type addrConn struct {
	net.Conn
	local, remote net.Addr
}

func (c *addrConn) LocalAddr() net.Addr  { return c.local }
func (c *addrConn) RemoteAddr() net.Addr { return c.remote }

type fakeAddr string

func (a fakeAddr) Network() string { return "servertest" }
func (a fakeAddr) String() string  { return string(a) }
