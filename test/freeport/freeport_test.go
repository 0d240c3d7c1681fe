package freeport

import (
	"fmt"
	"net"
	"testing"
)

// Take hands out distinct ports below the ephemeral range, free for TCP and
// UDP when returned, never twice.
func TestTake(t *testing.T) {
	low := EphemeralLow()
	seen := map[int]bool{}
	for range 5 {
		for _, p := range Take(t, 20) {
			if p < Min || p >= low {
				t.Fatalf("port %d outside [%d, %d)", p, Min, low)
			}
			if seen[p] {
				t.Fatalf("port %d handed out twice", p)
			}
			seen[p] = true
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				t.Fatalf("port %d not free: %v", p, err)
			}
			ln.Close()
			u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				t.Fatalf("port %d not free for UDP: %v", p, err)
			}
			u.Close()
		}
	}
}
