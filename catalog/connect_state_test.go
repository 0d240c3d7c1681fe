package catalog_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tribune-mesh/tribune/catalog"
)

// populateConnect applies every Connect command: a cluster ID, a CA
// configuration with two roots, and config entries.
func populateConnect(a *applier) {
	a.applyOK(catalog.CmdCA, &catalog.CARequest{Op: catalog.CAOpSetClusterID, ClusterID: "11111111-2222-3333-4444-555555555555"})
	a.applyOK(catalog.CmdCA, &catalog.CARequest{Op: catalog.CAOpSetRoots,
		Config: &catalog.CAConfiguration{Provider: "consul", PrivateKeyType: "ec", PrivateKeyBits: 256, LeafCertTTL: 72 * time.Hour},
		Roots: []*catalog.CARoot{
			{ID: "aa:bb", Name: "old", RootCert: "OLD", PrivateKey: "OLD-KEY", NotBefore: time.Unix(100, 0).UTC()},
			{ID: "cc:dd", Name: "new", RootCert: "NEW", PrivateKey: "NEW-KEY", Active: true, IntermediateCerts: []string{"CROSS"}},
		}})
	a.applyOK(catalog.CmdConfigEntry, &catalog.ConfigEntryRequest{Op: catalog.ConfigEntryUpsert,
		Entry: catalog.ConfigEntry{Kind: "service-defaults", Name: "web", Body: json.RawMessage(`{"Protocol":"http"}`)}})
	a.applyOK(catalog.CmdConfigEntry, &catalog.ConfigEntryRequest{Op: catalog.ConfigEntryUpsert,
		Entry: catalog.ConfigEntry{Kind: "proxy-defaults", Name: "global", Body: json.RawMessage(`{"Config":{"x":1}}`)}})
}

