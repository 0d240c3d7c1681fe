package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/hashicorp/go-uuid"
	"net/http"
	"strings"
	"time"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/connect"
	"github.com/tribune-mesh/tribune/server"
)

// Intentions are stored as sources of service-intentions config entries,
// one entry per destination, as Consul 1.9+ stores them. An intention
// created through the legacy ID API keeps its ID as the source's LegacyID.

func (h *Handler) registerIntentionRoutes() {
	h.handle("/v1/connect/intentions", []string{http.MethodGet, http.MethodPost}, h.intentionList)
	h.handle("/v1/connect/intentions/", methodsGetPutDel, h.intentionByID)
	h.handle("/v1/connect/intentions/exact", methodsGetPutDel, h.intentionExact)
	h.handle("/v1/connect/intentions/check", methodsGet, h.intentionCheck)
	h.handle("/v1/connect/intentions/match", methodsGet, h.intentionMatch)
	h.handle("/v1/agent/connect/authorize", []string{http.MethodPost}, h.agentConnectAuthorize)
}

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

// sourceJSON renders one source of dst's entry e as an intention.
func sourceJSON(e *catalog.ConfigEntry, s *intentionSource) intentionJSON {
	ixn := s.intention(e.Name)
	out := intentionJSON{ID: s.LegacyID, SourceNS: "default", SourceName: s.Name, DestinationNS: "default", DestinationName: e.Name,
		SourceType: catalog.IntentionSourceConsul, Action: ixn.Action, Permissions: ixn.Permissions,
		Description: ixn.Description, Meta: ixn.Meta, Precedence: ixn.Precedence,
		CreateIndex: e.CreateIndex, ModifyIndex: e.ModifyIndex}
	if s.LegacyCreateTime != nil {
		out.CreatedAt = *s.LegacyCreateTime
	}
	if s.LegacyUpdateTime != nil {
		out.UpdatedAt = *s.LegacyUpdateTime
	}
	return out
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
	q := queryOf(r)
	src, dst := q.Get("source"), q.Get("destination")
	if src == "" {
		return "", "", badRequest("required query parameter 'source' not set")
	}
	if dst == "" {
		return "", "", badRequest("required query parameter 'destination' not set")
	}
	return trimNS(src), trimNS(dst), nil
}

// trimNS drops the default namespace (the only one) from a qualified
// name ("default/web").
func trimNS(name string) string { return strings.TrimPrefix(name, "default/") }

var errIntentionNotFound = &httpError{code: http.StatusNotFound, msg: "Intention not found"}

// modifyIntentions rewrites dst's entry's sources with change, a
// read-modify-write checked with CAS and started again on a concurrent
// change. An entry left without sources is deleted.
func (h *Handler) modifyIntentions(ctx context.Context, dst string, change func([]*intentionSource) ([]*intentionSource, error)) error {
	// The CAS index must be the writer's: the primary's in a secondary
	// (whose replica has indexes of its own), or the ?dc= datacenter's.
	dc := server.DatacenterOf(ctx)
	if p := h.agent.cfg.PrimaryDatacenter; dc == "" && h.agent.fed != nil && p != "" && p != h.agent.cfg.Datacenter {
		dc = p
	}
	for attempt := 0; attempt < 8; attempt++ {
		resp, err := h.agent.backend.Read(ctx, &catalog.ReadRequest{Op: catalog.ReadConfigEntry, Key: kindServiceIntentions, Name: dst,
			Options: catalog.QueryOptions{Datacenter: dc}})
		if err != nil {
			return err
		}
		body := map[string]json.RawMessage{}
		var sources []*intentionSource
		var index uint64
		if len(resp.ConfigEntries) == 1 {
			e := resp.ConfigEntries[0]
			if body, sources, err = intentionsOf(e); err != nil {
				return err
			}
			index = e.ModifyIndex
		}
		next, err := change(sources)
		if err != nil {
			return err
		}
		req := &catalog.ConfigEntryRequest{Op: catalog.ConfigEntryUpsertCAS, Entry: catalog.ConfigEntry{Kind: kindServiceIntentions, Name: dst,
			RaftIndex: catalog.RaftIndex{ModifyIndex: index}}}
		if len(next) == 0 {
			if index == 0 {
				return nil
			}
			req.Op = catalog.ConfigEntryDeleteCAS
		} else {
			if len(next) > maxIntentionSources {
				return badRequest("%d sources, max %d", len(next), maxIntentionSources)
			}
			b, err := json.Marshal(next)
			if err != nil {
				return fmt.Errorf("encode sources: %w", err)
			}
			body["Sources"] = b
			if req.Entry.Body, err = json.Marshal(body); err != nil {
				return fmt.Errorf("encode service-intentions: %w", err)
			}
		}
		ok, err := h.applyEntry(ctx, req)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
	}
	return &httpError{code: http.StatusConflict, msg: "service-intentions entry kept changing; try again"}
}

