package agent_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/agent"
	"github.com/tribune-mesh/tribune/agent/agenttest"
	"github.com/tribune-mesh/tribune/test/wait"
)

// startAPI starts a real agent and returns it with an official Consul
// client pointed at its HTTP API.
func startAPI(t *testing.T) (*agent.Agent, *api.Client) {
	t.Helper()
	a := agenttest.Start(t, nil)
	c, err := api.NewClient(&api.Config{Address: a.HTTPAddr()})
	if err != nil {
		t.Fatalf("api client: %v", err)
	}
	// The leader registers the agent's own node with its serfHealth check
	// asynchronously; wait for it so that it cannot land in the middle of
	// a test (it would wake blocking queries on the node's services).
	self := selfNode(t, c)
	wait.For(t, 10*time.Second, func() error {
		checks, _, err := c.Health().Node(self, nil)
		if err != nil {
			return err
		}
		for _, ch := range checks {
			if ch.CheckID == "serfHealth" && ch.Status == api.HealthPassing {
				return nil
			}
		}
		return fmt.Errorf("node %s has no passing serfHealth yet: %+v", self, checks)
	})
	return a, c
}

// httpResult is a raw HTTP response with its body read.
type httpResult struct {
	code   int
	header http.Header
	body   string
}

// doHTTP sends a plain request (no Consul client) to the agent.
func doHTTP(t *testing.T, a *agent.Agent, method, path string, body io.Reader) httpResult {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+a.HTTPAddr()+path, body)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body of %s %s: %v", method, path, err)
	}
	return httpResult{code: resp.StatusCode, header: resp.Header, body: string(b)}
}

func httpString(t *testing.T, a *agent.Agent, method, path, body string) httpResult {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	return doHTTP(t, a, method, path, r)
}

// blockResult is what a blocking call running in a goroutine reports.
type blockResult[T any] struct {
	val     T
	meta    *api.QueryMeta
	err     error
	elapsed time.Duration
}

// goBlock runs fn in a goroutine and delivers its result on the channel.
func goBlock[T any](fn func() (T, *api.QueryMeta, error)) <-chan blockResult[T] {
	ch := make(chan blockResult[T], 1)
	start := time.Now()
	go func() {
		v, m, err := fn()
		ch <- blockResult[T]{val: v, meta: m, err: err, elapsed: time.Since(start)}
	}()
	return ch
}

// recvBlock waits for a blocking call's result with a deadline.
func recvBlock[T any](t *testing.T, ch <-chan blockResult[T], timeout time.Duration) blockResult[T] {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("blocking call: %v", r.err)
		}
		return r
	case <-time.After(timeout):
		t.Fatalf("blocking call did not return within %v", timeout)
	}
	panic("unreachable")
}
