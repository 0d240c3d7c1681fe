package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/agent/leafcert"
	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/server"
)

// ConnectCA is how the API changes the CA and has leaves signed: the local
// server or the RPC client to the servers.
type ConnectCA interface {
	// CASetConfig changes the CA configuration (rotating the root on a
	// new key type or size).
	CASetConfig(ctx context.Context, req *server.CASetConfigRequest) error
	// SignLeaf signs a service's CSR.
	SignLeaf(ctx context.Context, req *server.SignLeafRequest) (*server.SignLeafResponse, error)
}

// LeafCerts is the agent's cache of leaf certificates (agent/leafcert).
type LeafCerts interface {
	// Get returns the service's leaf, blocking while its ModifyIndex is
	// not past minIndex (when > 0) up to wait.
	Get(ctx context.Context, service string, minIndex uint64, wait time.Duration) (*leafcert.Leaf, error)
}

// registerConnectRoutes lists the Connect endpoints.
func (h *Handler) registerConnectRoutes() {
	h.handle("/v1/connect/ca/roots", methodsGet, h.connectCARoots)
	h.handle("/v1/agent/connect/ca/roots", methodsGet, h.connectCARoots)
	h.handle("/v1/connect/ca/configuration", methodsGetPut, h.connectCAConfig)
	h.handle("/v1/agent/connect/ca/leaf/", methodsGet, h.agentConnectLeaf)
	h.registerConfigRoutes()
}

var errConnectDisabled = &httpError{code: http.StatusInternalServerError, msg: server.ErrConnectDisabled.Error()}

// caRootJSON is a root as Consul's API shows it: never the private key.
type caRootJSON struct {
	ID                  string
	Name                string
	SerialNumber        uint64
	SigningKeyID        string
	ExternalTrustDomain string
	NotBefore           time.Time
	NotAfter            time.Time
	RootCert            string
	IntermediateCerts   []string
	Active              bool
	PrivateKeyType      string
	PrivateKeyBits      int
	CreateIndex         uint64
	ModifyIndex         uint64
}

// caRootListJSON is Consul's CARootList.
type caRootListJSON struct {
	ActiveRootID string
	TrustDomain  string
	Roots        []caRootJSON
}

func (h *Handler) connectCARoots(w http.ResponseWriter, r *http.Request) (any, error) {
	if !h.agent.cfg.Connect.Enabled {
		return nil, errConnectDisabled
	}
	resp, err := h.read(w, r, &catalog.ReadRequest{Op: catalog.ReadCARoots})
	if err != nil {
		return nil, err
	}
	out := caRootListJSON{Roots: []caRootJSON{}}
	clusterID := ""
	if resp.CAConfig != nil && resp.CAConfig.ClusterID != "" {
		clusterID = resp.CAConfig.ClusterID
		out.TrustDomain = clusterID + ".consul"
	}
	for _, root := range resp.CARoots {
		if root.Active {
			out.ActiveRootID = root.ID
		}
		inter := root.IntermediateCerts
		if inter == nil {
			inter = []string{}
		}
		out.Roots = append(out.Roots, caRootJSON{
			ID: root.ID, Name: root.Name, SerialNumber: root.SerialNumber, SigningKeyID: root.SigningKeyID,
			ExternalTrustDomain: clusterID, NotBefore: root.NotBefore, NotAfter: root.NotAfter,
			RootCert: root.RootCert, IntermediateCerts: inter, Active: root.Active,
			PrivateKeyType: root.PrivateKeyType, PrivateKeyBits: root.PrivateKeyBits,
			CreateIndex: root.CreateIndex, ModifyIndex: root.ModifyIndex,
		})
	}
	return out, nil
}

// caConfigJSON is Consul's CAConfiguration.
type caConfigJSON struct {
	ClusterID                string         `json:",omitempty"`
	Provider                 string         `json:",omitempty"`
	Config                   map[string]any `json:",omitempty"`
	State                    map[string]string
	ForceWithoutCrossSigning bool
	CreateIndex              uint64
	ModifyIndex              uint64
}

