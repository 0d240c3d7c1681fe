package servertest

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// GossipTransport is a memberlist transport on a Network, so that gossip
// pools (gossip.Config.Transport) share the fate of their servers' links:
// packets across a cut link are lost, as UDP's would be, and streams are
// Network connections (held while cut, refused to dial).
type GossipTransport struct {
	net      *Network
	addr     string
	udp      *net.UDPAddr
	ln       net.Listener
	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	done     chan struct{}
	once     sync.Once
	wg       sync.WaitGroup
}

var _ memberlist.Transport = (*GossipTransport)(nil)

// NewGossipTransport returns the gossip transport of addr ("ip:port").
// Shutdown (called by memberlist) releases it.
func (n *Network) NewGossipTransport(addr string) (*GossipTransport, error) {
	udp, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("servertest: gossip address %s: %w", addr, err)
	}
	ln, err := n.Listen(addr)
	if err != nil {
		return nil, err
	}
	t := &GossipTransport{net: n, addr: addr, udp: udp, ln: ln,
		packetCh: make(chan *memberlist.Packet, 1024), streamCh: make(chan net.Conn), done: make(chan struct{})}
	n.mu.Lock()
	n.sinks[addr] = t
	n.mu.Unlock()
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case t.streamCh <- c:
			case <-t.done:
				c.Close()
				return
			}
		}
	}()
	return t, nil
}

// FinalAdvertiseAddr implements memberlist.Transport.
func (t *GossipTransport) FinalAdvertiseAddr(string, int) (net.IP, int, error) {
	return t.udp.IP, t.udp.Port, nil
}

// WriteTo implements memberlist.Transport: the packet is delivered unless
// the link is cut, the receiver is gone or its queue is full.
func (t *GossipTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	now := time.Now()
	n := t.net
	n.mu.Lock()
	sink := n.sinks[addr]
	cut := n.links[linkOf(t.addr, addr)].cut
	n.mu.Unlock()
	if sink == nil || cut {
		return now, nil
	}
	p := &memberlist.Packet{Buf: append([]byte(nil), b...), From: t.udp, Timestamp: now}
	select {
	case sink.packetCh <- p:
	case <-sink.done:
	default:
	}
	return now, nil
}

// PacketCh implements memberlist.Transport.
func (t *GossipTransport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

// DialTimeout implements memberlist.Transport.
func (t *GossipTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return t.net.dial(ctx, t.addr, addr)
}

// StreamCh implements memberlist.Transport.
func (t *GossipTransport) StreamCh() <-chan net.Conn { return t.streamCh }

// Shutdown implements memberlist.Transport.
func (t *GossipTransport) Shutdown() error {
	t.once.Do(func() {
		close(t.done)
		t.net.mu.Lock()
		if t.net.sinks[t.addr] == t {
			delete(t.net.sinks, t.addr)
		}
		t.net.mu.Unlock()
		t.ln.Close()
		t.wg.Wait()
	})
	return nil
}
