package config

import (
	"fmt"
	"net"
	"sort"
	"strings"
)

// listener is one socket the agent binds, with the keys that choose it, so
// that a conflict names them.
type listener struct {
	// portKey is the key of its port ("ports.http").
	portKey string
	// addrKey is the key its address comes from ("client_addr",
	// "addresses.http", "bind_addr").
	addrKey string
	host    string
	port    int
}

// listeners returns the TCP/UDP sockets c makes the agent bind: the client
// interfaces (DNS, HTTP, HTTPS, gRPC) on their addresses, LAN gossip on
// bind_addr, and, on a server, the server port and WAN gossip. Disabled
// interfaces and Unix sockets are left out.
func (c *Config) listeners() []listener {
	var out []listener
	client := func(portKey, addrKey string, override []string, port int) {
		if port < 1 {
			return
		}
		hosts := override
		if len(hosts) == 0 {
			hosts, addrKey = c.ClientAddrs, "client_addr"
		}
		for _, h := range hosts {
			if strings.HasPrefix(h, "unix://") {
				continue
			}
			out = append(out, listener{portKey: portKey, addrKey: addrKey, host: h, port: port})
		}
	}
	client("ports.dns", "addresses.dns", c.Addresses.DNS, c.Ports.DNS)
	client("ports.http", "addresses.http", c.Addresses.HTTP, c.Ports.HTTP)
	client("ports.https", "addresses.https", c.Addresses.HTTPS, c.Ports.HTTPS)
	client("ports.grpc", "addresses.grpc", c.Addresses.GRPC, c.Ports.GRPC)
	client("ports.grpc_tls", "addresses.grpc", c.Addresses.GRPC, c.Ports.GRPCTLS)
	bind := func(portKey string, port int) {
		if port >= 1 {
			out = append(out, listener{portKey: portKey, addrKey: "bind_addr", host: c.BindAddr, port: port})
		}
	}
	bind("ports.serf_lan", c.Ports.SerfLAN)
	if c.Server {
		bind("ports.server", c.Ports.Server)
		bind("ports.serf_wan", c.Ports.SerfWAN)
	}
	return out
}

// hostsOverlap reports whether sockets bound to a and b on one port would
// clash: the same address, or an unspecified address (0.0.0.0 takes every
// IPv4 address; :: every address, as Linux binds it dual-stack).
func hostsOverlap(a, b string) bool {
	ia, ib := net.ParseIP(a), net.ParseIP(b)
	if ia == nil || ib == nil {
		return a == b
	}
	if ia.Equal(ib) {
		return true
	}
	covers := func(any, other net.IP) bool {
		if !any.IsUnspecified() {
			return false
		}
		if any.To4() == nil { // ::
			return true
		}
		return other.To4() != nil
	}
	return covers(ia, ib) || covers(ib, ia)
}

// checkListenerConflicts returns one error per group of listeners that
// would share a port on overlapping addresses, naming every key involved,
// so that a configuration giving two interfaces one port fails at
// validation rather than at bind.
func checkListenerConflicts(ls []listener) []error {
	// Union the listeners that clash, pairwise.
	parent := make([]int, len(ls))
	for i := range parent {
		parent[i] = i
	}
	var find func(int) int
	find = func(i int) int {
		if parent[i] != i {
			parent[i] = find(parent[i])
		}
		return parent[i]
	}
	clash := make([]bool, len(ls))
	for i := range ls {
		for j := i + 1; j < len(ls); j++ {
			// One interface on several addresses is never a clash with
			// itself (client_addr "0.0.0.0 127.0.0.1" is the user's
			// business, and the bind error names it).
			if ls[i].port != ls[j].port || ls[i].portKey == ls[j].portKey {
				continue
			}
			if hostsOverlap(ls[i].host, ls[j].host) {
				parent[find(i)] = find(j)
				clash[i], clash[j] = true, true
			}
		}
	}
	groups := make(map[int][]listener)
	for i, l := range ls {
		if clash[i] {
			r := find(i)
			groups[r] = append(groups[r], l)
		}
	}
	var errs []error
	for _, g := range groups {
		var keys, where []string
		seenKey := make(map[string]bool)
		seenWhere := make(map[string]bool)
		for _, l := range g {
			if !seenKey[l.portKey] {
				seenKey[l.portKey] = true
				keys = append(keys, l.portKey)
			}
			w := fmt.Sprintf("%s %s", l.addrKey, l.host)
			if !seenWhere[w] {
				seenWhere[w] = true
				where = append(where, w)
			}
		}
		sort.Strings(where)
		errs = append(errs, fieldErrf(keys[0], "port %d is also used by %s on an overlapping address (%s): every listener needs its own port",
			g[0].port, strings.Join(keys[1:], ", "), strings.Join(where, ", ")))
	}
	sortErrors(errs)
	return errs
}
