package server

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"

	"github.com/hashicorp/go-bexpr"
	"github.com/hashicorp/go-memdb"
	"google.golang.org/grpc/metadata"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/catalog"
)

// ACL enforcement on the server port.
//
// The caller's token travels as gRPC metadata (x-consul-token), not as a
// field of each request: one place covers every method (Apply, whose hot
// path sends the raw command bytes, Read, snapshots, operator, Connect),
// and a follower that forwards a request to the leader forwards its
// context, token included, without knowing the request's shape. The token
// rides in the context: WithToken on the calling side, the RPC wrapper on
// the serving side; connPool.call turns it into metadata.
//
// Every RPC is checked: the serving side always puts the caller's token
// (or "" for none, the anonymous token) in the context. A call made
// in-process is checked the same way when its context carries a token: an
// agent's HTTP API and anti-entropy on its own server pass theirs. The
// server's own routines (the leader's loops) pass none and are not checked.

// tokenMetadataKey is the gRPC metadata key of the caller's ACL token.
const tokenMetadataKey = "x-consul-token"

type tokenKey struct{}

// WithToken returns a context whose RPCs carry secret as their ACL token
// ("" for the anonymous token). An RPC made with a context without a token
// carries the pool's fallback token: the agent's own (acl.tokens.agent).
func WithToken(ctx context.Context, secret string) context.Context {
	return context.WithValue(ctx, tokenKey{}, secret)
}

// TokenFrom returns the token WithToken put in ctx.
func TokenFrom(ctx context.Context) (string, bool) {
	s, ok := ctx.Value(tokenKey{}).(string)
	return s, ok
}

// withReadToken returns ctx with the read's Options.Token when ctx carries
// no token (WithToken): a read made outside a request (a replication loop,
// a view of xDS) says with which token it reads in its options. A token in
// ctx wins: an RPC's is the caller's.
func withReadToken(ctx context.Context, req *catalog.ReadRequest) context.Context {
	if req.Options.Token == "" {
		return ctx
	}
	if _, ok := TokenFrom(ctx); ok {
		return ctx
	}
	return WithToken(ctx, req.Options.Token)
}

// withIncomingToken puts the token of an incoming RPC into its context, ""
// when it carried none: forwarding keeps it, and the checks read it.
func withIncomingToken(ctx context.Context) context.Context {
	secret := ""
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(tokenMetadataKey); len(v) > 0 {
			secret = v[0]
		}
	}
	return WithToken(ctx, secret)
}

// withOutgoingToken attaches ctx's token (else fallback's) to an outgoing
// RPC.
func withOutgoingToken(ctx context.Context, fallback func() string) context.Context {
	secret, ok := TokenFrom(ctx)
	if !ok && fallback != nil {
		secret = fallback()
	}
	if secret == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, tokenMetadataKey, secret)
}

// Error kinds of ACL refusals.
const (
	kindPermissionDenied = "permission_denied"
	kindACLNotFound      = "acl_not_found"
)

// permissionDeniedError is Consul's refusal, naming the token, the
// permission and the resource.
type permissionDeniedError struct {
	accessor, perm, resource string
}

func (e *permissionDeniedError) Error() string {
	who := "provided token"
	if e.accessor != "" {
		who = fmt.Sprintf("token with AccessorID '%s'", e.accessor)
	}
	msg := fmt.Sprintf("%s: %s lacks permission '%s'", acl.ErrPermissionDenied, who, e.perm)
	if e.resource != "" {
		msg += fmt.Sprintf(" on %q", e.resource)
	}
	return msg
}

func (e *permissionDeniedError) Is(target error) bool { return target == acl.ErrPermissionDenied }

// checker turns an Authorizer's decisions into Consul's errors.
type checker struct {
	authz acl.Authorizer
}

// need returns nil when dec allows, else the permission-denied error for
// perm on resource ("" for a scalar permission).
func (c checker) need(dec acl.Decision, perm, resource string) error {
	if dec == acl.Allow {
		return nil
	}
	return &permissionDeniedError{accessor: acl.AccessorOf(c.authz), perm: perm, resource: resource}
}

