package dnsserver

import (
	"bytes"
	"net"
	"net/netip"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/miekg/dns"
)

// packetAnswerer is implemented by a handler that can answer some queries
// from the packet alone without blocking (Handler.AnswerPacket): a Server
// asks it on the goroutine reading the socket, and hands the queries it
// does not answer to ServeDNS, each on a goroutine of its own.
type packetAnswerer interface {
	AnswerPacket(dst, query []byte, network string) ([]byte, bool)
}

// udpConn is a UDP socket served by a dns.Server. It is not a
// *net.UDPConn, so the dns.Server reads it through udpReader and writes
// answers through WriteTo, to the udpPeer udpReader returned; as
// dns.Server does with a *net.UDPConn, answers are sent from the address
// the query was sent to (IP_PKTINFO, where dns.Server uses it), which
// matters on a wildcard address.
type udpConn struct {
	*net.UDPConn
}

// WriteTo implements net.PacketConn.
func (c *udpConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if p, ok := addr.(*udpPeer); ok {
		n, _, err := c.WriteMsgUDPAddrPort(b, p.control, p.addr)
		return n, err
	}
	return c.UDPConn.WriteTo(b, addr)
}

// udpPeer is the client of one query and the control message its answer
// is sent with.
type udpPeer struct {
	addr    netip.AddrPort
	control []byte
}

// Network implements net.Addr.
func (p *udpPeer) Network() string { return "udp" }

// String implements net.Addr.
func (p *udpPeer) String() string {
	return netip.AddrPortFrom(p.addr.Addr().Unmap(), p.addr.Port()).String()
}

// udpReader reads queries for one dns.Server (which calls it from a
// single goroutine, so its buffers need no lock). Queries the handler
// answers from the packet are answered right there; the others are
// returned to the dns.Server, which serves each on its own goroutine.
type udpReader struct {
	dns.Reader
	answerer packetAnswerer // nil when the handler has no fast path
	logger   hclog.Logger

	buf, oob, out []byte
	// lastControl is the last control message read and replyControl the
	// one its answers are sent with: the same for every query to one
	// address, so it is parsed once.
	lastControl, replyControl []byte
}

func newUDPReader(inner dns.Reader, answerer packetAnswerer, logger hclog.Logger) *udpReader {
	return &udpReader{
		Reader:   inner,
		answerer: answerer,
		logger:   logger,
		buf:      make([]byte, udpReadSize),
		oob:      make([]byte, controlSize()),
	}
}

// ReadPacketConn implements dns.PacketConnReader. It never sets a read
// deadline, so the one dns.Server sets on shutdown is the only one.
func (r *udpReader) ReadPacketConn(conn net.PacketConn, _ time.Duration) ([]byte, net.Addr, error) {
	c, ok := conn.(*udpConn)
	if !ok {
		return nil, nil, &net.OpError{Op: "read", Net: "udp", Err: net.UnknownNetworkError("not a dnsserver UDP socket")}
	}
	for {
		n, oobn, _, addr, err := c.ReadMsgUDPAddrPort(r.buf, r.oob)
		if err != nil {
			return nil, nil, err
		}
		control := r.reply(r.oob[:oobn])
		if r.answerer != nil {
			out, ok := r.answerer.AnswerPacket(r.out, r.buf[:n], "udp")
			r.out = out
			if ok {
				if _, _, err := c.WriteMsgUDPAddrPort(out, control, addr); err != nil {
					r.logger.Debug("write response", "client", addr.String(), "error", err)
				}
				continue
			}
		}
		return bytes.Clone(r.buf[:n]), &udpPeer{addr: addr, control: control}, nil
	}
}

// reply returns the control message answering a packet that came with
// oob: the packet's destination as the answer's source.
func (r *udpReader) reply(oob []byte) []byte {
	if len(oob) == 0 {
		return nil
	}
	if r.lastControl != nil && bytes.Equal(oob, r.lastControl) {
		return r.replyControl
	}
	r.lastControl = bytes.Clone(oob)
	r.replyControl = sourceControl(oob)
	return r.replyControl
}
