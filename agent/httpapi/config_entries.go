package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/connect"
)

// Config entry kinds this API checks itself; the others are checked by
// catalog.NormalizeConfigEntry.
const (
	kindServiceDefaults   = catalog.KindServiceDefaults
	kindProxyDefaults     = catalog.KindProxyDefaults
	kindServiceIntentions = catalog.KindServiceIntentions
	kindMesh              = catalog.KindMesh
)

// maxIntentionSources bounds the sources of one service-intentions entry.
const maxIntentionSources = 1024

func (h *Handler) registerConfigRoutes() {
	h.handle("/v1/config", methodsPut, h.configApply)
	h.handle("/v1/config/", []string{http.MethodGet, http.MethodDelete}, h.configEntry)
	h.registerIntentionRoutes()
	h.registerDiscoveryChainRoutes()
	h.registerVirtualIPRoutes()
}

// entryFields are the fields of an entry that are not its body.
var entryFields = []string{"Kind", "Name", "CreateIndex", "ModifyIndex", "Namespace", "Partition"}

// intentionSource is one source of a service-intentions entry, as
// validated.
type intentionSource struct {
	Name             string
	Action           string            `json:",omitempty"`
	Permissions      []any             `json:",omitempty"`
	Precedence       int               `json:",omitempty"`
	Type             string            `json:",omitempty"`
	Description      string            `json:",omitempty"`
	LegacyID         string            `json:",omitempty"`
	LegacyMeta       map[string]string `json:",omitempty"`
	LegacyCreateTime *time.Time        `json:",omitempty"`
	LegacyUpdateTime *time.Time        `json:",omitempty"`
}

// validateEntry checks an entry's body for its kind and returns the body
// to store.
func validateEntry(kind, name string, body []byte) ([]byte, error) {
	if name == "" {
		return nil, errors.New("config entry missing Name")
	}
	if len(name) > 256 {
		return nil, errors.New("config entry Name longer than 256 bytes")
	}
	switch kind {
	case kindProxyDefaults, kindMesh, kindServiceDefaults, kindServiceIntentions:
		return body, validateOwnEntry(kind, name, body)
	}
	return catalog.NormalizeConfigEntry(kind, name, body)
}

// defaultsFields are the fields proxy-defaults and service-defaults share
// that are checked here.
type defaultsFields struct {
	Mode             string
	TransparentProxy *catalog.TransparentProxyConfig
	MeshGateway      struct{ Mode string }
	Meta             map[string]string
}

// validateOwnEntry checks the kinds whose rules live here.
func validateOwnEntry(kind, name string, body []byte) error {
	switch kind {
	case kindProxyDefaults:
		if name != "global" {
			return fmt.Errorf("invalid name (%q), only %q is supported", name, "global")
		}
		var v struct {
			Config map[string]any
			defaultsFields
		}
		if err := json.Unmarshal(body, &v); err != nil {
			return err
		}
		return catalog.ValidateProxyMode(v.Mode, v.TransparentProxy)
	case kindMesh:
		if name != "mesh" {
			return fmt.Errorf("invalid name (%q), only %q is supported", name, "mesh")
		}
		var v struct {
			TransparentProxy struct{ MeshDestinationsOnly bool }
			Meta             map[string]string
		}
		return json.Unmarshal(body, &v)
	case kindServiceDefaults:
		var v struct {
			Protocol string
			defaultsFields
		}
		if err := json.Unmarshal(body, &v); err != nil {
			return err
		}
		return catalog.ValidateProxyMode(v.Mode, v.TransparentProxy)
	case kindServiceIntentions:
		var v struct {
			Sources []*intentionSource
			Meta    map[string]string
		}
		if err := json.Unmarshal(body, &v); err != nil {
			return err
		}
		if strings.Contains(name, "*") && name != catalog.IntentionWildcard {
			return errors.New("Name: a wildcard must be the whole name")
		}
		if len(v.Sources) > maxIntentionSources {
			return fmt.Errorf("%d sources, max %d", len(v.Sources), maxIntentionSources)
		}
		seen := map[string]bool{}
		for i, src := range v.Sources {
			if src == nil {
				return fmt.Errorf("Sources[%d] is null", i)
			}
			if seen[src.Name] {
				return fmt.Errorf("Sources[%d].Name %q listed more than once", i, src.Name)
			}
			seen[src.Name] = true
			ixn := src.intention(name)
			if err := connect.ValidateIntention(ixn); err != nil {
				return fmt.Errorf("Sources[%d]: %w", i, err)
			}
		}
		return nil
	}
	return fmt.Errorf("invalid config entry kind: %s", kind)
}