func (h *Handler) connectCAConfig(w http.ResponseWriter, r *http.Request) (any, error) {
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	if r.Method == http.MethodGet {
		if authz.OperatorRead() != acl.Allow {
			return nil, errPermissionDenied
		}
		resp, err := h.read(w, r, &catalog.ReadRequest{Op: catalog.ReadCAConfig})
		if err != nil {
			return nil, err
		}
		c := resp.CAConfig
		if c == nil || c.Provider == "" {
			return nil, errConnectDisabled
		}
		return caConfigJSON{
			ClusterID: c.ClusterID, Provider: c.Provider,
			Config: map[string]any{
				"LeafCertTTL": c.LeafCertTTL.String(), "RootCertTTL": c.RootCertTTL.String(),
				"IntermediateCertTTL": c.IntermediateCertTTL.String(),
				"PrivateKeyType":      c.PrivateKeyType, "PrivateKeyBits": c.PrivateKeyBits,
				"RotationPeriod": "2160h0m0s",
			},
			State:       c.State,
			CreateIndex: c.CreateIndex, ModifyIndex: c.ModifyIndex,
		}, nil
	}
	if authz.OperatorWrite() != acl.Allow {
		return nil, errPermissionDenied
	}
	var in caConfigJSON
	if err := decodeBody(r, &in); err != nil {
		return nil, err
	}
	req := &server.CASetConfigRequest{ForceWithoutCrossSigning: in.ForceWithoutCrossSigning}
	req.Config.Provider = in.Provider
	if err := parseCAProviderConfig(in.Config, &req.Config); err != nil {
		return nil, badRequest("Invalid CA configuration: %v", err)
	}
	if req.RootCert, req.PrivateKey, err = providedCAKeys(in.Config); err != nil {
		return nil, badRequest("Invalid CA configuration: %v", err)
	}
	if h.agent.ca == nil {
		return nil, errConnectDisabled
	}
	if err := h.agent.ca.CASetConfig(r.Context(), req); err != nil {
		if errors.Is(err, server.ErrConnectDisabled) {
			return nil, errConnectDisabled
		}
		return nil, err
	}
	return true, nil
}

// providedCAKeys returns the RootCert and PrivateKey settings of the
// built-in provider (an operator's own CA), in either case style.
func providedCAKeys(m map[string]any) (rootCert, privateKey string, err error) {
	for k, v := range m {
		var dst *string
		switch strings.ToLower(strings.ReplaceAll(k, "_", "")) {
		case "rootcert":
			dst = &rootCert
		case "privatekey":
			dst = &privateKey
		default:
			continue
		}
		s, ok := v.(string)
		if !ok {
			return "", "", fmt.Errorf("%s: not a string", k)
		}
		*dst = s
	}
	return rootCert, privateKey, nil
}

// parseCAProviderConfig reads the keys of the built-in provider's
// configuration, in Consul's CamelCase or snake_case, durations as strings
// ("72h") or nanoseconds. Other keys are accepted and ignored, as Consul's
// provider ignores keys it does not use.
func parseCAProviderConfig(m map[string]any, out *catalog.CAConfiguration) error {
	for k, v := range m {
		key := strings.ToLower(strings.ReplaceAll(k, "_", ""))
		var err error
		switch key {
		case "leafcertttl":
			out.LeafCertTTL, err = anyDuration(v)
		case "rootcertttl":
			out.RootCertTTL, err = anyDuration(v)
		case "intermediatecertttl":
			out.IntermediateCertTTL, err = anyDuration(v)
		case "teststate":
			// Consul's provider keeps this key as its state, for tests
			// of the state round trip.
			m, ok := v.(map[string]any)
			if !ok || len(m) > 64 {
				err = errors.New("not an object of at most 64 strings")
				break
			}
			out.State = map[string]string{}
			for sk, sv := range m {
				out.State[sk] = fmt.Sprint(sv)
			}
		case "privatekeytype":
			s, ok := v.(string)
			if !ok {
				err = errors.New("not a string")
			}
			out.PrivateKeyType = s
		case "privatekeybits":
			var n int64
			switch x := v.(type) {
			case float64:
				n = int64(x)
			case string:
				n, err = strconv.ParseInt(x, 10, 32)
			default:
				err = errors.New("not a number")
			}
			out.PrivateKeyBits = int(n)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
	}
	return nil
}

// anyDuration reads a duration given as a Go duration string or a number
// of nanoseconds.
func anyDuration(v any) (time.Duration, error) {
	switch x := v.(type) {
	case string:
		if x == "" {
			return 0, nil
		}
		return time.ParseDuration(x)
	case float64:
		return time.Duration(x), nil
	}
	return 0, fmt.Errorf("not a duration: %v", v)
}

func (h *Handler) agentConnectLeaf(w http.ResponseWriter, r *http.Request) (any, error) {
	service := strings.TrimPrefix(r.URL.Path, "/v1/agent/connect/ca/leaf/")
	if service == "" || strings.Contains(service, "/") || len(service) > 256 {
		return nil, badRequest("Invalid service name %q", service)
	}
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	if authz.ServiceWrite(service) != acl.Allow {
		return nil, errPermissionDenied
	}
	opts, err := h.parseQueryOptions(r)
	if err != nil {
		return nil, err
	}
	if h.agent.leaves == nil {
		return nil, errConnectDisabled
	}
	wait := opts.MaxQueryTime
	if wait <= 0 {
		wait = server.DefaultQueryTime
	}
	leaf, err := h.agent.leaves.Get(r.Context(), service, opts.MinQueryIndex, min(wait, server.MaxQueryTime))
	if err != nil {
		if errors.Is(err, server.ErrConnectDisabled) {
			return nil, errConnectDisabled
		}
		return nil, err
	}
	setMeta(w, catalog.QueryMeta{Index: leaf.ModifyIndex, KnownLeader: true})
	return leaf, nil
}