// startACLResolver starts the server's token resolver: tokens, policies and roles
// come from its own state store (no RPC), cached until the ACL tables change.
func (s *Server) startACLResolver() {
	if !s.config.ACL.Enabled {
		return
	}
	s.acls = acl.NewCachingResolver(acl.ResolverConfig{
		Source:     storeACLSource{s: s},
		Datacenter: s.config.Datacenter,
		Options: acl.PolicyOptions{
			DefaultAllow:  s.config.ACL.DefaultPolicy != "deny",
			EnableKeyList: s.config.ACL.EnableKeyListPolicy,
		},
		// The server's own store never goes down: extend-cache only
		// matters for a store error.
		DownPolicy: acl.DownExtendCache,
		Now:        s.clock.Now,
		Logger:     s.logger.Named("acl"),
	})
	ctx, cancel := context.WithCancel(context.Background())
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		s.acls.Run(ctx)
	}()
	go func() {
		defer s.wg.Done()
		<-s.shutdownCh
		cancel()
	}()
}

// storeACLSource reads ACL state from the server's own store.
type storeACLSource struct{ s *Server }

// ResolveToken implements acl.Source.
func (src storeACLSource) ResolveToken(ctx context.Context, secret string) (*acl.ResolvedToken, error) {
	req := &catalog.ReadRequest{Op: catalog.ReadACLResolve, Name: secret}
	if src.s.resolveInPrimary(req) {
		// A secondary without token replication holds no global token:
		// the primary resolves it. Index 0 keeps the answer out of the
		// cache, whose watch sees only this datacenter's changes: a
		// token revoked in the primary is refused at the next call.
		inPrimary := *req
		inPrimary.Options.Datacenter = src.s.PrimaryDatacenter()
		resp, err := src.s.readDC(ctx, &inPrimary)
		if err != nil {
			return nil, fmt.Errorf("resolve token in the primary: %w", err)
		}
		out := &acl.ResolvedToken{Policies: resp.ACLPolicies, Roles: resp.ACLRoles}
		if len(resp.ACLTokens) > 0 {
			out.Token = resp.ACLTokens[0]
		}
		return out, nil
	}
	idx, resp, err := src.s.store.Execute(nil, req)
	if err != nil {
		return nil, fmt.Errorf("resolve token: %w", err)
	}
	out := &acl.ResolvedToken{Index: idx, Policies: resp.ACLPolicies, Roles: resp.ACLRoles}
	if len(resp.ACLTokens) > 0 {
		out.Token = resp.ACLTokens[0]
	}
	return out, nil
}

// WaitACLIndex implements acl.Source with a watch on the store.
func (src storeACLSource) WaitACLIndex(ctx context.Context, minIndex uint64) (uint64, error) {
	for {
		ws := memdb.NewWatchSet()
		ws.Add(src.s.store.AbandonCh())
		idx, _, err := src.s.store.Execute(ws, &catalog.ReadRequest{Op: catalog.ReadACLIndex})
		if err != nil {
			return 0, fmt.Errorf("watch ACL index: %w", err)
		}
		if idx != minIndex {
			return idx, nil
		}
		if err := ws.WatchCtx(ctx); err != nil {
			return idx, nil
		}
	}
}

// rpcAuthorizer returns the Authorizer of an incoming RPC's token: the
// anonymous token's when it carried none. An unknown or expired token is
// an error of kind ACL-not-found. With ACLs off every RPC is allowed.
func (s *Server) rpcAuthorizer(ctx context.Context) (acl.Authorizer, error) {
	if s.acls == nil {
		return acl.AllowAll(), nil
	}
	secret, _ := TokenFrom(ctx)
	a, err := s.acls.ResolveContext(ctx, secret)
	if errors.Is(err, acl.ErrNotFound) {
		return nil, acl.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("resolve token: %w", err)
	}
	return a, nil
}

// authorizeCommand checks a decoded command against the token of ctx; a
// context without one is the server's own.
func (s *Server) authorizeCommand(ctx context.Context, cmd *catalog.Command) error {
	if s.acls == nil {
		return nil
	}
	if _, ok := TokenFrom(ctx); !ok {
		return nil
	}
	switch cmd.Type {
	case catalog.CmdACLLogin, catalog.CmdACLBootstrap:
		// Whoever calls, with whatever token: the leader decides a login
		// (the bearer token or the token to log out is its proof) and
		// refuses a second bootstrap (server/acl_login.go).
		return nil
	}
	authz, err := s.rpcAuthorizer(ctx)
	if err != nil {
		return err
	}
	return s.checkCommand(checker{authz}, cmd)
}

