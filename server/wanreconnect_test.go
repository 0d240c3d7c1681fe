package server

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"

	"github.com/tribune-mesh/tribune/gossip"
	"github.com/tribune-mesh/tribune/test/wait"
)

// cutTransport is memberlist's real network transport with a switch that
// cuts the member off: nothing it sends leaves, nothing sent to it
// arrives (a WAN partition, for one member).
type cutTransport struct {
	*memberlist.NetTransport
	cut     atomic.Bool
	packets chan *memberlist.Packet
	streams chan net.Conn
	stop    chan struct{}
	wg      sync.WaitGroup
}

func newCutTransport(t *testing.T) *cutTransport {
	t.Helper()
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{"127.0.0.1"}, BindPort: 0})
	if err != nil {
		t.Fatal(err)
	}
	c := &cutTransport{NetTransport: nt, packets: make(chan *memberlist.Packet), streams: make(chan net.Conn), stop: make(chan struct{})}
	c.wg.Add(2)
	go func() {
		defer c.wg.Done()
		for {
			select {
			case p := <-nt.PacketCh():
				if c.cut.Load() {
					continue
				}
				select {
				case c.packets <- p:
				case <-c.stop:
					return
				}
			case <-c.stop:
				return
			}
		}
	}()
	go func() {
		defer c.wg.Done()
		for {
			select {
			case conn := <-nt.StreamCh():
				if c.cut.Load() {
					conn.Close()
					continue
				}
				select {
				case c.streams <- conn:
				case <-c.stop:
					conn.Close()
					return
				}
			case <-c.stop:
				return
			}
		}
	}()
	return c
}

func (c *cutTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if c.cut.Load() {
		return time.Now(), nil
	}
	return c.NetTransport.WriteTo(b, addr)
}

func (c *cutTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if c.cut.Load() {
		return nil, errors.New("cut off")
	}
	return c.NetTransport.DialTimeout(addr, timeout)
}

func (c *cutTransport) PacketCh() <-chan *memberlist.Packet { return c.packets }
func (c *cutTransport) StreamCh() <-chan net.Conn           { return c.streams }

func (c *cutTransport) Shutdown() error {
	err := c.NetTransport.Shutdown()
	close(c.stop)
	c.wg.Wait()
	return err
}

// wanMember starts a WAN pool member, server of datacenter dc, over a
// transport that can be cut.
func wanMember(t *testing.T, node, dc string) (*gossip.Pool, *cutTransport) {
	t.Helper()
	tr := newCutTransport(t)
	port := tr.GetAutoBindPort()
	p, err := gossip.New(&gossip.Config{NodeName: node + "." + dc, BindAddr: "127.0.0.1", BindPort: port, WAN: true, Fast: true,
		Transport: tr, Tags: map[string]string{"role": "consul", "dc": dc, "port": "8300"}, Logger: hclog.NewNullLogger()})
	if err != nil {
		tr.Shutdown()
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Shutdown() })
	return p, tr
}

func statusOf(p *gossip.Pool, name string) gossip.Status {
	for _, m := range p.Members() {
		if m.Name == name {
			return m.Status
		}
	}
	return 0
}

// TestWANReconnectAfterPartition: once a WAN partition has made two
// datacenters' servers mark each other failed, healing the network is not
// enough for memberlist (the failure notices were all sent into the
// partition); a server's WAN loop rejoins the failed servers of other
// datacenters that answer again, and the pool heals.
func TestWANReconnectAfterPartition(t *testing.T) {
	a, _ := wanMember(t, "a", "dc1")
	b, bt := wanMember(t, "b", "dc2")
	if _, err := a.Join([]string{"127.0.0.1:" + strconv.Itoa(bt.GetAutoBindPort())}); err != nil {
		t.Fatal(err)
	}
	both := func(want gossip.Status) func() error {
		return func() error {
			if sa, sb := statusOf(a, "b.dc2"), statusOf(b, "a.dc1"); sa != want || sb != want {
				return fmt.Errorf("a sees b %v, b sees a %v; want %v", sa, sb, want)
			}
			return nil
		}
	}
	wait.For(t, 10*time.Second, both(gossip.StatusAlive))
	bt.cut.Store(true)
	// b, alone, doubts itself before it doubts a (memberlist's awareness):
	// a marking b failed is the partition that matters here.
	wait.For(t, 30*time.Second, func() error {
		if st := statusOf(a, "b.dc2"); st != gossip.StatusFailed {
			return fmt.Errorf("a sees b %v", st)
		}
		return nil
	})
	// Hold the partition while a's notices of b's failure are all sent
	// (into it), as a real WAN partition does.
	time.Sleep(2 * time.Second)
	bt.cut.Store(false)

	s := &Server{config: &Config{Datacenter: "dc1", WAN: a}, logger: hclog.NewNullLogger()}
	start := time.Now()
	// Well within memberlist's own push/pull interval (15 s here).
	wait.For(t, 5*time.Second, func() error {
		s.reconnectWAN()
		return both(gossip.StatusAlive)()
	})
	t.Logf("WAN pool healed %v after the partition did", time.Since(start).Round(time.Millisecond))
}
