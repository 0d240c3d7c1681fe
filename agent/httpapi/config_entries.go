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

// Config entry kinds this API accepts.
const (
	kindServiceDefaults   = "service-defaults"
	kindProxyDefaults     = "proxy-defaults"
	kindServiceIntentions = "service-intentions"
	kindMesh              = "mesh"
)

// maxIntentionSources bounds the sources of one service-intentions entry.
const maxIntentionSources = 1024

func (h *Handler) registerConfigRoutes() {
	h.handle("/v1/config", methodsPut, h.configApply)
	h.handle("/v1/config/", []string{http.MethodGet, http.MethodDelete}, h.configEntry)
	h.handle("/v1/connect/intentions/exact", methodsGetPutDel, h.intentionExact)
	h.handle("/v1/connect/intentions/check", methodsGet, h.intentionCheck)
	h.handle("/v1/agent/connect/authorize", []string{http.MethodPost}, h.agentConnectAuthorize)
}

// entryFields are the fields of an entry that are not its body.
var entryFields = []string{"Kind", "Name", "CreateIndex", "ModifyIndex", "Namespace", "Partition"}

// intentionSource is one source of a service-intentions entry, as
// validated.
type intentionSource struct {
	Name        string
	Action      string            `json:",omitempty"`
	Permissions []any             `json:",omitempty"`
	Precedence  int               `json:",omitempty"`
	Type        string            `json:",omitempty"`
	Description string            `json:",omitempty"`
	LegacyMeta  map[string]string `json:",omitempty"`
}