// withoutSource returns sources without the one named name.
func withoutSource(sources []*intentionSource, name string) []*intentionSource {
	var out []*intentionSource
	for _, s := range sources {
		if s != nil && s.Name != name {
			out = append(out, s)
		}
	}
	return out
}

// sourceFromBody makes the source an intention body describes.
func sourceFromBody(src, dst string, body *intentionJSON) (*intentionSource, error) {
	s := &intentionSource{Name: src, Action: body.Action, Permissions: body.Permissions, Description: body.Description,
		LegacyMeta: body.Meta, Type: catalog.IntentionSourceConsul}
	if err := connect.ValidateIntention(s.intention(dst)); err != nil {
		return nil, badRequest("%v", err)
	}
	return s, nil
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
		for _, e := range resp.ConfigEntries {
			_, sources, err := intentionsOf(e)
			if err != nil {
				return nil, err
			}
			for _, s := range sources {
				if s != nil && s.Name == src {
					return sourceJSON(e, s), nil
				}
			}
		}
		return nil, errIntentionNotFound
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
		if in, err = sourceFromBody(src, dst, &body); err != nil {
			return nil, err
		}
	}
	err = h.modifyIntentions(r.Context(), dst, func(sources []*intentionSource) ([]*intentionSource, error) {
		next := withoutSource(sources, src)
		if in != nil {
			for _, s := range sources {
				if s != nil && s.Name == src {
					in.LegacyID, in.LegacyCreateTime = s.LegacyID, s.LegacyCreateTime
				}
			}
			next = append(next, in)
		}
		return next, nil
	})
	if err != nil {
		return nil, err
	}
	return true, nil
}

// allIntentions lists every intention the request's token may read (every
// one with a nil authz), in precedence order, with the read's metadata set
// on w.
func (h *Handler) allIntentions(w http.ResponseWriter, r *http.Request, authz acl.Authorizer) ([]intentionJSON, error) {
	resp, err := h.read(w, r, &catalog.ReadRequest{Op: catalog.ReadConfigEntries, Key: kindServiceIntentions})
	if err != nil {
		return nil, err
	}
	var ixns []*catalog.Intention
	byIxn := map[*catalog.Intention]intentionJSON{}
	for _, e := range resp.ConfigEntries {
		if authz != nil && authz.ServiceRead(e.Name) != acl.Allow {
			markFiltered(w, r)
			continue
		}
		_, sources, err := intentionsOf(e)
		if err != nil {
			return nil, err
		}
		for _, s := range sources {
			if s == nil {
				continue
			}
			ixn := s.intention(e.Name)
			ixns = append(ixns, ixn)
			byIxn[ixn] = sourceJSON(e, s)
		}
	}
	connect.SortByPrecedence(ixns)
	out := make([]intentionJSON, 0, len(ixns))
	for _, ixn := range ixns {
		out = append(out, byIxn[ixn])
	}
	return out, nil
}

func (h *Handler) intentionList(w http.ResponseWriter, r *http.Request) (any, error) {
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	if r.Method == http.MethodGet {
		// ?filter= first, then the ACL filter.
		list, err := h.allIntentions(w, r, nil)
		if err != nil {
			return nil, err
		}
		list, err = filter(queryOf(r).Get("filter"), list)
		if err != nil {
			return nil, err
		}
		return aclKeep(w, r, list, func(ixn intentionJSON) bool { return authz.ServiceRead(ixn.DestinationName) == acl.Allow }), nil
	}
	// POST: the legacy create, which names the intention by a new ID.
	var body intentionJSON
	if err := decodeBody(r, &body); err != nil {
		return nil, err
	}
	if body.ID != "" {
		return nil, badRequest("ID must be empty")
	}
	src, dst := body.SourceName, body.DestinationName
	if src == "" || dst == "" {
		return nil, badRequest("SourceName and DestinationName must be set")
	}
	if authz.ServiceWrite(dst) != acl.Allow {
		return nil, errPermissionDenied
	}
	in, err := sourceFromBody(src, dst, &body)
	if err != nil {
		return nil, err
	}
	id, err := uuid.GenerateUUID()
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	in.LegacyID, in.LegacyCreateTime, in.LegacyUpdateTime = id, &now, &now
	err = h.modifyIntentions(r.Context(), dst, func(sources []*intentionSource) ([]*intentionSource, error) {
		for _, s := range sources {
			if s != nil && s.Name == src {
				return nil, badRequest("duplicate intention found: %s => %s", src, dst)
			}
		}
		return append(sources, in), nil
	})
	if err != nil {
		return nil, err
	}
	return map[string]string{"ID": id}, nil
}

