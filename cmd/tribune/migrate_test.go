package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/agent/agenttest"
)

// aclAgent starts a dev agent with ACLs on and returns its HTTP address
// and a client holding its management token.
func aclAgent(t *testing.T, secret string) (string, *api.Client) {
	t.Helper()
	a, c := agenttest.StartACL(t, secret)
	return a.HTTPAddr(), c
}

// ok fails the test on a call's error, whatever else it returned.
func ok(t *testing.T) func(any, error) {
	return func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
}

// ok2 is ok for calls with two results before the error.
func ok2(t *testing.T) func(any, any, error) {
	return func(_, _ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
}

// A Tribune agent plays the Consul source (the API is the same): a dry run
// writes nothing, a run copies KV with flags, an external node with its
// service and checks, a prepared query, ACL policies, roles and tokens
// (which then work against the destination), and config entries with
// intentions; a second run finds everything unchanged, and a third copies
// only what changed.
func TestMigrateConsul(t *testing.T) {
	const srcSecret, dstSecret = "11111111-0000-4000-8000-000000000001", "22222222-0000-4000-8000-000000000002"
	srcAddr, src := aclAgent(t, srcSecret)
	dstAddr, dst := aclAgent(t, dstSecret)

	// The source's data.
	ok(t)(src.KV().Put(&api.KVPair{Key: "app/config", Value: []byte("colour=blue"), Flags: 42}, nil))
	ok(t)(src.KV().Put(&api.KVPair{Key: "bin", Value: []byte{0, 1, 2, 255}}, nil))
	self, err := src.Agent().NodeName()
	if err != nil {
		t.Fatal(err)
	}
	sess, _, err := src.Session().Create(&api.SessionEntry{Node: self, Behavior: "release"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if acquired, _, err := src.KV().Acquire(&api.KVPair{Key: "locks/leader", Value: []byte("me"), Session: sess}, nil); err != nil || !acquired {
		t.Fatalf("lock not acquired: %v", err)
	}
	ok(t)(src.Catalog().Register(&api.CatalogRegistration{Node: "ext-db", Address: "10.1.1.1", NodeMeta: map[string]string{"env": "prod"},
		Service: &api.AgentService{ID: "db-1", Service: "db", Tags: []string{"primary"}, Port: 5432},
		Checks: api.HealthChecks{
			{CheckID: "db-alive", Name: "db alive", ServiceID: "db-1", Status: api.HealthCritical, Output: "refused"},
			{CheckID: "host", Name: "host up", Status: api.HealthPassing},
		}}, nil))
	ok2(t)(src.PreparedQuery().Create(&api.PreparedQueryDefinition{Name: "db-query", Service: api.ServiceQuery{Service: "db", OnlyPassing: true}}, nil))
	policy, _, err := src.ACL().PolicyCreate(&api.ACLPolicy{Name: "kv-read", Rules: `key_prefix "" { policy = "read" }`}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ok2(t)(src.ACL().RoleCreate(&api.ACLRole{Name: "readers", Policies: []*api.ACLRolePolicyLink{{ID: policy.ID}}}, nil))
	appToken, _, err := src.ACL().TokenCreate(&api.ACLToken{Description: "app token",
		Policies: []*api.ACLTokenPolicyLink{{ID: policy.ID}}, Roles: []*api.ACLTokenRoleLink{{Name: "readers"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ok2(t)(src.ConfigEntries().Set(&api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "db", Protocol: "tcp"}, nil))
	ok2(t)(src.ConfigEntries().Set(&api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: "db",
		Sources: []*api.SourceIntention{{Name: "web", Action: api.IntentionActionAllow}}}, nil))

	migrate := func(extra ...string) result {
		args := append([]string{"-http-addr=" + dstAddr, "-token=" + dstSecret, "-from=http://" + srcAddr, "-from-token=" + srcSecret}, extra...)
		var o, e bytes.Buffer
		code := runMigrateConsul(args, &o, &e)
		return result{code: code, stdout: o.String(), stderr: e.String()}
	}

	getKV := func(c *api.Client, key string) *api.KVPair {
		t.Helper()
		kv, _, err := c.KV().Get(key, nil)
		if err != nil {
			t.Fatalf("get %s: %v", key, err)
		}
		return kv
	}

	// Dry run: a summary, nothing written.
	r := migrate("-dry-run")
	if r.code != 0 {
		t.Fatalf("dry run: %v", r)
	}
	assertContains(t, "dry run", r.stdout, "kv:              3 found: 3 to be created")
	if kv := getKV(dst, "app/config"); kv != nil {
		t.Fatalf("the dry run wrote %+v", kv)
	}

	r = migrate()
	if r.code != 0 {
		t.Fatalf("migrate: %v", r)
	}
	t.Logf("first run:\n%s", r.stdout)
	for _, want := range []string{
		"kv:              3 found: 3 created",
		"catalog nodes:   1 found: 1 created",
		"prepared queries: 1 found: 1 created",
		"ACL policies:    1 found: 1 created",
		"ACL roles:       1 found: 1 created",
		"config entries:  2 found: 2 created",
		"(with 1 intentions)",
		"held by sessions",
		"run by Consul agents",
	} {
		assertContains(t, "migrate", r.stdout, want)
	}

	kv := getKV(dst, "app/config")
	if kv == nil || string(kv.Value) != "colour=blue" || kv.Flags != 42 {
		t.Errorf("app/config = %+v", kv)
	}
	if kv := getKV(dst, "bin"); kv == nil || !bytes.Equal(kv.Value, []byte{0, 1, 2, 255}) {
		t.Errorf("bin = %+v", kv)
	}
	if kv := getKV(dst, "locks/leader"); kv == nil || string(kv.Value) != "me" || kv.Session != "" {
		t.Errorf("locks/leader = %+v", kv)
	}
	svc, _, err := dst.Health().Service("db", "", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(svc) != 1 || svc[0].Node.Node != "ext-db" || svc[0].Node.Meta["env"] != "prod" || svc[0].Service.Port != 5432 || len(svc[0].Checks) != 2 {
		t.Fatalf("db in the destination = %+v", svc)
	}
	for _, c := range svc[0].Checks {
		if c.CheckID == "db-alive" && (c.Status != api.HealthCritical || c.Output != "refused") {
			t.Errorf("db-alive = %+v", c)
		}
	}
	if qs, _, err := dst.PreparedQuery().List(nil); err != nil || len(qs) != 1 || qs[0].Name != "db-query" || !qs[0].Service.OnlyPassing {
		t.Errorf("queries = %+v", qs)
	}
	// The app's token works against Tribune with its secret, and reads KV
	// through the copied policy.
	app, err := api.NewClient(&api.Config{Address: dstAddr, Token: appToken.SecretID})
	if err != nil {
		t.Fatal(err)
	}
	me, _, err := app.ACL().TokenReadSelf(nil)
	if err != nil {
		t.Fatal(err)
	}
	if me.AccessorID != appToken.AccessorID || len(me.Policies) != 1 || me.Policies[0].Name != "kv-read" || len(me.Roles) != 1 {
		t.Errorf("the app token in the destination = %+v", me)
	}
	if kv := getKV(app, "app/config"); kv == nil {
		t.Error("the app token cannot read KV in the destination")
	}
	e, _, err := dst.ConfigEntries().Get(api.ServiceIntentions, "db", nil)
	if err != nil {
		t.Fatal(err)
	}
	if si, ok := e.(*api.ServiceIntentionsConfigEntry); !ok || len(si.Sources) != 1 || si.Sources[0].Name != "web" {
		t.Errorf("intentions of db = %+v", e)
	}

	// Rerun: nothing to do.
	r = migrate()
	if r.code != 0 || strings.Contains(r.stdout, "1 created") || strings.Contains(r.stdout, "1 updated") {
		t.Fatalf("second run changed something: %v", r)
	}
	t.Logf("second run:\n%s", r.stdout)
	assertContains(t, "second run", r.stdout, "kv:              3 found: 0 created, 0 updated, 3 unchanged")

	// A change in the source: only that is copied.
	ok(t)(src.KV().Put(&api.KVPair{Key: "app/config", Value: []byte("colour=green"), Flags: 42}, nil))
	r = migrate()
	assertContains(t, "third run", r.stdout, "kv:              3 found: 0 created, 1 updated, 2 unchanged")
	if kv := getKV(dst, "app/config"); kv == nil || string(kv.Value) != "colour=green" {
		t.Errorf("app/config after the change = %+v", kv)
	}
}

// Bad flags and an unreachable source are refused before anything runs.
func TestMigrateConsulFlags(t *testing.T) {
	addr := startAgent(t)
	for _, args := range [][]string{
		{addr},
		{addr, "-from=ftp://x"},
		{addr, "-from=http://" + unreachableAddr(t)},
		{addr, "-from=http://127.0.0.1:1", "extra"},
	} {
		if r := runCmd(runMigrateConsul, args...); r.code != 1 {
			t.Errorf("%v: %v", args, r)
		}
	}
}

// What the destination refuses is reported with its reason and the exit
// code is 2; the rest is copied (a refused entry is found again inside a
// failed transaction batch).
func TestMigrateConsulReport(t *testing.T) {
	srcAgent := agenttest.Start(t, nil)
	cfg := agenttest.Config(t)
	cfg.Limits.KVMaxValueSize = 1024
	dstAgent := agenttest.Start(t, cfg)
	src, err := api.NewClient(&api.Config{Address: srcAgent.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	ok(t)(src.KV().Put(&api.KVPair{Key: "big", Value: bytes.Repeat([]byte("x"), 2048)}, nil))
	ok(t)(src.KV().Put(&api.KVPair{Key: "small", Value: []byte("y")}, nil))
	r := runCmd(runMigrateConsul, "-http-addr="+dstAgent.HTTPAddr(), "-from=http://"+srcAgent.HTTPAddr())
	if r.code != 2 {
		t.Fatalf("want exit 2: %v", r)
	}
	assertContains(t, "report", r.stdout, "kv:              2 found: 1 created, 0 updated, 0 unchanged, 1 failed")
	assertContains(t, "report", r.stdout, "==> Could not copy (1):\n    kv big: ")
	assertContains(t, "report", r.stdout, "ACLs are off in the source")
}
