package telemetry

import (
	"net/http"
	"net/http/pprof"
	"strings"
)

// Pprof serves the Go runtime profile that r's path names after
// /debug/pprof/ (the index when it names none), as net/http/pprof does,
// for a handler that decided who may read it and bounded ?seconds=.
func Pprof(w http.ResponseWriter, r *http.Request) {
	switch name := strings.TrimPrefix(r.URL.Path, "/debug/pprof/"); name {
	case "":
		pprof.Index(w, r)
	case "cmdline":
		pprof.Cmdline(w, r)
	case "profile":
		pprof.Profile(w, r)
	case "symbol":
		pprof.Symbol(w, r)
	case "trace":
		pprof.Trace(w, r)
	default:
		pprof.Handler(name).ServeHTTP(w, r)
	}
}
