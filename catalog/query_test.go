package catalog_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tribune-mesh/tribune/catalog"
)

func queryApply(s *catalog.Store, idx uint64, op catalog.PreparedQueryOp, q catalog.PreparedQuery) error {
	return s.PreparedQueryApply(idx, &catalog.PreparedQueryRequest{Op: op, Query: q})
}

func mustQueryApply(t *testing.T, s *catalog.Store, idx uint64, op catalog.PreparedQueryOp, q catalog.PreparedQuery) {
	t.Helper()
	if err := queryApply(s, idx, op, q); err != nil {
		t.Fatalf("%s query %q at %d: %v", op, q.ID, idx, err)
	}
}

func TestPreparedQueryCRUD(t *testing.T) {
	s := newStore(t)
	w := ws()
	if idx, list, err := s.PreparedQueryList(w); err != nil || idx != 0 || len(list) != 0 {
		t.Fatalf("empty list = (%d, %v, %v)", idx, list, err)
	}
	q := catalog.PreparedQuery{ID: "q1", Name: "web-query", Service: catalog.ServiceQuery{Service: "web", Tags: []string{"primary"}},
		DNS: catalog.QueryDNSOptions{TTL: "10s"}}
	mustQueryApply(t, s, 5, catalog.PreparedQueryCreate, q)
	if !fired(w, 0) {
		t.Fatal("create did not wake the list watcher")
	}
	idx, got, err := s.PreparedQueryGet(ws(), "q1")
	if err != nil || got == nil || idx != 5 {
		t.Fatalf("get = (%d, %+v, %v)", idx, got, err)
	}
	if got.CreateIndex != 5 || got.ModifyIndex != 5 || got.Name != "web-query" || got.DNS.TTL != "10s" {
		t.Fatalf("stored query: %+v", got)
	}

	q.Service.Service = "api"
	w = ws()
	_, _, _ = s.PreparedQueryGet(w, "q1")
	mustQueryApply(t, s, 7, catalog.PreparedQueryUpdate, q)
	if !fired(w, 0) {
		t.Fatal("update did not wake the get watcher")
	}
	_, got, _ = s.PreparedQueryGet(ws(), "q1")
	if got.CreateIndex != 5 || got.ModifyIndex != 7 || got.Service.Service != "api" {
		t.Fatalf("after update: %+v", got)
	}

	mustQueryApply(t, s, 9, catalog.PreparedQueryDelete, catalog.PreparedQuery{ID: "q1"})
	idx, got, _ = s.PreparedQueryGet(ws(), "q1")
	if got != nil || idx != 9 {
		t.Fatalf("after delete: (%d, %+v)", idx, got)
	}

	// Writes to what is not there are refused.
	for _, tc := range []struct {
		op   catalog.PreparedQueryOp
		want string
	}{
		{catalog.PreparedQueryUpdate, "Cannot modify non-existent prepared query"},
		{catalog.PreparedQueryDelete, "Cannot delete non-existent prepared query"},
	} {
		err := queryApply(s, 10, tc.op, q)
		if !errors.Is(err, catalog.ErrInvalidRequest) || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%s of a missing query: %v, want %q", tc.op, err, tc.want)
		}
	}
}

