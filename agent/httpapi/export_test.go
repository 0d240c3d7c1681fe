package httpapi

// RoutePatterns lists the registered path patterns (a trailing '/' marks a
// prefix), for the tests that must cover every endpoint.
func RoutePatterns(h *Handler) []string {
	var out []string
	for p := range h.exact {
		out = append(out, p)
	}
	for _, r := range h.prefix {
		out = append(out, r.pattern)
	}
	return out
}
