package server

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/catalog"
)

// Error kinds of logins, carried across the RPC.
const (
	kindLoginRefused     = "login_refused"
	kindLoginUnsupported = "login_unsupported"
)

// resolveLogin turns a login or logout request into the write it amounts
// to, checked against the leader's own state at the leader's time: a login
// becomes the CmdACLTokenSet of the token its bearer token earns, a logout
// the CmdACLTokenDelete of a login token. Neither the bearer token nor the
// secret of a logout reaches the log. A refusal wraps acl.ErrLoginRefused.
//
// A login is authorized by its bearer token alone, as Consul's is, so an
// RPC caller needs no ACL token for it.
func (s *Server) resolveLogin(req *catalog.ACLLoginRequest) ([]byte, error) {
	st := s.store
	if req.Op == catalog.ACLLogoutOp {
		_, tok, err := st.ACLTokenGet(nil, req.SecretID, true)
		switch {
		case err != nil:
			return nil, err
		case tok == nil || tok.AccessorID == catalog.ACLAnonymousTokenID:
			return nil, fmt.Errorf("%w: %v", acl.ErrLoginRefused, acl.ErrNotFound)
		case tok.AuthMethod == "":
			return nil, fmt.Errorf("%w: only tokens created by a login can log out", acl.ErrLoginRefused)
		}
		return catalog.Encode(catalog.CmdACLTokenDelete, &catalog.ACLDeleteRequest{ID: tok.AccessorID})
	}
	_, m, err := st.ACLAuthMethodGet(nil, req.AuthMethod)
	if err != nil {
		return nil, err
	}
	if m == nil {
		return nil, fmt.Errorf("%w: %v", acl.ErrLoginRefused, acl.ErrNotFound)
	}
	_, rules, err := st.ACLBindingRuleList(nil, m.Name)
	if err != nil {
		return nil, err
	}
	now := s.clock.Now()
	b, err := acl.Login(m, rules, req.BearerToken, now, s.config.Datacenter)
	if err != nil {
		return nil, err
	}
	byName := func(policy bool) func(string) (string, error) {
		return func(name string) (string, error) {
			if policy {
				_, p, err := st.ACLPolicyGet(nil, name, true)
				if p == nil || err != nil {
					return "", err
				}
				return p.ID, nil
			}
			_, r, err := st.ACLRoleGet(nil, name, true)
			if r == nil || err != nil {
				return "", err
			}
			return r.ID, nil
		}
	}
	tok, err := acl.BuildLoginToken(&acl.LoginTokenRequest{Method: m, Bindings: b, RoleID: byName(false), PolicyID: byName(true),
		Meta: req.Meta, Now: now, AccessorID: req.AccessorID, SecretID: req.SecretID})
	if err != nil {
		return nil, err
	}
	buf, err := catalog.Encode(catalog.CmdACLTokenSet, tok)
	if err != nil {
		return nil, err
	}
	if _, err := catalog.ValidateCommand(buf); err != nil {
		return nil, fmt.Errorf("login token: %w", err)
	}
	return buf, nil
}

// aclBootstrapResetFile is the file in the leader's data_dir where an
// operator writes the reset index a refused bootstrap named, to allow one
// more bootstrap, as with Consul.
const aclBootstrapResetFile = "acl-bootstrap-reset"

// withBootstrapReset returns the bootstrap command to propose: its
// ResetIndex is always the one in the leader's reset file (0 when there is
// none), never the caller's, so that only someone who can write the
// leader's data_dir can reset. A reset file whose index matches is
// removed: the bootstrap it allows moves the index on.
func (s *Server) withBootstrapReset(req *catalog.ACLBootstrapRequest) ([]byte, error) {
	out := *req
	out.ResetIndex = 0
	if s.config.DataDir != "" {
		path := filepath.Join(s.config.DataDir, aclBootstrapResetFile)
		b, err := readSmallFile(path, 64)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return nil, fmt.Errorf("read %s: %w", path, err)
		default:
			idx, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%w: the reset index in %s is not a number: %q", catalog.ErrInvalidRequest, path, strings.TrimSpace(string(b)))
			}
			out.ResetIndex = idx
			if idx == s.store.ACLBootstrapIndex(nil) {
				if err := os.Remove(path); err != nil {
					s.logger.Warn("remove the spent ACL bootstrap reset file", "path", path, "error", err)
				}
				s.logger.Info("ACL bootstrap reset", "reset_index", idx)
			}
		}
	}
	return catalog.Encode(catalog.CmdACLBootstrap, &out)
}

// readSmallFile reads at most max bytes of a file.
func readSmallFile(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, max))
}
