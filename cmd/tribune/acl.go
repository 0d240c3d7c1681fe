package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/hashicorp/consul/api"
)

// aclCommands are the "acl" verbs, merged into commands().
func aclCommands() map[string]command {
	out := map[string]command{
		"acl":               {"Interact with Tribune's ACLs", groupCommand("acl", "Manages ACL tokens, policies, roles, auth methods and binding rules.")},
		"acl bootstrap":     {"Bootstrap ACLs: create the first management token", runACLBootstrap},
		"acl token":         {"Manage ACL tokens", groupCommand("acl token", "Creates, reads, lists and deletes ACL tokens.")},
		"acl token create":  {"Create an ACL token", runACLTokenCreate},
		"acl token read":    {"Read an ACL token", runACLTokenRead},
		"acl token list":    {"List ACL tokens", runACLTokenList},
		"acl token delete":  {"Delete an ACL token", runACLTokenDelete},
		"acl policy":        {"Manage ACL policies", groupCommand("acl policy", "Creates, reads, lists and deletes ACL policies.")},
		"acl policy create": {"Create an ACL policy", runACLPolicyCreate},
		"acl policy read":   {"Read an ACL policy", runACLPolicyRead},
		"acl policy list":   {"List ACL policies", runACLPolicyList},
		"acl policy delete": {"Delete an ACL policy", runACLPolicyDelete},
	}
	for _, more := range []map[string]command{aclRoleCommands(), aclAuthMethodCommands(), aclUpdateCommands(), loginCommands()} {
		for k, v := range more {
			out[k] = v
		}
	}
	return out
}

// listValue is a repeatable string flag.
type listValue []string

func (l *listValue) String() string     { return strings.Join(*l, ",") }
func (l *listValue) Set(s string) error { *l = append(*l, s); return nil }

// aclCmd is what every acl command shares: its flags, client and output.
type aclCmd struct {
	hf     httpFlags
	fs     *flag.FlagSet
	format *string
	stdout io.Writer
	stderr io.Writer
}

func newACLCmd(name, synopsis, help string, stdout, stderr io.Writer) *aclCmd {
	c := &aclCmd{stdout: stdout, stderr: stderr}
	c.fs = newFlagSet(name, synopsis, help, stderr, &c.hf)
	c.format = c.fs.String("format", "pretty", "Output format: pretty or json.")
	return c
}

// start parses the flags and returns the client; ok false means exit with code.
func (c *aclCmd) start(args []string) (*api.Client, int, bool) {
	if code, ok := parseFlags(c.fs, args); !ok {
		return nil, code, false
	}
	if c.fs.NArg() > 0 {
		fmt.Fprintf(c.stderr, "Too many arguments (expected 0, got %d)\n", c.fs.NArg())
		return nil, 1, false
	}
	if *c.format != "pretty" && *c.format != "json" {
		fmt.Fprintf(c.stderr, "Invalid format %q: must be pretty or json\n", *c.format)
		return nil, 1, false
	}
	client, err := c.hf.client()
	if err != nil {
		fmt.Fprintf(c.stderr, "Error connecting to agent: %v\n", err)
		return nil, 1, false
	}
	return client, 0, true
}

// startRequiring is start for a command whose flag must be given (v is its
// value).
func (c *aclCmd) startRequiring(args []string, flag string, v *string) (*api.Client, int, bool) {
	client, code, ok := c.start(args)
	if ok && *v == "" {
		fmt.Fprintf(c.stderr, "Must specify the -%s parameter\n", flag)
		return nil, 1, false
	}
	return client, code, ok
}

func (c *aclCmd) fail(what string, err error) int {
	fmt.Fprintf(c.stderr, "Failed to %s: %v\n", what, err)
	return 1
}

func (c *aclCmd) json(v any) int {
	b, err := json.MarshalIndent(v, "", "    ")
	if err != nil {
		return c.fail("encode output", err)
	}
	fmt.Fprintln(c.stdout, string(b))
	return 0
}

