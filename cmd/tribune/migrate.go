package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"reflect"
	"sort"
	"strings"

	"github.com/hashicorp/consul/api"
)

// Limits of one migration transaction, below the destination's own
// (64 operations, txn_max_req_len 512 KiB).
const (
	migrateTxnOps   = 64
	migrateTxnBytes = 256 << 10
)

// Built-in ACL objects every cluster has: never copied.
const (
	aclGlobalManagementPolicyID = "00000000-0000-0000-0000-000000000001"
	aclGlobalReadOnlyPolicyID   = "00000000-0000-0000-0000-000000000002"
	aclAnonymousTokenID         = "00000000-0000-0000-0000-000000000002"
)

// migrateConfigKinds are the config entry kinds copied, in an order where
// what an entry refers to is written before it (defaults before routes,
// resolvers before splitters and routers).
var migrateConfigKinds = []string{
	api.ProxyDefaults, api.MeshConfig, api.ServiceDefaults, api.ServiceResolver, api.ServiceSplitter,
	api.ServiceRouter, api.IngressGateway, api.TerminatingGateway, api.ServiceIntentions,
	api.ExportedServices, api.SamenessGroup, api.JWTProvider, api.APIGateway, api.HTTPRoute, api.TCPRoute,
	api.InlineCertificate, api.FileSystemCertificate,
}

// runMigrateConsul implements "migrate consul": it copies a running
// Consul's data into the agent's cluster through both HTTP APIs.
func runMigrateConsul(args []string, stdout, stderr io.Writer) int {
	var hf httpFlags
	fs := newFlagSet("migrate consul", "migrate consul -from http://<consul>:8500 [options]",
		"Copies a Consul cluster's data into this Tribune cluster through both HTTP APIs: KV entries\n"+
			"(with flags), nodes and services registered through the catalog API with their checks,\n"+
			"prepared queries, ACL policies, roles and tokens, config entries and intentions.\n"+
			"Rerunning it copies only what changed. Nodes run by Consul agents are not copied: their\n"+
			"agents register them when they join Tribune. -token is used for both sides unless\n"+
			"-from-token names the source's.", stderr, &hf)
	from := fs.String("from", "", "The `URL` of the Consul agent to copy from (http://host:8500).")
	fromToken := fs.String("from-token", "", "ACL `token` for the source (defaults to -token).")
	dryRun := fs.Bool("dry-run", false, "Print what would be copied, and write nothing.")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "Too many arguments (expected 0, got %d)\n", fs.NArg())
		return 1
	}
	if *from == "" {
		fmt.Fprintln(stderr, "-from is required: the URL of the Consul agent to copy from")
		return 1
	}
	u, err := url.Parse(*from)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		fmt.Fprintf(stderr, "-from %q: want http://host:port or https://host:port\n", *from)
		return 1
	}
	dst, err := hf.client()
	if err != nil {
		fmt.Fprintf(stderr, "Error connecting to the destination agent: %v\n", err)
		return 1
	}
	srcCfg := hf.apiConfig()
	srcCfg.Address, srcCfg.Scheme = u.Host, u.Scheme
	if *fromToken != "" {
		srcCfg.Token, srcCfg.TokenFile = *fromToken, ""
	}
	src, err := api.NewClient(srcCfg)
	if err != nil {
		fmt.Fprintf(stderr, "Error connecting to the source: %v\n", err)
		return 1
	}
	for _, side := range []struct {
		name string
		c    *api.Client
	}{{"source " + *from, src}, {"destination", dst}} {
		if _, err := side.c.Status().Leader(); err != nil {
			fmt.Fprintf(stderr, "Error reaching the %s: %v\n", side.name, err)
			return 1
		}
	}
	m := &migrator{src: src, dst: dst, dryRun: *dryRun, out: stdout}
	if m.dryRun {
		fmt.Fprintln(stdout, "==> Dry run: nothing is written")
	}
	m.kv()
	m.catalog()
	m.preparedQueries()
	m.acls()
	m.configEntries()

	fmt.Fprintln(stdout, "==> Summary")
	for _, c := range m.counts {
		fmt.Fprintf(stdout, "    %s\n", c.line(m.dryRun))
	}
	for _, n := range m.notes {
		fmt.Fprintf(stdout, "    note: %s\n", n)
	}
	if len(m.failures) == 0 {
		return 0
	}
	fmt.Fprintf(stdout, "==> Could not copy (%d):\n", len(m.failures))
	for _, f := range m.failures {
		fmt.Fprintf(stdout, "    %s\n", f)
	}
	return 2
}

