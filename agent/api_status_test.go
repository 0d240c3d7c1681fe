package agent_test

import (
	"net"
	"strconv"
	"testing"
)

func TestAPIStatus(t *testing.T) {
	t.Parallel()
	_, c := startAPI(t)
	leader, err := c.Status().Leader()
	if err != nil {
		t.Fatal(err)
	}
	host, port, err := net.SplitHostPort(leader)
	if err != nil || net.ParseIP(host) == nil {
		t.Fatalf("leader %q is not ip:port (%v)", leader, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p <= 0 {
		t.Fatalf("leader port %q", port)
	}
	peers, err := c.Status().Peers()
	if err != nil {
		t.Fatal(err)
	}
	if len(peers) != 1 || peers[0] != leader {
		t.Fatalf("peers = %v, want [%s]", peers, leader)
	}
}