// checkCommand checks one command: the permission Consul's endpoint of the
// same write needs. Types it does not know need acl:write (management).
func (s *Server) checkCommand(c checker, cmd *catalog.Command) error {
	a := c.authz
	switch cmd.Type {
	case catalog.CmdRegister:
		return s.checkRegister(c, cmd.Register)
	case catalog.CmdDeregister:
		return s.checkDeregister(c, cmd.Deregister)
	case catalog.CmdKV:
		key := cmd.KV.Entry.Key
		if cmd.KV.Op == catalog.KVDeleteTree {
			return c.need(acl.KeyWritePrefix(a, key), "key:write", key)
		}
		return c.need(a.KeyWrite(key), "key:write", key)
	case catalog.CmdTxn:
		for i := range cmd.Txn {
			if err := s.checkTxnOp(c, &cmd.Txn[i]); err != nil {
				return err
			}
		}
		return nil
	case catalog.CmdSession:
		node := cmd.Session.Session.Node
		if cmd.Session.Op == catalog.SessionDestroy {
			node = s.sessionNode(cmd.Session.Session.ID)
			if node == "" {
				return nil // no such session: nothing to destroy
			}
		}
		return c.need(a.SessionWrite(node), "session:write", node)
	case catalog.CmdCoordinate:
		for _, co := range cmd.Coordinates {
			if err := c.need(a.NodeWrite(co.Node), "node:write", co.Node); err != nil {
				return err
			}
		}
		return nil
	case catalog.CmdPreparedQuery:
		return s.checkPreparedQuery(c, cmd.PreparedQuery)
	case catalog.CmdACLBootstrap:
		// Anyone may bootstrap, once: the FSM refuses a second one.
		return nil
	case catalog.CmdACLTokenSet, catalog.CmdACLTokenDelete, catalog.CmdACLPolicySet,
		catalog.CmdACLPolicyDelete, catalog.CmdACLRoleSet, catalog.CmdACLRoleDelete:
		return c.need(acl.ACLWrite(a), "acl:write", "")
	case catalog.CmdConfigEntry:
		e := cmd.ConfigEntry.Entry
		return c.need(acl.ConfigEntryAllowed(a, e.Kind, e.Name, true), configEntryPerm(e.Kind), e.Name)
	case catalog.CmdCA, catalog.CmdAutopilotConfig, catalog.CmdServiceVirtualIP:
		// Manual virtual IPs may take addresses from other services.
		return c.need(a.OperatorWrite(), "operator:write", "")
	}
	return c.need(acl.ACLWrite(a), "acl:write", "")
}

func configEntryPerm(kind string) string {
	if len(kind) > 8 && kind[:8] == "service-" {
		return "service:write"
	}
	return "operator:write"
}

// checkRegister follows Consul's rule: node:write only when the
// registration creates the node or changes it (a service token with
// node:read, as Consul's service identities grant, keeps its instance
// registered), service:write on the service, and for each check node:write
// (a node check) or service:write on its service.
func (s *Server) checkRegister(c checker, r *catalog.RegisterRequest) error {
	a := c.authz
	_, ns, err := s.store.NodeServices(nil, r.Node)
	if err != nil {
		return err
	}
	if registerChangesNode(r, ns) {
		if err := c.need(a.NodeWrite(r.Node), "node:write", r.Node); err != nil {
			return err
		}
	}
	if r.Service != nil {
		if err := c.need(a.ServiceWrite(r.Service.Service), "service:write", r.Service.Service); err != nil {
			return err
		}
	}
	checks := r.Checks
	if r.Check != nil {
		checks = append(slices.Clip(checks), r.Check)
	}
	for _, chk := range checks {
		if chk == nil {
			continue
		}
		if chk.ServiceID == "" {
			if err := c.need(a.NodeWrite(r.Node), "node:write", r.Node); err != nil {
				return err
			}
			continue
		}
		name := chk.ServiceName
		if r.Service != nil && r.Service.ID == chk.ServiceID {
			name = r.Service.Service
		} else if ns != nil {
			for _, svc := range ns.Services {
				if svc.ID == chk.ServiceID {
					name = svc.Service
				}
			}
		}
		if err := c.need(a.ServiceWrite(name), "service:write", name); err != nil {
			return err
		}
	}
	return nil
}

