package agent_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/agent/agenttest"
	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/server"
	"github.com/tribune-mesh/tribune/test/wait"
)

// startACLCluster starts three servers and one client with ACLs on
// (default_policy deny, the root management token) over real sockets, and
// waits until the management token works everywhere.
func startACLCluster(t *testing.T) (srvs []*node, client *node) {
	t.Helper()
	var join string
	for i := range 4 {
		isServer := i < 3
		name := fmt.Sprintf("s%d", i+1)
		if !isServer {
			name = "c1"
		}
		c := aclConfig(agenttest.ClusterConfig(t, name, isServer, 3, join))
		if join == "" {
			join = agenttest.SerfAddr(c)
		}
		a := agenttest.StartNoWait(t, c)
		n := &node{cfg: c, agent: a, api: tokenClient(t, a, rootSecret)}
		if isServer {
			srvs = append(srvs, n)
		} else {
			client = n
		}
	}
	for _, n := range append(srvs[:3:3], client) {
		wait.For(t, 30*time.Second, func() error {
			_, err := n.api.KV().Put(&api.KVPair{Key: "ready", Value: []byte("1")}, nil)
			return err
		})
	}
	return srvs, client
}

// The cluster's server port refuses a KV write that carries no token, on
// every server; the HTTP API of a client agent forwards its caller's token,
// so the same write through it is refused without a token and accepted
// with one.
func TestServerPortRefusesWriteWithoutToken(t *testing.T) {
	srvs, client := startACLCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, s := range srvs {
		addr := "127.0.0.1:" + strconv.Itoa(s.cfg.Ports.Server)
		cl := server.NewClient(server.ClientConfig{Servers: func() []string { return []string{addr} }, HoldTimeout: 5 * time.Second})
		defer cl.Close()
		_, err := cl.Apply(ctx, catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVSet, Entry: catalog.KVEntry{Key: "raw", Value: []byte("x")}})
		if !errors.Is(err, acl.ErrPermissionDenied) {
			t.Fatalf("%s: raw write without token: %v, want permission denied", s.cfg.NodeName, err)
		}
		_, err = cl.Apply(server.WithToken(ctx, rootSecret), catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVSet, Entry: catalog.KVEntry{Key: "raw", Value: []byte("x")}})
		if err != nil {
			t.Fatalf("%s: raw write with the management token: %v", s.cfg.NodeName, err)
		}
	}
	anon := tokenClient(t, client.agent, "")
	if _, err := anon.KV().Put(&api.KVPair{Key: "via-client", Value: []byte("x")}, nil); statusOf(err) != http.StatusForbidden {
		t.Fatalf("write through the client agent without token: %v", err)
	}
	bogus := tokenClient(t, client.agent, "5e1c6f0a-1111-4222-8333-944445555666")
	if _, err := bogus.KV().Put(&api.KVPair{Key: "via-client", Value: []byte("x")}, nil); statusOf(err) != http.StatusForbidden {
		t.Fatalf("write through the client agent with an unknown token: %v", err)
	}
	if _, err := client.api.KV().Put(&api.KVPair{Key: "via-client", Value: []byte("x")}, nil); err != nil {
		t.Fatalf("write through the client agent with the management token: %v", err)
	}
}
