package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"

	"github.com/tribune-mesh/tribune/clock"
)

// maxDialAttempts bounds how many instances one upstream connection tries
// before it gives up.
const maxDialAttempts = 3

// errNoInstance is returned when an upstream has no passing instance.
var errNoInstance = errors.New("no healthy instance")

// upstream is one upstream's listener and its healthy instances, followed
// with a blocking /v1/health/connect query (or a prepared query executed
// every QueryRefresh) and picked round robin.
type upstream struct {
	cfg    Upstream
	ln     net.Listener
	logger hclog.Logger

	// instances holds the "host:port" of each passing proxy (or
	// Connect-native instance) of the service, and the service and
	// datacenter whose identity they present; replaced whole on change.
	instances atomic.Pointer[instances]
	next      atomic.Uint64
}

// instances are an upstream's current instances.
type instances struct {
	addrs       []string
	service, dc string
}

// watch follows the upstream's healthy instances until ctx ends.
func (u *upstream) watch(ctx context.Context, client *api.Client) {
	if u.cfg.PreparedQuery {
		u.watchQuery(ctx, client)
		return
	}
	follow(ctx, u.logger, "healthy instances of "+u.cfg.DestinationName,
		func(q *api.QueryOptions) ([]*api.ServiceEntry, *api.QueryMeta, error) {
			q.Datacenter = u.cfg.Datacenter
			return client.Health().Connect(u.cfg.DestinationName, "", true, q)
		}, func(entries []*api.ServiceEntry) error {
			u.setInstances(entries, u.cfg.DestinationName, u.cfg.Datacenter)
			return nil
		})
}

// watchQuery executes the upstream's prepared query (connect=true) every
// QueryRefresh until ctx ends, backing off while it fails.
func (u *upstream) watchQuery(ctx context.Context, client *api.Client) {
	backoff := followMinBackoff
	for ctx.Err() == nil {
		q := (&api.QueryOptions{Datacenter: u.cfg.Datacenter, Connect: true}).WithContext(ctx)
		resp, _, err := client.PreparedQuery().Execute(u.cfg.DestinationName, q)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			u.logger.Warn("prepared query failed, retrying", "query", u.cfg.DestinationName, "error", err, "retry_in", backoff)
			clock.Sleep(ctx, backoff)
			backoff = min(2*backoff, followMaxBackoff)
			continue
		}
		backoff = followMinBackoff
		entries := make([]*api.ServiceEntry, 0, len(resp.Nodes))
		for i := range resp.Nodes {
			entries = append(entries, &resp.Nodes[i])
		}
		u.setInstances(entries, resp.Service, resp.Datacenter)
		clock.Sleep(ctx, QueryRefresh)
	}
}

func (u *upstream) setInstances(entries []*api.ServiceEntry, service, dc string) {
	addrs := make([]string, 0, len(entries))
	for _, e := range entries {
		if e == nil || e.Service == nil || e.Service.Port <= 0 {
			continue
		}
		host := e.Service.Address
		if host == "" && e.Node != nil {
			host = e.Node.Address
		}
		if host == "" {
			continue
		}
		addrs = append(addrs, net.JoinHostPort(host, strconv.Itoa(e.Service.Port)))
	}
	u.instances.Store(&instances{addrs: addrs, service: service, dc: dc})
	u.logger.Debug("upstream instances", "upstream", u.cfg.DestinationName, "instances", len(addrs))
}

// dial opens an mTLS connection to a healthy instance, trying the next one
// (up to maxDialAttempts) when one fails.
func (u *upstream) dial(ctx context.Context, c *certs, handshakeTimeout time.Duration) (*tls.Conn, error) {
	list := u.instances.Load()
	if list == nil || len(list.addrs) == 0 {
		return nil, fmt.Errorf("upstream %s: %w", u.cfg.DestinationName, errNoInstance)
	}
	addrs := list.addrs
	var errs []error
	for range min(maxDialAttempts, len(addrs)) {
		addr := addrs[(u.next.Add(1)-1)%uint64(len(addrs))]
		conn, err := u.dialOne(ctx, c, list, addr, handshakeTimeout)
		if err == nil {
			return conn, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("upstream %s: %w", u.cfg.DestinationName, errors.Join(errs...))
}

func (u *upstream) dialOne(ctx context.Context, c *certs, list *instances, addr string, handshakeTimeout time.Duration) (*tls.Conn, error) {
	cfg, err := c.clientConfig(list.service, list.dc)
	if err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, u.cfg.ConnectTimeout)
	raw, err := (&net.Dialer{}).DialContext(dctx, "tcp", addr)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	conn := tls.Client(raw, cfg)
	hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	if err := conn.HandshakeContext(hctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("handshake with %s: %w", addr, err)
	}
	return conn, nil
}
