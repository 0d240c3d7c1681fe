//go:build linux

package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tribune-mesh/tribune/connect/redirect"
	"github.com/tribune-mesh/tribune/test/fault"
	"github.com/tribune-mesh/tribune/test/wait"
)

// The network of TestRedirectTrafficInNetworkNamespace: the test's own
// namespace (from fault.Enter) is "the network", with a veth to a second
// namespace, "the pod", that gets the rules.
const (
	netAddr      = "10.99.1.1" // the network's end of the veth
	netAddrOther = "10.99.1.3" // a second address of it, for -exclude-outbound-cidr
	podAddr      = "10.99.1.2" // the pod's end
	remotePort   = 80          // served by the network: an outbound destination
	exclOutPort  = 8443        // served by the network, excluded from outbound redirection
	appPort      = 8080        // served by the pod: its application
	metricsPort  = 9102        // served by the pod, excluded from inbound redirection
	dnsPort      = 8600        // the "agent's" DNS server, in the network
	inboundPort  = 20000       // the fake proxy's inbound listener, in the pod
	outboundPort = 15001       // its outbound listener, on the pod's loopback
	otherUID     = "12345"     // a proxy uid that is not the test's
	cmdTimeout   = 10 * time.Second
)

// The real binary, run with -netns against a second namespace, redirects
// that namespace's traffic: outbound TCP from the test's uid lands on the
// fake proxy's outbound listener with its original destination intact,
// except excluded ports, CIDRs and loopback; inbound TCP lands on the
// inbound listener except excluded ports; DNS to the DNS address goes to
// its real port. A second run (proxy uid = the test's uid) replaces the
// rules without duplicating a jump, and the proxy's own traffic goes
// straight out; so does an -exclude-uid's. The test's own namespace gets
// no rule.
func TestRedirectTrafficInNetworkNamespace(t *testing.T) {
	env := fault.Enter(t)
	if env == nil {
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	pod := newPodNamespace(t)

	// The network's servers.
	serveBanner(t, listenIn(t, "", "0.0.0.0", remotePort), "remote")
	serveBanner(t, listenIn(t, "", "0.0.0.0", exclOutPort), "remote")
	serveBanner(t, listenIn(t, "", "0.0.0.0", dnsPort), "dns-tcp")
	serveUDPEcho(t, netAddr, dnsPort, "dns-udp")
	// The pod's: its application and the fake proxy.
	serveBanner(t, listenIn(t, pod, "0.0.0.0", appPort), "app")
	serveBanner(t, listenIn(t, pod, "0.0.0.0", metricsPort), "metrics")
	serveBanner(t, listenIn(t, pod, "0.0.0.0", inboundPort), "inbound-proxy")
	serveBanner(t, listenIn(t, pod, "127.0.0.1", outboundPort), "outbound-proxy")

	common := []string{"-netns", pod,
		"-proxy-inbound-port", fmt.Sprint(inboundPort), "-proxy-outbound-port", fmt.Sprint(outboundPort),
		"-exclude-inbound-port", fmt.Sprint(metricsPort), "-exclude-outbound-port", fmt.Sprint(exclOutPort),
		"-exclude-outbound-cidr", netAddrOther + "/32",
		"-consul-dns-ip", netAddr, "-consul-dns-port", fmt.Sprint(dnsPort)}
	runRedirectBinary(t, env.Binary, append([]string{"-proxy-uid", otherUID}, common...)...)

	fromPod := func(addr string) string { return dialIn(t, pod, addr) }
	fromNet := func(addr string) string { return dialIn(t, "", addr) }
	expect := func(what, got, want string) {
		t.Helper()
		if got != want {
			t.Errorf("%s: got %q, want %q", what, got, want)
		}
	}
	remote := fmt.Sprintf("%s:%d", netAddr, remotePort)
	expect("outbound TCP", fromPod(remote), "outbound-proxy "+remote)
	expect("outbound to an excluded port", fromPod(fmt.Sprintf("%s:%d", netAddr, exclOutPort)), "remote")
	expect("outbound to an excluded CIDR", fromPod(fmt.Sprintf("%s:%d", netAddrOther, remotePort)), "remote")
	expect("outbound to loopback", fromPod(fmt.Sprintf("127.0.0.1:%d", appPort)), "app")
	app := fmt.Sprintf("%s:%d", podAddr, appPort)
	expect("inbound TCP", fromNet(app), "inbound-proxy "+app)
	expect("inbound to an excluded port", fromNet(fmt.Sprintf("%s:%d", podAddr, metricsPort)), "metrics")
	expect("DNS over TCP", fromPod(netAddr+":53"), "dns-tcp")
	expect("DNS over UDP", udpQueryIn(t, pod, netAddr+":53"), "dns-udp")
	if rules := natRules(t, ""); strings.Contains(rules, "CONSUL_") {
		t.Errorf("the test's own namespace got rules despite -netns:\n%s", rules)
	}

	// Again, with the test's uid as the proxy's: its traffic goes out
	// directly; the rules are replaced, not added to.
	runRedirectBinary(t, env.Binary, append([]string{"-proxy-uid", fmt.Sprint(os.Geteuid())}, common...)...)
	expect("outbound TCP of the proxy's uid", fromPod(remote), "remote")
	expect("inbound TCP after the second run", fromNet(app), "inbound-proxy "+app)
	rules := natRules(t, pod)
	for _, jump := range []string{
		"-A OUTPUT -p udp -m udp --dport 53 -j CONSUL_DNS_REDIRECT",
		"-A OUTPUT -p tcp -m tcp --dport 53 -j CONSUL_DNS_REDIRECT",
		"-A OUTPUT -p tcp -j CONSUL_PROXY_OUTPUT",
		"-A PREROUTING -p tcp -j CONSUL_PROXY_INBOUND",
		"-A CONSUL_PROXY_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
	} {
		if n := strings.Count(rules, jump+"\n"); n != 1 {
			t.Errorf("%q is in the pod's nat table %d times, want once:\n%s", jump, n, rules)
		}
	}
	if strings.Contains(rules, otherUID) {
		t.Errorf("the first run's proxy uid %s is still in the rules:\n%s", otherUID, rules)
	}

	// And with the test's uid excluded by -exclude-uid.
	runRedirectBinary(t, env.Binary, append([]string{"-proxy-uid", otherUID, "-exclude-uid", fmt.Sprint(os.Geteuid())}, common...)...)
	expect("outbound TCP of an excluded uid", fromPod(remote), "remote")
}

// newPodNamespace creates a network namespace joined to the test's by a
// veth (netAddr and netAddrOther here, podAddr there) and returns its path.
// Its name starts with the test process's pid, so fault's reaper removes
// it should the test die before its cleanup.
func newPodNamespace(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("tribune-%d-redirect-pod", os.Getpid())
	ip(t, "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Logf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	ip(t, "link", "add", "rdnet", "type", "veth", "peer", "name", "rdpod", "netns", name)
	ip(t, "addr", "add", netAddr+"/24", "dev", "rdnet")
	ip(t, "addr", "add", netAddrOther+"/24", "dev", "rdnet")
	ip(t, "link", "set", "rdnet", "up")
	ip(t, "-n", name, "addr", "add", podAddr+"/24", "dev", "rdpod")
	ip(t, "-n", name, "link", "set", "rdpod", "up")
	ip(t, "-n", name, "link", "set", "lo", "up")
	wait.For(t, 5*time.Second, func() error {
		for _, args := range [][]string{{"link", "show", "rdnet"}, {"-n", name, "link", "show", "rdpod"}} {
			out, err := exec.Command("ip", args...).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "state UP") {
				return fmt.Errorf("veth not up yet: %v: %s", err, out)
			}
		}
		return nil
	})
	return "/var/run/netns/" + name
}

func ip(t *testing.T, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// runRedirectBinary runs `tribune connect redirect-traffic args...` and
// fails the test unless it succeeds.
func runRedirectBinary(t *testing.T, bin string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, append([]string{"connect", "redirect-traffic"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("tribune connect redirect-traffic %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// natRules is `iptables -t nat -S` of the namespace at path ("" for the
// test's own).
func natRules(t *testing.T, path string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	var out []byte
	err := inNamespace(path, func() error {
		var err error
		out, err = exec.CommandContext(ctx, "iptables", "-t", "nat", "-S").CombinedOutput()
		return err
	})
	if err != nil {
		t.Fatalf("iptables -t nat -S in %q: %v: %s", path, err, out)
	}
	return string(out)
}

// inNamespace runs f in the network namespace at path, or in the test's
// own when path is "".
func inNamespace(path string, f func() error) error {
	if path == "" {
		return f()
	}
	return redirect.InNetNS(path, f)
}

// listenIn listens on host:port in the namespace at path.
func listenIn(t *testing.T, path, host string, port int) net.Listener {
	t.Helper()
	var ln net.Listener
	err := inNamespace(path, func() error {
		var err error
		ln, err = net.Listen("tcp4", fmt.Sprintf("%s:%d", host, port))
		return err
	})
	if err != nil {
		t.Fatalf("listen on %s:%d in %q: %v", host, port, path, err)
	}
	return ln
}

// serveBanner answers each connection on ln with a line: name, followed
// for a redirected connection by the destination it was redirected from.
// It stops, and closes ln, when the test ends.
func serveBanner(t *testing.T, ln net.Listener, name string) {
	t.Helper()
	serveUntilCleanup(t, ln, func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			line := name
			if orig, ok := redirectedFrom(c.(*net.TCPConn)); ok {
				line += " " + orig
			}
			_ = c.SetWriteDeadline(time.Now().Add(cmdTimeout))
			fmt.Fprintln(c, line)
			c.Close()
		}
	})
}

// serveUntilCleanup runs serve in a goroutine; when the test ends it closes
// c, which makes serve return, and waits for it.
func serveUntilCleanup(t *testing.T, c io.Closer, serve func()) {
	done := make(chan struct{})
	t.Cleanup(func() {
		c.Close()
		<-done
	})
	go func() {
		defer close(done)
		serve()
	}()
}

// redirectedFrom returns the original destination of a connection that
// NAT redirected (SO_ORIGINAL_DST, what a transparent proxy reads), and
// false for a connection that arrived where it was sent.
func redirectedFrom(c *net.TCPConn) (string, bool) {
	raw, err := c.SyscallConn()
	if err != nil {
		return "", false
	}
	var mreq *unix.IPv6Mreq
	var gerr error
	if err := raw.Control(func(fd uintptr) {
		mreq, gerr = unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST)
	}); err != nil || gerr != nil {
		return "", false
	}
	// A sockaddr_in: family, port (big endian), address.
	port := binary.BigEndian.Uint16(mreq.Multiaddr[2:4])
	addr := netip.AddrFrom4([4]byte(mreq.Multiaddr[4:8]))
	orig := netip.AddrPortFrom(addr, port)
	local := c.LocalAddr().(*net.TCPAddr).AddrPort()
	if orig == netip.AddrPortFrom(local.Addr().Unmap(), local.Port()) {
		return "", false
	}
	return orig.String(), true
}

// dialIn connects to addr from the namespace at path and returns the line
// the server sent, or a description of the failure.
func dialIn(t *testing.T, path, addr string) string {
	t.Helper()
	var line string
	err := inNamespace(path, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp4", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		line, err = bufio.NewReader(c).ReadString('\n')
		line = strings.TrimSpace(line)
		return err
	})
	if err != nil {
		return fmt.Sprintf("error: %v", err)
	}
	return line
}

// serveUDPEcho answers every datagram on host:port with reply, until the
// test ends.
func serveUDPEcho(t *testing.T, host string, port int, reply string) {
	t.Helper()
	pc, err := net.ListenPacket("udp4", fmt.Sprintf("%s:%d", host, port))
	if err != nil {
		t.Fatal(err)
	}
	serveUntilCleanup(t, pc, func() {
		buf := make([]byte, 512)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo([]byte(reply), from)
		}
	})
}

// udpQueryIn sends a datagram to addr from the namespace at path and
// returns the reply, which must come back from addr itself.
func udpQueryIn(t *testing.T, path, addr string) string {
	t.Helper()
	var reply string
	err := inNamespace(path, func() error {
		c, err := net.Dial("udp4", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Write([]byte("query")); err != nil {
			return err
		}
		buf := make([]byte, 512)
		n, err := c.Read(buf)
		if err != nil {
			return err
		}
		reply = string(buf[:n])
		return nil
	})
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return "no reply"
		}
		return fmt.Sprintf("error: %v", err)
	}
	return reply
}
