package local_test

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/tribune-mesh/tribune/agent/checks"
	"github.com/tribune-mesh/tribune/agent/local"
	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/test/freeport"
	"github.com/tribune-mesh/tribune/test/wait"
)

// serve answers every request with code on addr until the test ends.
func serve(t *testing.T, addr string, code int) string {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(code) }))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return ln.Addr().String()
}

// A sidecar with Expose.Checks has its service's HTTP checks probed through
// its listener for each (a port of the expose range, the check's
// ExposedPort), and ExposedChecks tells the sidecar's configuration what
// each probes; without the sidecar the check probes the app again.
func TestSidecarExposesItsServiceChecks(t *testing.T) {
	port := freeport.One(t)
	h := start(t, local.Config{ExposeMinPort: port, ExposeMaxPort: port})
	// The app fails its check; the sidecar's listener (played here by
	// a server answering 200) passes it: the status tells which the
	// check probed.
	app := serve(t, "127.0.0.1:0", http.StatusInternalServerError)
	serve(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), http.StatusOK)
	check := &local.Check{Probe: &checks.Definition{CheckID: "web-http", HTTP: "http://" + app + "/health?full=1", Interval: time.Second},
		Health: &catalog.HealthCheck{CheckID: "web-http", Name: "web http", ServiceID: "web-1"}}
	h.state.AddService(webService("web-1"), []*local.Check{check})
	status := func(want string, exposed int) func() error {
		return func() error {
			c := h.state.Checks()["web-http"]
			if c == nil || c.Status != want || c.ExposedPort != exposed {
				return fmt.Errorf("check %+v, want %s exposed at %d", c, want, exposed)
			}
			return nil
		}
	}
	wait.For(t, 10*time.Second, status(catalog.HealthCritical, 0))

	sidecar := &catalog.Service{ID: "web-1-sidecar-proxy", Service: "web-sidecar-proxy", Kind: catalog.ServiceKindConnectProxy,
		Address: "127.0.0.1", Port: 21000, Tags: []string{}, Meta: map[string]string{}, Weights: catalog.Weights{Passing: 1, Warning: 1},
		Proxy: &catalog.ConnectProxyConfig{DestinationServiceName: "web", DestinationServiceID: "web-1", Expose: catalog.ExposeConfig{Checks: true}}}
	h.state.AddService(sidecar, nil)
	wait.For(t, 10*time.Second, status(catalog.HealthPassing, port))
	_, appPort, _ := net.SplitHostPort(app)
	lp, _ := strconv.Atoi(appPort)
	want := []local.ExposedCheck{{CheckID: "web-http", Path: "/health", LocalPathPort: lp, ListenerPort: port, Protocol: "http"}}
	if got := h.state.ExposedChecks("web-1"); !slices.Equal(got, want) {
		t.Fatalf("exposed checks %+v, want %+v", got, want)
	}
	// A second check finds the range used up: probed directly, with a
	// warning.
	if err := h.state.AddCheck(&local.Check{Probe: &checks.Definition{CheckID: "web-2", HTTP: "http://" + app + "/other", Interval: time.Second},
		Health: &catalog.HealthCheck{CheckID: "web-2", Name: "web 2", ServiceID: "web-1"}}); err != nil {
		t.Fatal(err)
	}
	if got := h.state.ExposedChecks("web-1"); len(got) != 1 {
		t.Fatalf("exposed checks %+v with the range used up, want the first one only", got)
	}

	h.state.RemoveService(sidecar.ID)
	wait.For(t, 10*time.Second, status(catalog.HealthCritical, 0))
	if got := h.state.ExposedChecks("web-1"); len(got) != 0 {
		t.Fatalf("exposed checks %+v without the sidecar", got)
	}
}