// migrateCount is what one kind of object came to.
type migrateCount struct {
	kind                                  string
	found, created, updated, same, failed int
}

func (c *migrateCount) line(dry bool) string {
	verb := ""
	if dry {
		verb = "to be "
	}
	return fmt.Sprintf("%-16s %d found: %d %screated, %d %supdated, %d unchanged, %d failed",
		c.kind+":", c.found, c.created, verb, c.updated, verb, c.same, c.failed)
}

// migrator copies one kind of object after another; a failure is recorded
// with its reason and the copy goes on.
type migrator struct {
	src, dst *api.Client
	dryRun   bool
	out      io.Writer
	counts   []*migrateCount
	notes    []string
	failures []string
}

func (m *migrator) count(kind string) *migrateCount {
	c := &migrateCount{kind: kind}
	m.counts = append(m.counts, c)
	return c
}

func (m *migrator) fail(c *migrateCount, what string, err error) {
	if c != nil {
		c.failed++
	}
	m.failures = append(m.failures, fmt.Sprintf("%s: %v", what, err))
}

// apply runs write unless this is a dry run, and counts the outcome.
func (m *migrator) apply(c *migrateCount, what string, exists bool, write func() error) {
	if !m.dryRun {
		if err := write(); err != nil {
			m.fail(c, what, err)
			return
		}
	}
	if exists {
		c.updated++
	} else {
		c.created++
	}
}

func (m *migrator) progress(format string, args ...any) {
	fmt.Fprintf(m.out, "==> "+format+"\n", args...)
}

// ---- KV ----

func (m *migrator) kv() {
	c := m.count("kv")
	srcPairs, _, err := m.src.KV().List("", nil)
	if err != nil {
		m.fail(nil, "kv: list the source", err)
		return
	}
	dstPairs, _, err := m.dst.KV().List("", nil)
	if err != nil {
		m.fail(nil, "kv: list the destination", err)
		return
	}
	have := make(map[string]*api.KVPair, len(dstPairs))
	for _, p := range dstPairs {
		have[p.Key] = p
	}
	c.found = len(srcPairs)
	m.progress("KV: %d entries in the source", len(srcPairs))
	locked := 0
	var batch api.KVTxnOps
	var batchExists []bool
	size := 0
	flush := func() {
		if len(batch) == 0 {
			return
		}
		ops, exists := batch, batchExists
		batch, batchExists, size = nil, nil, 0
		if m.dryRun {
			for _, e := range exists {
				m.countKV(c, e)
			}
			return
		}
		ok, _, _, err := m.dst.KV().Txn(ops, nil)
		if err == nil && ok {
			for _, e := range exists {
				m.countKV(c, e)
			}
			m.progress("KV: %d/%d copied", c.created+c.updated+c.same, c.found)
			return
		}
		// The batch failed as a whole: write its entries one by one to
		// find and report the ones the destination refuses.
		for i, op := range ops {
			_, err := m.dst.KV().Put(&api.KVPair{Key: op.Key, Value: op.Value, Flags: op.Flags}, nil)
			if err != nil {
				m.fail(c, "kv "+op.Key, err)
				continue
			}
			m.countKV(c, exists[i])
		}
	}
	for _, p := range srcPairs {
		if p.Session != "" {
			locked++
		}
		if d := have[p.Key]; d != nil && d.Flags == p.Flags && bytes.Equal(d.Value, p.Value) {
			c.same++
			continue
		}
		op := &api.KVTxnOp{Verb: api.KVSet, Key: p.Key, Value: p.Value, Flags: p.Flags}
		if len(batch) == migrateTxnOps || (size > 0 && size+len(p.Key)+len(p.Value) > migrateTxnBytes) {
			flush()
		}
		batch = append(batch, op)
		batchExists = append(batchExists, have[p.Key] != nil)
		size += len(p.Key) + len(p.Value)
	}
	flush()
	if locked > 0 {
		m.notes = append(m.notes, fmt.Sprintf("%d KV entries were held by sessions (locks): their values are copied, not the locks, as sessions belong to the source's nodes", locked))
	}
}