// validateEntry checks an entry's body for its kind.
func validateEntry(kind, name string, body []byte) error {
	if name == "" {
		return errors.New("config entry missing Name")
	}
	if len(name) > 256 {
		return errors.New("config entry Name longer than 256 bytes")
	}
	switch kind {
	case kindProxyDefaults:
		if name != "global" {
			return fmt.Errorf("invalid name (%q), only %q is supported", name, "global")
		}
		var v struct {
			Config      map[string]any
			Mode        string
			MeshGateway struct{ Mode string }
			Meta        map[string]string
		}
		return json.Unmarshal(body, &v)
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
			Protocol    string
			Mode        string
			MeshGateway struct{ Mode string }
			Meta        map[string]string
		}
		if err := json.Unmarshal(body, &v); err != nil {
			return err
		}
		switch strings.ToLower(v.Protocol) {
		case "", "tcp", "http", "http2", "grpc":
		default:
			return fmt.Errorf("Protocol %q: want tcp, http, http2 or grpc", v.Protocol)
		}
		return nil
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
// for service-defaults and service-intentions, operator for the global
// kinds.
func authorizeEntry(authz acl.Authorizer, kind, name string, write bool) bool {
	switch kind {
	case kindServiceDefaults, kindServiceIntentions:
		if write {
			return authz.ServiceWrite(name) == acl.Allow
		}
		return authz.ServiceRead(name) == acl.Allow
	}
	if write {
		return authz.OperatorWrite() == acl.Allow
	}
	return true
}

func knownKind(kind string) bool {
	switch kind {
	case kindServiceDefaults, kindProxyDefaults, kindServiceIntentions, kindMesh:
		return true
	}
	return false
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
	if kind == kindMesh && name == "" {
		// The mesh entry has one name, which clients leave out.
		name = "mesh"
	}
	if err := validateEntry(kind, name, body); err != nil {
		return nil, badRequest("Invalid config entry: %v", err)
	}
	if !authorizeEntry(authz, kind, name, true) {
		return nil, errPermissionDenied
	}
	req := &catalog.ConfigEntryRequest{Op: catalog.ConfigEntryUpsert, Entry: catalog.ConfigEntry{Kind: kind, Name: name, Body: body}}
	if v := r.URL.Query().Get("cas"); v != "" {
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
		if v := r.URL.Query().Get("cas"); v != "" {
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
		for _, e := range resp.ConfigEntries {
			if !authorizeEntry(authz, e.Kind, e.Name, false) {
				continue
			}
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

// ---- intentions over service-intentions entries ----

// intentionJSON is Consul's Intention as the intentions endpoints show it.
type intentionJSON struct {
	ID              string
	Description     string `json:",omitempty"`
	SourceNS        string
	SourceName      string
	DestinationNS   string
	DestinationName string
	SourceType      string
	Action          string            `json:",omitempty"`
	Permissions     []any             `json:",omitempty"`
	Meta            map[string]string `json:",omitempty"`
	Precedence      int
	CreateIndex     uint64
	ModifyIndex     uint64
	CreatedAt       time.Time
	UpdatedAt       time.Time
}

// intentionsOf reads the service-intentions entry of a destination: its
// body as a map (to keep fields this API does not know) and its sources.
func intentionsOf(e *catalog.ConfigEntry) (map[string]json.RawMessage, []*intentionSource, error) {
	body := map[string]json.RawMessage{}
	if len(e.Body) > 0 {
		if err := json.Unmarshal(e.Body, &body); err != nil {
			return nil, nil, fmt.Errorf("decode service-intentions %s: %w", e.Name, err)
		}
	}
	var v struct{ Sources []*intentionSource }
	if err := json.Unmarshal(e.Body, &v); err != nil {
		return nil, nil, fmt.Errorf("decode service-intentions %s: %w", e.Name, err)
	}
	return body, v.Sources, nil
}

func exactParams(r *http.Request) (string, string, error) {
	q := r.URL.Query()
	src, dst := q.Get("source"), q.Get("destination")
	if src == "" {
		return "", "", badRequest("required query parameter 'source' not set")
	}
	if dst == "" {
		return "", "", badRequest("required query parameter 'destination' not set")
	}
	// A namespace-qualified name ("default/web") names the default
	// namespace, the only one.
	src = strings.TrimPrefix(src, "default/")
	dst = strings.TrimPrefix(dst, "default/")
	return src, dst, nil
}

func (h *Handler) intentionExact(w http.ResponseWriter, r *http.Request) (any, error) {
	src, dst, err := exactParams(r)
	if err != nil {
		return nil, err
	}
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	if r.Method == http.MethodGet {
		if authz.ServiceRead(dst) != acl.Allow {
			return nil, errPermissionDenied
		}
		resp, err := h.read(w, r, &catalog.ReadRequest{Op: catalog.ReadConfigEntry, Key: kindServiceIntentions, Name: dst})
		if err != nil {
			return nil, err
		}
		if len(resp.ConfigEntries) == 1 {
			e := resp.ConfigEntries[0]
			_, sources, err := intentionsOf(e)
			if err != nil {
				return nil, err
			}
			for _, s := range sources {
				if s != nil && s.Name == src {
					ixn := s.intention(dst)
					return intentionJSON{SourceNS: "default", SourceName: src, DestinationNS: "default", DestinationName: dst,
						SourceType: catalog.IntentionSourceConsul, Action: ixn.Action, Permissions: ixn.Permissions,
						Description: ixn.Description, Meta: ixn.Meta, Precedence: ixn.Precedence,
						CreateIndex: e.CreateIndex, ModifyIndex: e.ModifyIndex}, nil
				}
			}
		}
		return nil, notFound("Intention not found")
	}
	if authz.ServiceWrite(dst) != acl.Allow {
		return nil, errPermissionDenied
	}
	var in *intentionSource
	if r.Method == http.MethodPut {
		var body intentionJSON
		if err := decodeBody(r, &body); err != nil {
			return nil, err
		}
		in = &intentionSource{Name: src, Action: body.Action, Permissions: body.Permissions, Description: body.Description,
			LegacyMeta: body.Meta, Type: catalog.IntentionSourceConsul}
		if err := connect.ValidateIntention(in.intention(dst)); err != nil {
			return nil, badRequest("%v", err)
		}
	}
	// Read-modify-write of the destination's entry, CAS-checked; a
	// concurrent change makes it start again.
	for attempt := 0; attempt < 8; attempt++ {
		resp, err := h.agent.backend.Read(r.Context(), &catalog.ReadRequest{Op: catalog.ReadConfigEntry, Key: kindServiceIntentions, Name: dst})
		if err != nil {
			return nil, err
		}
		body := map[string]json.RawMessage{}
		var sources []*intentionSource
		var index uint64
		if len(resp.ConfigEntries) == 1 {
			e := resp.ConfigEntries[0]
			if body, sources, err = intentionsOf(e); err != nil {
				return nil, err
			}
			index = e.ModifyIndex
		}
		var next []*intentionSource
		for _, s := range sources {
			if s != nil && s.Name != src {
				next = append(next, s)
			}
		}
		if in != nil {
			next = append(next, in)
		}
		req := &catalog.ConfigEntryRequest{Op: catalog.ConfigEntryUpsertCAS, Entry: catalog.ConfigEntry{Kind: kindServiceIntentions, Name: dst,
			RaftIndex: catalog.RaftIndex{ModifyIndex: index}}}
		if len(next) == 0 {
			if index == 0 {
				return true, nil
			}
			req.Op = catalog.ConfigEntryDeleteCAS
		} else {
			if len(next) > maxIntentionSources {
				return nil, badRequest("%d sources, max %d", len(next), maxIntentionSources)
			}
			b, err := json.Marshal(next)
			if err != nil {
				return nil, fmt.Errorf("encode sources: %w", err)
			}
			body["Sources"] = b
			if req.Entry.Body, err = json.Marshal(body); err != nil {
				return nil, fmt.Errorf("encode service-intentions: %w", err)
			}
		}
		ok, err := h.applyEntry(r.Context(), req)
		if err != nil {
			return nil, err
		}
		if ok {
			return true, nil
		}
	}
	return nil, &httpError{code: http.StatusConflict, msg: "service-intentions entry kept changing; try again"}
}

// destinationIntentions returns the intentions that may apply to
// connections to dst: those of dst's entry and of the wildcard entry.
func (h *Handler) destinationIntentions(ctx context.Context, dst string) ([]*catalog.Intention, error) {
	var out []*catalog.Intention
	for _, name := range []string{dst, catalog.IntentionWildcard} {
		resp, err := h.agent.backend.Read(ctx, &catalog.ReadRequest{Op: catalog.ReadConfigEntry, Key: kindServiceIntentions, Name: name})
		if err != nil {
			return nil, err
		}
		for _, e := range resp.ConfigEntries {
			_, sources, err := intentionsOf(e)
			if err != nil {
				return nil, err
			}
			for _, s := range sources {
				if s != nil {
					out = append(out, s.intention(e.Name))
				}
			}
		}
	}
	return out, nil
}

// defaultAllow is the decision when no intention matches: allow unless
// ACLs are on with a deny default policy.
func (h *Handler) defaultAllow() bool {
	return !(h.agent.cfg.ACL.Enabled && h.agent.cfg.ACL.DefaultPolicy == "deny")
}

func (h *Handler) intentionCheck(w http.ResponseWriter, r *http.Request) (any, error) {
	src, dst, err := exactParams(r)
	if err != nil {
		return nil, err
	}
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	if authz.ServiceRead(dst) != acl.Allow {
		return nil, errPermissionDenied
	}
	ixns, err := h.destinationIntentions(r.Context(), dst)
	if err != nil {
		return nil, err
	}
	d := connect.Authorize(ixns, src, dst, h.defaultAllow())
	return map[string]bool{"Allowed": d.Allowed}, nil
}

func (h *Handler) agentConnectAuthorize(w http.ResponseWriter, r *http.Request) (any, error) {
	var in struct {
		Target           string
		ClientCertURI    string
		ClientCertSerial string
	}
	if err := decodeBody(r, &in); err != nil {
		return nil, err
	}
	if in.Target == "" {
		return nil, badRequest("Target service must be specified")
	}
	if in.ClientCertURI == "" {
		return nil, badRequest("ClientCertURI must be specified")
	}
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	if authz.ServiceWrite(in.Target) != acl.Allow {
		return nil, errPermissionDenied
	}
	id, err := connect.ParseID(in.ClientCertURI)
	if err != nil || id.Kind != connect.KindService {
		return nil, badRequest("ClientCertURI not a valid Connect identifier: %q", in.ClientCertURI)
	}
	resp, err := h.agent.backend.Read(r.Context(), &catalog.ReadRequest{Op: catalog.ReadCARoots})
	if err != nil {
		return nil, err
	}
	if resp.CAConfig != nil && resp.CAConfig.ClusterID != "" && id.TrustDomain != connect.TrustDomain(resp.CAConfig.ClusterID) {
		return map[string]any{"Authorized": false,
			"Reason": fmt.Sprintf("Identity from an external trust domain: %s", id.TrustDomain)}, nil
	}
	ixns, err := h.destinationIntentions(r.Context(), in.Target)
	if err != nil {
		return nil, err
	}
	d := connect.Authorize(ixns, id.Service, in.Target, h.defaultAllow())
	return map[string]any{"Authorized": d.Allowed, "Reason": d.Reason}, nil
}
