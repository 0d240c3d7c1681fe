package discoverychain

import (
	"fmt"
	"testing"

	"github.com/tribune-mesh/tribune/catalog"
)

// BenchmarkCompile compiles the router -> splitter -> resolver chain of
// the golden router-splitter case.
func BenchmarkCompile(b *testing.B) {
	e := benchEntries(b, 1)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Compile(e, "svc0", "dc1"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCompileAll1000 compiles every chain of 1,000 services with a
// router, splitter and resolver each: the check a config entry write pays.
func BenchmarkCompileAll1000(b *testing.B) {
	e := benchEntries(b, 1000)
	services := e.ChainServices()
	b.ReportAllocs()
	for b.Loop() {
		for _, svc := range services {
			if _, err := Compile(e, svc, "dc1"); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func benchEntries(b *testing.B, n int) *Entries {
	var list []*catalog.ConfigEntry
	add := func(kind, name, body string) {
		list = append(list, &catalog.ConfigEntry{Kind: kind, Name: name, Body: []byte(body)})
	}
	add(catalog.KindProxyDefaults, "global", `{"Config":{"protocol":"http"}}`)
	for i := range n {
		svc := fmt.Sprintf("svc%d", i)
		add(catalog.KindServiceRouter, svc, `{"Routes":[{"Match":{"HTTP":{"PathPrefix":"/admin"}},"Destination":{"ServiceSubset":"canary"}}]}`)
		add(catalog.KindServiceSplitter, svc, `{"Splits":[{"Weight":90,"ServiceSubset":"stable"},{"Weight":10,"ServiceSubset":"canary"}]}`)
		add(catalog.KindServiceResolver, svc, `{"Subsets":{"stable":{"Filter":"Service.Meta.t == s"},"canary":{"Filter":"Service.Meta.t == c"}},"Failover":{"*":{"Datacenters":["dc2"]}}}`)
	}
	e, err := FromConfigEntries(list)
	if err != nil {
		b.Fatal(err)
	}
	return e
}
