package dnsserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/miekg/dns"

	"github.com/tribune-mesh/tribune/listen"
)

// udpReadSize is the buffer for one incoming UDP query: room for EDNS0
// options beyond the 512 bytes of plain DNS.
const udpReadSize = 4096

// Server delivers queries to a handler over UDP and TCP on a set of
// addresses. It owns the listeners' goroutines; Shutdown stops them and
// waits.
type Server struct {
	logger  hclog.Logger
	servers []*dns.Server
	addrs   []net.Addr
	wg      sync.WaitGroup
	once    sync.Once
}

// Listen starts serving handler over UDP and TCP on every address
// ("host:port"). A port of 0 picks a free port, the same for UDP and TCP.
// When any listener fails, the ones started are stopped and the error
// returned.
//
// Where the system balances a port's packets over several sockets
// (SO_REUSEPORT on Linux), each address gets one UDP socket per CPU, each
// read by its own goroutine. When handler can answer queries from the
// packet (Handler can, from its cache), those goroutines ask it first and
// answer at once; every other query is served on a goroutine of its own.
func Listen(handler dns.Handler, addrs []string, logger hclog.Logger) (*Server, error) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	answerer, _ := handler.(packetAnswerer)
	s := &Server{logger: logger}
	for _, addr := range addrs {
		pcs, ln, err := listenSockets(addr, udpSockets())
		if err != nil {
			_ = s.Shutdown(context.Background())
			return nil, err
		}
		// miekg/dns ends its TCP accept loop on any error that is not
		// temporary, and spins without a pause on a temporary one: Retry
		// retries both with backoff.
		srvs := []*dns.Server{{Listener: listen.Retry(ln, nil, logger), Handler: handler, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second}}
		for _, pc := range pcs {
			srvs = append(srvs, &dns.Server{PacketConn: &udpConn{pc}, Handler: handler, UDPSize: udpReadSize,
				DecorateReader: func(r dns.Reader) dns.Reader { return newUDPReader(r, answerer, logger) }})
		}
		for i, srv := range srvs {
			if err := s.start(srv); err != nil {
				for _, unstarted := range srvs[i:] {
					closeServer(unstarted)
				}
				_ = s.Shutdown(context.Background())
				return nil, fmt.Errorf("DNS on %s: %w", addr, err)
			}
		}
		s.addrs = append(s.addrs, pcs[0].LocalAddr())
		logger.Info("DNS listening", "addr", pcs[0].LocalAddr().String(), "proto", "udp+tcp", "udp_sockets", len(pcs))
	}
	return s, nil
}

// closeServer closes the socket of a server that was never started.
func closeServer(srv *dns.Server) {
	if srv.PacketConn != nil {
		srv.PacketConn.Close()
	}
	if srv.Listener != nil {
		srv.Listener.Close()
	}
}

// listenSockets opens n UDP sockets (sharing the port; n is 1 where
// sockets cannot share one) and the TCP listener of addr, all on the same
// port. The TCP listener is not shared: it is what keeps two agents from
// serving one address.
func listenSockets(addr string, n int) ([]*net.UDPConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("DNS address %q: %w", addr, err)
	}
	closeAll := func(pcs []*net.UDPConn) {
		for _, pc := range pcs {
			pc.Close()
		}
	}
	// With port 0 the TCP port chosen for UDP may be taken: try again.
	for attempt := 0; ; attempt++ {
		pcs, err := listenUDP(addr, n)
		if err != nil {
			return nil, nil, err
		}
		tcpAddr := addr
		if port == "0" {
			tcpAddr = net.JoinHostPort(host, strconv.Itoa(pcs[0].LocalAddr().(*net.UDPAddr).Port))
		}
		ln, err := net.Listen("tcp", tcpAddr)
		if err == nil {
			return pcs, ln, nil
		}
		closeAll(pcs)
		if port != "0" || attempt >= 10 {
			return nil, nil, fmt.Errorf("DNS TCP listener on %s: %w", tcpAddr, err)
		}
	}
}

// listenUDP opens n UDP sockets on addr, sharing its port when n > 1,
// ready to report each packet's destination.
func listenUDP(addr string, n int) ([]*net.UDPConn, error) {
	var lc net.ListenConfig
	if n > 1 {
		lc.Control = reusePort
	}
	var pcs []*net.UDPConn
	fail := func(err error) ([]*net.UDPConn, error) {
		for _, pc := range pcs {
			pc.Close()
		}
		return nil, fmt.Errorf("DNS UDP listener on %s: %w", addr, err)
	}
	for i := 0; i < n; i++ {
		if i == 1 {
			// The others share the port the first one got.
			addr = pcs[0].LocalAddr().String()
		}
		pc, err := lc.ListenPacket(context.Background(), "udp", addr)
		if err != nil {
			return fail(err)
		}
		udp := pc.(*net.UDPConn)
		pcs = append(pcs, udp)
		if err := enableDestination(udp); err != nil {
			return fail(err)
		}
	}
	return pcs, nil
}

// start runs srv on its listener and returns once it serves.
func (s *Server) start(srv *dns.Server) error {
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	done := make(chan error, 1)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		err := srv.ActivateAndServe()
		done <- err
		if err != nil {
			s.logger.Error("DNS server stopped", "error", err)
		}
	}()
	select {
	case <-started:
		s.servers = append(s.servers, srv)
		return nil
	case err := <-done:
		if err == nil {
			err = errors.New("DNS server stopped at once")
		}
		return err
	}
}

// Addrs returns the UDP addresses served (the TCP ports are the same).
func (s *Server) Addrs() []net.Addr { return s.addrs }

// Shutdown stops every listener and waits for queries in flight to be
// answered, or for ctx to end. It is safe to call more than once.
func (s *Server) Shutdown(ctx context.Context) error {
	var errs []error
	s.once.Do(func() {
		for _, srv := range s.servers {
			if err := srv.ShutdownContext(ctx); err != nil {
				errs = append(errs, err)
			}
		}
		s.wg.Wait()
	})
	return errors.Join(errs...)
}
