package agent

// WaitingQueries returns the number of blocking queries of the HTTP API
// waiting on its views (parked or blocked), for tests.
func (a *Agent) WaitingQueries() int {
	a.httpMu.Lock()
	views := a.httpViews
	a.httpMu.Unlock()
	if views == nil {
		return 0
	}
	c := views.get(false)
	if c == nil {
		return 0
	}
	return c.Waiting()
}
