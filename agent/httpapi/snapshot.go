package httpapi

import (
	"errors"
	"io"
	"net/http"
	"strconv"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/server"
)

// snapshot serves GET (save) and PUT (restore) /v1/snapshot.
func (h *Handler) snapshot(w http.ResponseWriter, r *http.Request) (any, error) {
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	if authz.OperatorWrite() != acl.Allow {
		return nil, errPermissionDenied
	}
	if err := h.checkDC(r); err != nil {
		return nil, err
	}
	if r.Method == http.MethodPut {
		if r.ContentLength > server.MaxSnapshotSize {
			return nil, tooLarge("snapshot larger than %d bytes", server.MaxSnapshotSize)
		}
		data, err := io.ReadAll(io.LimitReader(r.Body, server.MaxSnapshotSize+1))
		if err != nil {
			return nil, badRequest("read snapshot: %v", err)
		}
		if len(data) > server.MaxSnapshotSize {
			return nil, tooLarge("snapshot larger than %d bytes", server.MaxSnapshotSize)
		}
		if err := h.agent.backend.RestoreSnapshot(r.Context(), data); err != nil {
			if errors.Is(err, catalog.ErrBadSnapshot) {
				return nil, badRequest("%v", err)
			}
			return nil, err
		}
		return nil, nil
	}
	data, err := h.agent.backend.SaveSnapshot(r.Context())
	if err != nil {
		return nil, err
	}
	if hdr, _, err := server.InspectSnapshot(data); err == nil {
		w.Header().Set("X-Consul-Index", strconv.FormatUint(hdr.Index, 10))
	}
	// The leader took the snapshot, so a leader was known and in contact.
	w.Header().Set("X-Consul-KnownLeader", "true")
	w.Header().Set("X-Consul-LastContact", "0")
	w.Header().Set("Content-Type", "application/octet-stream")
	_, _ = w.Write(data)
	return nil, nil
}
