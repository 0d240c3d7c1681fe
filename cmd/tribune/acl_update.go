package main

import (
	"fmt"
	"io"

	"github.com/hashicorp/consul/api"
)

// aclUpdateCommands are "acl token update|clone" and "acl policy update".
func aclUpdateCommands() map[string]command {
	return map[string]command{
		"acl token update":  {"Update an ACL token", runACLTokenUpdate},
		"acl token clone":   {"Clone an ACL token", runACLTokenClone},
		"acl policy update": {"Update an ACL policy", runACLPolicyUpdate},
	}
}

func runACLTokenUpdate(args []string, stdout, stderr io.Writer) int {
	c := newACLCmd("acl token update", "acl token update [options] -id <accessor>",
		"Updates a token. Each kind of link given (policies, roles, service or node identities)\nreplaces that kind, or is added to it with the matching -merge-* flag; kinds not given\nare kept.", stdout, stderr)
	id := c.fs.String("id", "", "The `AccessorID` of the token to update.")
	desc := c.fs.String("description", "", "A new `description` of the token.")
	var policyIDs, policyNames, roleIDs, roleNames, services, nodes listValue
	c.fs.Var(&policyIDs, "policy-id", "`ID` of a policy to link (repeatable).")
	c.fs.Var(&policyNames, "policy-name", "`Name` of a policy to link (repeatable).")
	c.fs.Var(&roleIDs, "role-id", "`ID` of a role to link (repeatable).")
	c.fs.Var(&roleNames, "role-name", "`Name` of a role to link (repeatable).")
	c.fs.Var(&services, "service-identity", "`Service` name of a service identity, optionally followed by :dc1,dc2 (repeatable).")
	c.fs.Var(&nodes, "node-identity", "`Node:datacenter` of a node identity (repeatable).")
	mergePolicies := c.fs.Bool("merge-policies", false, "Add the policies given to the token's.")
	mergeRoles := c.fs.Bool("merge-roles", false, "Add the roles given to the token's.")
	mergeServices := c.fs.Bool("merge-service-identities", false, "Add the service identities given to the token's.")
	mergeNodes := c.fs.Bool("merge-node-identities", false, "Add the node identities given to the token's.")
	client, code, ok := c.startRequiring(args, "id", id)
	if !ok {
		return code
	}
	tok, _, err := client.ACL().TokenRead(*id, nil)
	if err != nil {
		return c.fail("read token", err)
	}
	if flagWasSet(c.fs, "description") {
		tok.Description = *desc
	}
	if len(policyIDs)+len(policyNames) > 0 {
		if !*mergePolicies {
			tok.Policies = nil
		}
		for _, p := range policyIDs {
			tok.Policies = append(tok.Policies, &api.ACLTokenPolicyLink{ID: p})
		}
		for _, p := range policyNames {
			tok.Policies = append(tok.Policies, &api.ACLTokenPolicyLink{Name: p})
		}
	}
	if len(roleIDs)+len(roleNames) > 0 {
		if !*mergeRoles {
			tok.Roles = nil
		}
		for _, r := range roleIDs {
			tok.Roles = append(tok.Roles, &api.ACLTokenRoleLink{ID: r})
		}
		for _, r := range roleNames {
			tok.Roles = append(tok.Roles, &api.ACLTokenRoleLink{Name: r})
		}
	}
	if len(services) > 0 {
		if !*mergeServices {
			tok.ServiceIdentities = nil
		}
		tok.ServiceIdentities = append(tok.ServiceIdentities, serviceIdentities(services)...)
	}
	if len(nodes) > 0 {
		ns, err := nodeIdentities(nodes)
		if err != nil {
			return c.fail("parse the flags", err)
		}
		if !*mergeNodes {
			tok.NodeIdentities = nil
		}
		tok.NodeIdentities = append(tok.NodeIdentities, ns...)
	}
	out, _, err := client.ACL().TokenUpdate(tok, nil)
	if err != nil {
		return c.fail("update token", err)
	}
	return c.printToken(out)
}

func runACLTokenClone(args []string, stdout, stderr io.Writer) int {
	c := newACLCmd("acl token clone", "acl token clone [options] -id <accessor>",
		"Creates a token with the links of another and new AccessorID and SecretID.", stdout, stderr)
	id := c.fs.String("id", "", "The `AccessorID` of the token to clone.")
	desc := c.fs.String("description", "", "A `description` of the new token (default: the original's).")
	client, code, ok := c.startRequiring(args, "id", id)
	if !ok {
		return code
	}
	out, _, err := client.ACL().TokenClone(*id, *desc, nil)
	if err != nil {
		return c.fail("clone token", err)
	}
	return c.printToken(out)
}

func runACLPolicyUpdate(args []string, stdout, stderr io.Writer) int {
	c := newACLCmd("acl policy update", "acl policy update [options] -id <id> | -name <name>",
		"Updates a policy: the fields given replace the policy's.", stdout, stderr)
	id := c.fs.String("id", "", "The `ID` of the policy to update.")
	name := c.fs.String("name", "", "The `name` of the policy to update (with -id: its new name).")
	desc := c.fs.String("description", "", "A new `description`.")
	rules := c.fs.String("rules", "", "New `rules`: HCL or JSON text, @file, or - for stdin.")
	var dcs listValue
	c.fs.Var(&dcs, "valid-datacenter", "A `datacenter` the policy applies in (repeatable; replaces the list).")
	client, code, ok := c.start(args)
	if !ok {
		return code
	}
	lookup := *name
	if *id != "" {
		lookup = ""
	}
	p, err := policyByFlags(client, *id, lookup)
	if err != nil {
		return c.fail("find the policy", err)
	}
	if *id != "" && *name != "" {
		p.Name = *name
	}
	if flagWasSet(c.fs, "description") {
		p.Description = *desc
	}
	if flagWasSet(c.fs, "rules") {
		if p.Rules, err = readRules(*rules); err != nil {
			return c.fail("read the rules", err)
		}
	}
	if len(dcs) > 0 {
		p.Datacenters = dcs
	}
	out, _, err := client.ACL().PolicyUpdate(p, nil)
	if err != nil {
		return c.fail(fmt.Sprintf("update policy %s", p.ID), err)
	}
	return c.printPolicy(out)
}
