package httpapi

import (
	"bytes"
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
		// One restore at a time, refused before its upload is read: two
		// uploads must not hold memory together.
		if !h.restoreMu.TryLock() {
			return nil, &httpError{code: http.StatusTooManyRequests, msg: server.ErrRestoreInProgress.Error()}
		}
		defer h.restoreMu.Unlock()
		if r.ContentLength > server.MaxSnapshotSize {
			return nil, tooLarge("snapshot larger than %d bytes", server.MaxSnapshotSize)
		}
		// Sized by Content-Length when given, so that reading does not
		// double the buffer on the way; up to 64 MiB only, as a client may
		// announce a length it never sends.
		buf := bytes.NewBuffer(make([]byte, 0, min(max(r.ContentLength, 0), 64<<20)+bytes.MinRead))
		if _, err := buf.ReadFrom(io.LimitReader(r.Body, server.MaxSnapshotSize+1)); err != nil {
			return nil, badRequest("read snapshot: %v", err)
		}
		data := buf.Bytes()
		if len(data) > server.MaxSnapshotSize {
			return nil, tooLarge("snapshot larger than %d bytes", server.MaxSnapshotSize)
		}
		if err := h.agent.backend.RestoreSnapshot(r.Context(), data); err != nil {
			switch {
			case errors.Is(err, catalog.ErrBadSnapshot):
				return nil, badRequest("%v", err)
			case errors.Is(err, server.ErrSnapshotTooLarge):
				return nil, tooLarge("%v", err)
			case errors.Is(err, server.ErrRestoreInProgress):
				return nil, &httpError{code: http.StatusTooManyRequests, msg: err.Error()}
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
