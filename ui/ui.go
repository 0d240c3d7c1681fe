// Package ui is Tribune's web UI: static files (plain ES modules and one
// hand-written stylesheet, no build step) embedded in the binary and served
// under the configured content path. The pages read the public HTTP API
// and the /v1/internal/ui/ summary endpoints with blocking queries, so they
// follow the catalog live.
//
// It owns only the files and how they are served: it must not import the
// agent or reach the catalog; everything the pages show comes through the
// HTTP API with the user's token.
package ui

import (
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"strings"
)

//go:embed assets
var embedded embed.FS

// Assets returns the embedded UI files, rooted at the directory holding
// index.html.
func Assets() fs.FS {
	sub, err := fs.Sub(embedded, "assets")
	if err != nil {
		panic(fmt.Sprintf("ui: embedded assets: %v", err)) // a broken build, not user input
	}
	return sub
}

// Settings are what the pages need to know about the agent before they
// call the API, served as <content path>settings.json.
type Settings struct {
	// Datacenter is the agent's datacenter.
	Datacenter string
	// ACLsEnabled shows the login and the ACL pages.
	ACLsEnabled bool
}

// Handler serves the UI under contentPath ("/ui/"): the embedded files, or
// those of dir when it is set (ui_config.dir), and settings.json. A path
// that names no file is redirected to contentPath.
func Handler(contentPath, dir string, settings Settings) http.Handler {
	files := Assets()
	if dir != "" {
		files = os.DirFS(dir)
	}
	settingsJSON, err := json.Marshal(settings)
	if err != nil {
		panic(fmt.Sprintf("ui: encode settings: %v", err)) // plain fields always encode
	}
	fileServer := http.FileServerFS(files)
	return http.StripPrefix(strings.TrimSuffix(contentPath, "/"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		name := strings.TrimPrefix(r.URL.Path, "/")
		if name == "settings.json" {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "no-store")
			_, _ = w.Write(settingsJSON)
			return
		}
		if name != "" {
			if st, err := fs.Stat(files, name); err != nil || st.IsDir() {
				// Pages are addressed by the fragment (/ui/#/services), so
				// another path (a Consul UI bookmark such as
				// /ui/dc1/services) goes to the UI's root, where the
				// pages' relative URLs resolve.
				http.Redirect(w, r, contentPath, http.StatusFound)
				return
			}
		}
		h := w.Header()
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'")
		h.Set("Cache-Control", "no-cache")
		fileServer.ServeHTTP(w, r)
	}))
}
