package httpapi

import (
	"context"
	"github.com/hashicorp/go-uuid"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/federation"
	"github.com/tribune-mesh/tribune/server"
)

// Prepared queries (/v1/query), as Consul documents them. The agent draws
// each query's ID so that every server's FSM applies the same one; the
// definition is validated here for a clear 400 and again in the FSM.
//
// Failover to other datacenters is recorded but never happens: until WAN
// federation exists there is no other datacenter, so an execution always
// answers from the local one with Failovers 0.

// hiddenToken replaces a query's token for readers who may not see it.
const hiddenToken = "<hidden>"

// queryExecuteResponse is the body of /v1/query/<id>/execute (Consul's
// PreparedQueryExecuteResponse).
type queryExecuteResponse struct {
	Service    string
	Nodes      []*catalog.CheckServiceNode
	DNS        catalog.QueryDNSOptions
	Datacenter string
	Failovers  int
}

// queryExplainResponse is the body of /v1/query/<id>/explain.
type queryExplainResponse struct {
	Query *catalog.PreparedQuery
}

// queryGeneral serves /v1/query: GET lists, POST creates.
func (h *Handler) queryGeneral(w http.ResponseWriter, r *http.Request) (any, error) {
	if r.Method == http.MethodPost {
		return h.queryCreate(w, r)
	}
	return h.queryList(w, r)
}

// querySpecific serves /v1/query/<id> (GET, PUT, DELETE) and
// /v1/query/<id-or-name>/execute and /explain (GET).
func (h *Handler) querySpecific(w http.ResponseWriter, r *http.Request) (any, error) {
	rest := strings.TrimPrefix(r.URL.Path, "/v1/query/")
	for _, action := range []string{"/execute", "/explain"} {
		name, ok := strings.CutSuffix(rest, action)
		if !ok {
			continue
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", http.MethodGet)
			return nil, &httpError{code: http.StatusMethodNotAllowed, msg: "method " + r.Method + " not allowed"}
		}
		if name == "" {
			return nil, badRequest("Missing query ID or name")
		}
		if action == "/execute" {
			return h.queryExecute(w, r, name)
		}
		return h.queryExplain(w, r, name)
	}
	if rest == "" || strings.Contains(rest, "/") {
		return nil, notFound("Invalid URL path: %q", r.URL.Path)
	}
	switch r.Method {
	case http.MethodPut:
		return h.queryUpdate(w, r, rest)
	case http.MethodDelete:
		return h.queryDelete(w, r, rest)
	}
	return h.queryGet(w, r, rest)
}

func (h *Handler) queryCreate(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := h.checkWriteDC(r); err != nil {
		return nil, err
	}
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	var q catalog.PreparedQuery
	if err := decodeBody(r, &q); err != nil {
		return nil, err
	}
	if authz.QueryWrite(q.Name) != acl.Allow {
		return nil, errPermissionDenied
	}
	if err := q.Validate(); err != nil {
		return nil, err
	}
	id, err := uuid.GenerateUUID()
	if err != nil {
		return nil, err
	}
	q.ID = id
	q.RaftIndex = catalog.RaftIndex{}
	if _, err := h.apply(r.Context(), catalog.CmdPreparedQuery, &catalog.PreparedQueryRequest{Op: catalog.PreparedQueryCreate, Query: q}); err != nil {
		return nil, err
	}
	return struct{ ID string }{id}, nil
}

