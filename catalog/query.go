package catalog

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-memdb"
)

// tablePreparedQueries holds the prepared queries (/v1/query).
const tablePreparedQueries = "prepared_queries"

// TemplateNamePrefixMatch is the only template type Consul defines: the
// template answers every name its own name is a prefix of.
const TemplateNamePrefixMatch = "name_prefix_match"

// PreparedQuery is a stored service query, executed by ID or name over
// HTTP (/v1/query/<id-or-name>/execute) and DNS (<name>.query.<domain>).
// Its JSON form is Consul's PreparedQuery.
type PreparedQuery struct {
	// ID is a UUID chosen by the agent that created the query.
	ID string
	// Name is unique among queries when set. For a template it is the
	// prefix the template answers; the empty name is the catch-all.
	Name string
	// Session, when set, is the session whose invalidation deletes the
	// query.
	Session string
	// Token is the ACL token the query executes with; empty means the
	// caller's.
	Token    string
	Template QueryTemplate
	Service  ServiceQuery
	DNS      QueryDNSOptions
	RaftIndex
}

// QueryTemplate makes a query a template.
type QueryTemplate struct {
	// Type is TemplateNamePrefixMatch, or empty for a static query.
	Type string
	// Regexp is matched against the full name looked up; its captures
	// are ${match(N)}.
	Regexp string
	// RemoveEmptyTags drops tags that interpolated to "".
	RemoveEmptyTags bool
}

// ServiceQuery selects the instances a prepared query answers with.
type ServiceQuery struct {
	Service string
	// Failover names the datacenters asked, in turn, when this one has
	// no instance the query selects (agent/httpapi's execution).
	Failover QueryFailoverOptions
	// IgnoreCheckIDs are checks whose status does not count.
	IgnoreCheckIDs []string
	// OnlyPassing leaves out instances with a warning check.
	OnlyPassing bool
	// Near sorts by round-trip time from this node ("_agent": the
	// executing agent's; "_ip": the node with the caller's address).
	Near string
	// Tags must all be on an instance; "!tag" must not be.
	Tags []string
	// NodeMeta and ServiceMeta must all be present with these values.
	NodeMeta    map[string]string
	ServiceMeta map[string]string
	// Connect selects mesh-capable instances: the service's sidecar
	// proxies and Connect-native instances, as ?connect=true on an
	// execution does.
	Connect bool
}

// QueryFailoverOptions says which other datacenters to ask when the local
// one has no healthy instance.
type QueryFailoverOptions struct {
	NearestN    int
	Datacenters []string
	Targets     []QueryFailoverTarget `json:",omitempty"`
}

// QueryFailoverTarget is one datacenter or cluster peer to fail over to.
type QueryFailoverTarget struct {
	Peer       string `json:",omitempty"`
	Datacenter string `json:",omitempty"`
}

// QueryDNSOptions are the DNS settings of a query.
type QueryDNSOptions struct {
	// TTL is a Go duration ("10s"); empty means the agent's service TTL.
	TTL string
}

// IsTemplate reports whether q is a template.
func (q *PreparedQuery) IsTemplate() bool { return q.Template.Type != "" }

// PreparedQueryOp names a prepared query write.
type PreparedQueryOp string

// Prepared query writes.
const (
	PreparedQueryCreate PreparedQueryOp = "create"
	PreparedQueryUpdate PreparedQueryOp = "update"
	PreparedQueryDelete PreparedQueryOp = "delete"
)

// PreparedQueryRequest is the body of a CmdPreparedQuery entry. For a
// delete only Query.ID is used.
type PreparedQueryRequest struct {
	Op    PreparedQueryOp
	Query PreparedQuery
}