// findByID returns the entry and source of the intention with a legacy ID.
func (h *Handler) findByID(ctx context.Context, id string) (*catalog.ConfigEntry, *intentionSource, *catalog.ReadResponse, error) {
	resp, err := h.agent.backend.Read(ctx, &catalog.ReadRequest{Op: catalog.ReadConfigEntries, Key: kindServiceIntentions})
	if err != nil {
		return nil, nil, nil, err
	}
	for _, e := range resp.ConfigEntries {
		_, sources, err := intentionsOf(e)
		if err != nil {
			return nil, nil, nil, err
		}
		for _, s := range sources {
			if s != nil && s.LegacyID == id {
				return e, s, resp, nil
			}
		}
	}
	return nil, nil, resp, nil
}

func (h *Handler) intentionByID(w http.ResponseWriter, r *http.Request) (any, error) {
	id := strings.TrimPrefix(r.URL.Path, "/v1/connect/intentions/")
	if !isUUID(id) {
		return nil, badRequest("Invalid UUID format: %q", id)
	}
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	e, src, resp, err := h.findByID(r.Context(), id)
	if err != nil {
		return nil, err
	}
	switch r.Method {
	case http.MethodGet:
		setMeta(w, resp.Meta)
		if e == nil {
			return nil, errIntentionNotFound
		}
		if authz.ServiceRead(e.Name) != acl.Allow {
			return nil, errPermissionDenied
		}
		return sourceJSON(e, src), nil
	case http.MethodDelete:
		if e == nil {
			return nil, errIntentionNotFound
		}
		if authz.ServiceWrite(e.Name) != acl.Allow {
			return nil, errPermissionDenied
		}
		err := h.modifyIntentions(r.Context(), e.Name, func(sources []*intentionSource) ([]*intentionSource, error) {
			var out []*intentionSource
			for _, s := range sources {
				if s != nil && s.LegacyID != id {
					out = append(out, s)
				}
			}
			return out, nil
		})
		if err != nil {
			return nil, err
		}
		return true, nil
	}
	// PUT: update; the intention may move to another destination.
	var body intentionJSON
	if err := decodeBody(r, &body); err != nil {
		return nil, err
	}
	if e == nil {
		return nil, errIntentionNotFound
	}
	newSrc, newDst := trimNS(body.SourceName), trimNS(body.DestinationName)
	if authz.ServiceWrite(e.Name) != acl.Allow || authz.ServiceWrite(newDst) != acl.Allow {
		return nil, errPermissionDenied
	}
	in, err := sourceFromBody(newSrc, newDst, &body)
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	in.LegacyID, in.LegacyCreateTime, in.LegacyUpdateTime = id, src.LegacyCreateTime, &now
	dropOld := func(sources []*intentionSource) []*intentionSource {
		var out []*intentionSource
		for _, s := range sources {
			if s != nil && s.LegacyID != id {
				out = append(out, s)
			}
		}
		return out
	}
	if newDst != e.Name {
		if err := h.modifyIntentions(r.Context(), e.Name, func(s []*intentionSource) ([]*intentionSource, error) { return dropOld(s), nil }); err != nil {
			return nil, err
		}
	}
	err = h.modifyIntentions(r.Context(), newDst, func(sources []*intentionSource) ([]*intentionSource, error) {
		return append(withoutSource(dropOld(sources), newSrc), in), nil
	})
	if err != nil {
		return nil, err
	}
	return true, nil
}

func (h *Handler) intentionMatch(w http.ResponseWriter, r *http.Request) (any, error) {
	q := queryOf(r)
	by := q.Get("by")
	if by != "source" && by != "destination" {
		return nil, badRequest("required query parameter 'by' must be source or destination")
	}
	names := q["name"]
	if len(names) == 0 {
		return nil, badRequest("required query parameter 'name' not set")
	}
	if len(names) > 64 {
		return nil, badRequest("at most 64 names")
	}
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	list, err := h.allIntentions(w, r, authz)
	if err != nil {
		return nil, err
	}
	out := map[string][]intentionJSON{}
	for _, raw := range names {
		name := trimNS(raw)
		matched := []intentionJSON{}
		for _, ixn := range list {
			field := ixn.DestinationName
			if by == "source" {
				field = ixn.SourceName
			}
			if field == name || field == catalog.IntentionWildcard {
				matched = append(matched, ixn)
			}
		}
		out[raw] = matched
	}
	return out, nil
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
		ixns, err := EntryIntentions(resp.ConfigEntries...)
		if err != nil {
			return nil, err
		}
		out = append(out, ixns...)
	}
	return out, nil
}

// EntryIntentions returns the intentions of service-intentions config
// entries (the xDS layer builds its RBAC filters from them).
func EntryIntentions(entries ...*catalog.ConfigEntry) ([]*catalog.Intention, error) {
	var out []*catalog.Intention
	for _, e := range entries {
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
	return out, nil
}

// KindServiceIntentions is the config entry kind intentions are stored as.
const KindServiceIntentions = kindServiceIntentions

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
