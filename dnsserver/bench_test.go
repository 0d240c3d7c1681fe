package dnsserver

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"

	"github.com/tribune-mesh/tribune/catalog"
)

// viewSource holds every service's instances in memory, as the agent's
// views do, so that the benchmark measures DNS rather than the store.
type viewSource struct {
	*storeSource
	services map[string][]*catalog.CheckServiceNode
}

func (v *viewSource) ServiceHealth(_ context.Context, dc, service string) ([]*catalog.CheckServiceNode, error) {
	if dc != v.dc {
		return nil, ErrUnknownDatacenter
	}
	return v.services[strings.ToLower(service)], nil
}

var (
	benchOnce sync.Once
	benchSrc  *viewSource
)

// benchSource is the catalog of the benchmarks, built once: 1,000
// services of 3 instances.
func benchSource(b *testing.B) *viewSource {
	benchOnce.Do(func() { benchSrc = benchCatalog(b, 1000, 3) })
	return benchSrc
}

// benchCatalog registers services × instances, each instance on its own
// node with a passing service check, and snapshots them into a viewSource.
func benchCatalog(b *testing.B, services, instances int) *viewSource {
	b.Helper()
	s := newStoreSource()
	for i := 0; i < services*instances; i++ {
		s.node(b, fmt.Sprintf("node-%05d", i), fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), nil)
	}
	v := &viewSource{storeSource: s, services: map[string][]*catalog.CheckServiceNode{}}
	for svc := 0; svc < services; svc++ {
		name := fmt.Sprintf("svc-%04d", svc)
		for j := 0; j < instances; j++ {
			node := fmt.Sprintf("node-%05d", svc*instances+j)
			s.service(b, node, &catalog.Service{ID: name, Service: name, Port: 8000 + j}, catalog.HealthPassing)
		}
		_, insts, err := s.st.CheckServiceNodes(nil, name, nil)
		if err != nil || len(insts) != instances {
			b.Fatalf("%s: %d instances, %v", name, len(insts), err)
		}
		v.services[name] = insts
	}
	return v
}

// BenchmarkDNSServiceA measures A queries for random services among 1,000
// services of 3 instances, sent over UDP to a server on loopback by
// 8 clients per CPU, one socket and one query in flight each.
func BenchmarkDNSServiceA(b *testing.B) {
	src := benchSource(b)
	h := newTestHandler(b, src, nil)
	addr := serve(b, h)
	names := make([]string, 1000)
	for i := range names {
		names[i] = fmt.Sprintf("svc-%04d.service.consul.", i)
	}
	b.ReportAllocs()
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		co, err := dns.Dial("udp", addr)
		if err != nil {
			b.Error(err)
			return
		}
		defer co.Close()
		m := new(dns.Msg)
		for pb.Next() {
			m.SetQuestion(names[rand.IntN(len(names))], dns.TypeA)
			if err := co.WriteMsg(m); err != nil {
				b.Error(err)
				return
			}
			r, err := co.ReadMsg()
			if err != nil {
				b.Error(err)
				return
			}
			if len(r.Answer) != 3 {
				b.Errorf("%d answers", len(r.Answer))
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "queries/s")
}

// BenchmarkDNSServiceAAnswer is the same query without sockets: the cost
// of deciding and packing one answer.
func BenchmarkDNSServiceAAnswer(b *testing.B) {
	src := benchSource(b)
	h := newTestHandler(b, src, nil)
	reqs := make([]*dns.Msg, 1000)
	for i := range reqs {
		reqs[i] = new(dns.Msg)
		reqs[i].SetQuestion(fmt.Sprintf("svc-%04d.service.consul.", i), dns.TypeA)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 0, 512)
		for pb.Next() {
			r := h.Answer(reqs[rand.IntN(len(reqs))], "udp")
			if _, err := r.PackBuffer(buf); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "queries/s")
}

// BenchmarkDNSServiceAPacket is the same query answered from the response
// cache, as a Server's reading goroutine does: the cost of a hit.
func BenchmarkDNSServiceAPacket(b *testing.B) {
	src := benchSource(b)
	h := newTestHandler(b, src, nil)
	pkts := make([][]byte, 1000)
	for i := range pkts {
		m := new(dns.Msg)
		m.SetQuestion(fmt.Sprintf("svc-%04d.service.consul.", i), dns.TypeA)
		p, err := m.Pack()
		if err != nil {
			b.Fatal(err)
		}
		pkts[i] = p
		if _, hit := serveOnce(b, h, p, "udp"); hit {
			b.Fatal("hit before the cache was filled")
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		out := make([]byte, 0, 512)
		for pb.Next() {
			var ok bool
			out, ok = h.AnswerPacket(out, pkts[rand.IntN(len(pkts))], "udp")
			if !ok {
				b.Error("not answered from the cache")
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "queries/s")
}
