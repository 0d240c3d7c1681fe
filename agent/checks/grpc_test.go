package checks

import (
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func startGRPCHealth(t *testing.T) (*health.Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-served
	})
	return hs, ln.Addr().String()
}

func TestGRPC(t *testing.T) {
	leakCheck(t)
	hs, addr := startGRPCHealth(t)
	hs.SetServingStatus("orders", healthpb.HealthCheckResponse_SERVING)

	target := addr + "/orders"
	opts := testOptions()
	clk := fakeClock(t, opts)
	_, rec := startCheck(t, Definition{CheckID: "orders", GRPC: target, Interval: 10 * time.Second}, opts)
	if u := rec.waitStatus(t, StatusPassing); u.Output != "gRPC check "+target+": SERVING" {
		t.Fatalf("output %q", u.Output)
	}
	hs.SetServingStatus("orders", healthpb.HealthCheckResponse_NOT_SERVING)
	if u := rec.advanceToStatus(t, clk, 10*time.Second, StatusCritical); u.Output != "gRPC check "+target+": NOT_SERVING" {
		t.Fatalf("output %q", u.Output)
	}
	hs.SetServingStatus("orders", healthpb.HealthCheckResponse_SERVING)
	rec.advanceToStatus(t, clk, 10*time.Second, StatusPassing)

	// No service: the whole server, SERVING by default.
	_, whole := startCheck(t, Definition{CheckID: "server", GRPC: addr, Interval: time.Second}, testOptions())
	whole.waitStatus(t, StatusPassing)

	_, unknown := startCheck(t, Definition{CheckID: "unknown", GRPC: addr + "/nope", Interval: time.Second}, testOptions())
	if u := unknown.waitStatus(t, StatusCritical); !strings.Contains(u.Output, "NotFound") {
		t.Fatalf("unknown service output %q", u.Output)
	}
}

func TestGRPCServerDown(t *testing.T) {
	leakCheck(t)
	addr := closedAddr(t, "tcp")
	_, rec := startCheck(t, Definition{CheckID: "down", GRPC: addr, Interval: time.Second, Timeout: 2 * time.Second}, testOptions())
	if u := rec.waitStatus(t, StatusCritical); !strings.Contains(u.Output, "Unavailable") {
		t.Fatalf("output %q", u.Output)
	}
}
