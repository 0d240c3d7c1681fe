package agent_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"testing"

	"github.com/miekg/dns"

	"github.com/tribune-mesh/tribune/agent/agenttest"
	"github.com/tribune-mesh/tribune/catalog"
)

// BenchmarkAgentDNSServiceA is BenchmarkDNSServiceA (dnsserver) through a
// whole agent: 1,000 services of 3 instances in the Raft-backed catalog,
// A queries over UDP answered from the agent's views.
func BenchmarkAgentDNSServiceA(b *testing.B) {
	cfg := agenttest.Config(b)
	a := agenttest.Start(b, cfg)
	const services, instances = 1000, 3
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, services*instances)
	sem := make(chan struct{}, 64)
	for i := 0; i < services*instances; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			svc := fmt.Sprintf("svc-%04d", i/instances)
			resp, err := a.Server().Apply(ctx, catalog.CmdRegister, &catalog.RegisterRequest{
				Node: fmt.Sprintf("node-%05d", i), Address: fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255),
				Service: &catalog.Service{ID: svc, Service: svc, Port: 8000 + i%instances},
				Check: &catalog.HealthCheck{CheckID: "check:" + svc, Name: "check", Status: catalog.HealthPassing,
					ServiceID: svc},
			})
			if e, ok := resp.(error); ok && e != nil {
				err = e
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.Ports.DNS))
	names := make([]string, services)
	c := &dns.Client{Net: "udp"}
	for i := range names {
		names[i] = fmt.Sprintf("svc-%04d.service.consul.", i)
		m := new(dns.Msg)
		m.SetQuestion(names[i], dns.TypeA)
		r, _, err := c.Exchange(m, addr) // start the view
		if err != nil || len(r.Answer) != instances {
			b.Fatalf("warm %s: %v %v", names[i], r, err)
		}
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
			if len(r.Answer) != instances {
				b.Errorf("%d answers", len(r.Answer))
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "queries/s")
}