// Validate checks what a user can get wrong in a query definition. Its
// errors wrap ErrInvalidRequest and read like Consul's.
func (q *PreparedQuery) Validate() error {
	switch q.Template.Type {
	case "", TemplateNamePrefixMatch:
	default:
		return fmt.Errorf("%w: Bad Template.Type '%s'", ErrInvalidRequest, q.Template.Type)
	}
	if q.Template.Regexp != "" {
		if _, err := regexp.Compile(q.Template.Regexp); err != nil {
			return fmt.Errorf("%w: Bad Regexp: %v", ErrInvalidRequest, err)
		}
	}
	sq := &q.Service
	if sq.Service == "" {
		return fmt.Errorf("%w: Must provide a Service name to query", ErrInvalidRequest)
	}
	if sq.Failover.NearestN < 0 {
		return fmt.Errorf("%w: Bad NearestN '%d', must be >= 0", ErrInvalidRequest, sq.Failover.NearestN)
	}
	if len(sq.Failover.Targets) > 0 && (sq.Failover.NearestN != 0 || len(sq.Failover.Datacenters) != 0) {
		return fmt.Errorf("%w: Targets cannot be populated with NearestN or Datacenters", ErrInvalidRequest)
	}
	if q.DNS.TTL != "" {
		d, err := time.ParseDuration(q.DNS.TTL)
		if err != nil {
			return fmt.Errorf("%w: Bad DNS TTL '%s': %v", ErrInvalidRequest, q.DNS.TTL, err)
		}
		if d < 0 {
			return fmt.Errorf("%w: DNS TTL '%s', must be >= 0", ErrInvalidRequest, q.DNS.TTL)
		}
	}
	if q.IsTemplate() {
		// Interpolation errors surface now, not at each execution.
		if _, err := q.Render(q.Name); err != nil {
			return err
		}
	}
	return nil
}

// DNSTTL returns the query's DNS TTL and whether it has one.
func (q *PreparedQuery) DNSTTL() (time.Duration, bool) {
	if q.DNS.TTL == "" {
		return 0, false
	}
	d, err := time.ParseDuration(q.DNS.TTL)
	if err != nil || d < 0 {
		return 0, false
	}
	return d, true
}

// ---- writes ----

// PreparedQueryApply applies a prepared query write at idx.
func (s *Store) PreparedQueryApply(idx uint64, req *PreparedQueryRequest) error {
	txn := s.mem().Txn(true)
	defer txn.Abort()
	var err error
	switch req.Op {
	case PreparedQueryCreate, PreparedQueryUpdate:
		err = preparedQuerySetTxn(txn, idx, req.Op, &req.Query)
	case PreparedQueryDelete:
		err = preparedQueryDeleteTxn(txn, idx, req.Query.ID)
	default:
		err = fmt.Errorf("%w: unknown prepared query operation %q", ErrInvalidRequest, req.Op)
	}
	if err != nil {
		return err
	}
	txn.Commit()
	return nil
}

func preparedQuerySetTxn(txn *memdb.Txn, idx uint64, op PreparedQueryOp, in *PreparedQuery) error {
	if in.ID == "" {
		return fmt.Errorf("%w: missing prepared query ID", ErrInvalidRequest)
	}
	if err := in.Validate(); err != nil {
		return err
	}
	existing, err := txn.First(tablePreparedQueries, "id", in.ID)
	if err != nil {
		return fmt.Errorf("prepared query lookup: %w", err)
	}
	q := *in
	switch {
	case op == PreparedQueryCreate && existing != nil:
		return fmt.Errorf("%w: prepared query ID '%s' already exists", ErrInvalidRequest, in.ID)
	case op == PreparedQueryUpdate && existing == nil:
		return fmt.Errorf("%w: Cannot modify non-existent prepared query: '%s'", ErrInvalidRequest, in.ID)
	case existing != nil:
		q.CreateIndex = existing.(*PreparedQuery).CreateIndex
	default:
		q.CreateIndex = idx
		// Lookups try IDs before names: a new ID must not hide a name.
		if other, err := txn.First(tablePreparedQueries, "name", q.ID); err != nil {
			return fmt.Errorf("prepared query lookup: %w", err)
		} else if other != nil {
			return fmt.Errorf("%w: ID '%s' aliases an existing query name", ErrInvalidRequest, q.ID)
		}
	}
	q.ModifyIndex = idx
	if q.Name != "" {
		other, err := txn.First(tablePreparedQueries, "name", q.Name)
		if err != nil {
			return fmt.Errorf("prepared query lookup: %w", err)
		}
		if other != nil && other.(*PreparedQuery).ID != q.ID {
			return fmt.Errorf("%w: Name '%s' aliases an existing query name", ErrInvalidRequest, q.Name)
		}
		other, err = txn.First(tablePreparedQueries, "id", q.Name)
		if err != nil {
			return fmt.Errorf("prepared query lookup: %w", err)
		}
		if other != nil && other.(*PreparedQuery).ID != q.ID {
			return fmt.Errorf("%w: Name '%s' aliases an existing query ID", ErrInvalidRequest, q.Name)
		}
	} else if q.IsTemplate() {
		other, err := txn.First(tablePreparedQueries, "template", "")
		if err != nil {
			return fmt.Errorf("prepared query lookup: %w", err)
		}
		if other != nil && other.(*PreparedQuery).ID != q.ID {
			return fmt.Errorf("%w: a query template with an empty name already exists", ErrInvalidRequest)
		}
	}
	if q.Session != "" {
		sess, err := txn.First(tableSessions, "id", q.Session)
		if err != nil {
			return fmt.Errorf("session lookup: %w", err)
		}
		if sess == nil {
			return fmt.Errorf("%w: invalid session %q", ErrInvalidRequest, q.Session)
		}
	}
	if err := txn.Insert(tablePreparedQueries, &q); err != nil {
		return fmt.Errorf("insert prepared query: %w", err)
	}
	return setIndex(txn, tablePreparedQueries, idx)
}

