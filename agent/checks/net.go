package checks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

type tcpProber struct {
	addr    string
	timeout time.Duration
}

func (p *tcpProber) probe(ctx context.Context) (string, string) {
	prefix := "TCP connect " + p.addr
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return StatusCritical, failure(ctx, prefix, err, p.timeout)
	}
	conn.Close()
	return StatusPassing, prefix + ": Success"
}

// udpPayload is the datagram a UDP check sends. Its content does not
// matter: the check only learns whether the port refuses it.
var udpPayload = []byte("tribune health check\n")

type udpProber struct {
	addr    string
	timeout time.Duration
}

func (p *udpProber) probe(ctx context.Context) (string, string) {
	prefix := "UDP check " + p.addr
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", p.addr)
	if err != nil {
		return StatusCritical, failure(ctx, prefix, err, p.timeout)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	// Stop cancels without a deadline: expire the socket's deadline so a
	// pending read returns at once.
	release := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer release()

	if _, err := conn.Write(udpPayload); err != nil {
		return StatusCritical, fmt.Sprintf("%s: %v", prefix, err)
	}
	buf := make([]byte, 512)
	_, err = conn.Read(buf)
	switch {
	case err == nil:
		return StatusPassing, prefix + ": Success (reply received)"
	case errors.Is(err, os.ErrDeadlineExceeded):
		// No reply and no ICMP refusal: UDP cannot tell a silent service
		// from a missing one, so Consul counts this as passing.
		return StatusPassing, fmt.Sprintf("%s: Success (no refusal within %s)", prefix, p.timeout)
	default:
		// Typically "connection refused": an ICMP port unreachable.
		return StatusCritical, fmt.Sprintf("%s: %v", prefix, err)
	}
}
