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

// browser is one headless Chromium tab at a phone's width on an agent's
// UI. Uncaught exceptions in the page fail the test.
type browser struct {
	t     *testing.T
	ctx   context.Context
	base  string
	shots string
}

func newBrowser(t *testing.T, httpAddr string) *browser {
	t.Helper()
	chrome := browserPath(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome), chromedp.NoSandbox, chromedp.Headless,
		chromedp.WindowSize(412, 915), chromedp.Flag("disable-gpu", true),
		chromedp.UserDataDir(t.TempDir()))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	// The first run starts the browser; it must not carry a timeout.
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		cancelAlloc()
		t.Fatalf("start Chromium (%s): %v", chrome, err)
	}
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
	t.Cleanup(func() {
		stopEvents()
		wg.Wait()
		cancel()
		cancelAlloc()
		mu.Lock()
		defer mu.Unlock()
		for _, e := range exceptions {
			t.Errorf("uncaught exception in the page: %s", e)
		}
	})
	return &browser{t: t, ctx: ctx, base: "http://" + httpAddr, shots: artefactDir(t)}
}

// step runs actions, failing the test with the page's text when one fails.
func (b *browser) step(name string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	sctx, scancel := context.WithTimeout(b.ctx, 15*time.Second)
	defer scancel()
	if err := chromedp.Do(sctx, steps...); err != nil {
		dctx, dcancel := context.WithTimeout(b.ctx, 5*time.Second)
		defer dcancel()
		page, _ := chromedp.Run(dctx, chromedp.Evaluate[string](`location.hash + "\n" + document.body.innerText`))
		b.t.Fatalf("%s: %v\npage now:\n%s", name, err, page)
	}
}

// until waits for a JavaScript condition on the page.
func (b *browser) until(name, expr string) {
	b.t.Helper()
	b.step(name, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(14*time.Second))(ctx, tg)
		return err
	}))
}

// open navigates to a page of the UI and waits for its title.
func (b *browser) open(hash, title string) {
	b.t.Helper()
	b.step("open "+hash, chromedp.Navigate(b.base+"/ui/#/"+hash))
	b.until(hash+" title", fmt.Sprintf(`document.querySelector('main h1')?.textContent === %q`, title))
}

// shot saves a PNG of the whole page.
func (b *browser) shot(name string) {
	b.t.Helper()
	sctx, scancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer scancel()
	buf, err := chromedp.Run(sctx, chromedp.FullScreenshot(100)) // quality 100: PNG
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	path := filepath.Join(b.shots, name+".png")
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		b.t.Fatalf("write screenshot: %v", err)
	}
	b.t.Logf("screenshot: %s", path)
}

