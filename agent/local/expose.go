package local

import (
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/tribune-mesh/tribune/agent/checks"
	"github.com/tribune-mesh/tribune/catalog"
)

// Exposed checks (a sidecar's Proxy.Expose.Checks): the HTTP and gRPC
// checks of the service a local sidecar fronts are probed through that
// sidecar, on a listener of its own for each (a port of
// ports.expose_min_port..expose_max_port, shown as the check's
// ExposedPort), which sends the probe to the app's path and port as the
// check names them. A probe of the app's own address would fail where
// transparent proxying redirects it into the mesh's mTLS listener.

// ExposedCheck is a check a sidecar serves: requests for Path on
// ListenerPort go to the app's LocalPathPort, over HTTP/2 for gRPC.
type ExposedCheck struct {
	CheckID       string
	Path          string
	LocalPathPort int
	ListenerPort  int
	Protocol      string // "http" or "http2"
}

// grpcHealthPath is the path of the gRPC health checking protocol's Check.
const grpcHealthPath = "/grpc.health.v1.Health/Check"

// exposeTarget is what an exposed check probes through the sidecar: the
// app's path and port, and the probe's target at listener port lp of host.
type exposeTarget struct {
	path     string
	port     int
	protocol string
	rewrite  func(d *checks.Definition, host string, lp int)
}

// exposable returns what exposing d means, ok false for a check that cannot
// be exposed (another type, TLS, an address it cannot read).
func exposable(d *checks.Definition) (exposeTarget, bool) {
	switch {
	case d.HTTP != "":
		u, err := url.Parse(d.HTTP)
		if err != nil || u.Scheme != "http" {
			return exposeTarget{}, false
		}
		port := 80
		if p := u.Port(); p != "" {
			if port, err = strconv.Atoi(p); err != nil {
				return exposeTarget{}, false
			}
		}
		path := u.Path
		if path == "" {
			path = "/"
		}
		return exposeTarget{path: path, port: port, protocol: "http", rewrite: func(d *checks.Definition, host string, lp int) {
			v := *u
			v.Host = net.JoinHostPort(host, strconv.Itoa(lp))
			d.HTTP = v.String()
		}}, true
	case d.GRPC != "" && !d.GRPCUseTLS:
		addr, svc, _ := strings.Cut(d.GRPC, "/")
		_, p, err := net.SplitHostPort(addr)
		if err != nil {
			return exposeTarget{}, false
		}
		port, err := strconv.Atoi(p)
		if err != nil {
			return exposeTarget{}, false
		}
		return exposeTarget{path: grpcHealthPath, port: port, protocol: "http2", rewrite: func(d *checks.Definition, host string, lp int) {
			d.GRPC = net.JoinHostPort(host, strconv.Itoa(lp))
			if svc != "" {
				d.GRPC += "/" + svc
			}
		}}, true
	}
	return exposeTarget{}, false
}

// exposerLocked returns the local sidecar that exposes the checks of
// service id, nil when none does.
func (l *State) exposerLocked(id string) *catalog.Service {
	if id == "" {
		return nil
	}
	for _, s := range l.services {
		p := s.svc.Proxy
		if s.svc.Kind == catalog.ServiceKindConnectProxy && p != nil && p.DestinationServiceID == id && p.Expose.Checks {
			return s.svc
		}
	}
	return nil
}

// probeLocked returns the definition c's runner probes: c.Probe, or a copy
// aimed at the sidecar's listener for c when the sidecar of c's service
// exposes its checks, with c.Health.ExposedPort set (kept while exposed;
// 0 when not).
func (l *State) probeLocked(c *Check) checks.Definition {
	d := *c.Probe
	sc := l.exposerLocked(c.Health.ServiceID)
	t, ok := exposable(&d)
	if sc == nil || !ok {
		c.Health.ExposedPort = 0
		return d
	}
	if c.Health.ExposedPort == 0 || !l.exposePortFreeLocked(c.Health.ExposedPort, c, sc) {
		c.Health.ExposedPort = l.freeExposePortLocked(c, sc)
	}
	if c.Health.ExposedPort == 0 {
		l.logger.Warn("no port left in ports.expose_min_port..expose_max_port: the check is not exposed through its sidecar",
			"check", c.Health.CheckID)
		return d
	}
	host := sc.Address
	if host == "" {
		host = l.node.Address
	}
	if host == "" {
		host = "127.0.0.1"
	}
	t.rewrite(&d, host, c.Health.ExposedPort)
	return d
}

// exposePortFreeLocked reports whether port may be c's: in the range, not
// another check's, not one of the sidecar's own or its exposed paths'.
func (l *State) exposePortFreeLocked(port int, c *Check, sc *catalog.Service) bool {
	if port < l.exposeMin || port > l.exposeMax || port == sc.Port {
		return false
	}
	for _, p := range sc.Proxy.Expose.Paths {
		if p.ListenerPort == port {
			return false
		}
	}
	for _, o := range l.checks {
		if o != c && o.Health.CheckID != c.Health.CheckID && o.Health.ExposedPort == port {
			return false
		}
	}
	return true
}

// freeExposePortLocked returns the lowest free port of the range for c, 0
// when none is left.
func (l *State) freeExposePortLocked(c *Check, sc *catalog.Service) int {
	for p := l.exposeMin; p <= l.exposeMax; p++ {
		if l.exposePortFreeLocked(p, c, sc) {
			return p
		}
	}
	return 0
}

// reexposeLocked restarts the runners of service id's checks, after a
// change of the sidecar that may expose them.
func (l *State) reexposeLocked(id string) {
	for _, c := range l.checks {
		if c.Health.ServiceID != id || c.Probe == nil {
			continue
		}
		if _, ok := exposable(c.Probe); !ok {
			continue
		}
		l.stopCheckLocked(c)
		l.startRunnerLocked(c)
	}
}

// ExposedChecks returns the checks of service id that its sidecar serves
// (Proxy.Expose.Checks), with the app's path and port each probes.
func (l *State) ExposedChecks(id string) []ExposedCheck {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []ExposedCheck
	for _, c := range l.checks {
		if c.Health.ServiceID != id || c.Probe == nil || c.Health.ExposedPort == 0 {
			continue
		}
		if t, ok := exposable(c.Probe); ok {
			out = append(out, ExposedCheck{CheckID: c.Health.CheckID, Path: t.path, LocalPathPort: t.port,
				ListenerPort: c.Health.ExposedPort, Protocol: t.protocol})
		}
	}
	return out
}
