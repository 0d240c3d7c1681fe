package checks

import (
	"net"
	"strings"
	"testing"
	"time"
)

// closedAddr returns an address on which nothing listens for network
// ("tcp" or "udp").
func closedAddr(t *testing.T, network string) string {
	t.Helper()
	if network == "udp" {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := pc.LocalAddr().String()
		pc.Close()
		return addr
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestTCP(t *testing.T) {
	leakCheck(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	addr := ln.Addr().String()
	_, up := startCheck(t, Definition{CheckID: "up", TCP: addr, Interval: time.Second}, testOptions())
	if u := up.waitStatus(t, StatusPassing); u.Output != "TCP connect "+addr+": Success" {
		t.Fatalf("output %q", u.Output)
	}

	down := closedAddr(t, "tcp")
	_, rec := startCheck(t, Definition{CheckID: "down", TCP: down, Interval: time.Second}, testOptions())
	if u := rec.waitStatus(t, StatusCritical); !strings.HasPrefix(u.Output, "TCP connect "+down+": ") || !strings.Contains(u.Output, "connection refused") {
		t.Fatalf("output %q", u.Output)
	}
}

func TestTCPFlipsWhenListenerCloses(t *testing.T) {
	leakCheck(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts := testOptions()
	_, rec := startCheck(t, Definition{CheckID: "flip", TCP: ln.Addr().String(), Interval: 10 * time.Second}, opts)
	rec.waitStatus(t, StatusPassing)
	ln.Close()
	rec.advanceToStatus(t, fakeClock(t, opts), 10*time.Second, StatusCritical)
}

func TestUDP(t *testing.T) {
	leakCheck(t)
	down := closedAddr(t, "udp")
	_, refused := startCheck(t, Definition{CheckID: "udp-down", UDP: down, Interval: time.Second, Timeout: 2 * time.Second}, testOptions())
	start := time.Now()
	if u := refused.waitStatus(t, StatusCritical); !strings.Contains(u.Output, "connection refused") || !strings.HasPrefix(u.Output, "UDP check "+down+": ") {
		t.Fatalf("output %q", u.Output)
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("refusal took %s: it should not wait for the timeout", el)
	}

	// A listening socket that never answers: silence until the timeout is
	// passing.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	addr := pc.LocalAddr().String()
	_, silent := startCheck(t, Definition{CheckID: "udp-silent", UDP: addr, Interval: time.Second, Timeout: 100 * time.Millisecond}, testOptions())
	if u := silent.waitStatus(t, StatusPassing); u.Output != "UDP check "+addr+": Success (no refusal within 100ms)" {
		t.Fatalf("output %q", u.Output)
	}
}

func TestUDPReply(t *testing.T) {
	leakCheck(t)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() { // echo server; ends when pc is closed
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
	addr := pc.LocalAddr().String()
	_, rec := startCheck(t, Definition{CheckID: "udp-echo", UDP: addr, Interval: time.Second, Timeout: 5 * time.Second}, testOptions())
	if u := rec.waitStatus(t, StatusPassing); u.Output != "UDP check "+addr+": Success (reply received)" {
		t.Fatalf("output %q", u.Output)
	}
}