func preparedQueryDeleteTxn(txn *memdb.Txn, idx uint64, id string) error {
	raw, err := txn.First(tablePreparedQueries, "id", id)
	if err != nil {
		return fmt.Errorf("prepared query lookup: %w", err)
	}
	if raw == nil {
		return fmt.Errorf("%w: Cannot delete non-existent prepared query: '%s'", ErrInvalidRequest, id)
	}
	if err := txn.Delete(tablePreparedQueries, raw); err != nil {
		return fmt.Errorf("delete prepared query: %w", err)
	}
	return setIndex(txn, tablePreparedQueries, idx)
}

// ---- reads ----

// PreparedQueryGet returns the query with an ID, nil when there is none.
func (s *Store) PreparedQueryGet(ws memdb.WatchSet, id string) (uint64, *PreparedQuery, error) {
	txn := s.mem().Txn(false)
	idx := watchIndex(txn, ws, tablePreparedQueries)
	raw, err := txn.First(tablePreparedQueries, "id", id)
	if err != nil {
		return 0, nil, fmt.Errorf("prepared query lookup: %w", err)
	}
	if raw == nil {
		return idx, nil, nil
	}
	return idx, raw.(*PreparedQuery), nil
}

// PreparedQueryList returns every query, ordered by ID.
func (s *Store) PreparedQueryList(ws memdb.WatchSet) (uint64, []*PreparedQuery, error) {
	txn := s.mem().Txn(false)
	idx := maxIndex(txn, tablePreparedQueries)
	it, err := txn.Get(tablePreparedQueries, "id")
	if err != nil {
		return 0, nil, fmt.Errorf("prepared queries: %w", err)
	}
	ws.Add(it.WatchCh())
	out := []*PreparedQuery{}
	for r := it.Next(); r != nil; r = it.Next() {
		out = append(out, r.(*PreparedQuery))
	}
	return idx, out, nil
}

// PreparedQueryResolve finds the query an execution of idOrName runs: the
// query with that ID, else the one with that name (case-insensitive), else
// the template with the longest name that prefixes it. The query is
// returned as stored, not rendered; nil when none matches.
func (s *Store) PreparedQueryResolve(ws memdb.WatchSet, idOrName string) (uint64, *PreparedQuery, error) {
	txn := s.mem().Txn(false)
	idx := watchIndex(txn, ws, tablePreparedQueries)
	if idOrName == "" {
		return idx, nil, nil
	}
	for _, index := range []string{"id", "name"} {
		raw, err := txn.First(tablePreparedQueries, index, idOrName)
		if err != nil {
			return 0, nil, fmt.Errorf("prepared query lookup: %w", err)
		}
		if raw != nil {
			return idx, raw.(*PreparedQuery), nil
		}
	}
	raw, err := txn.LongestPrefix(tablePreparedQueries, "template_prefix", idOrName)
	if err != nil {
		return 0, nil, fmt.Errorf("prepared query template lookup: %w", err)
	}
	if raw == nil {
		return idx, nil, nil
	}
	return idx, raw.(*PreparedQuery), nil
}