func TestPreparedQueryValidation(t *testing.T) {
	s := newStore(t)
	registerNode(t, s, 1, "n1")
	createSession(t, s, 2, catalog.Session{ID: "sess-1", Node: "n1"})
	mustQueryApply(t, s, 3, catalog.PreparedQueryCreate, catalog.PreparedQuery{ID: "q1", Name: "taken", Service: catalog.ServiceQuery{Service: "web"}})
	mustQueryApply(t, s, 4, catalog.PreparedQueryCreate, catalog.PreparedQuery{ID: "q2",
		Template: catalog.QueryTemplate{Type: catalog.TemplateNamePrefixMatch}, Service: catalog.ServiceQuery{Service: "${name.full}"}})

	svc := catalog.ServiceQuery{Service: "web"}
	tmpl := catalog.QueryTemplate{Type: catalog.TemplateNamePrefixMatch}
	for _, tc := range []struct {
		name string
		q    catalog.PreparedQuery
		want string
	}{
		{"no service", catalog.PreparedQuery{ID: "x"}, "Must provide a Service name"},
		{"bad template type", catalog.PreparedQuery{ID: "x", Template: catalog.QueryTemplate{Type: "glob"}, Service: svc}, "Bad Template.Type"},
		{"bad regexp", catalog.PreparedQuery{ID: "x", Template: catalog.QueryTemplate{Type: catalog.TemplateNamePrefixMatch, Regexp: "(["}, Service: svc}, "Bad Regexp"},
		{"bad interpolation", catalog.PreparedQuery{ID: "x", Name: "t", Template: tmpl, Service: catalog.ServiceQuery{Service: "${nope}"}}, "unknown variable"},
		{"unterminated", catalog.PreparedQuery{ID: "x", Name: "t", Template: tmpl, Service: catalog.ServiceQuery{Service: "${name.full"}}, "unterminated"},
		{"negative NearestN", catalog.PreparedQuery{ID: "x", Service: catalog.ServiceQuery{Service: "web", Failover: catalog.QueryFailoverOptions{NearestN: -1}}}, "Bad NearestN"},
		{"bad TTL", catalog.PreparedQuery{ID: "x", Service: svc, DNS: catalog.QueryDNSOptions{TTL: "soon"}}, "Bad DNS TTL"},
		{"negative TTL", catalog.PreparedQuery{ID: "x", Service: svc, DNS: catalog.QueryDNSOptions{TTL: "-1s"}}, "must be >= 0"},
		{"duplicate name", catalog.PreparedQuery{ID: "x", Name: "TAKEN", Service: svc}, "aliases an existing query name"},
		{"template with a taken name", catalog.PreparedQuery{ID: "x", Name: "taken", Template: tmpl, Service: svc}, "aliases an existing query name"},
		{"name is an ID", catalog.PreparedQuery{ID: "x", Name: "q1", Service: svc}, "aliases an existing query ID"},
		{"ID is a name", catalog.PreparedQuery{ID: "taken", Service: svc}, "aliases an existing query name"},
		{"second catch-all", catalog.PreparedQuery{ID: "x", Template: tmpl, Service: svc}, "empty name already exists"},
		{"ID reused", catalog.PreparedQuery{ID: "q1", Service: svc}, "already exists"},
		{"missing session", catalog.PreparedQuery{ID: "x", Session: "ghost", Service: svc}, "invalid session"},
		{"missing ID", catalog.PreparedQuery{Service: svc}, "missing prepared query ID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := queryApply(s, 10, catalog.PreparedQueryCreate, tc.q)
			if !errors.Is(err, catalog.ErrInvalidRequest) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("create: %v, want an invalid request with %q", err, tc.want)
			}
		})
	}
	if _, list, _ := s.PreparedQueryList(ws()); len(list) != 2 {
		t.Fatalf("refused creates left %d queries, want 2", len(list))
	}

	// Unnamed static queries may be many; an existing session binds.
	mustQueryApply(t, s, 11, catalog.PreparedQueryCreate, catalog.PreparedQuery{ID: "q3", Service: svc})
	mustQueryApply(t, s, 12, catalog.PreparedQueryCreate, catalog.PreparedQuery{ID: "q4", Session: "sess-1", Service: svc})
	// Updating a query to its own name is not a duplicate.
	mustQueryApply(t, s, 13, catalog.PreparedQueryUpdate, catalog.PreparedQuery{ID: "q1", Name: "Taken", Service: svc})
	mustQueryApply(t, s, 14, catalog.PreparedQueryUpdate, catalog.PreparedQuery{ID: "q2", Template: tmpl, Service: svc})
}