func (h *Handler) queryUpdate(w http.ResponseWriter, r *http.Request, id string) (any, error) {
	if err := h.checkWriteDC(r); err != nil {
		return nil, err
	}
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	var q catalog.PreparedQuery
	if err := decodeBody(r, &q); err != nil {
		return nil, err
	}
	existing, err := h.queryByID(r.Context(), id)
	if err != nil {
		return nil, err
	}
	if existing == nil {
		return nil, notFound("Cannot modify non-existent prepared query: '%s'", id)
	}
	// Renaming needs write on both the old name and the new one.
	if authz.QueryWrite(existing.Name) != acl.Allow || authz.QueryWrite(q.Name) != acl.Allow {
		return nil, errPermissionDenied
	}
	if err := q.Validate(); err != nil {
		return nil, err
	}
	q.ID = id
	q.RaftIndex = catalog.RaftIndex{}
	_, err = h.apply(r.Context(), catalog.CmdPreparedQuery, &catalog.PreparedQueryRequest{Op: catalog.PreparedQueryUpdate, Query: q})
	return nil, err
}

func (h *Handler) queryDelete(w http.ResponseWriter, r *http.Request, id string) (any, error) {
	if err := h.checkWriteDC(r); err != nil {
		return nil, err
	}
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	existing, err := h.queryByID(r.Context(), id)
	if err != nil {
		return nil, err
	}
	if existing == nil {
		return nil, notFound("Cannot delete non-existent prepared query: '%s'", id)
	}
	if authz.QueryWrite(existing.Name) != acl.Allow {
		return nil, errPermissionDenied
	}
	_, err = h.apply(r.Context(), catalog.CmdPreparedQuery, &catalog.PreparedQueryRequest{Op: catalog.PreparedQueryDelete, Query: catalog.PreparedQuery{ID: id}})
	return nil, err
}

// queryByID reads one query from the leader, for a write to check against.
func (h *Handler) queryByID(ctx context.Context, id string) (*catalog.PreparedQuery, error) {
	resp, err := h.agent.backend.Read(ctx, &catalog.ReadRequest{Op: catalog.ReadPreparedQuery, Name: id})
	if err != nil {
		return nil, err
	}
	if len(resp.PreparedQueries) == 0 {
		return nil, nil
	}
	return resp.PreparedQueries[0], nil
}

func (h *Handler) queryList(w http.ResponseWriter, r *http.Request) (any, error) {
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	resp, err := h.read(w, r, &catalog.ReadRequest{Op: catalog.ReadPreparedQueries})
	if err != nil {
		return nil, err
	}
	// A named query needs query:read on its name; an unnamed one is
	// listed to management tokens only, as Consul does.
	visible := aclKeep(w, r, resp.PreparedQueries, func(q *catalog.PreparedQuery) bool {
		if q.Name == "" {
			return acl.ACLWrite(authz) == acl.Allow
		}
		return acl.QueryRead(authz, q.Name) == acl.Allow
	})
	out := make([]*catalog.PreparedQuery, 0, len(visible))
	for _, q := range visible {
		out = append(out, redactQuery(authz, q))
	}
	return out, nil
}

func (h *Handler) queryGet(w http.ResponseWriter, r *http.Request, id string) (any, error) {
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	resp, err := h.read(w, r, &catalog.ReadRequest{Op: catalog.ReadPreparedQuery, Name: id})
	if err != nil {
		return nil, err
	}
	if len(resp.PreparedQueries) == 0 {
		return nil, notFound("Query not found")
	}
	return []*catalog.PreparedQuery{redactQuery(authz, resp.PreparedQueries[0])}, nil
}

// redactQuery hides a query's token from readers without management
// rights (OperatorWrite stands in for Consul's acl:read until ACL rules
// exist); q itself is shared and not modified.
func redactQuery(authz acl.Authorizer, q *catalog.PreparedQuery) *catalog.PreparedQuery {
	if q.Token == "" || authz.OperatorWrite() == acl.Allow {
		return q
	}
	c := *q
	c.Token = hiddenToken
	return &c
}