// registerChangesNode reports whether r creates its node or changes what
// the catalog holds of it (ns: the node's current services and node).
func registerChangesNode(r *catalog.RegisterRequest, ns *catalog.NodeServices) bool {
	if ns == nil || ns.Node == nil {
		return true
	}
	if r.SkipNodeUpdate {
		return false
	}
	n := ns.Node
	return (r.ID != "" && r.ID != n.ID) || r.Address != n.Address ||
		!maps.Equal(r.TaggedAddresses, n.TaggedAddresses) || !maps.Equal(r.NodeMeta, n.Meta)
}

// checkDeregister: a node needs node:write; a service service:write on its
// name; a check node:write, or service:write when it is a service's.
func (s *Server) checkDeregister(c checker, d *catalog.DeregisterRequest) error {
	a := c.authz
	if d.ServiceID == "" && d.CheckID == "" {
		return c.need(a.NodeWrite(d.Node), "node:write", d.Node)
	}
	if a.NodeWrite(d.Node) == acl.Allow {
		// node:write covers everything registered on the node, as in
		// Consul.
		return nil
	}
	_, ns, err := s.store.NodeServices(nil, d.Node)
	if err != nil {
		return err
	}
	svcName := func(id string) string {
		if ns != nil {
			for _, svc := range ns.Services {
				if svc.ID == id {
					return svc.Service
				}
			}
		}
		return ""
	}
	if d.ServiceID != "" {
		name := svcName(d.ServiceID)
		if name == "" {
			// Nothing to remove; the node's write covers the no-op.
			return c.need(a.NodeWrite(d.Node), "node:write", d.Node)
		}
		return c.need(a.ServiceWrite(name), "service:write", name)
	}
	_, checks, err := s.store.NodeChecks(nil, d.Node)
	if err != nil {
		return err
	}
	for _, chk := range checks {
		if chk.CheckID == d.CheckID && chk.ServiceID != "" {
			if name := svcName(chk.ServiceID); name != "" {
				return c.need(a.ServiceWrite(name), "service:write", name)
			}
		}
	}
	return c.need(a.NodeWrite(d.Node), "node:write", d.Node)
}

// checkTxnOp checks one transaction operation: reads need read, the rest
// write, a recursive delete write on everything under its prefix.
func (s *Server) checkTxnOp(c checker, op *catalog.TxnOp) error {
	a := c.authz
	switch {
	case op.KV != nil:
		k := op.KV.Key
		switch op.KV.Verb {
		case catalog.KVGet, catalog.KVCheckSession, catalog.KVCheckIndex, catalog.KVCheckNotExists:
			return c.need(a.KeyRead(k), "key:read", k)
		case catalog.KVGetTree:
			return c.need(a.KeyList(k), "key:list", k)
		case catalog.KVDeleteTree:
			return c.need(acl.KeyWritePrefix(a, k), "key:write", k)
		default:
			return c.need(a.KeyWrite(k), "key:write", k)
		}
	case op.Node != nil:
		n := op.Node.Node.Node
		if op.Node.Verb == catalog.TxnGet {
			return c.need(a.NodeRead(n), "node:read", n)
		}
		return c.need(a.NodeWrite(n), "node:write", n)
	case op.Service != nil:
		name := op.Service.Service.Service
		if op.Service.Verb == catalog.TxnGet {
			return c.need(a.ServiceRead(name), "service:read", name)
		}
		if name == "" {
			// A delete names the instance by ID only.
			if _, ns, err := s.store.NodeServices(nil, op.Service.Node); err == nil && ns != nil {
				for _, svc := range ns.Services {
					if svc.ID == op.Service.Service.ID {
						name = svc.Service
					}
				}
			}
		}
		return c.need(a.ServiceWrite(name), "service:write", name)
	case op.Check != nil:
		chk := op.Check.Check
		if op.Check.Verb == catalog.TxnGet {
			return c.need(a.NodeRead(chk.Node), "node:read", chk.Node)
		}
		if chk.ServiceName != "" {
			return c.need(a.ServiceWrite(chk.ServiceName), "service:write", chk.ServiceName)
		}
		return c.need(a.NodeWrite(chk.Node), "node:write", chk.Node)
	case op.Session != nil:
		node := op.Session.Session.Node
		if n := s.sessionNode(op.Session.Session.ID); n != "" {
			node = n
		}
		return c.need(a.SessionWrite(node), "session:write", node)
	}
	return nil
}

