package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/hashicorp/consul/api"
)

// aclRoleCommands are the "acl role" verbs and "acl set-agent-token".
func aclRoleCommands() map[string]command {
	return map[string]command{
		"acl role":            {"Manage ACL roles", groupCommand("acl role", "Creates, reads, updates, lists and deletes ACL roles.")},
		"acl role create":     {"Create an ACL role", runACLRoleCreate},
		"acl role read":       {"Read an ACL role", runACLRoleRead},
		"acl role update":     {"Update an ACL role", runACLRoleUpdate},
		"acl role list":       {"List ACL roles", runACLRoleList},
		"acl role delete":     {"Delete an ACL role", runACLRoleDelete},
		"acl set-agent-token": {"Set one of the agent's own ACL tokens", runACLSetAgentToken},
	}
}

// roleFlags are the flags that describe a role's links.
type roleFlags struct {
	name, desc                          *string
	policyIDs, policyNames, svcs, nodes listValue
}

func addRoleFlags(c *aclCmd) *roleFlags {
	f := &roleFlags{
		name: c.fs.String("name", "", "The role's `name`."),
		desc: c.fs.String("description", "", "A `description` of the role."),
	}
	c.fs.Var(&f.policyIDs, "policy-id", "`ID` of a policy to link (repeatable).")
	c.fs.Var(&f.policyNames, "policy-name", "`Name` of a policy to link (repeatable).")
	c.fs.Var(&f.svcs, "service-identity", "`Service` name of a service identity, optionally followed by :dc1,dc2 (repeatable).")
	c.fs.Var(&f.nodes, "node-identity", "`Node:datacenter` of a node identity (repeatable).")
	return f
}

// links returns the policies and identities the flags name.
func (f *roleFlags) links() ([]*api.ACLRolePolicyLink, []*api.ACLServiceIdentity, []*api.ACLNodeIdentity, error) {
	var pols []*api.ACLRolePolicyLink
	for _, id := range f.policyIDs {
		pols = append(pols, &api.ACLRolePolicyLink{ID: id})
	}
	for _, n := range f.policyNames {
		pols = append(pols, &api.ACLRolePolicyLink{Name: n})
	}
	svcs := serviceIdentities(f.svcs)
	nodes, err := nodeIdentities(f.nodes)
	return pols, svcs, nodes, err
}

func serviceIdentities(in []string) []*api.ACLServiceIdentity {
	var out []*api.ACLServiceIdentity
	for _, s := range in {
		name, dcs, _ := strings.Cut(s, ":")
		si := &api.ACLServiceIdentity{ServiceName: name}
		if dcs != "" {
			si.Datacenters = strings.Split(dcs, ",")
		}
		out = append(out, si)
	}
	return out
}

func nodeIdentities(in []string) ([]*api.ACLNodeIdentity, error) {
	var out []*api.ACLNodeIdentity
	for _, s := range in {
		name, dc, ok := strings.Cut(s, ":")
		if !ok || name == "" || dc == "" {
			return nil, fmt.Errorf("malformed -node-identity %q: want <node>:<datacenter>", s)
		}
		out = append(out, &api.ACLNodeIdentity{NodeName: name, Datacenter: dc})
	}
	return out, nil
}

func (c *aclCmd) printRole(r *api.ACLRole) int {
	if *c.format == "json" {
		return c.json(r)
	}
	w := c.stdout
	fmt.Fprintf(w, "ID:           %s\nName:         %s\nDescription:  %s\n", r.ID, r.Name, r.Description)
	if len(r.Policies) > 0 {
		fmt.Fprintln(w, "Policies:")
		for _, p := range r.Policies {
			fmt.Fprintf(w, "   %s - %s\n", p.ID, p.Name)
		}
	}
	if len(r.ServiceIdentities) > 0 {
		fmt.Fprintln(w, "Service Identities:")
		for _, s := range r.ServiceIdentities {
			fmt.Fprintf(w, "   %s (Datacenters: %s)\n", s.ServiceName, datacentersText(s.Datacenters))
		}
	}
	if len(r.NodeIdentities) > 0 {
		fmt.Fprintln(w, "Node Identities:")
		for _, n := range r.NodeIdentities {
			fmt.Fprintf(w, "   %s (Datacenter: %s)\n", n.NodeName, n.Datacenter)
		}
	}
	return 0
}

func runACLRoleCreate(args []string, stdout, stderr io.Writer) int {
	c := newACLCmd("acl role create", "acl role create [options] -name <name>", "Creates a role linked to policies and identities.", stdout, stderr)
	f := addRoleFlags(c)
	client, code, ok := c.start(args)
	if !ok {
		return code
	}
	if *f.name == "" {
		fmt.Fprintln(stderr, "Missing required '-name' flag")
		return 1
	}
	pols, svcs, nodes, err := f.links()
	if err != nil {
		return c.fail("parse the flags", err)
	}
	r, _, err := client.ACL().RoleCreate(&api.ACLRole{Name: *f.name, Description: *f.desc, Policies: pols,
		ServiceIdentities: svcs, NodeIdentities: nodes}, nil)
	if err != nil {
		return c.fail("create new role", err)
	}
	return c.printRole(r)
}

// roleByFlags reads the role named by -id or -name.
func roleByFlags(client *api.Client, id, name string) (*api.ACLRole, error) {
	var r *api.ACLRole
	var err error
	switch {
	case id != "":
		r, _, err = client.ACL().RoleRead(id, nil)
	case name != "":
		r, _, err = client.ACL().RoleReadByName(name, nil)
	default:
		return nil, fmt.Errorf("must specify the -id or -name parameter")
	}
	if err == nil && r == nil {
		err = fmt.Errorf("role not found")
	}
	return r, err
}