func (s *intentionSource) intention(destination string) *catalog.Intention {
	return &catalog.Intention{SourceName: s.Name, DestinationName: destination, SourceType: catalog.IntentionSourceConsul,
		Action: s.Action, Permissions: s.Permissions, Description: s.Description, Meta: s.LegacyMeta,
		Precedence: connect.Precedence(s.Name, destination)}
}

// splitEntry parses a PUT /v1/config body into kind, name and the body to
// store.
func splitEntry(raw []byte) (kind, name string, body []byte, err error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return "", "", nil, badRequest("Request decode failed: %v", err)
	}
	str := func(k string) (string, error) {
		for key, v := range m {
			if strings.EqualFold(key, k) {
				var s string
				if err := json.Unmarshal(v, &s); err != nil {
					return "", badRequest("Request decode failed: %s is not a string", k)
				}
				return s, nil
			}
		}
		return "", nil
	}
	if kind, err = str("Kind"); err != nil {
		return "", "", nil, err
	}
	if name, err = str("Name"); err != nil {
		return "", "", nil, err
	}
	for key := range m {
		for _, f := range entryFields {
			if strings.EqualFold(key, f) {
				delete(m, key)
			}
		}
	}
	body, err = json.Marshal(m)
	if err != nil {
		return "", "", nil, fmt.Errorf("encode config entry: %w", err)
	}
	return strings.ToLower(kind), name, body, nil
}

// entryJSON renders a stored entry as Consul shows it.
func entryJSON(e *catalog.ConfigEntry) (json.RawMessage, error) {
	m := map[string]json.RawMessage{}
	if len(e.Body) > 0 {
		if err := json.Unmarshal(e.Body, &m); err != nil {
			return nil, fmt.Errorf("decode stored config entry %s/%s: %w", e.Kind, e.Name, err)
		}
	}
	put := func(k string, v any) {
		b, _ := json.Marshal(v)
		m[k] = b
	}
	put("Kind", e.Kind)
	put("Name", e.Name)
	put("CreateIndex", e.CreateIndex)
	put("ModifyIndex", e.ModifyIndex)
	return json.Marshal(m)
}

// authorizeEntry checks the right to read or write an entry: the service
// for the kinds named after a service (defaults, intentions, the discovery
// chain, gateways read), operator for the global kinds (and for reading
// certificates, JWT providers, exports and routes).
func authorizeEntry(authz acl.Authorizer, kind, name string, write bool) bool {
	switch kind {
	case catalog.KindIngressGateway, catalog.KindTerminatingGateway, catalog.KindAPIGateway, catalog.KindBoundAPIGateway:
		if write {
			return authz.OperatorWrite() == acl.Allow
		}
		return authz.ServiceRead(name) == acl.Allow
	case kindServiceDefaults, kindServiceIntentions, catalog.KindServiceResolver, catalog.KindServiceSplitter, catalog.KindServiceRouter:
		if write {
			return authz.ServiceWrite(name) == acl.Allow
		}
		return authz.ServiceRead(name) == acl.Allow
	case catalog.KindInlineCertificate, catalog.KindJWTProvider, catalog.KindExportedServices,
		catalog.KindHTTPRoute, catalog.KindTCPRoute:
		// Private keys and the mesh's shape: reading needs operator:read
		// (Consul's mesh:read).
		if write {
			return authz.OperatorWrite() == acl.Allow
		}
		return authz.OperatorRead() == acl.Allow
	}
	if write {
		return authz.OperatorWrite() == acl.Allow
	}
	return true
}

func knownKind(kind string) bool {
	return catalog.KnownConfigKind(kind)
}

