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
func Listen(handler dns.Handler, addrs []string, logger hclog.Logger) (*Server, error) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	s := &Server{logger: logger}
	for _, addr := range addrs {
		pc, ln, err := listenPair(addr)
		if err != nil {
			_ = s.Shutdown(context.Background())
			return nil, err
		}
		for _, srv := range []*dns.Server{
			{PacketConn: pc, Handler: handler, UDPSize: udpReadSize},
			{Listener: ln, Handler: handler, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second},
		} {
			if err := s.start(srv); err != nil {
				pc.Close()
				ln.Close()
				_ = s.Shutdown(context.Background())
				return nil, fmt.Errorf("DNS on %s: %w", addr, err)
			}
		}
		s.addrs = append(s.addrs, pc.LocalAddr())
		logger.Info("DNS listening", "addr", pc.LocalAddr().String(), "proto", "udp+tcp")
	}
	return s, nil
}

// listenPair opens the UDP socket and the TCP listener of addr on the
// same port.
func listenPair(addr string) (net.PacketConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("DNS address %q: %w", addr, err)
	}
	// With port 0 the TCP port chosen for UDP may be taken: try again.
	for attempt := 0; ; attempt++ {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("DNS UDP listener on %s: %w", addr, err)
		}
		tcpAddr := addr
		if port == "0" {
			tcpAddr = net.JoinHostPort(host, strconv.Itoa(pc.LocalAddr().(*net.UDPAddr).Port))
		}
		ln, err := net.Listen("tcp", tcpAddr)
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		if port != "0" || attempt >= 10 {
			return nil, nil, fmt.Errorf("DNS TCP listener on %s: %w", tcpAddr, err)
		}
	}
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
