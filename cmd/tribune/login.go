package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/consul/api"
)

// loginCommands are "login" and "logout".
func loginCommands() map[string]command {
	return map[string]command{
		"login":  {"Log in: trade a bearer token for an ACL token", runLogin},
		"logout": {"Log out: delete the ACL token a login created", runLogout},
	}
}

func runLogin(args []string, stdout, stderr io.Writer) int {
	c := newACLCmd("login", "login [options] -method <name> -bearer-token-file <file> -token-sink-file <file>",
		"Trades a bearer token (a JWT, such as a Kubernetes service-account token) for an ACL\ntoken through an auth method, and writes the token's SecretID to a file.", stdout, stderr)
	method := c.fs.String("method", "", "The `name` of the auth method to log in through.")
	bearerFile := c.fs.String("bearer-token-file", "", "The `file` holding the bearer token.")
	sink := c.fs.String("token-sink-file", "", "The `file` to write the new token's SecretID to.")
	var meta listValue
	c.fs.Var(&meta, "meta", "A `key=value` pair to record in the token's description (repeatable).")
	client, code, ok := c.start(args)
	if !ok {
		return code
	}
	if *method == "" || *bearerFile == "" || *sink == "" {
		fmt.Fprintln(stderr, "Missing required '-method', '-bearer-token-file' or '-token-sink-file' flag")
		return 1
	}
	bearer, err := readRules("@" + *bearerFile)
	if err != nil {
		return c.fail("read the bearer token", err)
	}
	params := &api.ACLLoginParams{AuthMethod: *method, BearerToken: strings.TrimSpace(bearer)}
	for _, kv := range meta {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			fmt.Fprintf(stderr, "Malformed -meta %q: want key=value\n", kv)
			return 1
		}
		if params.Meta == nil {
			params.Meta = map[string]string{}
		}
		params.Meta[k] = v
	}
	tok, _, err := client.ACL().Login(params, nil)
	if err != nil {
		return c.fail("log in", err)
	}
	// The secret is written atomically and readable by its owner only.
	tmp, err := os.CreateTemp(filepath.Dir(*sink), ".token-sink-*")
	if err != nil {
		return c.fail("write the token sink file", err)
	}
	_, werr := tmp.WriteString(tok.SecretID)
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp.Name(), *sink)
	}
	if werr != nil {
		os.Remove(tmp.Name())
		return c.fail("write the token sink file", werr)
	}
	if *c.format == "json" {
		return c.json(tok)
	}
	return 0
}

func runLogout(args []string, stdout, stderr io.Writer) int {
	c := newACLCmd("logout", "logout [options]", "Deletes the ACL token given with -token (or CONSUL_HTTP_TOKEN), which a login must have created.", stdout, stderr)
	client, code, ok := c.start(args)
	if !ok {
		return code
	}
	if _, err := client.ACL().Logout(nil); err != nil {
		return c.fail("log out", err)
	}
	return 0
}