func (m *migrator) countKV(c *migrateCount, exists bool) {
	if exists {
		c.updated++
	} else {
		c.created++
	}
}

// ---- catalog ----

// catalog copies the nodes that no Consul agent runs (registered through
// the catalog API: external services) with their services and checks.
func (m *migrator) catalog() {
	c := m.count("catalog nodes")
	members, err := m.src.Agent().Members(false)
	if err != nil {
		m.fail(nil, "catalog: list the source's members", err)
		return
	}
	agents := map[string]bool{}
	for _, mem := range members {
		agents[mem.Name] = true
	}
	nodes, _, err := m.src.Catalog().Nodes(nil)
	if err != nil {
		m.fail(nil, "catalog: list the source's nodes", err)
		return
	}
	skipped := 0
	for _, n := range nodes {
		if agents[n.Node] {
			skipped++
			continue
		}
		c.found++
		regs, err := nodeRegistrations(m.src, n.Node)
		if err != nil {
			m.fail(c, "node "+n.Node, err)
			continue
		}
		current, err := nodeRegistrations(m.dst, n.Node)
		if err != nil {
			m.fail(c, "node "+n.Node, err)
			continue
		}
		if reflect.DeepEqual(regs, current) {
			c.same++
			continue
		}
		m.apply(c, "node "+n.Node, current != nil, func() error {
			for _, r := range regs {
				if _, err := m.dst.Catalog().Register(r, nil); err != nil {
					return err
				}
			}
			return nil
		})
	}
	m.progress("Catalog: %d nodes registered through the catalog API, %d run by agents (not copied)", c.found, skipped)
	if skipped > 0 {
		m.notes = append(m.notes, fmt.Sprintf("%d nodes are run by Consul agents: their agents register them when they join Tribune", skipped))
	}
}

// nodeRegistrations reads a node's registrations from c: the node with
// its own checks, then each service with its checks, in a fixed order, so
// that the source's and the destination's compare equal when they hold the
// same (nil when c has no such node).
func nodeRegistrations(c *api.Client, name string) ([]*api.CatalogRegistration, error) {
	ns, _, err := c.Catalog().NodeServiceList(name, nil)
	if err != nil {
		return nil, fmt.Errorf("read services: %w", err)
	}
	if ns == nil || ns.Node == nil {
		return nil, nil
	}
	checks, _, err := c.Health().Node(name, nil)
	if err != nil {
		return nil, fmt.Errorf("read checks: %w", err)
	}
	n := ns.Node
	base := func() *api.CatalogRegistration {
		return &api.CatalogRegistration{ID: n.ID, Node: n.Node, Address: n.Address,
			TaggedAddresses: emptyNil(n.TaggedAddresses), NodeMeta: emptyNil(n.Meta), Datacenter: ""}
	}
	checksOf := func(serviceID string) api.HealthChecks {
		var out api.HealthChecks
		for _, hc := range checks {
			if hc.ServiceID == serviceID {
				out = append(out, &api.HealthCheck{Node: hc.Node, CheckID: hc.CheckID, Name: hc.Name,
					Status: hc.Status, Notes: hc.Notes, Output: hc.Output, ServiceID: hc.ServiceID,
					Type: hc.Type, Definition: hc.Definition})
			}
		}
		sort.Slice(out, func(i, j int) bool { return out[i].CheckID < out[j].CheckID })
		return out
	}
	nodeReg := base()
	nodeReg.Checks = checksOf("")
	regs := []*api.CatalogRegistration{nodeReg}
	svcs := append([]*api.AgentService(nil), ns.Services...)
	sort.Slice(svcs, func(i, j int) bool { return svcs[i].ID < svcs[j].ID })
	for _, s := range svcs {
		r := base()
		r.SkipNodeUpdate = true
		r.Service = &api.AgentService{Kind: s.Kind, ID: s.ID, Service: s.Service, Tags: s.Tags,
			Meta: emptyNil(s.Meta), Port: s.Port, Address: s.Address, TaggedAddresses: s.TaggedAddresses,
			Weights: s.Weights, EnableTagOverride: s.EnableTagOverride, Proxy: s.Proxy, Connect: s.Connect,
			SocketPath: s.SocketPath, Locality: s.Locality}
		r.Checks = checksOf(s.ID)
		regs = append(regs, r)
	}
	return regs, nil
}

