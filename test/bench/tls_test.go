package bench

import (
	"fmt"
	"strconv"
	"testing"

	"github.com/hashicorp/consul/api"

	procharness "github.com/tribune-mesh/tribune/test/procs"
	"github.com/tribune-mesh/tribune/tlsconfig/tlstest"
)

// tlsClients is the concurrency of the TLS on/off comparison.
const tlsClients = 32

// BenchmarkClusterKVWriteTLS: KV writes through the client agent of a
// 3-server + 1-client cluster, TLS off (the shared cluster) against a
// cluster with TLS on the server port (Raft and RPC; verify_incoming,
// verify_outgoing, verify_server_hostname), reached over HTTP and over
// HTTPS with a client certificate, in the same run.
func BenchmarkClusterKVWriteTLS(b *testing.B) {
	runOnce(b, func() {
		plain := getCluster(b)
		p := tlstest.NewPKI(b, "dc1")
		httpsPort := procharness.FreePorts(b, 1)[0]
		tc, err := startClusterSpec(b, tribuneBin(b), "tls-", func(name string, server bool) []string {
			pair := p.Client
			if server {
				pair = p.Server
			}
			args := []string{"-hcl", fmt.Sprintf(`tls {
  defaults { ca_file = %q, cert_file = %q, key_file = %q, verify_incoming = true, verify_outgoing = true }
  internal_rpc { verify_server_hostname = true }
}`, p.CAFile, pair.Cert, pair.Key)}
			if !server {
				args = append(args, "-https-port", strconv.Itoa(httpsPort))
			}
			return args
		})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() {
			for _, a := range tc.all() {
				a.Kill()
			}
		})
		// The three modes take turns, three rounds of a third of the
		// duration each, so that load from outside the run (other
		// processes on the machine) falls on all of them alike; the
		// median round of each is reported.
		const rounds = 3
		d := benchDuration(b) / rounds
		addr := fmt.Sprintf("127.0.0.1:%d", httpsPort)
		tlsc := &api.TLSConfig{CAFile: p.CAFile, CertFile: p.CLI.Cert, KeyFile: p.CLI.Key}
		modes := []struct {
			name string
			run  func() loadResult
		}{
			{"off", func() loadResult { return kvWriteLoad(b, plain.client.HTTPAddr(), tlsClients, d, plain.all()) }},
			{"rpc", func() loadResult { return kvWriteLoad(b, tc.client.HTTPAddr(), tlsClients, d, tc.all()) }},
			{"rpc+https", func() loadResult {
				return kvWriteLoadWith(func() *api.Client { return newAPIClientTLS(b, addr, tlsc) }, tlsClients, d, tc.all())
			}},
		}
		results := map[string][]float64{}
		details := map[string]string{}
		for r := 0; r < rounds; r++ {
			for _, m := range modes {
				res := m.run()
				results[m.name] = append(results[m.name], res.opsPerSec())
				details[m.name] = res.String()
			}
		}
		med := map[string]float64{}
		for _, m := range modes {
			med[m.name] = median(results[m.name])
			record(b, kindTribune, fmt.Sprintf("cluster kv-write tls=%s clients=%d", m.name, tlsClients), "ops/s", med[m.name],
				fmt.Sprintf("median of %.0f; last round: %s", results[m.name], details[m.name]))
		}
		if med["off"] > 0 {
			fmt.Printf("bench: cluster kv-write tls on/off ratio: rpc=%.2f rpc+https=%.2f\n", med["rpc"]/med["off"], med["rpc+https"]/med["off"])
		}
	})
}
