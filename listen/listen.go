// Package listen holds what every Tribune TCP listener shares on its accept
// side: Retry keeps an accept loop alive through a failing Accept (a
// descriptor shortage, an aborted connection) with the backoff net/http and
// gRPC use, so one EMFILE never ends a port for good.
//
// It must not import any other Tribune package but clock.
package listen

import (
	"errors"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tribune-mesh/tribune/clock"
)

// Backoff bounds of a failing Accept, as net/http's Server.Serve has them.
const (
	MinBackoff = 5 * time.Millisecond
	MaxBackoff = time.Second
)

// Retry wraps ln so that Accept retries every error but the listener's
// closing, waiting MinBackoff after the first failure and doubling up to
// MaxBackoff, instead of returning it to the accept loop (which would stop
// serving). Close interrupts a wait. clk and logger may be nil (the real
// clock; discard).
func Retry(ln net.Listener, clk clock.Clock, logger hclog.Logger) net.Listener {
	if clk == nil {
		clk = clock.New()
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &retryListener{Listener: ln, clock: clk, logger: logger, closed: make(chan struct{})}
}

type retryListener struct {
	net.Listener
	clock  clock.Clock
	logger hclog.Logger
	closed chan struct{}
	once   sync.Once
}

// Accept implements net.Listener.
func (l *retryListener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			return c, nil
		}
		if errors.Is(err, net.ErrClosed) {
			return nil, err
		}
		select {
		case <-l.closed:
			return nil, net.ErrClosed
		default:
		}
		delay = min(max(2*delay, MinBackoff), MaxBackoff)
		l.logger.Warn("accept failed, retrying", "addr", l.Addr().String(), "error", err, "delay", delay)
		t := l.clock.NewTimer(delay)
		select {
		case <-t.C():
		case <-l.closed:
			t.Stop()
			return nil, net.ErrClosed
		}
	}
}

// Close implements net.Listener; it also ends a wait between retries.
func (l *retryListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return l.Listener.Close()
}