func emptyNil(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return m
}

// ---- prepared queries ----

func (m *migrator) preparedQueries() {
	c := m.count("prepared queries")
	srcQs, _, err := m.src.PreparedQuery().List(nil)
	if err != nil {
		m.fail(nil, "prepared queries: list the source", err)
		return
	}
	dstQs, _, err := m.dst.PreparedQuery().List(nil)
	if err != nil {
		m.fail(nil, "prepared queries: list the destination", err)
		return
	}
	c.found = len(srcQs)
	for _, q := range srcQs {
		what := "prepared query " + q.ID
		if q.Name != "" {
			what = fmt.Sprintf("prepared query %q", q.Name)
		}
		// A named query is the destination's query of that name; an
		// unnamed one is matched by its whole definition.
		var match *api.PreparedQueryDefinition
		for _, d := range dstQs {
			if (q.Name != "" && d.Name == q.Name) || (q.Name == "" && d.Name == "" && sameQuery(q, d)) {
				match = d
				break
			}
		}
		if match != nil && sameQuery(q, match) {
			c.same++
			continue
		}
		def := *q
		def.ID = ""
		m.apply(c, what, match != nil, func() error {
			if match != nil {
				def.ID = match.ID
				_, err := m.dst.PreparedQuery().Update(&def, nil)
				return err
			}
			_, _, err := m.dst.PreparedQuery().Create(&def, nil)
			return err
		})
	}
	m.progress("Prepared queries: %d", c.found)
}

func sameQuery(a, b *api.PreparedQueryDefinition) bool {
	x, y := *a, *b
	x.ID, y.ID = "", ""
	return jsonEqual(x, y)
}

// jsonEqual compares two values as their JSON forms, so that a nil and an
// empty list or map are the same.
func jsonEqual(a, b any) bool {
	norm := func(v any) any {
		raw, err := json.Marshal(v)
		if err != nil {
			return nil
		}
		var out any
		_ = json.Unmarshal(raw, &out)
		return dropEmpty(out)
	}
	return reflect.DeepEqual(norm(a), norm(b))
}

// dropEmpty removes empty values, and the raft indexes and hashes that
// differ between clusters, from decoded JSON.
func dropEmpty(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			e = dropEmpty(e)
			switch k {
			case "CreateIndex", "ModifyIndex", "Hash", "CreateTime":
				delete(t, k)
				continue
			}
			if isEmptyJSON(e) {
				delete(t, k)
			} else {
				t[k] = e
			}
		}
		return t
	case []any:
		for i := range t {
			t[i] = dropEmpty(t[i])
		}
		return t
	}
	return v
}

func isEmptyJSON(v any) bool {
	switch t := v.(type) {
	case nil:
		return true
	case string:
		return t == ""
	case bool:
		return !t
	case float64:
		return t == 0
	case map[string]any:
		return len(t) == 0
	case []any:
		return len(t) == 0
	}
	return false
}

// ---- ACLs ----

// isNotFound reports whether a read failed only because there is no such
// object: a 404, or the 403 "ACL not found" some ACL reads answer with.
func isNotFound(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "404") || strings.Contains(msg, "ACL not found")
}