func TestPreparedQueryResolve(t *testing.T) {
	s := newStore(t)
	tmpl := catalog.QueryTemplate{Type: catalog.TemplateNamePrefixMatch}
	queries := []catalog.PreparedQuery{
		{ID: "id-static", Name: "geo-db", Service: catalog.ServiceQuery{Service: "static"}},
		{ID: "id-geo", Name: "geo", Template: tmpl, Service: catalog.ServiceQuery{Service: "${name.suffix}"}},
		{ID: "id-geo-db-x", Name: "geo-db-x", Template: tmpl, Service: catalog.ServiceQuery{Service: "x"}},
		{ID: "id-all", Name: "", Template: tmpl, Service: catalog.ServiceQuery{Service: "${name.full}"}},
		{ID: "id-unnamed", Service: catalog.ServiceQuery{Service: "unnamed"}},
	}
	for i, q := range queries {
		mustQueryApply(t, s, uint64(10+i), catalog.PreparedQueryCreate, q)
	}
	_, list, err := s.PreparedQueryList(ws())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, want string }{
		{"id-unnamed", "id-unnamed"}, // by ID
		{"id-geo", "id-geo"},         // an ID wins over a template prefix
		{"geo-db", "id-static"},      // exact name
		{"GEO-DB", "id-static"},      // names are case-insensitive
		{"geo", "id-geo"},            // a template's own name
		{"geo-web", "id-geo"},        // longest template prefix
		{"geo-db-x-1", "id-geo-db-x"},
		{"geo-db-y", "id-geo"}, // a static name is not a prefix
		{"web", "id-all"},      // the catch-all
		{"", ""},               // never resolves
	} {
		_, got, err := s.PreparedQueryResolve(ws(), tc.name)
		if err != nil {
			t.Fatalf("resolve %q: %v", tc.name, err)
		}
		gotID := ""
		if got != nil {
			gotID = got.ID
		}
		if gotID != tc.want {
			t.Errorf("store resolve %q = %q, want %q", tc.name, gotID, tc.want)
		}
		// The list resolver (what DNS answers from) must agree.
		gotID = ""
		if got := catalog.ResolvePreparedQuery(list, tc.name); got != nil {
			gotID = got.ID
		}
		if gotID != tc.want {
			t.Errorf("list resolve %q = %q, want %q", tc.name, gotID, tc.want)
		}
	}

	// Without the catch-all, unmatched names resolve to nothing.
	mustQueryApply(t, s, 20, catalog.PreparedQueryDelete, catalog.PreparedQuery{ID: "id-all"})
	if _, got, _ := s.PreparedQueryResolve(ws(), "web"); got != nil {
		t.Fatalf("resolve after removing the catch-all: %+v", got)
	}
	// The read path carries the result.
	_, resp, err := s.Execute(ws(), &catalog.ReadRequest{Op: catalog.ReadPreparedQueryResolve, Name: "geo-x"})
	if err != nil || len(resp.PreparedQueries) != 1 || resp.PreparedQueries[0].ID != "id-geo" {
		t.Fatalf("Execute resolve = %+v, %v", resp, err)
	}
}

func TestPreparedQueryRender(t *testing.T) {
	q := &catalog.PreparedQuery{
		ID: "id", Name: "geo-db",
		Template: catalog.QueryTemplate{Type: catalog.TemplateNamePrefixMatch, Regexp: `^geo-db-(.*?)-([^\-]+?)$`},
		Service: catalog.ServiceQuery{
			Service:        "mysql-${match(1)}",
			Tags:           []string{"${match(2)}", "${name.prefix}", "!${match(7)}", "x${name.suffix}", "lit-$${name.full}"},
			NodeMeta:       map[string]string{"k": "${name.full}"},
			IgnoreCheckIDs: []string{"${ match(0) }"},
			Failover:       catalog.QueryFailoverOptions{Datacenters: []string{"${match(1)}"}},
		},
	}
	r, err := q.Render("geo-db-customer-primary")
	if err != nil {
		t.Fatal(err)
	}
	sq := r.Service
	if sq.Service != "mysql-customer" {
		t.Errorf("Service = %q", sq.Service)
	}
	wantTags := []string{"primary", "geo-db", "!", "x-customer-primary", "lit-${name.full}"}
	if !equalStrings(sq.Tags, wantTags) {
		t.Errorf("Tags = %q, want %q", sq.Tags, wantTags)
	}
	if sq.NodeMeta["k"] != "geo-db-customer-primary" || sq.IgnoreCheckIDs[0] != "geo-db-customer-primary" || sq.Failover.Datacenters[0] != "customer" {
		t.Errorf("rendered %+v", sq)
	}
	// The template itself is untouched.
	if q.Service.Service != "mysql-${match(1)}" || q.Service.Tags[0] != "${match(2)}" || q.Service.NodeMeta["k"] != "${name.full}" {
		t.Errorf("Render changed the template: %+v", q.Service)
	}

	// A name the regexp does not match interpolates empty captures, which
	// RemoveEmptyTags drops.
	q.Template.RemoveEmptyTags = true
	r, err = q.Render("geo-db")
	if err != nil {
		t.Fatal(err)
	}
	if r.Service.Service != "mysql-" || !equalStrings(r.Service.Tags, []string{"geo-db", "!", "x", "lit-${name.full}"}) {
		t.Errorf("unmatched render: %q %q", r.Service.Service, r.Service.Tags)
	}

	if d, ok := (&catalog.PreparedQuery{DNS: catalog.QueryDNSOptions{TTL: "10s"}}).DNSTTL(); !ok || d != 10*time.Second {
		t.Errorf("DNSTTL = %v, %v", d, ok)
	}
	if _, ok := (&catalog.PreparedQuery{}).DNSTTL(); ok {
		t.Error("DNSTTL of a query without one reports one")
	}

	// A static query renders as itself.
	static := &catalog.PreparedQuery{ID: "s", Service: catalog.ServiceQuery{Service: "${name.full}"}}
	if r, err := static.Render("x"); err != nil || r != static {
		t.Fatalf("static render = %v, %v", r, err)
	}
}