// printToken prints a token as Consul's CLI does.
func (c *aclCmd) printToken(t *api.ACLToken) int {
	if *c.format == "json" {
		return c.json(t)
	}
	w := c.stdout
	fmt.Fprintf(w, "AccessorID:       %s\n", t.AccessorID)
	fmt.Fprintf(w, "SecretID:         %s\n", t.SecretID)
	fmt.Fprintf(w, "Description:      %s\n", t.Description)
	fmt.Fprintf(w, "Local:            %t\n", t.Local)
	if t.AuthMethod != "" {
		fmt.Fprintf(w, "Auth Method:      %s\n", t.AuthMethod)
	}
	fmt.Fprintf(w, "Create Time:      %v\n", t.CreateTime)
	if t.ExpirationTime != nil && !t.ExpirationTime.IsZero() {
		fmt.Fprintf(w, "Expiration Time:  %v\n", *t.ExpirationTime)
	}
	if len(t.Policies) > 0 {
		fmt.Fprintln(w, "Policies:")
		for _, p := range t.Policies {
			fmt.Fprintf(w, "   %s - %s\n", p.ID, p.Name)
		}
	}
	if len(t.Roles) > 0 {
		fmt.Fprintln(w, "Roles:")
		for _, r := range t.Roles {
			fmt.Fprintf(w, "   %s - %s\n", r.ID, r.Name)
		}
	}
	if len(t.ServiceIdentities) > 0 {
		fmt.Fprintln(w, "Service Identities:")
		for _, s := range t.ServiceIdentities {
			fmt.Fprintf(w, "   %s (Datacenters: %s)\n", s.ServiceName, datacentersText(s.Datacenters))
		}
	}
	if len(t.NodeIdentities) > 0 {
		fmt.Fprintln(w, "Node Identities:")
		for _, n := range t.NodeIdentities {
			fmt.Fprintf(w, "   %s (Datacenter: %s)\n", n.NodeName, n.Datacenter)
		}
	}
	return 0
}

func datacentersText(dcs []string) string {
	if len(dcs) == 0 {
		return "all"
	}
	return strings.Join(dcs, ", ")
}

func (c *aclCmd) printPolicy(p *api.ACLPolicy) int {
	if *c.format == "json" {
		return c.json(p)
	}
	fmt.Fprintf(c.stdout, "ID:           %s\nName:         %s\nDescription:  %s\nDatacenters:  %s\nRules:\n%s\n",
		p.ID, p.Name, p.Description, strings.Join(p.Datacenters, ", "), p.Rules)
	return 0
}

func runACLBootstrap(args []string, stdout, stderr io.Writer) int {
	c := newACLCmd("acl bootstrap", "acl bootstrap [options] [FILE]",
		"Creates the first management token. Allowed once (see the acl-bootstrap-reset file to\nallow one more). With FILE (or - for stdin), its SecretID is the UUID the file holds.", stdout, stderr)
	var secret string
	if code, ok := parseFlags(c.fs, args); !ok {
		return code
	}
	switch c.fs.NArg() {
	case 0:
	case 1:
		src := c.fs.Arg(0)
		if src != "-" {
			src = "@" + src
		}
		text, err := readRules(src)
		if err != nil {
			return c.fail("read the secret", err)
		}
		secret = strings.TrimSpace(text)
	default:
		fmt.Fprintf(stderr, "Too many arguments (expected 0 or 1, got %d)\n", c.fs.NArg())
		return 1
	}
	client, code, ok := c.start(nil)
	if !ok {
		return code
	}
	var t *api.ACLToken
	var err error
	if secret != "" {
		t, _, err = client.ACL().BootstrapWithToken(secret)
	} else {
		t, _, err = client.ACL().Bootstrap()
	}
	if err != nil {
		return c.fail("bootstrap ACLs", err)
	}
	return c.printToken(t)
}

