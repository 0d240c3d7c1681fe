package httpapi

import (
	"errors"
	"net/http"
	"strings"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/discoverychain"
)

func (h *Handler) registerDiscoveryChainRoutes() {
	h.handle("/v1/discovery-chain/", []string{http.MethodGet, http.MethodPost}, h.discoveryChain)
}

// discoveryChainOptions is the body of POST /v1/discovery-chain/<service>
// (Consul's DiscoveryChainOptions).
type discoveryChainOptions struct {
	OverrideMeshGateway    struct{ Mode string }
	OverrideProtocol       string
	OverrideConnectTimeout catalog.Duration
}

// discoveryChain serves GET|POST /v1/discovery-chain/<service>: the
// compiled chain of a service, blocking on the config entries.
func (h *Handler) discoveryChain(w http.ResponseWriter, r *http.Request) (any, error) {
	service := strings.TrimPrefix(r.URL.Path, "/v1/discovery-chain/")
	if service == "" || strings.Contains(service, "/") {
		return nil, badRequest("Missing chain name")
	}
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	if authz.ServiceRead(service) != acl.Allow {
		return nil, errPermissionDenied
	}
	req := discoverychain.Request{Service: service, Datacenter: queryOf(r).Get("compile-dc")}
	if req.Datacenter == "" {
		req.Datacenter = h.agent.cfg.Datacenter
	}
	if r.Method == http.MethodPost {
		var opts discoveryChainOptions
		if err := decodeBody(r, &opts); err != nil {
			return nil, err
		}
		if opts.OverrideConnectTimeout < 0 {
			return nil, badRequest("OverrideConnectTimeout cannot be negative")
		}
		switch opts.OverrideMeshGateway.Mode {
		case "", "none", "local", "remote":
		default:
			return nil, badRequest("OverrideMeshGateway.Mode %q is not one of none, local, remote", opts.OverrideMeshGateway.Mode)
		}
		req.OverrideProtocol = opts.OverrideProtocol
		req.OverrideConnectTimeout = opts.OverrideConnectTimeout.Std()
		req.OverrideMeshGateway = opts.OverrideMeshGateway.Mode
	}
	roots, err := h.agent.backend.Read(r.Context(), &catalog.ReadRequest{Op: catalog.ReadCARoots})
	if err != nil {
		return nil, err
	}
	if roots.CAConfig != nil && roots.CAConfig.ClusterID != "" {
		req.TrustDomain = roots.CAConfig.ClusterID + ".consul"
	}
	resp, err := h.read(w, r, &catalog.ReadRequest{Op: catalog.ReadConfigEntries})
	if err != nil {
		return nil, err
	}
	entries, err := discoverychain.FromConfigEntries(resp.ConfigEntries)
	if err != nil {
		return nil, err
	}
	chain, err := discoverychain.CompileRequest(entries, req)
	if errors.Is(err, discoverychain.ErrInvalidChain) {
		return nil, badRequest("%v", err)
	}
	if err != nil {
		return nil, err
	}
	vip, err := h.agent.backend.Read(r.Context(), &catalog.ReadRequest{Op: catalog.ReadServiceVirtualIP, Name: service})
	if err != nil {
		return nil, err
	}
	if v := vip.VirtualIP; v != nil {
		chain.AutoVirtualIPs, chain.ManualVirtualIPs = []string{v.IP()}, v.ManualIPs
	}
	return map[string]any{"Chain": chain}, nil
}
