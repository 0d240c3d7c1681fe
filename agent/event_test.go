package agent_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/test/wait"
)

// eventsNamed lists the events named name that n keeps.
func eventsNamed(n *node, name string) ([]*api.UserEvent, *api.QueryMeta, error) {
	return n.api.Event().List(name, nil)
}

// waitEvent waits until n keeps exactly one event with this ID and returns it.
func waitEvent(t *testing.T, n *node, name, id string) *api.UserEvent {
	t.Helper()
	var found *api.UserEvent
	wait.For(t, 10*time.Second, func() error {
		evs, _, err := eventsNamed(n, name)
		if err != nil {
			return err
		}
		found = nil
		count := 0
		for _, e := range evs {
			if e.ID == id {
				found = e
				count++
			}
		}
		if count != 1 {
			return fmt.Errorf("%d copies of %s among %d events", count, id, len(evs))
		}
		return nil
	})
	return found
}

// noEvent fails when n keeps any event named name.
func noEvent(t *testing.T, n *node, name string) {
	t.Helper()
	evs, _, err := eventsNamed(n, name)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 0 {
		t.Errorf("%s kept %d events named %s, want none (filtered out)", n.cfg.NodeName, len(evs), name)
	}
}

func fire(t *testing.T, n *node, ev *api.UserEvent) string {
	t.Helper()
	id, _, err := n.api.Event().Fire(ev, nil)
	if err != nil {
		t.Fatalf("fire %s on %s: %v", ev.Name, n.cfg.NodeName, err)
	}
	return id
}

