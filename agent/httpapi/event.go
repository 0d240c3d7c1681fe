package httpapi

import (
	"errors"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/gossip"
	"github.com/tribune-mesh/tribune/server"
)

// eventFire serves PUT /v1/event/fire/<name>: the body is the payload; the
// node, service and tag query parameters are the filters.
func (h *Handler) eventFire(w http.ResponseWriter, r *http.Request) (any, error) {
	q := queryOf(r)
	dc := q.Get("dc")
	if h.remoteDC(dc) && h.agent.fed == nil {
		return nil, errNoPathToDC
	}
	name := strings.TrimPrefix(r.URL.Path, "/v1/event/fire/")
	if name == "" {
		return nil, badRequest("Missing name")
	}
	if strings.HasPrefix(name, "_") {
		return nil, badRequest("Event names starting with an underscore are reserved")
	}
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	if authz.EventWrite(name) != acl.Allow {
		return nil, errPermissionDenied
	}
	if h.agent.gossip == nil && !h.remoteDC(dc) {
		return nil, badRequest("gossip is disabled on this agent")
	}
	limit := gossip.UserEventSizeLimit - len(name)
	payload, err := io.ReadAll(io.LimitReader(r.Body, int64(limit)+1))
	if err != nil {
		return nil, badRequest("Request decode failed: %v", err)
	}
	if len(payload) > limit {
		return nil, tooLarge("User event too large: the name and payload may total at most %d bytes", gossip.UserEventSizeLimit)
	}
	if len(payload) == 0 {
		payload = nil
	}
	ev := gossip.UserEvent{
		Name: name, Payload: payload,
		NodeFilter: q.Get("node"), ServiceFilter: q.Get("service"), TagFilter: q.Get("tag"),
	}
	if h.remoteDC(dc) {
		// A server of that datacenter fires it in its LAN pool.
		if err := ev.Validate(); err != nil {
			return nil, badRequest("%v", err)
		}
		return h.agent.fed.FireEvent(r.Context(), dc, ev)
	}
	ev, err = h.agent.gossip.FireUserEvent(ev)
	switch {
	case errors.Is(err, gossip.ErrUserEventTooLarge):
		return nil, tooLarge("%v", err)
	case err != nil:
		return nil, badRequest("%v", err)
	}
	return ev, nil
}

// eventList serves GET /v1/event/list[?name=]: the kept events, oldest first.
// X-Consul-Index is derived from the last event's ID (see eventIndex), so it
// changes with every new event but does not grow; a blocking list (?index=)
// therefore waits while the index equals the one given, as Consul's does.
func (h *Handler) eventList(w http.ResponseWriter, r *http.Request) (any, error) {
	opts, err := h.parseQueryOptions(r)
	if err != nil {
		return nil, err
	}
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	name := queryOf(r).Get("name")
	var timeout <-chan time.Time
	if opts.MinQueryIndex > 0 {
		wait := opts.MaxQueryTime
		if wait <= 0 {
			wait = server.DefaultQueryTime
		}
		wait = min(wait, server.MaxQueryTime)
		// The same jitter as every other blocking endpoint (up to wait/16).
		wait += time.Duration(rand.Int64N(int64(wait/16) + 1))
		t := time.NewTimer(wait)
		defer t.Stop()
		timeout = t.C
	}
	for {
		events, changed := h.agent.events.List(name)
		idx := uint64(1)
		if n := len(events); n > 0 {
			idx = eventIndex(events[n-1].ID)
		}
		// Events the token may not read (event:read on the name)
		// are dropped; the index still moves with them.
		visible := func() []*gossip.UserEvent {
			return aclKeep(w, r, events, func(e *gossip.UserEvent) bool { return acl.EventRead(authz, e.Name) == acl.Allow })
		}
		if opts.MinQueryIndex == 0 || idx != opts.MinQueryIndex {
			return eventListResult(w, idx, visible()), nil
		}
		select {
		case <-changed:
		case <-timeout:
			return eventListResult(w, idx, visible()), nil
		case <-r.Context().Done():
			return nil, r.Context().Err()
		}
	}
}

// eventListResult sets the list's index header and returns the events.
func eventListResult(w http.ResponseWriter, idx uint64, events []*gossip.UserEvent) any {
	w.Header().Set("X-Consul-Index", strconv.FormatUint(idx, 10))
	return events
}

// eventIndex turns an event ID into the index of /v1/event/list as Consul's
// client computes it (api.Event.IDToIndex): the UUID's first 64 bits XOR its
// last 64. An ID that is not a UUID (from a foreign peer) is hashed instead;
// the index is never 0, which would make a blocking list return at once.
func eventIndex(id string) uint64 {
	var idx uint64
	if len(id) == 36 && id[8] == '-' && id[13] == '-' && id[18] == '-' && id[23] == '-' {
		lo, err1 := strconv.ParseUint(id[0:8]+id[9:13]+id[14:18], 16, 64)
		hi, err2 := strconv.ParseUint(id[19:23]+id[24:36], 16, 64)
		if err1 == nil && err2 == nil {
			idx = lo ^ hi
		}
	}
	if idx == 0 {
		f := fnv.New64a()
		_, _ = f.Write([]byte(id))
		idx = max(f.Sum64(), 1)
	}
	return idx
}