// sessionNode returns the node of a session, "" when there is none.
func (s *Server) sessionNode(id string) string {
	if id == "" {
		return ""
	}
	_, sess, err := s.store.SessionGet(nil, id)
	if err != nil || sess == nil {
		return ""
	}
	return sess.Node
}

// checkPreparedQuery: creating needs query:write on the new name, changing
// or deleting on the stored query's name too. An unnamed query is anyone's
// to create (it is found by its ID only), as in Consul.
func (s *Server) checkPreparedQuery(c checker, r *catalog.PreparedQueryRequest) error {
	a := c.authz
	if r.Op != catalog.PreparedQueryCreate {
		_, existing, err := s.store.PreparedQueryGet(nil, r.Query.ID)
		if err != nil {
			return err
		}
		if existing != nil && existing.Name != "" {
			if err := c.need(a.QueryWrite(existing.Name), "query:write", existing.Name); err != nil {
				return err
			}
		}
	}
	if r.Op != catalog.PreparedQueryDelete && r.Query.Name != "" {
		return c.need(a.QueryWrite(r.Query.Name), "query:write", r.Query.Name)
	}
	return nil
}

// authorizeRead checks a read against the token of ctx before it runs (a
// context without one is the server's own); the Authorizer it returns
// filters the result (nil: nothing to filter).
// Reads of one named thing are answered, filtered (FilterRead), like
// lists; the ACL tables need acl:read, except what any holder of a secret
// may learn: its own token, the ACL index and the bootstrap state.
func (s *Server) authorizeRead(ctx context.Context, req *catalog.ReadRequest) (acl.Authorizer, error) {
	if s.acls == nil {
		return nil, nil
	}
	if _, ok := TokenFrom(ctx); !ok {
		return nil, nil
	}
	if req.PreparedQueryID != "" && (req.Op == catalog.ReadHealthService || req.Op == catalog.ReadHealthConnect) {
		// The read executes a prepared query: a query with a token of
		// its own runs with it, whoever asks, without the token ever
		// leaving the servers. Only for the query's own service: the
		// token must not read anything else. A template's service
		// depends on the name it was executed as, which the read does
		// not carry: a template runs with the caller's token.
		_, q, err := s.store.PreparedQueryGet(nil, req.PreparedQueryID)
		if err == nil && q != nil && q.Token != "" && q.Template.Type == "" && q.Service.Service == req.Name {
			ctx = WithToken(ctx, q.Token)
		}
	}
	switch req.Op {
	case catalog.ReadACLResolve, catalog.ReadACLIndex, catalog.ReadACLBootstrap:
		// Resolving a secret needs the secret itself.
		return nil, nil
	}
	authz, err := s.rpcAuthorizer(ctx)
	if err != nil {
		return nil, err
	}
	c := checker{authz}
	switch req.Op {
	case catalog.ReadACLTokenSecret:
		if caller := callerSecret(ctx); caller == req.Name {
			return nil, nil
		}
		return nil, c.need(acl.ACLWrite(authz), "acl:write", "")
	case catalog.ReadACLToken, catalog.ReadACLTokens, catalog.ReadACLPolicy, catalog.ReadACLPolicyByName,
		catalog.ReadACLPolicies, catalog.ReadACLRole, catalog.ReadACLRoleByName, catalog.ReadACLRoles,
		catalog.ReadACLAuthMethod, catalog.ReadACLAuthMethods, catalog.ReadACLBindingRule, catalog.ReadACLBindingRules:
		if err := c.need(acl.ACLRead(authz), "acl:read", ""); err != nil {
			return nil, err
		}
		// filterRead hides the secrets from a reader without acl:write.
	case catalog.ReadCAConfig:
		return nil, c.need(authz.OperatorRead(), "operator:read", "")
	case catalog.ReadKVList, catalog.ReadKVKeys:
		// With acl.enable_key_list_policy, listing needs list on the
		// prefix; without it the entries are filtered one by one.
		if s.config.ACL.EnableKeyListPolicy {
			if err := c.need(authz.KeyList(req.Key), "key:list", req.Key); err != nil {
				return nil, err
			}
		}
	}
	return authz, nil
}

