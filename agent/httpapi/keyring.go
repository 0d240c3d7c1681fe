package httpapi

import (
	"errors"
	"net/http"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/gossip"
)

// keyringResponse is one pool's keyring as /v1/operator/keyring lists it.
type keyringResponse struct {
	WAN         bool
	Datacenter  string
	Segment     string
	Partition   string `json:",omitempty"`
	Keys        map[string]int
	PrimaryKeys map[string]int
	NumNodes    int
	Messages    map[string]string
}

// keyring serves /v1/operator/keyring: GET lists, POST installs, PUT makes
// primary, DELETE removes a gossip key across the LAN pool and, on a
// server, the WAN pool.
func (h *Handler) keyring(w http.ResponseWriter, r *http.Request) (any, error) {
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	pool := h.agent.gossip
	if r.Method == http.MethodGet {
		if authz.OperatorRead() != acl.Allow {
			return nil, errPermissionDenied
		}
		if pool == nil {
			return nil, badRequest("gossip is disabled on this agent")
		}
		var out []keyringResponse
		// The WAN pool first, as Consul lists it.
		for _, p := range []struct {
			pool *gossip.Pool
			wan  bool
		}{{h.agent.wan, true}, {pool, false}} {
			if p.pool == nil {
				continue
			}
			st, err := p.pool.KeyringList()
			if err != nil {
				return nil, keyringErr(err)
			}
			out = append(out, keyringResponse{WAN: p.wan, Datacenter: h.agent.cfg.Datacenter, Keys: st.Keys, PrimaryKeys: st.PrimaryKeys,
				NumNodes: st.NumNodes, Messages: map[string]string{}})
		}
		return out, nil
	}
	if authz.OperatorWrite() != acl.Allow {
		return nil, errPermissionDenied
	}
	var body struct{ Key string }
	if err := decodeBody(r, &body); err != nil {
		return nil, err
	}
	if body.Key == "" {
		return nil, badRequest("Missing Key")
	}
	if pool == nil {
		return nil, badRequest("gossip is disabled on this agent")
	}
	op := map[string]string{http.MethodPost: gossip.KeyInstall, http.MethodPut: gossip.KeyUse, http.MethodDelete: gossip.KeyRemove}[r.Method]
	// The WAN pool first, as Consul does: a key is installed everywhere
	// before any pool uses it.
	if h.agent.wan != nil {
		if err := h.agent.wan.KeyringOp(op, body.Key); err != nil {
			return nil, keyringErr(err)
		}
	}
	if err := pool.KeyringOp(op, body.Key); err != nil {
		return nil, keyringErr(err)
	}
	return nil, nil
}

func keyringErr(err error) error {
	if errors.Is(err, gossip.ErrNoKeyring) {
		return badRequest("%v", err)
	}
	return &httpError{code: http.StatusInternalServerError, msg: err.Error()}
}