func (m *migrator) acls() {
	policies, _, err := m.src.ACL().PolicyList(nil)
	if err != nil {
		if strings.Contains(err.Error(), "ACL support disabled") {
			m.notes = append(m.notes, "ACLs are off in the source: no policies, roles or tokens to copy")
			return
		}
		m.fail(nil, "ACL policies: list the source", err)
		return
	}
	if _, _, err := m.dst.ACL().PolicyList(nil); err != nil {
		m.fail(nil, "ACLs: the destination refuses them (are ACLs on, and is the token allowed acl:write?)", err)
		return
	}
	m.aclPolicies(policies)
	m.aclRoles()
	m.aclTokens()
}

func (m *migrator) aclPolicies(list []*api.ACLPolicyListEntry) {
	c := m.count("ACL policies")
	for _, e := range list {
		if e.ID == aclGlobalManagementPolicyID || e.ID == aclGlobalReadOnlyPolicyID {
			continue // every cluster has its own
		}
		c.found++
		p, _, err := m.src.ACL().PolicyRead(e.ID, nil)
		if err != nil {
			m.fail(c, fmt.Sprintf("ACL policy %q", e.Name), err)
			continue
		}
		cur, _, err := m.dst.ACL().PolicyReadByName(p.Name, nil)
		if err != nil && !isNotFound(err) {
			m.fail(c, fmt.Sprintf("ACL policy %q", p.Name), err)
			continue
		}
		if cur != nil && cur.Rules == p.Rules && cur.Description == p.Description && jsonEqual(cur.Datacenters, p.Datacenters) {
			c.same++
			continue
		}
		def := &api.ACLPolicy{Name: p.Name, Description: p.Description, Rules: p.Rules, Datacenters: p.Datacenters}
		m.apply(c, fmt.Sprintf("ACL policy %q", p.Name), cur != nil, func() error {
			if cur != nil {
				def.ID = cur.ID
				_, _, err := m.dst.ACL().PolicyUpdate(def, nil)
				return err
			}
			_, _, err := m.dst.ACL().PolicyCreate(def, nil)
			return err
		})
	}
	m.progress("ACL policies: %d", c.found)
}

