package server

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/clock"
	"github.com/tribune-mesh/tribune/tlsconfig"
)

// ErrNoServers is returned by a Client that knows no server.
var ErrNoServers = errors.New("No known Consul servers")

// ClientConfig configures a Client.
type ClientConfig struct {
	// Servers returns the RPC addresses of the known servers, from gossip.
	Servers func() []string
	// HoldTimeout bounds the retries of one request across a leader
	// election (rpc_hold_timeout).
	HoldTimeout time.Duration
	// Dial reaches a server port; nil dials TCP.
	Dial DialFunc
	// Clock paces the retries; nil means clock.New().
	Clock clock.Clock
	// Token returns the ACL token of a request whose context carries
	// none (WithToken): the agent's own, acl.tokens.agent. Nil sends none.
	Token func() string
	// TLS, when set, is tls.internal_rpc: every connection to a server is
	// made inside TLS (verify_outgoing, auto_encrypt). Logger gets a line
	// per failed handshake.
	TLS    *tlsconfig.Configurator
	Logger hclog.Logger
}

// Client is a client agent's way to the servers: it sends every read and
// write to one server, moving to another when that one fails, and retries
// through leader elections within the hold timeout.
type Client struct {
	cfg  ClientConfig
	pool *connPool

	mu        sync.Mutex
	preferred string
	// known is cfg.Servers()'s last answer, taken at knownAt: listing the
	// gossip members on every request cost the client agent ~7% of its
	// CPU (and grows with the pool), so it is asked again only after
	// serverListTTL, when the list was empty, or after a server could
	// not be reached.
	known   []string
	knownAt time.Time
}

// serverListTTL is how long a Client uses a list of servers before it asks
// for it again.
const serverListTTL = time.Second

// NewClient returns a Client. Close releases its connections.
func NewClient(cfg ClientConfig) *Client {
	if cfg.HoldTimeout <= 0 {
		cfg.HoldTimeout = DefaultHoldTimeout
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.New()
	}
	pool := newConnPool(cfg.Dial)
	pool.token = cfg.Token
	if cfg.TLS != nil {
		pool.tls = portTLS{conf: cfg.TLS, logger: cfg.Logger}
	}
	return &Client{cfg: cfg, pool: pool}
}

// Close closes every connection, failing the requests in flight.
func (c *Client) Close() { c.pool.close() }

// Renew makes the next requests use new connections, made with the TLS
// certificate now configured and without the backoff of connections that
// failed before; requests in flight finish on the old ones, which close
// after them.
func (c *Client) Renew() { c.pool.renew() }

// pick returns the server to use: the last one that worked while it is
// known, else a random one.
func (c *Client) pick(exclude string) (string, error) {
	now := c.cfg.Clock.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	servers := c.known
	if exclude != "" || len(servers) == 0 || now.Sub(c.knownAt) >= serverListTTL || now.Before(c.knownAt) {
		servers = c.cfg.Servers()
		c.known, c.knownAt = servers, now
	}
	if len(servers) == 0 {
		return "", ErrNoServers
	}
	if c.preferred != "" && c.preferred != exclude {
		for _, s := range servers {
			if s == c.preferred {
				return s, nil
			}
		}
	}
	var choices []string
	for _, s := range servers {
		if s != exclude {
			choices = append(choices, s)
		}
	}
	if len(choices) == 0 {
		choices = servers
	}
	c.preferred = choices[rand.IntN(len(choices))]
	return c.preferred, nil
}

// preferLeader makes the leader the server of the next requests, saving
// the follower's forwarding hop, when gossip knows it as a server.
func (c *Client) preferLeader(leader string) {
	if leader == "" {
		return
	}
	c.mu.Lock()
	cur := c.preferred
	c.mu.Unlock()
	if cur == leader {
		return
	}
	for _, s := range c.cfg.Servers() {
		if s == leader {
			c.mu.Lock()
			c.preferred = leader
			c.mu.Unlock()
			return
		}
	}
}

// invoke calls method on a server, moving to another server when one
// cannot be reached, and retries retryable answers until the hold timeout.
// answerErr turns a response into an error for retry decisions. A write
// is sent again only when it provably never left (retryableWrite).
func (c *Client) invoke(ctx context.Context, method string, req, resp any, answerErr func() error) error {
	base := retryable
	if method == "Apply" {
		base = retryableWrite
	}
	// Gossip may not have found a server yet.
	retry := func(err error) bool { return errors.Is(err, ErrNoServers) || base(err) }
	failed := ""
	err := holdRetry(ctx, c.cfg.Clock, c.cfg.HoldTimeout, nil, retry, func() error {
		addr, err := c.pick(failed)
		if err != nil {
			return err
		}
		if err := c.pool.call(ctx, addr, method, req, resp); err != nil {
			if status.Code(err) == codes.Unavailable {
				failed = addr
			}
			return err
		}
		return answerErr()
	})
	if he := (*holdExpiredError)(nil); errors.As(err, &he) {
		if leaderErr(he.last) {
			return ErrNoLeader
		}
		return he.last
	}
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	return err
}

// Apply commits a command through a server.
func (c *Client) Apply(ctx context.Context, t catalog.CommandType, body any) (any, error) {
	buf, err := catalog.Encode(t, body)
	if err != nil {
		return nil, err
	}
	var resp ApplyResponse
	var res any
	err = c.invoke(ctx, "Apply", &ApplyRequest{Data: buf}, &resp, func() error {
		c.preferLeader(resp.Leader)
		var derr error
		res, derr = decodeApplyResult(&resp)
		return derr
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// Read runs a read on a server.
func (c *Client) Read(ctx context.Context, req *catalog.ReadRequest) (*catalog.ReadResponse, error) {
	ctx = withReadToken(ctx, req)
	var resp ReadResponseWire
	err := c.invoke(ctx, "Read", req, &resp, func() error {
		if !req.Options.AllowStale {
			c.preferLeader(resp.Leader)
		}
		return fromWire(resp.Error)
	})
	if err != nil {
		return nil, err
	}
	return resp.Resp, nil
}

// Status asks a server for the leader and the peers.
func (c *Client) Status(ctx context.Context) (string, []string, error) {
	var resp StatusResponse
	if err := c.invoke(ctx, "Status", &StatusRequest{}, &resp, func() error { return nil }); err != nil {
		return "", nil, err
	}
	return resp.Leader, resp.Peers, nil
}

// SessionRenew restarts the TTL timer of a session on the leader and returns
// the session, or nil when there is no session with that ID.
func (c *Client) SessionRenew(ctx context.Context, id string) (*catalog.Session, error) {
	var resp SessionRenewResponse
	if err := c.invoke(ctx, "SessionRenew", &SessionRenewRequest{ID: id}, &resp, func() error { return fromWire(resp.Error) }); err != nil {
		return nil, err
	}
	return resp.Session, nil
}
