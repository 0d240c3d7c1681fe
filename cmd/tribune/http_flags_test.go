package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/tribune-mesh/tribune/agent/agenttest"
)

func TestHTTPAddrFromEnvironment(t *testing.T) {
	a := agenttest.Start(t, nil).HTTPAddr()
	t.Setenv("TRIBUNE_HTTP_ADDR", "")
	t.Setenv("CONSUL_HTTP_ADDR", "http://"+a)
	mustExec(t, kvPutCommand(strings.NewReader("")), "env/k", "consul-env")
	if got := mustExec(t, runKVGet, "env/k").stdout; got != "consul-env\n" {
		t.Errorf("get via CONSUL_HTTP_ADDR = %q", got)
	}

	// TRIBUNE_HTTP_ADDR is the fallback when CONSUL_HTTP_ADDR is unset.
	t.Setenv("CONSUL_HTTP_ADDR", "")
	t.Setenv("TRIBUNE_HTTP_ADDR", a)
	if got := mustExec(t, runKVGet, "env/k").stdout; got != "consul-env\n" {
		t.Errorf("get via TRIBUNE_HTTP_ADDR = %q", got)
	}

	// CONSUL_HTTP_ADDR wins over TRIBUNE_HTTP_ADDR, and -http-addr over both.
	bad := unreachableAddr(t)
	t.Setenv("CONSUL_HTTP_ADDR", bad)
	if r := runCmd(runKVGet, "env/k"); r.code != 1 {
		t.Errorf("CONSUL_HTTP_ADDR should win: %v", r)
	}
	if got := mustExec(t, runKVGet, "-http-addr=http://"+a, "env/k").stdout; got != "consul-env\n" {
		t.Errorf("-http-addr over env = %q", got)
	}
}

func TestDefaultHTTPAddr(t *testing.T) {
	t.Setenv("CONSUL_HTTP_ADDR", "")
	t.Setenv("TRIBUNE_HTTP_ADDR", "")
	var hf httpFlags
	if got := hf.apiConfig().Address; got != defaultHTTPAddr {
		t.Errorf("default address = %q, want %q", got, defaultHTTPAddr)
	}
	t.Setenv("CONSUL_HTTP_TOKEN", "")
	t.Setenv("CONSUL_HTTP_TOKEN_FILE", "")
	t.Setenv("TRIBUNE_HTTP_TOKEN", "tribune-token")
	if got := hf.apiConfig().Token; got != "tribune-token" {
		t.Errorf("token from TRIBUNE_HTTP_TOKEN = %q", got)
	}
	t.Setenv("CONSUL_HTTP_TOKEN", "consul-token")
	if got := hf.apiConfig().Token; got != "consul-token" {
		t.Errorf("token with CONSUL_HTTP_TOKEN set = %q", got)
	}
	hf.token = "flag-token"
	if got := hf.apiConfig().Token; got != "flag-token" {
		t.Errorf("token with -token = %q", got)
	}
}

func TestUnreachableAgent(t *testing.T) {
	addr := "-http-addr=" + unreachableAddr(t)
	put := kvPutCommand(strings.NewReader(""))
	for _, tc := range []struct {
		name   string
		r      result
		prefix string
	}{
		{"kv get", runCmd(runKVGet, addr, "k"), "Error querying agent: "},
		{"kv put", runCmd(put, addr, "k", "v"), "Error! Failed writing data: "},
		{"kv delete", runCmd(runKVDelete, addr, "k"), "Error deleting key k: "},
		{"catalog services", runCmd(runCatalogServices, addr), "Error listing services: "},
		{"catalog nodes", runCmd(runCatalogNodes, addr), "Error listing nodes: "},
		{"catalog datacenters", runCmd(runCatalogDatacenters, addr), "Error listing datacenters: "},
		{"members", runCmd(runMembers, addr), "Error retrieving members: "},
		{"leave", runCmd(runLeave, addr), "Error leaving: "},
	} {
		if tc.r.code != 1 || tc.r.stdout != "" || !strings.HasPrefix(tc.r.stderr, tc.prefix) {
			t.Errorf("%s: want exit 1 and %q..., got %v", tc.name, tc.prefix, tc.r)
		}
		assertContains(t, tc.name+" stderr", tc.r.stderr, "connection refused")
	}
}

func TestVersionJSON(t *testing.T) {
	r := mustExec(t, run, "version", "-format=json")
	var v map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatalf("version -format=json is not JSON: %v\n%s", err, r.stdout)
	}
	if v["Version"] != version {
		t.Errorf("Version = %v, want %q", v["Version"], version)
	}
}

func TestUnknownCommand(t *testing.T) {
	r := runCmd(run, "kv", "frobnicate")
	if r.code != 1 || !strings.Contains(r.stderr, "Subcommands:") {
		t.Errorf("kv frobnicate: %v", r)
	}
	r = runCmd(run, "nope")
	if r.code != 1 || !strings.Contains(r.stderr, `unknown command "nope"`) {
		t.Errorf("nope: %v", r)
	}
}

func TestWriteTable(t *testing.T) {
	var b bytes.Buffer
	writeTable(&b, [][]string{{"Node", "ID", "Meta"}, {"a-long-node", "1234", ""}, {"b", "", "k=v"}})
	want := "Node         ID    Meta\n" +
		"a-long-node  1234\n" +
		"b" + strings.Repeat(" ", 18) + "k=v\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}
