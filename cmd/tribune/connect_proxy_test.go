package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/agent/agenttest"
	"github.com/tribune-mesh/tribune/connect/proxy"
	"github.com/tribune-mesh/tribune/test/echo"
	"github.com/tribune-mesh/tribune/test/wait"
)

func TestConnectProxyFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "One of -sidecar-for, -proxy-id or -service is required"},
		{[]string{"-proxy-id", "a", "-sidecar-for", "b"}, "Use one of -proxy-id and -sidecar-for"},
		{[]string{"-sidecar-for", "web", "-upstream", "db:9191"}, "do not go with them"},
		{[]string{"-service", "web"}, "Nothing to proxy"},
		{[]string{"-service", "web", "-listen", "127.0.0.1:0"}, "-listen and -service-addr go together"},
		{[]string{"-service", "web", "-upstream", "db:9191", "-register"}, "-register needs -listen"},
		{[]string{"-service", "web", "-upstream", "db"}, "want name:port or name:host:port"},
		{[]string{"-service", "web", "-upstream", "db:99999"}, "bad port"},
		{[]string{"-service", "web", "-upstream", "db:9191", "-log-level", "loud"}, "Invalid -log-level"},
		{[]string{"-service", "web", "-upstream", "db:9191", "-max-conns", "0"}, "must be positive"},
		{[]string{"-service", "web", "-upstream", "db:9191", "extra"}, "Unexpected arguments"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			t.Setenv("CONNECT_PROXY_ID", "")
			t.Setenv("CONNECT_SIDECAR_FOR", "")
			r := runCmd(func(args []string, stdout, stderr io.Writer) int {
				return connectProxy(context.Background(), args, stdout, stderr)
			}, tc.args...)
			if r.code != 1 {
				t.Fatalf("exit %d, want 1: %v", r.code, r)
			}
			assertContains(t, "stderr", r.stderr, tc.want)
			assertContains(t, "stderr", r.stderr, "Usage: tribune connect proxy")
		})
	}
}