func runACLTokenCreate(args []string, stdout, stderr io.Writer) int {
	c := newACLCmd("acl token create", "acl token create [options]", "Creates a token linked to policies, roles and service identities.", stdout, stderr)
	desc := c.fs.String("description", "", "A `description` of the token.")
	var policyIDs, policyNames, roleIDs, roleNames, services listValue
	c.fs.Var(&policyIDs, "policy-id", "`ID` of a policy to link (repeatable).")
	c.fs.Var(&policyNames, "policy-name", "`Name` of a policy to link (repeatable).")
	c.fs.Var(&roleIDs, "role-id", "`ID` of a role to link (repeatable).")
	c.fs.Var(&roleNames, "role-name", "`Name` of a role to link (repeatable).")
	c.fs.Var(&services, "service-identity", "`Service` name of a service identity, optionally followed by :dc1,dc2 (repeatable).")
	ttl := c.fs.Duration("expires-ttl", 0, "`Duration` after which the token expires.")
	local := c.fs.Bool("local", false, "Create a token local to this datacenter.")
	client, code, ok := c.start(args)
	if !ok {
		return code
	}
	tok := &api.ACLToken{Description: *desc, Local: *local, ExpirationTTL: *ttl}
	for _, id := range policyIDs {
		tok.Policies = append(tok.Policies, &api.ACLTokenPolicyLink{ID: id})
	}
	for _, n := range policyNames {
		tok.Policies = append(tok.Policies, &api.ACLTokenPolicyLink{Name: n})
	}
	for _, id := range roleIDs {
		tok.Roles = append(tok.Roles, &api.ACLTokenRoleLink{ID: id})
	}
	for _, n := range roleNames {
		tok.Roles = append(tok.Roles, &api.ACLTokenRoleLink{Name: n})
	}
	tok.ServiceIdentities = serviceIdentities(services)
	out, _, err := client.ACL().TokenCreate(tok, nil)
	if err != nil {
		return c.fail("create new token", err)
	}
	return c.printToken(out)
}

func runACLTokenRead(args []string, stdout, stderr io.Writer) int {
	c := newACLCmd("acl token read", "acl token read [options] -id <accessor> | -self", "Reads a token.", stdout, stderr)
	id := c.fs.String("id", "", "The `AccessorID` of the token to read.")
	self := c.fs.Bool("self", false, "Read the token the command runs with.")
	client, code, ok := c.start(args)
	if !ok {
		return code
	}
	var t *api.ACLToken
	var err error
	switch {
	case *self:
		t, _, err = client.ACL().TokenReadSelf(nil)
	case *id != "":
		t, _, err = client.ACL().TokenRead(*id, nil)
	default:
		fmt.Fprintln(stderr, "Must specify the -id parameter or -self")
		return 1
	}
	if err != nil {
		return c.fail("read token", err)
	}
	return c.printToken(t)
}

func runACLTokenList(args []string, stdout, stderr io.Writer) int {
	c := newACLCmd("acl token list", "acl token list [options]", "Lists every token.", stdout, stderr)
	client, code, ok := c.start(args)
	if !ok {
		return code
	}
	list, _, err := client.ACL().TokenList(nil)
	if err != nil {
		return c.fail("retrieve the token list", err)
	}
	if *c.format == "json" {
		return c.json(list)
	}
	for i, t := range list {
		if i > 0 {
			fmt.Fprintln(stdout)
		}
		c.printToken(&api.ACLToken{AccessorID: t.AccessorID, SecretID: t.SecretID, Description: t.Description, Local: t.Local,
			CreateTime: t.CreateTime, ExpirationTime: t.ExpirationTime, Policies: t.Policies, Roles: t.Roles,
			ServiceIdentities: t.ServiceIdentities, NodeIdentities: t.NodeIdentities, AuthMethod: t.AuthMethod})
	}
	return 0
}

func runACLTokenDelete(args []string, stdout, stderr io.Writer) int {
	c := newACLCmd("acl token delete", "acl token delete [options] -id <accessor>", "Deletes a token.", stdout, stderr)
	id := c.fs.String("id", "", "The `AccessorID` of the token to delete.")
	client, code, ok := c.startRequiring(args, "id", id)
	if !ok {
		return code
	}
	if _, err := client.ACL().TokenDelete(*id, nil); err != nil {
		return c.fail(fmt.Sprintf("delete token %s", *id), err)
	}
	fmt.Fprintf(stdout, "Token %q deleted successfully\n", *id)
	return 0
}

