package cluster

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/test/procs"
	"github.com/tribune-mesh/tribune/test/wait"
)

// TestServerPortSurvivesDescriptorShortage is issue 10 High #1 as reported:
// a server limited to 300 descriptors gets 320 connections that send the
// Raft byte and then nothing. Accept fails with EMFILE meanwhile; once those
// connections are gone the port must serve again (before the fix its accept
// loop had returned for good).
func TestServerPortSurvivesDescriptorShortage(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	if _, err := exec.LookPath("prlimit"); err != nil {
		t.Skip("prlimit not installed")
	}
	c := procs.StartCluster(t, procs.Options{Servers: 1})
	s := c.Servers[0]
	if out, err := exec.Command("prlimit", "--pid", strconv.Itoa(s.Pid()), "--nofile=300:300").CombinedOutput(); err != nil {
		t.Skipf("prlimit: %v: %s", err, out)
	}

	// 4 source IPs x 80 stays under rpc_max_conns_per_client (100).
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < 320; i++ {
		d := net.Dialer{Timeout: time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(fmt.Sprintf("127.0.0.%d", 1+i%4))}}
		conn, err := d.Dial("tcp", s.RPCAddr())
		if err != nil {
			continue // the accept backlog is full: enough
		}
		_, _ = conn.Write([]byte{0x01})
		conns = append(conns, conn)
	}
	wait.For(t, 20*time.Second, func() error {
		if !s.Contains("too many open files") {
			return fmt.Errorf("no EMFILE yet (%d connections open)", len(conns))
		}
		return nil
	})
	for _, c := range conns {
		c.Close()
	}
	conns = nil

	// The port serves RPC again, and the agent writes.
	cc := dialServerPort(t, s.RPCAddr())
	wait.For(t, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var st struct{ Leader string }
		if err := cc.Invoke(ctx, "/tribune.Server/Status", struct{}{}, &st); err != nil {
			return err
		}
		if st.Leader == "" {
			return fmt.Errorf("no leader")
		}
		return nil
	})
	wait.For(t, 15*time.Second, func() error {
		_, err := s.Client(t).KV().Put(&api.KVPair{Key: "after-emfile", Value: []byte("1")}, nil)
		return err
	})
}