func TestConnectState(t *testing.T) {
	s := newStore(t)
	a := &applier{t: t, fsm: catalog.NewFSM(s, nil)}
	populateConnect(a)

	// A second cluster ID is ignored.
	a.applyOK(catalog.CmdCA, &catalog.CARequest{Op: catalog.CAOpSetClusterID, ClusterID: "other"})
	idx, roots, cfg, err := s.CARoots(ws())
	if err != nil {
		t.Fatal(err)
	}
	if cfg == nil || cfg.ClusterID != "11111111-2222-3333-4444-555555555555" || cfg.LeafCertTTL != 72*time.Hour || cfg.CreateIndex != 1 {
		t.Fatalf("config = %+v", cfg)
	}
	if idx != 2 || len(roots) != 2 || roots[0].ID != "aa:bb" || roots[1].IntermediateCerts[0] != "CROSS" || roots[1].CreateIndex != 2 {
		t.Fatalf("roots at %d = %+v", idx, roots)
	}
	for _, r := range roots {
		if r.PrivateKey != "" {
			t.Fatalf("CARoots returned a private key: %+v", r)
		}
	}
	_, keyed, _, _ := s.CARootsWithKeys(ws())
	if keyed[1].PrivateKey != "NEW-KEY" {
		t.Fatalf("CARootsWithKeys lost the key: %+v", keyed[1])
	}
	// The read path never carries keys.
	_, resp, err := s.Execute(ws(), &catalog.ReadRequest{Op: catalog.ReadCARoots})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(resp); bytes.Contains(b, []byte("KEY")) {
		t.Fatalf("read response carries a key: %s", b)
	}

	// A roots write computed from stale roots fails and changes nothing.
	res := a.apply(catalog.CmdCA, &catalog.CARequest{Op: catalog.CAOpSetRoots, RootsIndex: 1,
		Roots: []*catalog.CARoot{{ID: "ee", Active: true}}})
	if err, ok := res.(error); !ok || !errors.Is(err, catalog.ErrCASConflict) {
		t.Fatalf("stale roots write = %v", res)
	}
	a.applyOK(catalog.CmdCA, &catalog.CARequest{Op: catalog.CAOpSetRoots, RootsIndex: 2,
		Roots: []*catalog.CARoot{{ID: "ee", Active: true}}})
	if idx, roots, cfg, _ := s.CARoots(ws()); idx != a.idx || len(roots) != 1 || cfg.PrivateKeyBits != 256 {
		t.Fatalf("after rotation: %d %+v %+v", idx, roots, cfg)
	}

	// Config entries: CAS, list by kind, delete of a missing entry.
	ce := func(op catalog.ConfigEntryOp, kind, name string, index uint64) catalog.KVResult {
		t.Helper()
		return a.apply(catalog.CmdConfigEntry, &catalog.ConfigEntryRequest{Op: op,
			Entry: catalog.ConfigEntry{Kind: kind, Name: name, Body: json.RawMessage(`{}`), RaftIndex: catalog.RaftIndex{ModifyIndex: index}}}).(catalog.KVResult)
	}
	if r := ce(catalog.ConfigEntryUpsertCAS, "service-defaults", "web", 1); r.OK || r.Err != nil {
		t.Fatalf("stale CAS = %+v", r)
	}
	if r := ce(catalog.ConfigEntryUpsertCAS, "service-defaults", "api", 0); !r.OK {
		t.Fatalf("create CAS = %+v", r)
	}
	_, list, _ := s.ConfigEntries(ws(), "service-defaults")
	if len(list) != 2 || list[0].Name != "api" || list[1].Name != "web" {
		t.Fatalf("list = %+v", list)
	}
	if r := ce(catalog.ConfigEntryDelete, "service-intentions", "nope", 0); !r.OK {
		t.Fatalf("delete missing = %+v", r)
	}
	if r := ce(catalog.ConfigEntryDeleteCAS, "service-defaults", "web", 3); !r.OK {
		t.Fatalf("delete CAS = %+v", r)
	}
	if _, e, _ := s.ConfigEntry(ws(), "service-defaults", "web"); e != nil {
		t.Fatalf("deleted entry = %+v", e)
	}
	_, all, _ := s.ConfigEntries(ws(), "")
	if len(all) != 2 || all[0].Kind != "proxy-defaults" {
		t.Fatalf("all = %+v", all)
	}
}

func TestValidateConnectCommands(t *testing.T) {
	for name, tc := range map[string]struct {
		t    catalog.CommandType
		body any
		want string
	}{
		"unknown CA op":      {catalog.CmdCA, &catalog.CARequest{Op: "x"}, "unknown CA operation"},
		"empty cluster ID":   {catalog.CmdCA, &catalog.CARequest{Op: catalog.CAOpSetClusterID}, "cluster ID"},
		"no roots":           {catalog.CmdCA, &catalog.CARequest{Op: catalog.CAOpSetRoots}, "0 roots"},
		"null root":          {catalog.CmdCA, &catalog.CARequest{Op: catalog.CAOpSetRoots, Roots: []*catalog.CARoot{nil}}, "null"},
		"entry without name": {catalog.CmdConfigEntry, &catalog.ConfigEntryRequest{Op: catalog.ConfigEntryUpsert, Entry: catalog.ConfigEntry{Kind: "mesh"}}, "without kind or name"},
		"unknown entry op":   {catalog.CmdConfigEntry, &catalog.ConfigEntryRequest{Op: "x", Entry: catalog.ConfigEntry{Kind: "mesh", Name: "mesh"}}, "unknown config entry operation"},
	} {
		t.Run(name, func(t *testing.T) {
			buf, err := catalog.Encode(tc.t, tc.body)
			if err != nil {
				t.Fatal(err)
			}
			_, err = catalog.ValidateCommand(buf)
			if !errors.Is(err, catalog.ErrBadCommand) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ValidateCommand = %v, want %q", err, tc.want)
			}
		})
	}
}
