package checks

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

type grpcProber struct {
	target  string // as defined, for the output
	addr    string
	service string
	creds   credentials.TransportCredentials
	timeout time.Duration
}

func newGRPCProber(def Definition, baseTLS *tls.Config) *grpcProber {
	addr, service, _ := strings.Cut(def.GRPC, "/")
	creds := insecure.NewCredentials()
	if def.GRPCUseTLS {
		creds = credentials.NewTLS(checkTLSConfig(baseTLS, def.TLSSkipVerify, def.TLSServerName))
	}
	return &grpcProber{target: def.GRPC, addr: addr, service: service, creds: creds, timeout: def.Timeout}
}

// probe dials a fresh connection each time, like the other network checks:
// the result then says whether the server accepts connections now, and no
// connection outlives the probe.
func (p *grpcProber) probe(ctx context.Context) (string, string) {
	prefix := "gRPC check " + p.target
	// passthrough: the address is dialled as given, without a resolver.
	conn, err := grpc.NewClient("passthrough:///"+p.addr, grpc.WithTransportCredentials(p.creds))
	if err != nil {
		return StatusCritical, fmt.Sprintf("%s: %v", prefix, err)
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: p.service})
	if err != nil {
		if s, ok := status.FromError(err); ok {
			return StatusCritical, failure(ctx, prefix, fmt.Errorf("%s: %s", s.Code(), s.Message()), p.timeout)
		}
		return StatusCritical, failure(ctx, prefix, err, p.timeout)
	}
	if st := resp.GetStatus(); st != healthpb.HealthCheckResponse_SERVING {
		return StatusCritical, fmt.Sprintf("%s: %s", prefix, st)
	}
	return StatusPassing, prefix + ": SERVING"
}