// policyLinks turns links to the source's policies into links by name,
// which the destination resolves to its own IDs.
func policyLinks(in []*api.ACLRolePolicyLink) []*api.ACLRolePolicyLink {
	var out []*api.ACLRolePolicyLink
	for _, l := range in {
		out = append(out, &api.ACLRolePolicyLink{Name: l.Name})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func linkNames[T any](in []T, name func(T) string) []string {
	out := make([]string, 0, len(in))
	for _, l := range in {
		out = append(out, name(l))
	}
	sort.Strings(out)
	return out
}

func (m *migrator) aclRoles() {
	c := m.count("ACL roles")
	roles, _, err := m.src.ACL().RoleList(nil)
	if err != nil {
		m.fail(nil, "ACL roles: list the source", err)
		return
	}
	for _, r := range roles {
		c.found++
		what := fmt.Sprintf("ACL role %q", r.Name)
		cur, _, err := m.dst.ACL().RoleReadByName(r.Name, nil)
		if err != nil && !isNotFound(err) {
			m.fail(c, what, err)
			continue
		}
		def := &api.ACLRole{Name: r.Name, Description: r.Description, Policies: policyLinks(r.Policies),
			ServiceIdentities: r.ServiceIdentities, NodeIdentities: r.NodeIdentities}
		if cur != nil && cur.Description == r.Description &&
			jsonEqual(linkNames(cur.Policies, func(l *api.ACLRolePolicyLink) string { return l.Name }),
				linkNames(r.Policies, func(l *api.ACLRolePolicyLink) string { return l.Name })) &&
			jsonEqual(cur.ServiceIdentities, r.ServiceIdentities) && jsonEqual(cur.NodeIdentities, r.NodeIdentities) {
			c.same++
			continue
		}
		m.apply(c, what, cur != nil, func() error {
			if cur != nil {
				def.ID = cur.ID
				_, _, err := m.dst.ACL().RoleUpdate(def, nil)
				return err
			}
			_, _, err := m.dst.ACL().RoleCreate(def, nil)
			return err
		})
	}
	m.progress("ACL roles: %d", c.found)
}

func (m *migrator) aclTokens() {
	c := m.count("ACL tokens")
	list, _, err := m.src.ACL().TokenList(nil)
	if err != nil {
		m.fail(nil, "ACL tokens: list the source", err)
		return
	}
	for _, e := range list {
		if e.AccessorID == aclAnonymousTokenID {
			continue // every cluster has its own
		}
		c.found++
		what := "ACL token " + e.AccessorID
		if e.Description != "" {
			what += fmt.Sprintf(" (%s)", e.Description)
		}
		if e.AuthMethod != "" {
			m.fail(c, what, fmt.Errorf("made by auth method %q at login: log in again against Tribune", e.AuthMethod))
			continue
		}
		t, _, err := m.src.ACL().TokenRead(e.AccessorID, nil)
		if err != nil {
			m.fail(c, what, err)
			continue
		}
		if t.SecretID == "" || t.SecretID == "<hidden>" {
			m.fail(c, what, fmt.Errorf("its secret is hidden from this token: use one with acl:write on the source"))
			continue
		}
		cur, _, err := m.dst.ACL().TokenRead(t.AccessorID, nil)
		if err != nil && !isNotFound(err) {
			m.fail(c, what, err)
			continue
		}
		def := &api.ACLToken{AccessorID: t.AccessorID, SecretID: t.SecretID, Description: t.Description,
			ServiceIdentities: t.ServiceIdentities, NodeIdentities: t.NodeIdentities, Local: t.Local,
			ExpirationTime: t.ExpirationTime}
		for _, l := range t.Policies {
			def.Policies = append(def.Policies, &api.ACLTokenPolicyLink{Name: l.Name})
		}
		for _, l := range t.Roles {
			def.Roles = append(def.Roles, &api.ACLTokenRoleLink{Name: l.Name})
		}
		if cur != nil && cur.Description == t.Description &&
			jsonEqual(linkNames(cur.Policies, func(l *api.ACLTokenPolicyLink) string { return l.Name }),
				linkNames(t.Policies, func(l *api.ACLTokenPolicyLink) string { return l.Name })) &&
			jsonEqual(linkNames(cur.Roles, func(l *api.ACLTokenRoleLink) string { return l.Name }),
				linkNames(t.Roles, func(l *api.ACLTokenRoleLink) string { return l.Name })) &&
			jsonEqual(cur.ServiceIdentities, t.ServiceIdentities) && jsonEqual(cur.NodeIdentities, t.NodeIdentities) {
			c.same++
			continue
		}
		m.apply(c, what, cur != nil, func() error {
			if cur != nil {
				_, _, err := m.dst.ACL().TokenUpdate(def, nil)
				return err
			}
			_, _, err := m.dst.ACL().TokenCreate(def, nil)
			return err
		})
	}
	m.progress("ACL tokens: %d", c.found)
}

// ---- config entries and intentions ----

func (m *migrator) configEntries() {
	c := m.count("config entries")
	intentions := 0
	for _, kind := range migrateConfigKinds {
		entries, _, err := m.src.ConfigEntries().List(kind, nil)
		if err != nil {
			// A source too old (or too new) for a kind is not a failure
			// to copy: there is nothing of that kind to copy.
			if strings.Contains(err.Error(), "400") || strings.Contains(err.Error(), "404") {
				continue
			}
			m.fail(nil, "config entries "+kind+": list the source", err)
			continue
		}
		for _, e := range entries {
			c.found++
			what := fmt.Sprintf("config entry %s/%s", e.GetKind(), e.GetName())
			if si, ok := e.(*api.ServiceIntentionsConfigEntry); ok {
				intentions += len(si.Sources)
			}
			cur, _, err := m.dst.ConfigEntries().Get(e.GetKind(), e.GetName(), nil)
			if err != nil && !isNotFound(err) {
				m.fail(c, what, err)
				continue
			}
			if cur != nil && jsonEqual(cur, e) {
				c.same++
				continue
			}
			m.apply(c, what, cur != nil, func() error {
				_, _, err := m.dst.ConfigEntries().Set(e, nil)
				return err
			})
		}
	}
	m.progress("Config entries: %d (with %d intentions)", c.found, intentions)
}
