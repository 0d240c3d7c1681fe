package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigCommands: write (HCL with snake_case and blocks, JSON, stdin
// is the same path), read, list, delete, and the errors.
func TestConfigCommands(t *testing.T) {
	t.Parallel()
	addr := startAgent(t)
	dir := t.TempDir()
	hclFile := filepath.Join(dir, "resolver.hcl")
	if err := os.WriteFile(hclFile, []byte(`
Kind = "service-resolver"
Name = "web"
default_subset = "v1"
connect_timeout = "15s"
Subsets {
  v1 { filter = "Service.Meta.version == v1" }
  v2 = { Filter = "Service.Meta.version == v2", only_passing = true }
}
failover = {
  "*" = { datacenters = ["dc2"] }
}
Meta { team = "web" }
`), 0o600); err != nil {
		t.Fatal(err)
	}
	jsonFile := filepath.Join(dir, "defaults.json")
	if err := os.WriteFile(jsonFile, []byte(`{"Kind":"service-defaults","Name":"web","Protocol":"http"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	r := mustExec(t, configWriteCommand(strings.NewReader("")), addr, hclFile)
	assertContains(t, "write", r.stdout, "Config entry written: service-resolver/web")
	mustExec(t, configWriteCommand(strings.NewReader("")), addr, jsonFile)
	stdinEntry := `Kind = "service-splitter"
Name = "web"
Splits = [{ Weight = 100, service_subset = "v2" }]`
	mustExec(t, configWriteCommand(strings.NewReader(stdinEntry)), addr, "-")

	r = mustExec(t, runConfigRead, addr, "-kind", "service-resolver", "-name", "web")
	for _, want := range []string{`"DefaultSubset": "v1"`, `"ConnectTimeout": "15s"`, `"OnlyPassing": true`, `"Service.Meta.version == v1"`, `"dc2"`, `"team": "web"`} {
		assertContains(t, "read", r.stdout, want)
	}
	r = mustExec(t, runConfigList, addr, "-kind", "service-splitter")
	if strings.TrimSpace(r.stdout) != "web" {
		t.Errorf("list = %q", r.stdout)
	}
	// The splitter needs the resolver's subset: deleting the resolver fails.
	if r := runCmd(runConfigDelete, addr, "-kind", "service-resolver", "-name", "web"); r.code == 0 || !strings.Contains(r.stderr, "subset") {
		t.Errorf("delete resolver under a splitter: %v", r)
	}
	mustExec(t, runConfigDelete, addr, "-kind", "service-splitter", "-name", "web")
	r = mustExec(t, runConfigDelete, addr, "-kind", "service-resolver", "-name", "web")
	assertContains(t, "delete", r.stdout, "Config entry deleted: service-resolver/web")
	if r := runCmd(runConfigRead, addr, "-kind", "service-resolver", "-name", "web"); r.code == 0 {
		t.Errorf("read deleted: %v", r)
	}
	for _, args := range [][]string{
		{addr, "-kind", "service-resolver"},
		{addr},
	} {
		if r := runCmd(runConfigRead, args...); r.code != 1 {
			t.Errorf("read %v: %v", args, r)
		}
	}
	bad := filepath.Join(dir, "bad.hcl")
	if err := os.WriteFile(bad, []byte(`Kind = "service-splitter"
Name = "web"
Splits = [{ Weight = 60 }]`), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := runCmd(configWriteCommand(strings.NewReader("")), addr, bad); r.code != 1 || !strings.Contains(r.stderr, "sum of all split weights") {
		t.Errorf("bad splitter: %v", r)
	}
}

// TestIntentionCommands: create, get, check, match, list, delete.
func TestIntentionCommands(t *testing.T) {
	t.Parallel()
	addr := startAgent(t)
	r := mustExec(t, runIntentionCreate, addr, "-deny", "-meta", "team=a", "web", "db")
	assertContains(t, "create", r.stdout, "Created: web => db (deny)")
	if r := runCmd(runIntentionCreate, addr, "web", "db"); r.code != 1 {
		t.Errorf("create again without -replace: %v", r)
	}
	mustExec(t, runIntentionCreate, addr, "-allow", "*", "db")
	r = mustExec(t, runIntentionGet, addr, "web", "db")
	for _, want := range []string{"Source:", "web", "Action:", "deny", "team=a", "Precedence:"} {
		assertContains(t, "get", r.stdout, want)
	}
	if r := runCmd(runIntentionCheck, addr, "web", "db"); r.code != 2 || strings.TrimSpace(r.stdout) != "Denied" {
		t.Errorf("check web db: %v", r)
	}
	if r := runCmd(runIntentionCheck, addr, "api", "db"); r.code != 0 || strings.TrimSpace(r.stdout) != "Allowed" {
		t.Errorf("check api db: %v", r)
	}
	r = mustExec(t, runIntentionMatch, addr, "db")
	if got := strings.Split(strings.TrimSpace(r.stdout), "\n"); len(got) != 2 || got[0] != "web => db (deny)" || got[1] != "* => db (allow)" {
		t.Errorf("match db = %q", r.stdout)
	}
	r = mustExec(t, runIntentionMatch, addr, "-source", "web")
	assertContains(t, "match -source", r.stdout, "web => db (deny)")
	r = mustExec(t, runIntentionList, addr)
	assertContains(t, "list", r.stdout, "Source")
	assertContains(t, "list", r.stdout, "web")
	r = mustExec(t, runIntentionCreate, addr, "-replace", "web", "db")
	assertContains(t, "replace", r.stdout, "(allow)")
	mustExec(t, runIntentionDelete, addr, "web", "db")
	if r := runCmd(runIntentionGet, addr, "web", "db"); r.code != 1 {
		t.Errorf("get deleted: %v", r)
	}
	if r := runCmd(runIntentionCheck, addr, "web"); r.code != 1 {
		t.Errorf("check with one argument: %v", r)
	}
}
