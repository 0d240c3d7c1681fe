package config

import (
	"strings"
	"testing"
)

func TestListenerConflicts(t *testing.T) {
	for _, tc := range []struct {
		name string
		file string
		want []string // substrings of the error; none means valid
	}{
		{name: "all ports the same",
			file: `{"server": true, "ports": {"dns": 8500, "http": 8500, "grpc": 8500, "serf_lan": 8500, "serf_wan": 8500, "server": 8500}}`,
			want: []string{"ports.dns: port 8500 is also used by ports.http, ports.grpc, ports.serf_lan, ports.server, ports.serf_wan on an overlapping address (bind_addr 0.0.0.0, client_addr 127.0.0.1)"}},
		{name: "http and dns on one client address",
			file: `{"ports": {"dns": 9000, "http": 9000}}`,
			want: []string{"ports.dns: port 9000 is also used by ports.http", "client_addr 127.0.0.1"}},
		{name: "http and gossip: 0.0.0.0 covers 127.0.0.1",
			file: `{"ports": {"http": 8301}}`,
			want: []string{"ports.http: port 8301 is also used by ports.serf_lan", "bind_addr 0.0.0.0", "client_addr 127.0.0.1"}},
		{name: "two groups",
			file: `{"server": true, "ports": {"dns": 8500, "serf_wan": 8300}}`,
			want: []string{"ports.dns: port 8500 is also used by ports.http", "ports.server: port 8300 is also used by ports.serf_wan"}},
		{name: "explicit addresses that overlap",
			file: `{"addresses": {"http": "10.0.0.1", "dns": "0.0.0.0"}, "ports": {"dns": 9000, "http": 9000}}`,
			want: []string{"ports.dns: port 9000 is also used by ports.http", "addresses.dns 0.0.0.0", "addresses.http 10.0.0.1"}},
		{name: "same port on distinct addresses",
			file: `{"bind_addr": "10.0.0.1", "ports": {"http": 8301}}`},
		{name: "distinct explicit addresses",
			file: `{"addresses": {"http": "10.0.0.1", "dns": "10.0.0.2"}, "ports": {"dns": 9000, "http": 9000}}`},
		{name: "a client binds no server port",
			file: `{"ports": {"server": 8500}}`},
		{name: "disabled interfaces",
			file: `{"ports": {"dns": -1, "http": -1, "grpc": -1}}`},
		{name: "unix socket",
			file: `{"addresses": {"http": "unix:///tmp/x.sock"}, "ports": {"http": 8600}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, t.TempDir(), "x.json", tc.file)
			_, _, err := load("-data-dir", "/d", "-config-file", p)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Load succeeded, want an error containing %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestHostsOverlap(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"127.0.0.1", "127.0.0.1", true},
		{"127.0.0.1", "10.0.0.1", false},
		{"0.0.0.0", "10.0.0.1", true},
		{"10.0.0.1", "0.0.0.0", true},
		{"0.0.0.0", "::1", false},
		{"::", "127.0.0.1", true},
		{"::", "::1", true},
		{"::1", "127.0.0.1", false},
		{"::ffff:127.0.0.1", "127.0.0.1", true},
	} {
		if got := hostsOverlap(tc.a, tc.b); got != tc.want {
			t.Errorf("hostsOverlap(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}
