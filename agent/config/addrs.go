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
// advertise_addr; else bind_addr unless it is unspecified (0.0.0.0 or ::);
// else the machine's first private IPv4 address; else 127.0.0.1. It lists
// the machine's interfaces only in the third case.
func (c *Config) AdvertiseAddr() string {
	return c.advertiseAddr(net.InterfaceAddrs)
}

func (c *Config) advertiseAddr(interfaceAddrs func() ([]net.Addr, error)) string {
	if c.AdvertiseAddrLAN != "" {
		return c.AdvertiseAddrLAN
	}
	if ip := net.ParseIP(c.BindAddr); ip != nil && !ip.IsUnspecified() {
		return c.BindAddr
	}
	if addrs, err := interfaceAddrs(); err == nil {
		if ip := firstPrivateIPv4(addrs); ip != nil {
			return ip.String()
		}
	}
	return "127.0.0.1"
}

// firstPrivateIPv4 returns the first RFC 1918 or RFC 6598 IPv4 address in
// addrs, or nil.
func firstPrivateIPv4(addrs []net.Addr) net.IP {
	for _, a := range addrs {
		var ip net.IP
		switch v := a.(type) {
		case *net.IPNet:
			ip = v.IP
		case *net.IPAddr:
			ip = v.IP
		default:
			continue
		}
		ip4 := ip.To4()
		if ip4 == nil {
			continue
		}
		// 100.64.0.0/10 is RFC 6598 shared address space.
		if ip4.IsPrivate() || (ip4[0] == 100 && ip4[1]&0xc0 == 64) {
			return ip4
		}
	}
	return nil
}
