package server

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/clock"
	"github.com/tribune-mesh/tribune/connect"
	"github.com/tribune-mesh/tribune/federation"
	"github.com/tribune-mesh/tribune/gossip"
)

// remoteServer is a WAN member of datacenter dc whose server port is addr.
func remoteServer(name, dc, addr string) gossip.Member {
	host, port, _ := net.SplitHostPort(addr)
	return gossip.Member{Name: name + "." + dc, Addr: net.ParseIP(host), Status: gossip.StatusAlive,
		Tags: map[string]string{"role": "consul", "dc": dc, "port": port}}
}

// TestForwardToAnUnreachableDatacenterIsBounded: a datacenter whose servers
// gossip says are alive but whose server ports refuse or never answer gets
// a clear error within the hold timeout, never a hang; an unknown one gets
// "No path to datacenter" at once.
func TestForwardToAnUnreachableDatacenterIsBounded(t *testing.T) {
	s := startTestServer(t)
	refused, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusedAddr := refused.Addr().String()
	refused.Close()
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		// Accepts and never answers (a black-holed peer).
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	members := []gossip.Member{remoteServer("a", "dc2", refusedAddr), remoteServer("b", "dc2", silent.Addr().String())}
	s.router = federation.New(federation.Config{Datacenter: "dc1", Members: func() []gossip.Member { return members }})

	ctx := context.Background()
	start := time.Now()
	_, err = s.Read(ctx, &catalog.ReadRequest{Op: catalog.ReadKVGet, Key: "k", Options: catalog.QueryOptions{Datacenter: "dc2"}})
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "dc2") {
		t.Fatalf("read in an unreachable datacenter: %v", err)
	}
	if took > s.config.HoldTimeout+2*time.Second {
		t.Fatalf("the read took %s, more than the hold timeout %s", took, s.config.HoldTimeout)
	}
	t.Logf("unreachable datacenter: %v after %s", err, took.Round(time.Millisecond))

	start = time.Now()
	_, err = s.Apply(WithDatacenter(ctx, "dc2"), catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVSet, Entry: catalog.KVEntry{Key: "k"}})
	if err == nil || time.Since(start) > s.config.HoldTimeout+2*time.Second {
		t.Fatalf("write in an unreachable datacenter: %v after %s", err, time.Since(start))
	}
	if _, e, _ := s.Store().KVGet(nil, "k"); e != nil {
		t.Fatal("a write for dc2 was applied here")
	}

	_, err = s.Read(ctx, &catalog.ReadRequest{Op: catalog.ReadKVGet, Key: "k", Options: catalog.QueryOptions{Datacenter: "dc9"}})
	if !errors.Is(err, ErrNoPathToDC) || err.Error() != "No path to datacenter" {
		t.Fatalf("unknown datacenter: %v", err)
	}
}

// TestIntermediateRenewedAtHalfLife: a secondary asks for a new
// intermediate once its own is past half its lifetime.
func TestIntermediateRenewedAtHalfLife(t *testing.T) {
	start := time.Now()
	td := connect.TrustDomain("11111111-2222-3333-4444-555555555555")
	root, err := connect.NewRoot(connect.Config{}, td, start)
	if err != nil {
		t.Fatal(err)
	}
	csr, _, err := connect.NewIntermediateCSR(connect.Config{}, td, "dc2")
	if err != nil {
		t.Fatal(err)
	}
	inter, err := connect.SignIntermediate(root, csr, td, 100*time.Hour, start)
	if err != nil {
		t.Fatal(err)
	}
	clk := clock.NewFake(start)
	s := &Server{clock: clk}
	if !s.intermediateFresh(inter) {
		t.Fatal("a new intermediate is not fresh")
	}
	clk.Advance(49 * time.Hour)
	if !s.intermediateFresh(inter) {
		t.Fatal("an intermediate at 49% of its life is not fresh")
	}
	clk.Advance(2 * time.Hour)
	if s.intermediateFresh(inter) {
		t.Fatal("an intermediate past half its life is still fresh")
	}
	if s.intermediateFresh("not a certificate") {
		t.Fatal("garbage is fresh")
	}
}
