package config

import (
	"strings"
	"testing"
)

func TestDuplicateKeysWarn(t *testing.T) {
	dir := t.TempDir()
	j := writeFile(t, dir, "dup.json", `{
  "data_dir": "/d",
  "node_name": "a",
  "ports": {"http": 18500, "http": 18501},
  "node_name": "b",
  "services": [{"name": "web", "port": 80, "port": 81}]
}`)
	c, warnings := mustLoad(t, "-config-file", j)
	for _, want := range []string{
		`config: duplicate key "ports.http" in ` + j + ` (line 4): only the last value is used`,
		`config: duplicate key "node_name" in ` + j + ` (line 5): only the last value is used`,
		`config: duplicate key "services[0].port" in ` + j + ` (line 6): only the last value is used`,
	} {
		if !contains(warnings, want) {
			t.Errorf("warnings %q lack %q", warnings, want)
		}
	}
	if c.NodeName != "b" || c.Ports.HTTP != 18501 {
		t.Errorf("node_name %q, ports.http %d: want the last values b and 18501", c.NodeName, c.Ports.HTTP)
	}

	h := writeFile(t, dir, "dup.hcl", `data_dir = "/d"
node_name = "a"
node_name = "b"
ports {
  http = 18500
  http = 18501
}
ports { dns = 18600 }
service { name = "x" }
service { name = "y" }
`)
	c, warnings = mustLoad(t, "-config-file", h, "-hcl", `log_level = "info"
log_level = "debug"`)
	for _, want := range []string{
		`config: duplicate key "node_name" in ` + h + ` (line 3): only the last value is used`,
		`config: duplicate key "ports.http" in ` + h + ` (line 6): only the last value is used`,
		`config: duplicate key "log_level" in -hcl flag 1 (line 2): only the last value is used`,
	} {
		if !contains(warnings, want) {
			t.Errorf("warnings %q lack %q", warnings, want)
		}
	}
	// Repeated blocks merge (ports) or append (service): not duplicates.
	if n := countSubstring(warnings, "duplicate key"); n != 3 {
		t.Errorf("%d duplicate-key warnings, want 3: %q", n, warnings)
	}
	if c.Ports.HTTP != 18501 || c.Ports.DNS != 18600 || len(c.Services) != 2 {
		t.Errorf("ports %+v, %d services", c.Ports, len(c.Services))
	}

	// Files without repetitions give no such warning.
	for name, content := range map[string]string{"ok.json": exampleJSON, "ok.hcl": exampleHCL} {
		p := writeFile(t, dir, name, content)
		_, warnings := mustLoad(t, "-config-file", p)
		if containsSubstring(warnings, "duplicate key") {
			t.Errorf("%s: warnings %q", name, warnings)
		}
	}
}

func TestDuplicateKeysNested(t *testing.T) {
	for _, tc := range []struct {
		format, data string
		want         []string
	}{
		{"json", `{"a": {"b": [{"c": 1, "c": 2}]}, "a": 3}`, []string{"a.b[0].c", "a"}},
		{"json", `{"a": 1, "b": {"a": 1}}`, nil},
		{"json", `{"x": [{"k": 1}, {"k": 2}]}`, nil},
		{"hcl", "a { b = 1\n b = 2 }\nc = [{ d = 1, d = 2 }]", []string{"a.b", "c[0].d"}},
		{"hcl", `"a" = 1` + "\na = 2", []string{"a"}},
		{"hcl", `service "web" { port = 1 }` + "\n" + `service "web" { port = 2 }`, nil},
	} {
		var got []string
		for _, d := range duplicateKeys(tc.format, []byte(tc.data)) {
			got = append(got, d.path)
		}
		if strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Errorf("%s %q: duplicates %q, want %q", tc.format, tc.data, got, tc.want)
		}
	}
}

func countSubstring(list []string, s string) int {
	n := 0
	for _, e := range list {
		if strings.Contains(e, s) {
			n++
		}
	}
	return n
}