// ResolvePreparedQuery is PreparedQueryResolve over a list of queries (as
// a cached list view holds them).
func ResolvePreparedQuery(queries []*PreparedQuery, idOrName string) *PreparedQuery {
	if idOrName == "" {
		return nil
	}
	for _, q := range queries {
		if q.ID == idOrName {
			return q
		}
	}
	var best *PreparedQuery
	for _, q := range queries {
		if q.Name != "" && strings.EqualFold(q.Name, idOrName) {
			return q
		}
		if q.IsTemplate() && hasPrefixFold(idOrName, q.Name) && (best == nil || len(q.Name) > len(best.Name)) {
			best = q
		}
	}
	return best
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// templateIndex indexes templates by lower-cased name without a
// terminator, so that LongestPrefix finds the template whose name is the
// longest prefix of a looked-up name. Static queries are not indexed.
type templateIndex struct{}

func (templateIndex) FromObject(raw any) (bool, []byte, error) {
	q, ok := raw.(*PreparedQuery)
	if !ok {
		return false, nil, fmt.Errorf("template index: unexpected %T", raw)
	}
	if !q.IsTemplate() {
		return false, nil, nil
	}
	return true, []byte(strings.ToLower(q.Name)), nil
}

func (templateIndex) FromArgs(args ...any) ([]byte, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("template index: want one argument, got %d", len(args))
	}
	s, ok := args[0].(string)
	if !ok {
		return nil, fmt.Errorf("template index: argument must be a string, got %T", args[0])
	}
	return []byte(strings.ToLower(s)), nil
}

func (t templateIndex) PrefixFromArgs(args ...any) ([]byte, error) { return t.FromArgs(args...) }

// ---- templates ----

// Render returns the query an execution under name runs. For a template
// that is a copy with ${name.full}, ${name.prefix}, ${name.suffix},
// ${match(N)} and ${agent.segment} interpolated in every string of
// Service; a static query is returned as it is. q is not modified.
func (q *PreparedQuery) Render(name string) (*PreparedQuery, error) {
	if !q.IsTemplate() {
		return q, nil
	}
	v := templateVars{full: name, prefix: q.Name, suffix: name}
	if hasPrefixFold(name, q.Name) {
		v.suffix = name[len(q.Name):]
	}
	if q.Template.Regexp != "" {
		re, err := regexp.Compile(q.Template.Regexp)
		if err != nil {
			return nil, fmt.Errorf("%w: Bad Regexp: %v", ErrInvalidRequest, err)
		}
		v.matches = re.FindStringSubmatch(name)
	}
	out := *q
	sq := &out.Service
	var err error
	str := func(s string) string {
		if err != nil {
			return s
		}
		var r string
		r, err = v.interpolate(s)
		return r
	}
	strs := func(in []string) []string {
		if in == nil {
			return nil
		}
		res := make([]string, 0, len(in))
		for _, s := range in {
			res = append(res, str(s))
		}
		return res
	}
	meta := func(in map[string]string) map[string]string {
		if in == nil {
			return nil
		}
		res := make(map[string]string, len(in))
		for k, val := range in {
			res[str(k)] = str(val)
		}
		return res
	}
	sq.Service = str(sq.Service)
	sq.Near = str(sq.Near)
	sq.Tags = strs(sq.Tags)
	sq.IgnoreCheckIDs = strs(sq.IgnoreCheckIDs)
	sq.NodeMeta = meta(sq.NodeMeta)
	sq.ServiceMeta = meta(sq.ServiceMeta)
	sq.Failover.Datacenters = strs(sq.Failover.Datacenters)
	if sq.Failover.Targets != nil {
		targets := make([]QueryFailoverTarget, len(sq.Failover.Targets))
		for i, t := range sq.Failover.Targets {
			targets[i] = QueryFailoverTarget{Peer: str(t.Peer), Datacenter: str(t.Datacenter)}
		}
		sq.Failover.Targets = targets
	}
	if err != nil {
		return nil, err
	}
	if q.Template.RemoveEmptyTags && sq.Tags != nil {
		tags := sq.Tags[:0]
		for _, t := range sq.Tags {
			if t != "" {
				tags = append(tags, t)
			}
		}
		sq.Tags = tags
	}
	return &out, nil
}

