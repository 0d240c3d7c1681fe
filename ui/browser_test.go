package ui_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/agent/agenttest"
	"github.com/tribune-mesh/tribune/test/wait"
)

// browserPath finds Chromium. Without it the browser test fails: the UI is
// only tested in a real browser, so a missing one must not pass quietly.
func browserPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatalf("the web UI test needs headless Chromium and found none on PATH (chromium, chromium-browser, google-chrome): " +
		"install the Debian package `chromium` (.ci/run does) or set CHROMIUM to the browser's path")
	return ""
}

// artefactDir is where the screenshots go: $ARTIFACTS/ui when set (kept
// after the run), a test temporary directory otherwise.
func artefactDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if a := os.Getenv("ARTIFACTS"); a != "" {
		dir = filepath.Join(a, "ui")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatalf("artefact dir: %v", err)
		}
	}
	return dir
}

// TestBrowser drives the UI in headless Chromium at a phone's width: the
// services page shows a service registered through the API without a
// reload, the service's page shows its check going critical with its
// output, and a KV entry is created and edited through the forms. Every
// wait is on a DOM condition; a screenshot of each page is kept.
func TestBrowser(t *testing.T) {
	chrome := browserPath(t)
	a := agenttest.Start(t, nil)
	client, err := api.NewClient(&api.Config{Address: a.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + a.HTTPAddr()
	shots := artefactDir(t)

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome), chromedp.NoSandbox, chromedp.Headless,
		chromedp.WindowSize(412, 915), chromedp.Flag("disable-gpu", true),
		chromedp.UserDataDir(t.TempDir()))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(allocCtx)
	defer cancel()
	// The first run starts the browser; it must not carry a timeout.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start Chromium (%s): %v", chrome, err)
	}

	// Uncaught exceptions in the page fail the test.
	var mu sync.Mutex
	var exceptions []string
	evCtx, stopEvents := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ev, err := range chromedp.Events(evCtx, runtime.ExceptionThrown) {
			if err != nil {
				return
			}
			mu.Lock()
			exceptions = append(exceptions, (&chromedp.ExceptionError{ExceptionDetails: ev.ExceptionDetails}).Error())
			mu.Unlock()
		}
	}()
	defer func() {
		stopEvents()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, e := range exceptions {
			t.Errorf("uncaught exception in the page: %s", e)
		}
	}()

	step := func(name string, timeout time.Duration, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, scancel := context.WithTimeout(ctx, timeout)
		defer scancel()
		if err := chromedp.Do(sctx, steps...); err != nil {
			dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
			defer dcancel()
			page, _ := chromedp.Run(dctx, chromedp.Evaluate[string](`location.hash + "\n" + document.body.innerText`))
			t.Fatalf("%s: %v\npage now:\n%s", name, err, page)
		}
	}
	shot := func(name string) {
		t.Helper()
		sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
		defer scancel()
		buf, err := chromedp.Run(sctx, chromedp.FullScreenshot(100)) // quality 100: PNG
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		path := filepath.Join(shots, name+".png")
		if err := os.WriteFile(path, buf, 0o644); err != nil {
			t.Fatalf("write screenshot: %v", err)
		}
		t.Logf("screenshot: %s", path)
	}
	// until waits for a JavaScript condition on the page.
	until := func(name, expr string) {
		t.Helper()
		step(name, 15*time.Second, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(14*time.Second))(ctx, tg)
			return err
		}))
	}

	// The services page, live.
	step("load the services page", 15*time.Second,
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS("main h1")))
	until("services page title", `document.querySelector('main h1')?.textContent === 'Services'`)
	if err := client.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: "web-1", Name: "web", Tags: []string{"blue"}, Port: 8080,
		Check: &api.AgentServiceCheck{CheckID: "web-ttl", Name: "web alive", TTL: "10m"},
	}); err != nil {
		t.Fatalf("register web: %v", err)
	}
	if err := client.Agent().UpdateTTL("web-ttl", "all good", api.HealthPassing); err != nil {
		t.Fatalf("pass web-ttl: %v", err)
	}
	step("web appears without a reload", 15*time.Second, chromedp.WaitVisible(chromedp.CSS(`li[data-service="web"] .tag`)))
	shot("services")

	// The service's page: its check goes critical.
	step("open web", 15*time.Second,
		chromedp.Click(chromedp.CSS(`li[data-service="web"] a.name`)),
		chromedp.WaitVisible(chromedp.CSS(`li[data-instance="web-1"][data-status="passing"]`)))
	if err := client.Agent().UpdateTTL("web-ttl", "connection refused on :8080", api.HealthCritical); err != nil {
		t.Fatalf("fail web-ttl: %v", err)
	}
	step("the check goes critical", 15*time.Second, chromedp.WaitVisible(chromedp.CSS(`li[data-instance="web-1"][data-status="critical"]`)))
	until("the check's output shows", `document.querySelector('li[data-instance="web-1"] [data-check="web-ttl"] pre.output')?.textContent === 'connection refused on :8080'`)
	shot("service")

	// Nodes, sessions and intentions render.
	for _, p := range []struct{ hash, title string }{{"nodes", "Nodes"}, {"sessions", "Sessions"}, {"intentions", "Intentions"}} {
		step("open "+p.hash, 15*time.Second, chromedp.Navigate(base+"/ui/#/"+p.hash))
		until(p.hash+" title", fmt.Sprintf(`document.querySelector('main h1')?.textContent === %q`, p.title))
		if p.hash == "nodes" {
			until("the agent's node is listed", `document.querySelectorAll('#nodes li').length >= 1`)
		}
		shot(p.hash)
	}

	// KV: create, then edit.
	step("open the KV page", 15*time.Second,
		chromedp.Navigate(base+"/ui/#/kv/"),
		chromedp.WaitVisible(chromedp.CSS("#kv-create")),
		chromedp.SendKeys(chromedp.CSS("#kv-new-key"), "app/config"),
		chromedp.SendKeys(chromedp.CSS("#kv-new-value"), "colour=blue"),
		chromedp.Click(chromedp.CSS("#kv-create-save")))
	kvIs := func(want string) func() error {
		return func() error {
			kv, _, err := client.KV().Get("app/config", nil)
			if err != nil {
				return err
			}
			if kv == nil || string(kv.Value) != want {
				return fmt.Errorf("app/config = %+v, want %q", kv, want)
			}
			return nil
		}
	}
	wait.For(t, 10*time.Second, kvIs("colour=blue"))
	until("the new key's editor shows its value", `document.querySelector('#kv-value')?.value === 'colour=blue'`)
	step("edit the key", 15*time.Second,
		// SetValue fires the input event a user's typing would.
		chromedp.SetValue(chromedp.CSS("#kv-value"), "colour=green"),
		chromedp.Click(chromedp.CSS("#kv-save")))
	until("saved", `document.querySelector('#kv-status')?.textContent.startsWith('Saved.')`)
	wait.For(t, 10*time.Second, kvIs("colour=green"))
	shot("kv-edit")
	step("the folder lists the key", 15*time.Second,
		chromedp.Navigate(base+"/ui/#/kv/app/"),
		chromedp.WaitVisible(chromedp.CSS(`li[data-key="app/config"]`)))
	shot("kv-folder")
}