func TestSelectInstances(t *testing.T) {
	inst := func(node, id string, tags []string, meta map[string]string, statuses ...string) *catalog.CheckServiceNode {
		csn := &catalog.CheckServiceNode{
			Node:    &catalog.Node{Node: node, Meta: map[string]string{"rack": node}},
			Service: &catalog.Service{ID: id, Service: "web", Tags: tags, Meta: meta},
		}
		for i, st := range statuses {
			csn.Checks = append(csn.Checks, &catalog.HealthCheck{Node: node, CheckID: id + "-" + string(rune('a'+i)), Status: st})
		}
		return csn
	}
	all := []*catalog.CheckServiceNode{
		inst("n1", "ok", []string{"primary", "v1"}, map[string]string{"env": "prod"}, catalog.HealthPassing),
		inst("n2", "warn", []string{"primary", "canary"}, nil, catalog.HealthPassing, catalog.HealthWarning),
		inst("n3", "crit", []string{"primary"}, nil, catalog.HealthCritical),
		inst("n4", "maint", []string{"primary"}, nil, catalog.HealthMaint),
		inst("n5", "nochecks", []string{"Secondary"}, map[string]string{"env": "dev"}),
	}
	ids := func(out []*catalog.CheckServiceNode) []string {
		var r []string
		for _, c := range out {
			r = append(r, c.Service.ID)
		}
		return r
	}
	for _, tc := range []struct {
		name string
		sq   catalog.ServiceQuery
		want []string
	}{
		{"healthy", catalog.ServiceQuery{}, []string{"ok", "warn", "nochecks"}},
		{"only passing", catalog.ServiceQuery{OnlyPassing: true}, []string{"ok", "nochecks"}},
		{"ignored check", catalog.ServiceQuery{IgnoreCheckIDs: []string{"crit-a"}}, []string{"ok", "warn", "crit", "nochecks"}},
		{"tag", catalog.ServiceQuery{Tags: []string{"PRIMARY"}}, []string{"ok", "warn"}},
		{"not tag", catalog.ServiceQuery{Tags: []string{"primary", "!canary"}}, []string{"ok"}},
		{"only not", catalog.ServiceQuery{Tags: []string{"!primary"}}, []string{"nochecks"}},
		{"empty tag", catalog.ServiceQuery{Tags: []string{""}}, nil},
		{"service meta", catalog.ServiceQuery{ServiceMeta: map[string]string{"env": "prod"}}, []string{"ok"}},
		{"node meta", catalog.ServiceQuery{NodeMeta: map[string]string{"rack": "n5"}}, []string{"nochecks"}},
	} {
		got := ids(catalog.SelectInstances(&tc.sq, all))
		if !equalStrings(got, tc.want) {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
	if len(all) != 5 || all[0].Service.ID != "ok" {
		t.Fatal("SelectInstances modified its input")
	}
}

func TestPreparedQueryFSMSnapshot(t *testing.T) {
	src := newStore(t)
	fsm := catalog.NewFSM(src, nil)
	a := populate(t, fsm)
	a.applyOK(catalog.CmdPreparedQuery, &catalog.PreparedQueryRequest{Op: catalog.PreparedQueryCreate, Query: catalog.PreparedQuery{
		ID: "q-static", Name: "web-q", Token: "tok",
		Service: catalog.ServiceQuery{Service: "web", Tags: []string{"a", "!b"}, OnlyPassing: true, Near: "_agent",
			NodeMeta: map[string]string{"rack": "r1"}, ServiceMeta: map[string]string{"v": "1"},
			Failover: catalog.QueryFailoverOptions{NearestN: 2, Datacenters: []string{"dc2"}}, IgnoreCheckIDs: []string{"c"}},
		DNS: catalog.QueryDNSOptions{TTL: "7s"},
	}})
	a.applyOK(catalog.CmdPreparedQuery, &catalog.PreparedQueryRequest{Op: catalog.PreparedQueryCreate, Query: catalog.PreparedQuery{
		ID: "q-tmpl", Name: "geo-",
		Template: catalog.QueryTemplate{Type: catalog.TemplateNamePrefixMatch, Regexp: "^geo-(.*)$", RemoveEmptyTags: true},
		Service:  catalog.ServiceQuery{Service: "${match(1)}"},
	}})
	// An invalid query is refused by the FSM as an error result.
	if res := a.apply(catalog.CmdPreparedQuery, &catalog.PreparedQueryRequest{Op: catalog.PreparedQueryCreate,
		Query: catalog.PreparedQuery{ID: "dup", Name: "WEB-Q", Service: catalog.ServiceQuery{Service: "web"}}}); res == nil {
		t.Fatal("FSM accepted a duplicate name")
	}
	want := dump(t, src)
	if !bytes.Contains(want, []byte(`"T":"prepared_queries"`)) {
		t.Fatalf("snapshot has no prepared queries:\n%s", want)
	}

	dst := newStore(t)
	if err := catalog.NewFSM(dst, nil).Restore(&trackCloser{Reader: bytes.NewReader(snapshotOf(t, fsm).Bytes())}); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if got := dump(t, dst); !bytes.Equal(got, want) {
		t.Fatalf("restored dump differs:\n%s\nwant\n%s", got, want)
	}
	// The restored indexes work: by name, by template prefix.
	if _, q, _ := dst.PreparedQueryResolve(ws(), "Web-Q"); q == nil || q.ID != "q-static" || q.DNS.TTL != "7s" || q.Token != "tok" {
		t.Fatalf("restored static query: %+v", q)
	}
	if _, q, _ := dst.PreparedQueryResolve(ws(), "geo-redis"); q == nil || q.ID != "q-tmpl" {
		t.Fatalf("restored template: %+v", q)
	}
	if err := queryApply(dst, a.idx+1, catalog.PreparedQueryCreate, catalog.PreparedQuery{ID: "x", Name: "web-q",
		Service: catalog.ServiceQuery{Service: "web"}}); err == nil {
		t.Fatal("restored store accepted a duplicate name")
	}
}

func TestPreparedQueryEndsWithItsSession(t *testing.T) {
	s := newStore(t)
	registerNode(t, s, 1, "n1")
	createSession(t, s, 2, catalog.Session{ID: "s1", Node: "n1"})
	mustQueryApply(t, s, 3, catalog.PreparedQueryCreate, catalog.PreparedQuery{ID: "q1", Name: "bound", Session: "s1",
		Service: catalog.ServiceQuery{Service: "web"}})
	mustQueryApply(t, s, 4, catalog.PreparedQueryCreate, catalog.PreparedQuery{ID: "q2", Name: "free",
		Service: catalog.ServiceQuery{Service: "web"}})
	destroySession(t, s, 5, "s1")
	if _, q, _ := s.PreparedQueryGet(ws(), "q1"); q != nil {
		t.Fatal("query bound to a destroyed session survived")
	}
	if _, q, _ := s.PreparedQueryGet(ws(), "q2"); q == nil {
		t.Fatal("unbound query was deleted")
	}
}