// TestEventsCluster fires user events through different agents of one
// cluster (a server and two clients) and checks which agents keep them.
func TestEventsCluster(t *testing.T) {
	srvs, cls := startCluster(t, 1, 2)
	s1, c1, c2 := srvs[0], cls[0], cls[1]
	all := []*node{s1, c1, c2}

	t.Run("fire reaches every agent once", func(t *testing.T) {
		id := fire(t, c1, &api.UserEvent{Name: "deploy", Payload: []byte("v1")})
		var ltime uint64
		for _, n := range all {
			ev := waitEvent(t, n, "deploy", id)
			if ev.Name != "deploy" || string(ev.Payload) != "v1" || ev.Version != 1 || ev.LTime == 0 {
				t.Errorf("%s keeps %+v", n.cfg.NodeName, ev)
			}
			if ltime != 0 && ev.LTime != ltime {
				t.Errorf("%s: LTime %d, another agent has %d", n.cfg.NodeName, ev.LTime, ltime)
			}
			ltime = ev.LTime
		}
		// A later event, fired elsewhere, has a later Lamport time.
		id2 := fire(t, s1, &api.UserEvent{Name: "deploy", Payload: []byte("v2")})
		ev2 := waitEvent(t, c2, "deploy", id2)
		if ev2.LTime <= ltime {
			t.Errorf("LTime of the second event = %d, want > %d", ev2.LTime, ltime)
		}
		// The list is oldest first and its index is the last event's.
		evs, meta, err := eventsNamed(c2, "deploy")
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 2 || evs[0].ID != id || evs[1].ID != id2 {
			t.Fatalf("c2 lists %+v, want %s then %s", evs, id, id2)
		}
		if want := c2.api.Event().IDToIndex(id2); meta.LastIndex != want {
			t.Errorf("X-Consul-Index = %d, want IDToIndex(last ID) = %d", meta.LastIndex, want)
		}
		// An unknown name lists nothing, with index 1.
		evs, meta, err = eventsNamed(c2, "nothing-by-that-name")
		if err != nil || len(evs) != 0 || meta.LastIndex != 1 {
			t.Errorf("unknown name: %v events, index %d, error %v", len(evs), meta.LastIndex, err)
		}
	})

	t.Run("fire response", func(t *testing.T) {
		r := httpString(t, c2.agent, http.MethodPut, "/v1/event/fire/shape?node=c&service=web&tag=v1", "hello")
		if r.code != http.StatusOK {
			t.Fatalf("fire: %d %s", r.code, r.body)
		}
		var got map[string]any
		if err := json.Unmarshal([]byte(r.body), &got); err != nil {
			t.Fatal(err)
		}
		for k, want := range map[string]any{"Name": "shape", "Payload": "aGVsbG8=", "NodeFilter": "c",
			"ServiceFilter": "web", "TagFilter": "v1", "Version": 1.0} {
			if got[k] != want {
				t.Errorf("%s = %v, want %v (body %s)", k, got[k], want, r.body)
			}
		}
		if id, _ := got["ID"].(string); len(id) != 36 {
			t.Errorf("ID = %v, want a UUID", got["ID"])
		}
		if lt, _ := got["LTime"].(float64); lt == 0 {
			t.Errorf("LTime = %v, want > 0", got["LTime"])
		}
		// Without a body the payload is null, as Consul shows it.
		r = httpString(t, c2.agent, http.MethodPut, "/v1/event/fire/empty", "")
		if r.code != http.StatusOK || !strings.Contains(r.body, `"Payload":null`) {
			t.Errorf("fire without payload: %d %s", r.code, r.body)
		}
	})

	t.Run("node filter", func(t *testing.T) {
		id := fire(t, s1, &api.UserEvent{Name: "only-c2", NodeFilter: "^c2$"})
		waitEvent(t, c2, "only-c2", id)
		// A marker fired after it reaches everyone; by then the filtered
		// event has reached them too and been dropped.
		marker := fire(t, s1, &api.UserEvent{Name: "marker-node"})
		for _, n := range all {
			waitEvent(t, n, "marker-node", marker)
		}
		noEvent(t, s1, "only-c2")
		noEvent(t, c1, "only-c2")
	})

	t.Run("service and tag filters", func(t *testing.T) {
		for _, reg := range []struct {
			n    *node
			tags []string
		}{{c1, []string{"v1", "blue"}}, {c2, []string{"v2"}}} {
			if err := reg.n.api.Agent().ServiceRegister(&api.AgentServiceRegistration{Name: "web", Tags: reg.tags, Port: 80}); err != nil {
				t.Fatal(err)
			}
		}
		svcID := fire(t, s1, &api.UserEvent{Name: "to-web", ServiceFilter: "^we"})
		tagID := fire(t, s1, &api.UserEvent{Name: "to-web-v1", ServiceFilter: "^web$", TagFilter: "^v1$"})
		waitEvent(t, c1, "to-web", svcID)
		waitEvent(t, c2, "to-web", svcID)
		waitEvent(t, c1, "to-web-v1", tagID)
		marker := fire(t, s1, &api.UserEvent{Name: "marker-svc"})
		for _, n := range all {
			waitEvent(t, n, "marker-svc", marker)
		}
		noEvent(t, s1, "to-web")
		noEvent(t, s1, "to-web-v1")
		noEvent(t, c2, "to-web-v1")
	})

	t.Run("blocking list wakes on a new event", func(t *testing.T) {
		_, meta, err := c1.api.Event().List("", nil)
		if err != nil {
			t.Fatal(err)
		}
		ch := goBlock(func() ([]*api.UserEvent, *api.QueryMeta, error) {
			return c1.api.Event().List("", &api.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 30 * time.Second})
		})
		select {
		case r := <-ch:
			t.Fatalf("blocking list returned before any event: %+v %v", r.meta, r.err)
		case <-time.After(300 * time.Millisecond):
		}
		id := fire(t, c2, &api.UserEvent{Name: "wake"})
		r := recvBlock(t, ch, 10*time.Second)
		if n := len(r.val); n == 0 || r.val[n-1].ID != id {
			t.Fatalf("woke with %d events, last %+v; want the new event %s last", n, r.val[n-1], id)
		}
		if want := c1.api.Event().IDToIndex(id); r.meta.LastIndex != want {
			t.Errorf("index after wake = %d, want %d", r.meta.LastIndex, want)
		}
		// With the current index and a short wait it times out unchanged.
		r = recvBlock(t, goBlock(func() ([]*api.UserEvent, *api.QueryMeta, error) {
			return c1.api.Event().List("", &api.QueryOptions{WaitIndex: r.meta.LastIndex, WaitTime: 200 * time.Millisecond})
		}), 5*time.Second)
		if r.elapsed < 200*time.Millisecond || r.meta.LastIndex != c1.api.Event().IDToIndex(id) {
			t.Errorf("timed-out list after %v with index %d", r.elapsed, r.meta.LastIndex)
		}
	})

	t.Run("limits and bad requests", func(t *testing.T) {
		name := "big"
		r := httpString(t, c1.agent, http.MethodPut, "/v1/event/fire/"+name, strings.Repeat("x", 512-len(name)+1))
		if r.code != http.StatusRequestEntityTooLarge {
			t.Errorf("payload over the limit: %d %s, want 413", r.code, r.body)
		}
		r = httpString(t, c1.agent, http.MethodPut, "/v1/event/fire/"+name, strings.Repeat("x", 512-len(name)))
		if r.code != http.StatusOK {
			t.Errorf("payload at the limit: %d %s, want 200", r.code, r.body)
		}
		_, _, err := c1.api.Event().Fire(&api.UserEvent{Name: "big2", Payload: make([]byte, 4096)}, nil)
		var se api.StatusError
		if !asStatusError(err, &se) || se.Code != http.StatusRequestEntityTooLarge {
			t.Errorf("client fire of 4 KiB: %v, want a 413", err)
		}
		for path, want := range map[string]int{
			"/v1/event/fire/x?tag=v1":       http.StatusBadRequest, // tag without service
			"/v1/event/fire/x?node=(":       http.StatusBadRequest,
			"/v1/event/fire/_internal":      http.StatusBadRequest,
			"/v1/event/fire/x?dc=elsewhere": http.StatusInternalServerError,
		} {
			if r := httpString(t, c1.agent, http.MethodPut, path, ""); r.code != want {
				t.Errorf("PUT %s: %d %s, want %d", path, r.code, r.body, want)
			}
		}
		if r := httpString(t, c1.agent, http.MethodGet, "/v1/event/fire/x", ""); r.code != http.StatusMethodNotAllowed {
			t.Errorf("GET fire: %d, want 405", r.code)
		}
		if r := httpString(t, c1.agent, http.MethodGet, "/v1/event/list?index=abc", ""); r.code != http.StatusBadRequest {
			t.Errorf("list with a bad index: %d, want 400", r.code)
		}
		if r := httpString(t, c1.agent, http.MethodGet, "/v1/event/list", ""); r.code != http.StatusOK ||
			r.header.Get("X-Consul-Index") == "" || !strings.HasPrefix(r.body, "[") {
			t.Errorf("list: %d %q index %q", r.code, r.body, r.header.Get("X-Consul-Index"))
		} else if _, err := strconv.ParseUint(r.header.Get("X-Consul-Index"), 10, 64); err != nil {
			t.Errorf("X-Consul-Index %q: %v", r.header.Get("X-Consul-Index"), err)
		}
	})
}

// TestEventBufferKeepsLast256 fires more events than an agent keeps and
// checks that it lists the newest 256, oldest first.
func TestEventBufferKeepsLast256(t *testing.T) {
	_, c := startAPI(t)
	var ids []string
	for i := 0; i < 300; i++ {
		id, _, err := c.Event().Fire(&api.UserEvent{Name: "many", Payload: []byte(strconv.Itoa(i))}, nil)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	wait.For(t, 10*time.Second, func() error {
		evs, _, err := c.Event().List("", nil)
		if err != nil {
			return err
		}
		if len(evs) != 256 || evs[255].ID != ids[299] {
			return fmt.Errorf("%d events listed", len(evs))
		}
		for i, e := range evs {
			if e.ID != ids[44+i] {
				return fmt.Errorf("event %d is %s (payload %s), want %s", i, e.ID, e.Payload, ids[44+i])
			}
		}
		return nil
	})
}