// callerSecret is the secret an RPC's token resolves as: "" is the
// anonymous token.
func callerSecret(ctx context.Context) string {
	secret, _ := TokenFrom(ctx)
	if secret == "" {
		return catalog.ACLAnonymousTokenSecret
	}
	return secret
}

// filterRead drops what authz may not see from a read's result and says so
// in its meta; tokens read without acl:write have their secrets hidden.
func filterRead(authz acl.Authorizer, req *catalog.ReadRequest, resp *catalog.ReadResponse) {
	if authz == nil || resp == nil {
		return
	}
	if req.Op == catalog.ReadPreparedQueryResolve {
		// Executing a query needs no right on the query itself, as in
		// Consul: its results are filtered (see PreparedQueryID).
		resp.PreparedQueries = acl.RedactQueryTokens(authz, resp.PreparedQueries)
		return
	}
	before := matchingRows(req, resp)
	if acl.FilterRead(authz, resp) {
		// ?filter= applies before the ACL filter: the rows dropped
		// count only when the filter would have kept them.
		resp.Meta.ResultsFilteredByACLs = before < 0 || matchingRows(req, resp) < before
	}
	if req.Op == catalog.ReadPreparedQueries && acl.ACLWrite(authz) != acl.Allow {
		// Unnamed queries are listed to management tokens only.
		n := len(resp.PreparedQueries)
		resp.PreparedQueries = slices.DeleteFunc(slices.Clone(resp.PreparedQueries), func(q *catalog.PreparedQuery) bool { return q.Name == "" })
		if len(resp.PreparedQueries) < n {
			resp.Meta.ResultsFilteredByACLs = true
		}
	}
	if len(resp.ACLTokens) > 0 && acl.ACLWrite(authz) != acl.Allow {
		out := make([]*catalog.ACLToken, len(resp.ACLTokens))
		for i, t := range resp.ACLTokens {
			c := *t
			c.SecretID = redactedSecret
			out[i] = &c
		}
		resp.ACLTokens = out
	}
}

// redactedSecret replaces a token's SecretID for readers without
// acl:write, as Consul shows it.
const redactedSecret = "<hidden>"

// authorizeOperator: reads need operator:read, changes operator:write.
func (s *Server) authorizeOperator(ctx context.Context, op string) error {
	if s.acls == nil {
		return nil
	}
	authz, err := s.rpcAuthorizer(ctx)
	if err != nil {
		return err
	}
	c := checker{authz}
	switch op {
	case OpRaftConfiguration, OpAutopilotHealth, OpAutopilotState:
		return c.need(authz.OperatorRead(), "operator:read", "")
	}
	return c.need(authz.OperatorWrite(), "operator:write", "")
}

// authorizeWith checks a call that needs one scalar or named permission.
func (s *Server) authorizeWith(ctx context.Context, check func(checker) error) error {
	if s.acls == nil {
		return nil
	}
	authz, err := s.rpcAuthorizer(ctx)
	if err != nil {
		return err
	}
	return check(checker{authz})
}

// needACLWrite is the check of snapshot save and restore: a snapshot holds
// and replaces everything, ACLs included.
func needACLWrite(c checker) error { return c.need(acl.ACLWrite(c.authz), "acl:write", "") }

// matchingRows counts the rows of a read's result that its ?filter=
// expression selects, for the reads whose rows the HTTP API filters in
// the same shape; -1 when there is no filter or it cannot tell.
func matchingRows(req *catalog.ReadRequest, resp *catalog.ReadResponse) int {
	if req.Options.Filter == "" {
		return -1
	}
	var rows any
	switch req.Op {
	case catalog.ReadNodes:
		rows = resp.Nodes
	case catalog.ReadHealthService:
		rows = resp.Instances
	case catalog.ReadNodeChecks, catalog.ReadServiceChecks, catalog.ReadChecksInState:
		rows = resp.Checks
	case catalog.ReadCoordinates:
		rows = resp.Coordinates
	case catalog.ReadNode:
		if resp.NodeServices == nil {
			return 0
		}
		rows = resp.NodeServices.Services
	default:
		return -1
	}
	ev, err := bexpr.CreateFilter(req.Options.Filter)
	if err != nil {
		return -1
	}
	out, err := ev.Execute(rows)
	if err != nil {
		return -1
	}
	if v := reflect.ValueOf(out); v.Kind() == reflect.Slice {
		return v.Len()
	}
	return 0
}
