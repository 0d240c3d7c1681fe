// Package freeport hands tests loopback ports to bind later, free for TCP
// and UDP.
//
// Ports are picked at random below the kernel's ephemeral range
// (ip_local_port_range). A port the kernel hands out for ":0" is also what
// it gives the next outgoing connection of any process, which under load
// took such ports between the check and the test's bind ("address already
// in use"); below that range only another test picking the same port at the
// same moment can. A process never gets the same port twice, so a restarted
// agent does not find its old port taken by another of the same test run.
package freeport

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Min is the lowest port handed out.
const Min = 10000

var (
	mu   sync.Mutex
	used = map[int]bool{}
)

// Take returns n distinct ports of 127.0.0.1, each free for TCP and UDP when
// returned and never returned before in this process.
func Take(t testing.TB, n int) []int {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	var ports []int
	var held []io.Closer
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	low := EphemeralLow()
	for tries := 0; len(ports) < n; tries++ {
		if tries > 1000*n {
			t.Fatalf("freeport: no free port below %d after %d tries", low, tries)
		}
		p := Min + rand.IntN(low-Min)
		if used[p] {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			ln.Close()
			continue
		}
		held = append(held, ln, u)
		used[p] = true
		ports = append(ports, p)
	}
	return ports
}

// One returns one port as Take does.
func One(t testing.TB) int {
	t.Helper()
	return Take(t, 1)[0]
}

// EphemeralLow returns the first port of the kernel's ephemeral range
// (Linux's default 32768 when it cannot be read).
func EphemeralLow() int {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil && v > Min+1000 {
				low = v
			}
		}
	}
	return low
}