// readRules returns -rules as given, or the file named after '@', or stdin
// for "-" (bounded).
func readRules(v string) (string, error) {
	const max = 256 << 10
	var r io.Reader
	switch {
	case v == "-":
		r = os.Stdin
	case strings.HasPrefix(v, "@"):
		f, err := os.Open(v[1:])
		if err != nil {
			return "", fmt.Errorf("read rules: %w", err)
		}
		defer f.Close()
		r = f
	default:
		return v, nil
	}
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return "", fmt.Errorf("read rules: %w", err)
	}
	if len(b) > max {
		return "", fmt.Errorf("rules larger than %d bytes", max)
	}
	return string(b), nil
}

func runACLPolicyCreate(args []string, stdout, stderr io.Writer) int {
	c := newACLCmd("acl policy create", "acl policy create [options] -name <name>", "Creates a policy.", stdout, stderr)
	name := c.fs.String("name", "", "The policy's `name`.")
	desc := c.fs.String("description", "", "A `description` of the policy.")
	rules := c.fs.String("rules", "", "The policy's `rules`: HCL or JSON text, @file, or - for stdin.")
	var dcs listValue
	c.fs.Var(&dcs, "valid-datacenter", "A `datacenter` the policy applies in (repeatable; default all).")
	client, code, ok := c.start(args)
	if !ok {
		return code
	}
	if *name == "" {
		fmt.Fprintln(stderr, "Missing required '-name' flag")
		return 1
	}
	text, err := readRules(*rules)
	if err != nil {
		return c.fail("read the rules", err)
	}
	p, _, err := client.ACL().PolicyCreate(&api.ACLPolicy{Name: *name, Description: *desc, Rules: text, Datacenters: dcs}, nil)
	if err != nil {
		return c.fail("create new policy", err)
	}
	return c.printPolicy(p)
}

// policyByFlags reads the policy named by -id or -name.
func policyByFlags(client *api.Client, id, name string) (*api.ACLPolicy, error) {
	var p *api.ACLPolicy
	var err error
	switch {
	case id != "":
		p, _, err = client.ACL().PolicyRead(id, nil)
	case name != "":
		p, _, err = client.ACL().PolicyReadByName(name, nil)
	default:
		return nil, fmt.Errorf("must specify the -id or -name parameter")
	}
	if err == nil && p == nil {
		err = fmt.Errorf("policy not found")
	}
	return p, err
}

func runACLPolicyRead(args []string, stdout, stderr io.Writer) int {
	c := newACLCmd("acl policy read", "acl policy read [options] -id <id> | -name <name>", "Reads a policy.", stdout, stderr)
	id := c.fs.String("id", "", "The policy's `ID`.")
	name := c.fs.String("name", "", "The policy's `name`.")
	client, code, ok := c.start(args)
	if !ok {
		return code
	}
	p, err := policyByFlags(client, *id, *name)
	if err != nil {
		return c.fail("read policy", err)
	}
	return c.printPolicy(p)
}

func runACLPolicyList(args []string, stdout, stderr io.Writer) int {
	c := newACLCmd("acl policy list", "acl policy list [options]", "Lists every policy.", stdout, stderr)
	client, code, ok := c.start(args)
	if !ok {
		return code
	}
	list, _, err := client.ACL().PolicyList(nil)
	if err != nil {
		return c.fail("retrieve the policy list", err)
	}
	if *c.format == "json" {
		return c.json(list)
	}
	for _, p := range list {
		fmt.Fprintf(stdout, "%s:\n   ID:           %s\n   Description:  %s\n   Datacenters:  %s\n", p.Name, p.ID, p.Description, strings.Join(p.Datacenters, ", "))
	}
	return 0
}

func runACLPolicyDelete(args []string, stdout, stderr io.Writer) int {
	c := newACLCmd("acl policy delete", "acl policy delete [options] -id <id> | -name <name>", "Deletes a policy.", stdout, stderr)
	id := c.fs.String("id", "", "The policy's `ID`.")
	name := c.fs.String("name", "", "The policy's `name`.")
	client, code, ok := c.start(args)
	if !ok {
		return code
	}
	p, err := policyByFlags(client, *id, *name)
	if err != nil {
		return c.fail("find the policy", err)
	}
	if _, err := client.ACL().PolicyDelete(p.ID, nil); err != nil {
		return c.fail(fmt.Sprintf("delete policy %s", p.ID), err)
	}
	fmt.Fprintf(stdout, "Policy %q deleted successfully\n", p.Name)
	return 0
}