// templateVars are the values a template interpolates.
type templateVars struct {
	full, prefix, suffix string
	// matches are the regexp's match and captures; nil when it did not
	// match or there is none.
	matches []string
}

// interpolate replaces every ${expr} of s; "$${" is a literal "${".
func (v *templateVars) interpolate(s string) (string, error) {
	if !strings.Contains(s, "${") {
		return s, nil
	}
	var b strings.Builder
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			return b.String(), nil
		}
		if i > 0 && s[i-1] == '$' {
			b.WriteString(s[:i-1])
			b.WriteString("${")
			s = s[i+2:]
			continue
		}
		b.WriteString(s[:i])
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			return "", fmt.Errorf("%w: Failed to parse Service: unterminated ${ in %q", ErrInvalidRequest, s)
		}
		val, err := v.eval(strings.TrimSpace(s[i+2 : i+end]))
		if err != nil {
			return "", err
		}
		b.WriteString(val)
		s = s[i+end+1:]
	}
}

func (v *templateVars) eval(expr string) (string, error) {
	switch expr {
	case "name.full":
		return v.full, nil
	case "name.prefix":
		return v.prefix, nil
	case "name.suffix":
		return v.suffix, nil
	case "agent.segment":
		// Network segments are an Enterprise feature.
		return "", nil
	}
	if arg, ok := strings.CutPrefix(expr, "match("); ok {
		if arg, ok = strings.CutSuffix(arg, ")"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(arg))
			if err != nil {
				return "", fmt.Errorf("%w: Failed to parse Service: match() needs an integer, got %q", ErrInvalidRequest, arg)
			}
			if n < 0 || n >= len(v.matches) {
				return "", nil
			}
			return v.matches[n], nil
		}
	}
	return "", fmt.Errorf("%w: Failed to parse Service: unknown variable ${%s}", ErrInvalidRequest, expr)
}

// ---- execution ----

// SelectInstances returns the instances of sq.Service that sq selects, in
// their input order: no critical check (nor a warning one with
// OnlyPassing) besides IgnoreCheckIDs, every tag of Tags and none of the
// "!tag" ones (case-insensitive), and the NodeMeta and ServiceMeta pairs.
// The input and its elements are not modified.
func SelectInstances(sq *ServiceQuery, in []*CheckServiceNode) []*CheckServiceNode {
	ignore := make(map[string]bool, len(sq.IgnoreCheckIDs))
	for _, id := range sq.IgnoreCheckIDs {
		ignore[id] = true
	}
	var must, not []string
	for _, t := range sq.Tags {
		if rest, ok := strings.CutPrefix(t, "!"); ok {
			not = append(not, rest)
		} else {
			must = append(must, t)
		}
	}
	out := make([]*CheckServiceNode, 0, len(in))
	for _, csn := range in {
		if csn == nil || csn.Node == nil || csn.Service == nil {
			continue
		}
		if !healthyFor(csn.Checks, sq.OnlyPassing, ignore) {
			continue
		}
		if !hasTags(csn.Service.Tags, must) || hasAnyTag(csn.Service.Tags, not) {
			continue
		}
		if !metaMatches(csn.Node.Meta, sq.NodeMeta) || !metaMatches(csn.Service.Meta, sq.ServiceMeta) {
			continue
		}
		out = append(out, csn)
	}
	return out
}

func healthyFor(checks []*HealthCheck, onlyPassing bool, ignore map[string]bool) bool {
	for _, c := range checks {
		if ignore[c.CheckID] {
			continue
		}
		switch c.Status {
		case HealthPassing:
		case HealthWarning:
			if onlyPassing {
				return false
			}
		default:
			return false
		}
	}
	return true
}

func hasAnyTag(have, unwanted []string) bool {
	for _, u := range unwanted {
		for _, h := range have {
			if strings.EqualFold(h, u) {
				return true
			}
		}
	}
	return false
}

func metaMatches(have, want map[string]string) bool {
	for k, v := range want {
		if hv, ok := have[k]; !ok || hv != v {
			return false
		}
	}
	return true
}
