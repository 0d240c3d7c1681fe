package checks

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"golang.org/x/net/http2"
)

type h2pingProber struct {
	addr    string
	tls     *tls.Config // nil for h2c
	timeout time.Duration
}

func newH2PingProber(def Definition, baseTLS *tls.Config) *h2pingProber {
	p := &h2pingProber{addr: def.H2PING, timeout: def.Timeout}
	if def.H2PingUseTLS {
		p.tls = checkTLSConfig(baseTLS, def.TLSSkipVerify, def.TLSServerName)
		p.tls.NextProtos = []string{http2.NextProtoTLS}
	}
	return p
}

func (p *h2pingProber) probe(ctx context.Context) (string, string) {
	prefix := "H2PING " + p.addr
	if err := p.ping(ctx); err != nil {
		return StatusCritical, failure(ctx, prefix, err, p.timeout)
	}
	return StatusPassing, prefix + ": Success"
}

// pingData identifies our PING among any the server might send.
var pingData = [8]byte{'t', 'r', 'i', 'b', 'u', 'n', 'e', 0}

// ping speaks just enough HTTP/2 to have one PING acknowledged: the client
// preface, an empty SETTINGS frame, the PING, then frames are read
// (acknowledging the server's SETTINGS) until the PING ack arrives.
func (p *h2pingProber) ping(ctx context.Context) error {
	var conn net.Conn
	var err error
	if p.tls != nil {
		d := tls.Dialer{Config: p.tls}
		conn, err = d.DialContext(ctx, "tcp", p.addr)
		if err == nil {
			if proto := conn.(*tls.Conn).ConnectionState().NegotiatedProtocol; proto != http2.NextProtoTLS {
				conn.Close()
				return fmt.Errorf("server did not negotiate HTTP/2 over TLS (ALPN %q)", proto)
			}
		}
	} else {
		var d net.Dialer
		conn, err = d.DialContext(ctx, "tcp", p.addr)
	}
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	release := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer release()

	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		return fmt.Errorf("write preface: %w", err)
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		return fmt.Errorf("write settings: %w", err)
	}
	if err := fr.WritePing(false, pingData); err != nil {
		return fmt.Errorf("write ping: %w", err)
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return errors.New("connection closed before the ping was acknowledged")
			}
			return fmt.Errorf("read frame: %w", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				if err := fr.WriteSettingsAck(); err != nil {
					return fmt.Errorf("write settings ack: %w", err)
				}
			}
		case *http2.PingFrame:
			if f.IsAck() && f.Data == pingData {
				// Leave politely; the result is already known.
				_ = fr.WriteGoAway(0, http2.ErrCodeNo, nil)
				return nil
			}
		case *http2.GoAwayFrame:
			return fmt.Errorf("server sent GOAWAY (%s)", f.ErrCode)
		}
	}
}