// resolveQuery finds and renders the query an execution of idOrName runs;
// nil when none matches.
func (h *Handler) resolveQuery(ctx context.Context, opts catalog.QueryOptions, idOrName string) (*catalog.PreparedQuery, error) {
	opts.MinQueryIndex, opts.MaxQueryTime = 0, 0
	resp, err := h.agent.backend.Read(ctx, &catalog.ReadRequest{Op: catalog.ReadPreparedQueryResolve, Name: idOrName, Options: opts})
	if err != nil {
		return nil, err
	}
	if len(resp.PreparedQueries) == 0 {
		return nil, nil
	}
	return resp.PreparedQueries[0].Render(idOrName)
}

func (h *Handler) queryExplain(w http.ResponseWriter, r *http.Request, idOrName string) (any, error) {
	opts, err := h.parseQueryOptions(r)
	if err != nil {
		return nil, err
	}
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	q, err := h.resolveQuery(r.Context(), opts, idOrName)
	if err != nil {
		return nil, err
	}
	if q == nil {
		return nil, notFound("Query not found")
	}
	return &queryExplainResponse{Query: redactQuery(authz, q)}, nil
}

// queryExecute runs a prepared query: the healthy instances it selects,
// shuffled, or sorted by distance from ?near= (or the query's Near), at
// most ?limit= of them. Blocking parameters are ignored, as in Consul.
func (h *Handler) queryExecute(w http.ResponseWriter, r *http.Request, idOrName string) (any, error) {
	params := queryOf(r)
	limit := 0
	if v := params.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return nil, badRequest("Bad limit: %q", v)
		}
		limit = n
	}
	connect := false
	if v := params.Get("connect"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, badRequest("Bad connect: %q", v)
		}
		connect = b
	}
	opts, err := h.parseQueryOptions(r)
	if err != nil {
		return nil, err
	}
	opts.MinQueryIndex, opts.MaxQueryTime = 0, 0
	ctx := r.Context()
	q, err := h.resolveQuery(ctx, opts, idOrName)
	if err != nil {
		return nil, err
	}
	if q == nil {
		return nil, notFound("Query not found")
	}
	if connect {
		// The mesh instances of the query's service: a copy, the
		// definition is the store's.
		c := *q
		c.Service.Connect = true
		q = &c
	}
	if connect {
		// The mesh instances of the query's service: a copy, the
		// definition is the store's.
		c := *q
		c.Service.Connect = true
		q = &c
	}
	// A query with a token of its own runs with it, whoever asks. The
	// servers hide that token from callers without acl:write and filter
	// the execution's read with it themselves (PreparedQueryID).
	var authz acl.Authorizer
	switch q.Token {
	case "":
		authz, err = h.authorize(r)
	case acl.RedactedToken:
		authz = acl.AllowAll()
	default:
		ctx = server.WithToken(ctx, q.Token)
		authz, err = h.resolve(r.Context(), q.Token)
	}
	if err != nil {
		return nil, err
	}
	resp, nodes, filtered, err := h.queryInstances(ctx, q, opts, authz)
	if err != nil {
		return nil, err
	}
	setMeta(w, resp.Meta)
	dc := opts.Datacenter
	if dc == "" {
		dc = h.agent.cfg.Datacenter
	}
	failovers := 0
	if len(nodes) == 0 {
		// No instance here: ask the query's failover datacenters in
		// turn, the first with an instance answers.
		for _, other := range h.failoverDatacenters(ctx, dc, q.Service.Failover) {
			failovers++
			fopts := opts
			fopts.Datacenter = other
			_, fnodes, ffiltered, err := h.queryInstances(ctx, q, fopts, authz)
			if err != nil {
				continue
			}
			filtered = filtered || ffiltered
			if len(fnodes) > 0 {
				nodes, dc = fnodes, other
				break
			}
		}
	}
	if filtered {
		markFiltered(w, r)
	}
	rand.Shuffle(len(nodes), func(i, j int) { nodes[i], nodes[j] = nodes[j], nodes[i] })
	if near := h.queryNear(ctx, r, q.Service.Near); near != "" {
		// nearSorter reads ?near= of a request: hand it one naming
		// the node chosen here.
		sorter := h.nearSorter(ctx, &http.Request{URL: &url.URL{RawQuery: url.Values{"near": {near}}.Encode()}})
		sortNear(sorter, nodes, func(c *catalog.CheckServiceNode) string { return c.Node.Node })
	}
	if limit > 0 && len(nodes) > limit {
		nodes = nodes[:limit]
	}
	return &queryExecuteResponse{
		Service:    q.Service.Service,
		Nodes:      nodes,
		DNS:        q.DNS,
		Datacenter: dc,
		Failovers:  failovers,
	}, nil
}