func (h *Handler) configApply(w http.ResponseWriter, r *http.Request) (any, error) {
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	var raw json.RawMessage
	if err := decodeBody(r, &raw); err != nil {
		return nil, err
	}
	kind, name, body, err := splitEntry(raw)
	if err != nil {
		return nil, err
	}
	if !knownKind(kind) {
		return nil, badRequest("invalid config entry kind: %q", kind)
	}
	switch {
	case kind == kindMesh && name == "":
		// The mesh entry has one name, which clients leave out.
		name = "mesh"
	case kind == catalog.KindExportedServices && name == "":
		name = "default"
	}
	if body, err = catalog.TranslateEntryKeys(body); err != nil {
		return nil, badRequest("Request decode failed: %v", err)
	}
	if body, err = validateEntry(kind, name, body); err != nil {
		return nil, badRequest("Invalid config entry: %v", err)
	}
	if !authorizeEntry(authz, kind, name, true) {
		return nil, errPermissionDenied
	}
	req := &catalog.ConfigEntryRequest{Op: catalog.ConfigEntryUpsert, Entry: catalog.ConfigEntry{Kind: kind, Name: name, Body: body}}
	if err := h.checkGraph(r.Context(), &req.Entry, false); err != nil {
		return nil, err
	}
	if v := queryOf(r).Get("cas"); v != "" {
		idx, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return nil, badRequest("Invalid cas index: %q", v)
		}
		req.Op, req.Entry.ModifyIndex = catalog.ConfigEntryUpsertCAS, idx
	}
	return h.applyEntry(r.Context(), req)
}

func (h *Handler) applyEntry(ctx context.Context, req *catalog.ConfigEntryRequest) (bool, error) {
	res, err := h.apply(ctx, catalog.CmdConfigEntry, req)
	if err != nil {
		return false, err
	}
	kr, _ := res.(catalog.KVResult)
	if kr.Err != nil {
		return false, kr.Err
	}
	return kr.OK, nil
}

func (h *Handler) configEntry(w http.ResponseWriter, r *http.Request) (any, error) {
	rest := strings.TrimPrefix(r.URL.Path, "/v1/config/")
	kind, name, _ := strings.Cut(rest, "/")
	kind = strings.ToLower(kind)
	if !knownKind(kind) {
		return nil, badRequest("invalid config entry kind: %q", kind)
	}
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	if r.Method == http.MethodDelete {
		if name == "" {
			return nil, badRequest("Missing config entry name")
		}
		if !authorizeEntry(authz, kind, name, true) {
			return nil, errPermissionDenied
		}
		req := &catalog.ConfigEntryRequest{Op: catalog.ConfigEntryDelete, Entry: catalog.ConfigEntry{Kind: kind, Name: name}}
		if err := h.checkGraph(r.Context(), &req.Entry, true); err != nil {
			return nil, err
		}
		if v := queryOf(r).Get("cas"); v != "" {
			idx, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return nil, badRequest("Invalid cas index: %q", v)
			}
			req.Op, req.Entry.ModifyIndex = catalog.ConfigEntryDeleteCAS, idx
			return h.applyEntry(r.Context(), req)
		}
		if _, err := h.applyEntry(r.Context(), req); err != nil {
			return nil, err
		}
		return map[string]any{}, nil
	}
	if name == "" {
		resp, err := h.read(w, r, &catalog.ReadRequest{Op: catalog.ReadConfigEntries, Key: kind})
		if err != nil {
			return nil, err
		}
		out := []json.RawMessage{}
		visible := aclKeep(w, r, resp.ConfigEntries, func(e *catalog.ConfigEntry) bool { return authorizeEntry(authz, e.Kind, e.Name, false) })
		for _, e := range visible {
			j, err := entryJSON(e)
			if err != nil {
				return nil, err
			}
			out = append(out, j)
		}
		return out, nil
	}
	if !authorizeEntry(authz, kind, name, false) {
		return nil, errPermissionDenied
	}
	resp, err := h.read(w, r, &catalog.ReadRequest{Op: catalog.ReadConfigEntry, Key: kind, Name: name})
	if err != nil {
		return nil, err
	}
	if len(resp.ConfigEntries) == 0 {
		return nil, notFound("Config entry not found for %q / %q", kind, name)
	}
	return entryJSON(resp.ConfigEntries[0])
}
