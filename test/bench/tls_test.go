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
		d := benchDuration(b)
		off := kvWriteLoad(b, plain.client.HTTPAddr(), tlsClients, d, plain.all())
		record(b, kindTribune, fmt.Sprintf("cluster kv-write tls=off clients=%d", tlsClients), "ops/s", off.opsPerSec(), off.String())
		rpc := kvWriteLoad(b, tc.client.HTTPAddr(), tlsClients, d, tc.all())
		record(b, kindTribune, fmt.Sprintf("cluster kv-write tls=rpc clients=%d", tlsClients), "ops/s", rpc.opsPerSec(), rpc.String())
		addr := fmt.Sprintf("127.0.0.1:%d", httpsPort)
		tlsc := &api.TLSConfig{CAFile: p.CAFile, CertFile: p.CLI.Cert, KeyFile: p.CLI.Key}
		all := kvWriteLoadWith(func() *api.Client { return newAPIClientTLS(b, addr, tlsc) }, tlsClients, d, tc.all())
		record(b, kindTribune, fmt.Sprintf("cluster kv-write tls=rpc+https clients=%d", tlsClients), "ops/s", all.opsPerSec(), all.String())
		if off.opsPerSec() > 0 {
			fmt.Printf("bench: cluster kv-write tls on/off ratio: rpc=%.2f rpc+https=%.2f\n", rpc.opsPerSec()/off.opsPerSec(), all.opsPerSec()/off.opsPerSec())
		}
	})
}
