package config

import (
	"net"
	"strconv"
	"strings"
)

// listenAddrs joins each host with port. Unix socket addresses
// ("unix:///path") are returned as they are. A disabled port (< 1) yields
// nil.
func listenAddrs(hosts []string, port int) []string {
	if port < 1 {
		return nil
	}
	out := make([]string, 0, len(hosts))
	for _, h := range hosts {
		if strings.HasPrefix(h, "unix://") {
			out = append(out, h)
			continue
		}
		out = append(out, net.JoinHostPort(h, strconv.Itoa(port)))
	}
	return out
}

// orClient returns override when set, else the client addresses.
func (c *Config) orClient(override []string) []string {
	if len(override) > 0 {
		return override
	}
	return c.ClientAddrs
}

// HTTPAddrs returns the HTTP API listen addresses as "host:port" (or
// "unix:///path"): addresses.http, else client_addr, with ports.http. It
// is empty when the HTTP port is disabled.
func (c *Config) HTTPAddrs() []string {
	return listenAddrs(c.orClient(c.Addresses.HTTP), c.Ports.HTTP)
}

// HTTPSAddrs returns the HTTPS API listen addresses, like HTTPAddrs.
func (c *Config) HTTPSAddrs() []string {
	return listenAddrs(c.orClient(c.Addresses.HTTPS), c.Ports.HTTPS)
}

// DNSAddrs returns the DNS listen addresses as "host:port": addresses.dns,
// else client_addr, with ports.dns. It is empty when DNS is disabled.
func (c *Config) DNSAddrs() []string {
	return listenAddrs(c.orClient(c.Addresses.DNS), c.Ports.DNS)
}

// GRPCAddr returns the first gRPC listen address as "host:port"
// (addresses.grpc, else client_addr, with ports.grpc), or "" when gRPC is
// disabled.
func (c *Config) GRPCAddr() string {
	addrs := listenAddrs(c.orClient(c.Addresses.GRPC), c.Ports.GRPC)
	if len(addrs) == 0 {
		return ""
	}
	return addrs[0]
}

// RPCAddr returns the server RPC listen address, bind_addr:ports.server.
func (c *Config) RPCAddr() string {
	return net.JoinHostPort(c.BindAddr, strconv.Itoa(c.Ports.Server))
}

// AdvertiseAddr returns the address other agents reach this one at:
// advertise_addr, which Load always sets (from bind_addr or the machine's
// interfaces when the file leaves it unset; see chooseAdvertiseAddr). For a
// Config not made by Load, with advertise_addr unset, it is bind_addr.
func (c *Config) AdvertiseAddr() string {
	if c.AdvertiseAddrLAN != "" {
		return c.AdvertiseAddrLAN
	}
	return c.BindAddr
}

// chooseAdvertiseAddr returns the address to advertise when advertise_addr
// is unset, as Consul documents it: bind_addr when it is a specific
// address; for 0.0.0.0 the machine's one private IPv4 address (RFC 1918 or
// RFC 6598) among addrs, for :: its one public IPv6 address. Finding none,
// or several, is an error that names them: the agent cannot guess which one
// the others reach it at, and advertising 127.0.0.1 would cut it off from
// every other machine. In dev mode an unspecified bind_addr advertises
// 127.0.0.1, as a laptop's single agent needs nothing else.
//
// listIfaces is called only when the interfaces are needed. A bind_addr
// that is not an IP address gives "" (Validate reports bind_addr).
func chooseAdvertiseAddr(bind string, dev bool, listIfaces func() ([]net.Addr, error)) (string, error) {
	ip := net.ParseIP(bind)
	switch {
	case bind != "" && ip == nil:
		return "", nil // not an address: Validate names bind_addr
	case bind != "" && !ip.IsUnspecified():
		return bind, nil
	}
	if dev {
		return "127.0.0.1", nil
	}
	v6 := ip != nil && ip.To4() == nil
	kind, pick := "private IPv4", isPrivateIPv4
	if v6 {
		kind, pick = "public IPv6", isPublicIPv6
	}
	addrs, err := listIfaces()
	if err != nil {
		return "", fieldErrf("advertise_addr", "not set, and the network interfaces could not be listed to find the %s address to advertise: %v", kind, err)
	}
	var found []string
	seen := make(map[string]bool)
	for _, a := range addrs {
		ip := addrIP(a)
		if ip == nil || !pick(ip) {
			continue
		}
		if s := ip.String(); !seen[s] {
			seen[s] = true
			found = append(found, s)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return "", fieldErrf("advertise_addr", "not set, and no %s address found to advertise for bind_addr %q: set advertise_addr (-advertise) or bind_addr (-bind)", kind, bindOrAny(bind))
	}
	return "", fieldErrf("advertise_addr", "not set, and several %s addresses found (%s) for bind_addr %q: set advertise_addr (-advertise) or bind_addr (-bind) to the one other agents reach this one at",
		kind, strings.Join(found, ", "), bindOrAny(bind))
}

func bindOrAny(bind string) string {
	if bind == "" {
		return "0.0.0.0"
	}
	return bind
}

// addrIP returns the IP of an interface address, or nil.
func addrIP(a net.Addr) net.IP {
	switch v := a.(type) {
	case *net.IPNet:
		return v.IP
	case *net.IPAddr:
		return v.IP
	}
	return nil
}

// isPrivateIPv4 reports whether ip is an RFC 1918 or RFC 6598 (shared
// address space, 100.64.0.0/10) IPv4 address.
func isPrivateIPv4(ip net.IP) bool {
	ip4 := ip.To4()
	if ip4 == nil {
		return false
	}
	return ip4.IsPrivate() || (ip4[0] == 100 && ip4[1]&0xc0 == 64)
}

// isPublicIPv6 reports whether ip is a global unicast IPv6 address outside
// the unique local range fc00::/7.
func isPublicIPv6(ip net.IP) bool {
	return ip.To4() == nil && ip.IsGlobalUnicast() && !ip.IsPrivate()
}
