package servertest_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/acl/acltest"
	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/server"
	"github.com/tribune-mesh/tribune/server/servertest"
	"github.com/tribune-mesh/tribune/test/wait"
)

// applyErr applies through s and returns the error or the FSM's error.
func applyErr(s *servertest.Server, t catalog.CommandType, body any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := s.Apply(ctx, t, body)
	if err != nil {
		return err
	}
	if e, ok := res.(error); ok {
		return e
	}
	return nil
}

// TestACLLeaderDecidesResetAndLogin: what only the leader may decide is
// decided there, whichever server a request enters by: the bootstrap reset
// index comes from the leader's data_dir, never from the caller, and a
// login is verified by the leader and proposed as the token it earns.
func TestACLLeaderDecidesResetAndLogin(t *testing.T) {
	dataDirs := make([]string, 3) // by server index, written before each start
	c := servertest.New(t, servertest.Options{Persistent: true, Configure: func(i int, cfg *server.Config) {
		cfg.ACL.Enabled = true
		dataDirs[i] = cfg.DataDir
	}})
	leader := c.WaitForLeader(servertest.DefaultTimeout)
	follower := c.Followers()[0]
	wait.For(t, servertest.DefaultTimeout, func() error {
		if _, p, _ := leader.Store().ACLPolicyGet(nil, catalog.ACLGlobalManagementPolicyID, false); p == nil {
			return errors.New("no global-management policy yet")
		}
		return nil
	})
	boot := func(n int, reset uint64) error {
		return applyErr(follower, catalog.CmdACLBootstrap, &catalog.ACLBootstrapRequest{ResetIndex: reset, ACLToken: catalog.ACLToken{
			AccessorID: fmt.Sprintf("a%d", n), SecretID: fmt.Sprintf("s%d", n), Policies: []catalog.ACLLink{{ID: catalog.ACLGlobalManagementPolicyID}}}})
	}
	if err := boot(1, 0); err != nil {
		t.Fatal(err)
	}
	idx := leader.Store().ACLBootstrapIndex(nil)
	// The caller naming the right index is not enough.
	if err := boot(2, idx); !errors.Is(err, catalog.ErrACLBootstrapped) {
		t.Fatalf("reset by the caller's index: %v", err)
	}
	// A file on a follower is not read either.
	if err := os.WriteFile(filepath.Join(dataDirs[follower.Index], "acl-bootstrap-reset"), []byte(fmt.Sprint(idx)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := boot(3, 0); !errors.Is(err, catalog.ErrACLBootstrapped) {
		t.Fatalf("reset by a follower's file: %v", err)
	}
	resetFile := filepath.Join(dataDirs[leader.Index], "acl-bootstrap-reset")
	if err := os.WriteFile(resetFile, []byte(fmt.Sprintf("%d\n", idx)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := boot(4, 0); err != nil {
		t.Fatalf("reset by the leader's file: %v", err)
	}
	if _, err := os.Stat(resetFile); !os.IsNotExist(err) {
		t.Fatalf("spent reset file left: %v", err)
	}

	// A login through the follower.
	key, pub := acltest.Key(t)
	if err := applyErr(follower, catalog.CmdACLAuthMethod, &catalog.ACLAuthMethodRequest{Op: catalog.ACLOpSet, Method: &catalog.ACLAuthMethod{
		Name: "m", Type: "jwt", Config: map[string]any{"JWTValidationPubKeys": []any{pub}, "ClaimMappings": map[string]any{"sa": "sa"}}}}); err != nil {
		t.Fatal(err)
	}
	if err := applyErr(follower, catalog.CmdACLBindingRule, &catalog.ACLBindingRuleRequest{Op: catalog.ACLOpSet, Rule: &catalog.ACLBindingRule{
		ID: "r", AuthMethod: "m", BindType: catalog.BindTypeService, BindName: "${value.sa}"}}); err != nil {
		t.Fatal(err)
	}
	bearer := acltest.Sign(t, key, jwt.Claims{}, map[string]any{"sa": "web"})
	login := &catalog.ACLLoginRequest{Op: catalog.ACLLoginOp, AuthMethod: "m", BearerToken: bearer, AccessorID: "la", SecretID: "ls"}
	if err := applyErr(follower, catalog.CmdACLLogin, login); err != nil {
		t.Fatalf("login: %v", err)
	}
	c.WaitForReplication(servertest.DefaultTimeout)
	for _, s := range c.Running() {
		_, tok, _ := s.Store().ACLTokenGet(nil, "ls", true)
		if tok == nil || tok.AuthMethod != "m" || len(tok.ServiceIdentities) != 1 || tok.ServiceIdentities[0].ServiceName != "web" {
			t.Fatalf("%s: login token = %+v", s.Name, tok)
		}
	}
	bad := *login
	bad.BearerToken, bad.AccessorID, bad.SecretID = bearer[:len(bearer)-4]+"AAAA", "lb", "lbs"
	if err := applyErr(follower, catalog.CmdACLLogin, &bad); !errors.Is(err, acl.ErrLoginRefused) || !strings.Contains(err.Error(), "Permission denied") {
		t.Fatalf("login with a bad signature: %v", err)
	}
	if err := applyErr(follower, catalog.CmdACLLogin, &catalog.ACLLoginRequest{Op: catalog.ACLLogoutOp, SecretID: "s1"}); !errors.Is(err, acl.ErrLoginRefused) {
		t.Fatalf("logout of a management token: %v", err)
	}
	if err := applyErr(follower, catalog.CmdACLLogin, &catalog.ACLLoginRequest{Op: catalog.ACLLogoutOp, SecretID: "ls"}); err != nil {
		t.Fatalf("logout: %v", err)
	}
	if _, tok, _ := leader.Store().ACLTokenGet(nil, "ls", true); tok != nil {
		t.Fatalf("token after logout: %+v", tok)
	}
}
