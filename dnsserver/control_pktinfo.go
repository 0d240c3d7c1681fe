//go:build !windows && !darwin

package dnsserver

import (
	"net"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// enableDestination asks the kernel for each packet's destination address,
// as dns.Server does for a *net.UDPConn: either family may fail, not both.
func enableDestination(c *net.UDPConn) error {
	err6 := ipv6.NewPacketConn(c).SetControlMessage(ipv6.FlagDst|ipv6.FlagInterface, true)
	err4 := ipv4.NewPacketConn(c).SetControlMessage(ipv4.FlagDst|ipv4.FlagInterface, true)
	if err6 != nil && err4 != nil {
		return err4
	}
	return nil
}

// controlSize is the room for the control message of either family.
func controlSize() int {
	oob4 := ipv4.NewControlMessage(ipv4.FlagDst | ipv4.FlagInterface)
	oob6 := ipv6.NewControlMessage(ipv6.FlagDst | ipv6.FlagInterface)
	return max(len(oob4), len(oob6))
}

// sourceControl returns a control message whose source is the
// destination in oob, as dns.Server writes answers; nil when oob has no
// destination.
func sourceControl(oob []byte) []byte {
	var dst net.IP
	if cm6 := new(ipv6.ControlMessage); cm6.Parse(oob) == nil && cm6.Dst != nil {
		dst = cm6.Dst
	} else if cm4 := new(ipv4.ControlMessage); cm4.Parse(oob) == nil && cm4.Dst != nil {
		dst = cm4.Dst
	}
	switch {
	case dst == nil:
		return nil
	case dst.To4() == nil:
		return (&ipv6.ControlMessage{Src: dst}).Marshal()
	default:
		return (&ipv4.ControlMessage{Src: dst}).Marshal()
	}
}