// TestBrowser drives the UI in headless Chromium at a phone's width: the
// services page shows a service registered through the API without a
// reload, the service's page shows its check going critical with its
// output, a KV entry is created and edited through the forms, and an
// intention is created and edited. Every wait is on a DOM condition; a
// screenshot of each page is kept.
func TestBrowser(t *testing.T) {
	a := agenttest.Start(t, nil)
	client, err := api.NewClient(&api.Config{Address: a.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, a.HTTPAddr())

	// The services page, live.
	b.step("load the services page", chromedp.Navigate(b.base+"/"), chromedp.WaitVisible(chromedp.CSS("main h1")))
	b.until("services page title", `document.querySelector('main h1')?.textContent === 'Services'`)
	if err := client.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: "web-1", Name: "web", Tags: []string{"blue"}, Port: 8080,
		Check: &api.AgentServiceCheck{CheckID: "web-ttl", Name: "web alive", TTL: "10m"},
	}); err != nil {
		t.Fatalf("register web: %v", err)
	}
	if err := client.Agent().UpdateTTL("web-ttl", "all good", api.HealthPassing); err != nil {
		t.Fatalf("pass web-ttl: %v", err)
	}
	b.step("web appears without a reload", chromedp.WaitVisible(chromedp.CSS(`li[data-service="web"] .tag`)))
	b.shot("services")

	// The service's page: its check goes critical.
	b.step("open web",
		chromedp.Click(chromedp.CSS(`li[data-service="web"] a.name`)),
		chromedp.WaitVisible(chromedp.CSS(`li[data-instance="web-1"][data-status="passing"]`)))
	if err := client.Agent().UpdateTTL("web-ttl", "connection refused on :8080", api.HealthCritical); err != nil {
		t.Fatalf("fail web-ttl: %v", err)
	}
	b.step("the check goes critical", chromedp.WaitVisible(chromedp.CSS(`li[data-instance="web-1"][data-status="critical"]`)))
	b.until("the check's output shows", `document.querySelector('li[data-instance="web-1"] [data-check="web-ttl"] pre.output')?.textContent === 'connection refused on :8080'`)
	b.shot("service")

	// The instance's node: its services and checks, the failing one with
	// its output.
	b.step("open the instance's node", chromedp.Click(chromedp.CSS(`li[data-instance="web-1"] .meta a`)))
	b.until("the node's checks", `[...document.querySelectorAll('#checks [data-check="web-ttl"] pre.output')].some((p) => p.textContent === 'connection refused on :8080')`)
	b.shot("node")

	// Nodes and sessions render.
	b.open("nodes", "Nodes")
	b.until("the agent's node is listed", `document.querySelectorAll('#nodes li').length >= 1`)
	b.shot("nodes")
	b.open("sessions", "Sessions")
	b.shot("sessions")

	// KV: create, then edit.
	b.open("kv/", "Key/Value")
	b.step("create a key",
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
	b.until("the new key's editor shows its value", `document.querySelector('#kv-value')?.value === 'colour=blue'`)
	b.step("edit the key",
		// SetValue fires the input event a user's typing would.
		chromedp.SetValue(chromedp.CSS("#kv-value"), "colour=green"),
		chromedp.Click(chromedp.CSS("#kv-save")))
	b.until("saved", `document.querySelector('#kv-status')?.textContent.startsWith('Saved.')`)
	wait.For(t, 10*time.Second, kvIs("colour=green"))
	b.shot("kv-edit")
	b.step("the folder lists the key",
		chromedp.Navigate(b.base+"/ui/#/kv/app/"),
		chromedp.WaitVisible(chromedp.CSS(`li[data-key="app/config"]`)))
	b.shot("kv-folder")

	// Intentions: create web -> db, then edit it to deny.
	b.open("intentions/new", "New intention")
	b.step("create an intention",
		chromedp.SendKeys(chromedp.CSS("#int-source"), "web"),
		chromedp.SendKeys(chromedp.CSS("#int-destination"), "db"),
		chromedp.SendKeys(chromedp.CSS("#int-description"), "web reads db"),
		chromedp.Click(chromedp.CSS(`#intention-form button[type="submit"]`)))
	b.until("the intention is listed", `document.querySelector('#intentions li .badge')?.textContent === 'allow'`)
	b.shot("intentions")
	b.step("open the intention", chromedp.Click(chromedp.CSS(`#intentions li a.name`)))
	b.until("its form", `document.querySelector('#int-source')?.value === 'web' && document.querySelector('#int-action')?.value === 'allow'`)
	b.step("edit it to deny",
		chromedp.SetValue(chromedp.CSS("#int-action"), "deny"),
		chromedp.Click(chromedp.CSS(`#intention-form button[type="submit"]`)))
	b.until("the list shows deny", `location.hash === '#/intentions' && document.querySelector('#intentions li .badge')?.textContent === 'deny'`)
	wait.For(t, 10*time.Second, func() error {
		in, _, err := client.Connect().IntentionGetExact("web", "db", nil)
		if err != nil {
			return err
		}
		if in == nil || in.Action != api.IntentionActionDeny || in.Description != "web reads db" {
			return fmt.Errorf("intention web -> db = %+v", in)
		}
		return nil
	})
}

// With ACLs on (default deny) the pages say the request was refused until
// the user logs in with a token; the token is kept in localStorage, sent as
// X-Consul-Token, and the ACL pages list tokens and policies.
func TestBrowserACL(t *testing.T) {
	const secret = "5f3ca6a1-0000-4000-8000-00000000000a"
	a, client := agenttest.StartACL(t, secret)
	if _, _, err := client.ACL().PolicyCreate(&api.ACLPolicy{Name: "web-read", Rules: `service "web" { policy = "read" }`}, nil); err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, a.HTTPAddr())

	b.open("kv/", "Key/Value")
	b.until("anonymous is refused", `!document.querySelector('#error').hidden && document.querySelector('#error').textContent.includes('log in')`)
	b.until("the ACL links show", `!document.querySelector('#login-link').hidden`)
	b.shot("acl-refused")
	b.open("login", "Log in")
	b.step("log in",
		chromedp.SendKeys(chromedp.CSS("#token"), secret),
		chromedp.Click(chromedp.CSS(`#login button[type="submit"]`)))
	b.until("logged in", `document.querySelector('#login-status')?.textContent.startsWith('Logged in') && localStorage.getItem('tribune:token') !== null`)
	b.open("acl/policies", "ACL policies")
	b.until("the policy is listed", `[...document.querySelectorAll('#policies li a.name')].some((a) => a.textContent === 'web-read')`)
	b.shot("acl-policies")
	b.open("acl/tokens", "ACL tokens")
	b.until("tokens are listed", `document.querySelectorAll('#tokens li').length >= 2`)
	b.shot("acl-tokens")
	b.open("services", "Services")
	b.until("no error once logged in", `document.querySelector('#error').hidden`)
}
