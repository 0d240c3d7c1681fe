package agent_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/agent/agenttest"
	"github.com/tribune-mesh/tribune/test/wait"
)

// TestAPICachedReadsCacheControl: a client agent's ?cached reads follow
// Consul's Cache-Control rules. While the view's blocking queries succeed
// its result has Age 0; once the servers are gone it ages, a read whose
// max-age it exceeds goes to the servers and fails,
// unless stale-if-error lets the aged result through, marked by its Age.
// ?cached with ?consistent is refused.
func TestAPICachedReadsCacheControl(t *testing.T) {
	t.Parallel()
	sc := agenttest.ClusterConfig(t, "s1", true, 1, "")
	srv := agenttest.StartNoWait(t, sc)
	cc := agenttest.ClusterConfig(t, "c1", false, 0, agenttest.SerfAddr(sc))
	cc.RPCHoldTimeout = 300 * time.Millisecond
	cl := agenttest.StartNoWait(t, cc)
	c := apiClient(t, cl)

	cached := &api.QueryOptions{UseCache: true}
	// Until the leader registered itself, "consul" has no instance.
	wait.For(t, 30*time.Second, func() error {
		svcs, _, err := c.Catalog().Service("consul", "", cached)
		if err == nil && len(svcs) != 1 {
			err = fmt.Errorf("%d instances of consul", len(svcs))
		}
		return err
	})
	svcs, meta, err := c.Catalog().Service("consul", "", cached)
	if err != nil || len(svcs) != 1 || !meta.CacheHit || meta.CacheAge != 0 {
		t.Fatalf("cached read: %d %+v %v", len(svcs), meta, err)
	}
	resp, err := http.Get("http://" + cl.HTTPAddr() + "/v1/catalog/service/consul?cached&consistent")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("?cached&consistent: status %d, want 400", resp.StatusCode)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("stop the server: %v", err)
	}
	revalidate := &api.QueryOptions{UseCache: true, MaxAge: time.Second}
	wait.For(t, 30*time.Second, func() error {
		_, _, err := c.Catalog().Service("consul", "", revalidate)
		if err == nil {
			return errors.New("the result is not older than max-age yet")
		}
		return nil
	})
	staleOK := &api.QueryOptions{UseCache: true, MaxAge: time.Second, StaleIfError: time.Hour}
	wait.For(t, 30*time.Second, func() error {
		svcs, meta, err := c.Catalog().Service("consul", "", staleOK)
		if err != nil {
			return err
		}
		if len(svcs) != 1 || !meta.CacheHit || meta.CacheAge < 2*time.Second {
			return fmt.Errorf("stale-if-error read: %d instances, hit %v, age %v", len(svcs), meta.CacheHit, meta.CacheAge)
		}
		return nil
	})
}