// queryInstances reads the healthy instances of a query's service in the
// datacenter opts names and keeps the ones the query selects and authz may
// read (filtered says some were left out).
func (h *Handler) queryInstances(ctx context.Context, q *catalog.PreparedQuery, opts catalog.QueryOptions, authz acl.Authorizer) (*catalog.ReadResponse, []*catalog.CheckServiceNode, bool, error) {
	// PreparedQueryID: the servers filter the execution's read with the
	// query's own token (server/aclcheck.go).
	op := catalog.ReadHealthService
	if q.Service.Connect {
		op = catalog.ReadHealthConnect
	}
	resp, err := h.agent.backend.Read(ctx, &catalog.ReadRequest{Op: op, Name: q.Service.Service,
		PreparedQueryID: q.ID, Options: opts})
	if err != nil {
		return nil, nil, false, err
	}
	selected := catalog.SelectInstances(&q.Service, resp.Instances)
	nodes := make([]*catalog.CheckServiceNode, 0, len(selected))
	filtered := resp.Meta.ResultsFilteredByACLs
	for _, in := range selected {
		if authz.ServiceRead(in.Service.Service) != acl.Allow || authz.NodeRead(in.Node.Node) != acl.Allow {
			filtered = true
			continue
		}
		c := *in
		if c.Checks == nil {
			c.Checks = []*catalog.HealthCheck{}
		}
		nodes = append(nodes, &c)
	}
	return resp, nodes, filtered, nil
}

// failoverDatacenters lists the datacenters a query fails over to from dc
// (federation.FailoverOrder over the datacenters the servers know).
func (h *Handler) failoverDatacenters(ctx context.Context, dc string, f catalog.QueryFailoverOptions) []string {
	if h.agent.fed == nil {
		return nil
	}
	var known []string
	if f.NearestN > 0 {
		known, _ = h.agent.fed.Datacenters(ctx)
	}
	return federation.FailoverOrder(dc, known, f)
}

// queryNear picks the node an execution sorts near, as Consul does: the
// query's own Near unless it is empty or "_agent", else the request's
// ?near=, else this agent for "_agent". "_ip" is the node whose address is
// the caller's (X-Forwarded-For first). It returns "" for no sorting.
func (h *Handler) queryNear(ctx context.Context, r *http.Request, queryNear string) string {
	near := queryNear
	if near == "" || near == "_agent" {
		if v := queryOf(r).Get("near"); v != "" {
			near = v
		}
	}
	switch near {
	case "_agent":
		return h.agent.cfg.NodeName
	case "_ip":
		return h.nodeOfCaller(ctx, r)
	}
	return near
}

// nodeOfCaller returns the node whose address is the request's source
// address, "" when none is.
func (h *Handler) nodeOfCaller(ctx context.Context, r *http.Request) string {
	ip := ""
	if fwd := r.Header.Get("X-Forwarded-For"); fwd != "" {
		ip = strings.TrimSpace(strings.Split(fwd, ",")[0])
	} else if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		ip = host
	}
	if ip == "" {
		return ""
	}
	resp, err := h.agent.backend.Read(ctx, &catalog.ReadRequest{Op: catalog.ReadNodes, Options: catalog.QueryOptions{AllowStale: true}})
	if err != nil {
		return ""
	}
	for _, n := range resp.Nodes {
		if n.Address == ip {
			return n.Node
		}
	}
	return ""
}