func runACLRoleRead(args []string, stdout, stderr io.Writer) int {
	c := newACLCmd("acl role read", "acl role read [options] -id <id> | -name <name>", "Reads a role.", stdout, stderr)
	id := c.fs.String("id", "", "The role's `ID`.")
	name := c.fs.String("name", "", "The role's `name`.")
	client, code, ok := c.start(args)
	if !ok {
		return code
	}
	r, err := roleByFlags(client, *id, *name)
	if err != nil {
		return c.fail("read role", err)
	}
	return c.printRole(r)
}

func runACLRoleUpdate(args []string, stdout, stderr io.Writer) int {
	c := newACLCmd("acl role update", "acl role update [options] -id <id>",
		"Updates a role. New links are added to the existing ones unless -no-merge is given.", stdout, stderr)
	id := c.fs.String("id", "", "The `ID` of the role to update.")
	f := addRoleFlags(c)
	noMerge := c.fs.Bool("no-merge", false, "Replace the role's links and description instead of adding to them.")
	client, code, ok := c.start(args)
	if !ok {
		return code
	}
	r, err := roleByFlags(client, *id, "")
	if err != nil {
		return c.fail("find the role", err)
	}
	pols, svcs, nodes, err := f.links()
	if err != nil {
		return c.fail("parse the flags", err)
	}
	if *noMerge {
		r.Policies, r.ServiceIdentities, r.NodeIdentities, r.Description = nil, nil, nil, ""
	}
	if *f.name != "" {
		r.Name = *f.name
	}
	if *f.desc != "" || *noMerge {
		r.Description = *f.desc
	}
	r.Policies = append(r.Policies, pols...)
	r.ServiceIdentities = append(r.ServiceIdentities, svcs...)
	r.NodeIdentities = append(r.NodeIdentities, nodes...)
	out, _, err := client.ACL().RoleUpdate(r, nil)
	if err != nil {
		return c.fail(fmt.Sprintf("update role %s", r.ID), err)
	}
	return c.printRole(out)
}

func runACLRoleList(args []string, stdout, stderr io.Writer) int {
	c := newACLCmd("acl role list", "acl role list [options]", "Lists every role.", stdout, stderr)
	client, code, ok := c.start(args)
	if !ok {
		return code
	}
	list, _, err := client.ACL().RoleList(nil)
	if err != nil {
		return c.fail("retrieve the role list", err)
	}
	if *c.format == "json" {
		return c.json(list)
	}
	for i, r := range list {
		if i > 0 {
			fmt.Fprintln(stdout)
		}
		c.printRole(r)
	}
	return 0
}

func runACLRoleDelete(args []string, stdout, stderr io.Writer) int {
	c := newACLCmd("acl role delete", "acl role delete [options] -id <id> | -name <name>", "Deletes a role.", stdout, stderr)
	id := c.fs.String("id", "", "The role's `ID`.")
	name := c.fs.String("name", "", "The role's `name`.")
	client, code, ok := c.start(args)
	if !ok {
		return code
	}
	r, err := roleByFlags(client, *id, *name)
	if err != nil {
		return c.fail("find the role", err)
	}
	if _, err := client.ACL().RoleDelete(r.ID, nil); err != nil {
		return c.fail(fmt.Sprintf("delete role %s", r.ID), err)
	}
	fmt.Fprintf(stdout, "Role %q deleted successfully\n", r.Name)
	return 0
}

// agentTokenSetters are the token types set-agent-token accepts, Consul's
// names and the older ones.
var agentTokenSetters = map[string]func(*api.Agent, string) error{
	"default": func(a *api.Agent, t string) error { _, err := a.UpdateDefaultACLToken(t, nil); return err },
	"agent":   func(a *api.Agent, t string) error { _, err := a.UpdateAgentACLToken(t, nil); return err },
	"agent_recovery": func(a *api.Agent, t string) error {
		_, err := a.UpdateAgentRecoveryACLToken(t, nil)
		return err
	},
	"agent_master": func(a *api.Agent, t string) error {
		_, err := a.UpdateAgentRecoveryACLToken(t, nil)
		return err
	},
	"replication": func(a *api.Agent, t string) error { _, err := a.UpdateReplicationACLToken(t, nil); return err },
	"config_file_service_registration": func(a *api.Agent, t string) error {
		_, err := a.UpdateConfigFileRegistrationToken(t, nil)
		return err
	},
}

func runACLSetAgentToken(args []string, stdout, stderr io.Writer) int {
	c := newACLCmd("acl set-agent-token", "acl set-agent-token [options] TYPE TOKEN",
		"Sets one of the agent's own tokens: default, agent, agent_recovery, replication or\nconfig_file_service_registration. It lasts until the agent restarts unless\nacl.enable_token_persistence is set.", stdout, stderr)
	if code, ok := parseFlags(c.fs, args); !ok {
		return code
	}
	if c.fs.NArg() != 2 {
		fmt.Fprintf(stderr, "Missing TYPE and TOKEN arguments (expected 2, got %d)\n", c.fs.NArg())
		return 1
	}
	kind, secret := c.fs.Arg(0), c.fs.Arg(1)
	set, ok := agentTokenSetters[kind]
	if !ok {
		fmt.Fprintf(stderr, "Unknown token type %q\n", kind)
		return 1
	}
	client, err := c.hf.client()
	if err != nil {
		fmt.Fprintf(stderr, "Error connecting to agent: %v\n", err)
		return 1
	}
	if err := set(client.Agent(), secret); err != nil {
		return c.fail("set ACL token", err)
	}
	fmt.Fprintln(stdout, "ACL token set successfully")
	return 0
}