func TestParseUpstream(t *testing.T) {
	for in, want := range map[string]proxy.Upstream{
		"db:9191":             {DestinationName: "db", LocalBindAddress: "127.0.0.1", LocalBindPort: 9191},
		"db:127.0.0.2:9191":   {DestinationName: "db", LocalBindAddress: "127.0.0.2", LocalBindPort: 9191},
		"cache:[::1]:6379":    {DestinationName: "cache", LocalBindAddress: "::1", LocalBindPort: 6379},
		"db:localhost:8181":   {DestinationName: "db", LocalBindAddress: "localhost", LocalBindPort: 8181},
		"redis:0.0.0.0:16379": {DestinationName: "redis", LocalBindAddress: "0.0.0.0", LocalBindPort: 16379},
	} {
		got, err := parseUpstream(in)
		if err != nil || got != want {
			t.Errorf("parseUpstream(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "db", ":9191", "db:", "db:x", "db:0", "db:1.2.3.4", "db:[::1]:x"} {
		if _, err := parseUpstream(bad); err == nil {
			t.Errorf("parseUpstream(%q) succeeded", bad)
		}
	}
}

// runProxyCmd runs "connect proxy" with args until the test ends (or stop
// is called) and returns stop, which waits for the exit code.
func runProxyCmd(t *testing.T, args ...string) func() result {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan result, 1)
	go func() {
		done <- runCmd(func(args []string, stdout, stderr io.Writer) int {
			return connectProxy(ctx, args, stdout, stderr)
		}, args...)
	}()
	var once sync.Once
	var r result
	stop := func() result {
		once.Do(func() {
			cancel()
			select {
			case r = <-done:
			case <-time.After(30 * time.Second):
				t.Errorf("connect proxy %v did not stop", args)
			}
		})
		return r
	}
	t.Cleanup(func() { stop() })
	return stop
}

// The CLI end to end: db's proxy from its sidecar registration (followed
// when it changes), web's from flags with -register; bytes from web's
// upstream listener reach db's application; web's serves its profiles on
// -pprof-addr; on stop both exit 0, web's registration is gone and its pprof
// port closed.
func TestConnectProxyEndToEnd(t *testing.T) {
	t.Setenv("CONNECT_PROXY_ID", "")
	t.Setenv("CONNECT_SIDECAR_FOR", "")
	a := agenttest.Start(t, nil)
	client, err := api.NewClient(&api.Config{Address: a.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	ports := agenttest.FreePorts(t, 6)
	dbSidecar, webListen, webApp, webUp, dbSidecar2 := ports[0], ports[1], ports[2], ports[3], ports[4]
	pprofAddr := "127.0.0.1:" + strconv.Itoa(ports[5])
	dbApp := echo.Start(t)
	registerDB := func(sidecarPort int) {
		t.Helper()
		if err := client.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "db", Name: "db", Address: "127.0.0.1", Port: dbApp,
			Connect: &api.AgentServiceConnect{SidecarService: &api.AgentServiceRegistration{Address: "127.0.0.1", Port: sidecarPort,
				Checks: api.AgentServiceChecks{{Name: "listening", TCP: "127.0.0.1:" + strconv.Itoa(sidecarPort), Interval: "1s"}}}}}); err != nil {
			t.Fatal(err)
		}
	}
	registerDB(dbSidecar)
	httpAddr := "-http-addr=" + a.HTTPAddr()
	stopDB := runProxyCmd(t, httpAddr, "-sidecar-for", "db", "-log-level", "warn")
	stopWeb := runProxyCmd(t, httpAddr, "-service", "web", "-log-level", "warn", "-register",
		"-listen", "127.0.0.1:"+strconv.Itoa(webListen), "-service-addr", "127.0.0.1:"+strconv.Itoa(webApp),
		"-upstream", "db:"+strconv.Itoa(webUp), "-pprof-addr", pprofAddr)

	msg := []byte("through two proxies")
	through := func() error { return echo.RoundTrip("127.0.0.1:"+strconv.Itoa(webUp), msg, 5*time.Second) }
	wait.For(t, 30*time.Second, through)
	pprofGet := func(path string) (int, error) {
		resp, err := http.Get("http://" + pprofAddr + path)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if resp.StatusCode == http.StatusOK && len(body) == 0 {
			return 0, fmt.Errorf("%s: empty", path)
		}
		return resp.StatusCode, err
	}
	if code, err := pprofGet("/debug/pprof/cmdline"); code != http.StatusOK || err != nil {
		t.Fatalf("web's pprof cmdline: %d %v", code, err)
	}
	if code, err := pprofGet("/debug/pprof/profile?seconds=301"); code != http.StatusBadRequest || err != nil {
		t.Fatalf("a 301 s profile: %d %v, want 400", code, err)
	}

	// db's sidecar moves to another port: its proxy follows the
	// registration, web's follows the catalog.
	registerDB(dbSidecar2)
	wait.For(t, 30*time.Second, func() error {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(dbSidecar2), 5*time.Second)
		if err != nil {
			return fmt.Errorf("db's proxy does not listen on its new port: %w", err)
		}
		c.Close()
		return through()
	})
	svc, _, err := client.Agent().Service("web-proxy", nil)
	if err != nil {
		t.Fatalf("web's proxy is not registered: %v", err)
	}
	if svc.Kind != api.ServiceKindConnectProxy || svc.Port != webListen || svc.Proxy.DestinationServiceName != "web" ||
		svc.Proxy.LocalServicePort != webApp {
		t.Fatalf("registration %+v proxy %+v", svc, svc.Proxy)
	}
	for name, stop := range map[string]func() result{"web": stopWeb, "db": stopDB} {
		if r := stop(); r.code != 0 {
			t.Fatalf("%s's proxy: %v", name, r)
		}
	}
	if _, _, err := client.Agent().Service("web-proxy", nil); err == nil {
		t.Fatal("web's proxy is still registered after it stopped")
	}
	if _, err := pprofGet("/debug/pprof/cmdline"); err == nil {
		t.Fatal("web's pprof port still answers after it stopped")
	}
}
