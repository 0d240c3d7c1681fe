package main

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/hashicorp/consul/api"
)

// aclAuthMethodCommands are the "acl auth-method" and "acl binding-rule"
// verbs.
func aclAuthMethodCommands() map[string]command {
	return map[string]command{
		"acl auth-method":         {"Manage ACL auth methods", groupCommand("acl auth-method", "Creates, reads, updates, lists and deletes ACL auth methods.")},
		"acl auth-method create":  {"Create an ACL auth method", runACLAuthMethodCreate},
		"acl auth-method read":    {"Read an ACL auth method", runACLAuthMethodRead},
		"acl auth-method update":  {"Update an ACL auth method", runACLAuthMethodUpdate},
		"acl auth-method list":    {"List ACL auth methods", runACLAuthMethodList},
		"acl auth-method delete":  {"Delete an ACL auth method", runACLAuthMethodDelete},
		"acl binding-rule":        {"Manage ACL binding rules", groupCommand("acl binding-rule", "Creates, reads, updates, lists and deletes ACL binding rules.")},
		"acl binding-rule create": {"Create an ACL binding rule", runACLBindingRuleCreate},
		"acl binding-rule read":   {"Read an ACL binding rule", runACLBindingRuleRead},
		"acl binding-rule update": {"Update an ACL binding rule", runACLBindingRuleUpdate},
		"acl binding-rule list":   {"List ACL binding rules", runACLBindingRuleList},
		"acl binding-rule delete": {"Delete an ACL binding rule", runACLBindingRuleDelete},
	}
}

// methodFlags are the flags that describe an auth method.
type methodFlags struct {
	name, typ, display, desc, locality, config *string
	ttl                                        *time.Duration
}

func addMethodFlags(c *aclCmd) *methodFlags {
	return &methodFlags{
		name:     c.fs.String("name", "", "The auth method's `name`."),
		typ:      c.fs.String("type", "", "The auth method's `type`: jwt (or kubernetes, stored only)."),
		display:  c.fs.String("display-name", "", "A `name` to show instead of the method's name."),
		desc:     c.fs.String("description", "", "A `description` of the auth method."),
		locality: c.fs.String("token-locality", "", "Kind of token logins create: `local` (default) or global."),
		config:   c.fs.String("config", "", "The method's `config`: JSON text, @file, or - for stdin."),
		ttl:      c.fs.Duration("max-token-ttl", 0, "`Duration` after which the tokens logins create expire."),
	}
}

// apply sets what the flags give on m; with create every flag is taken,
// otherwise only those set.
func (f *methodFlags) apply(c *aclCmd, m *api.ACLAuthMethod) error {
	set := func(name string) bool { return flagWasSet(c.fs, name) }
	for _, s := range []struct {
		flag string
		dst  *string
		v    string
	}{{"type", &m.Type, *f.typ}, {"display-name", &m.DisplayName, *f.display}, {"description", &m.Description, *f.desc},
		{"token-locality", &m.TokenLocality, *f.locality}} {
		if set(s.flag) {
			*s.dst = s.v
		}
	}
	if set("max-token-ttl") {
		m.MaxTokenTTL = *f.ttl
	}
	if set("config") {
		text, err := readRules(*f.config)
		if err != nil {
			return err
		}
		var cfg map[string]any
		if err := json.Unmarshal([]byte(text), &cfg); err != nil {
			return fmt.Errorf("-config is not a JSON object: %w", err)
		}
		m.Config = cfg
	}
	return nil
}

func (c *aclCmd) printAuthMethod(m *api.ACLAuthMethod) int {
	if *c.format == "json" {
		return c.json(m)
	}
	w := c.stdout
	fmt.Fprintf(w, "Name:          %s\nType:          %s\n", m.Name, m.Type)
	if m.DisplayName != "" {
		fmt.Fprintf(w, "Display Name:  %s\n", m.DisplayName)
	}
	fmt.Fprintf(w, "Description:   %s\n", m.Description)
	if m.MaxTokenTTL > 0 {
		fmt.Fprintf(w, "MaxTokenTTL:   %s\n", m.MaxTokenTTL)
	}
	if m.TokenLocality != "" {
		fmt.Fprintf(w, "TokenLocality: %s\n", m.TokenLocality)
	}
	if len(m.Config) > 0 {
		b, _ := json.MarshalIndent(m.Config, "", "  ")
		fmt.Fprintf(w, "Config:\n%s\n", b)
	}
	return 0
}

func runACLAuthMethodCreate(args []string, stdout, stderr io.Writer) int {
	c := newACLCmd("acl auth-method create", "acl auth-method create [options] -type jwt -name <name> -config @<file>",
		"Creates an auth method: a way to trade an external credential (a JWT) for an ACL token.", stdout, stderr)
	f := addMethodFlags(c)
	client, code, ok := c.start(args)
	if !ok {
		return code
	}
	if *f.name == "" || *f.typ == "" {
		fmt.Fprintln(stderr, "Missing required '-name' or '-type' flag")
		return 1
	}
	m := &api.ACLAuthMethod{Name: *f.name}
	if err := f.apply(c, m); err != nil {
		return c.fail("parse the flags", err)
	}
	out, _, err := client.ACL().AuthMethodCreate(m, nil)
	if err != nil {
		return c.fail("create auth method", err)
	}
	return c.printAuthMethod(out)
}

func authMethodByName(client *api.Client, name string) (*api.ACLAuthMethod, error) {
	if name == "" {
		return nil, fmt.Errorf("must specify the -name parameter")
	}
	m, _, err := client.ACL().AuthMethodRead(name, nil)
	if err == nil && m == nil {
		err = fmt.Errorf("auth method %q not found", name)
	}
	return m, err
}

func runACLAuthMethodRead(args []string, stdout, stderr io.Writer) int {
	c := newACLCmd("acl auth-method read", "acl auth-method read [options] -name <name>", "Reads an auth method.", stdout, stderr)
	name := c.fs.String("name", "", "The auth method's `name`.")
	client, code, ok := c.start(args)
	if !ok {
		return code
	}
	m, err := authMethodByName(client, *name)
	if err != nil {
		return c.fail("read auth method", err)
	}
	return c.printAuthMethod(m)
}

func runACLAuthMethodUpdate(args []string, stdout, stderr io.Writer) int {
	c := newACLCmd("acl auth-method update", "acl auth-method update [options] -name <name>",
		"Updates an auth method: the flags given replace those fields; -config replaces the whole config.", stdout, stderr)
	f := addMethodFlags(c)
	client, code, ok := c.start(args)
	if !ok {
		return code
	}
	m, err := authMethodByName(client, *f.name)
	if err != nil {
		return c.fail("find the auth method", err)
	}
	if err := f.apply(c, m); err != nil {
		return c.fail("parse the flags", err)
	}
	out, _, err := client.ACL().AuthMethodUpdate(m, nil)
	if err != nil {
		return c.fail("update auth method", err)
	}
	return c.printAuthMethod(out)
}

func runACLAuthMethodList(args []string, stdout, stderr io.Writer) int {
	c := newACLCmd("acl auth-method list", "acl auth-method list [options]", "Lists every auth method.", stdout, stderr)
	client, code, ok := c.start(args)
	if !ok {
		return code
	}
	list, _, err := client.ACL().AuthMethodList(nil)
	if err != nil {
		return c.fail("retrieve the auth method list", err)
	}
	if *c.format == "json" {
		return c.json(list)
	}
	for _, m := range list {
		fmt.Fprintf(stdout, "%s:\n   Type:         %s\n   Description:  %s\n", m.Name, m.Type, m.Description)
	}
	return 0
}

func runACLAuthMethodDelete(args []string, stdout, stderr io.Writer) int {
	c := newACLCmd("acl auth-method delete", "acl auth-method delete [options] -name <name>",
		"Deletes an auth method, its binding rules and the tokens its logins created.", stdout, stderr)
	name := c.fs.String("name", "", "The auth method's `name`.")
	client, code, ok := c.startRequiring(args, "name", name)
	if !ok {
		return code
	}
	if _, err := client.ACL().AuthMethodDelete(*name, nil); err != nil {
		return c.fail(fmt.Sprintf("delete auth method %s", *name), err)
	}
	fmt.Fprintf(stdout, "Auth-method %q deleted successfully\n", *name)
	return 0
}

// ruleFlags are the flags that describe a binding rule.
type ruleFlags struct {
	method, desc, selector, bindType, bindName *string
}

func addRuleFlags(c *aclCmd) *ruleFlags {
	return &ruleFlags{
		method:   c.fs.String("method", "", "The `name` of the auth method the rule belongs to."),
		desc:     c.fs.String("description", "", "A `description` of the rule."),
		selector: c.fs.String("selector", "", "The `expression` over the login's verified claims the rule matches."),
		bindType: c.fs.String("bind-type", "", "What the rule grants: `service`, node, role or policy."),
		bindName: c.fs.String("bind-name", "", "The `name` granted; ${value.<claim>} references are filled in."),
	}
}

func (f *ruleFlags) apply(c *aclCmd, r *api.ACLBindingRule) {
	for _, s := range []struct {
		flag string
		dst  *string
		v    string
	}{{"method", &r.AuthMethod, *f.method}, {"description", &r.Description, *f.desc}, {"selector", &r.Selector, *f.selector},
		{"bind-name", &r.BindName, *f.bindName}} {
		if flagWasSet(c.fs, s.flag) {
			*s.dst = s.v
		}
	}
	if flagWasSet(c.fs, "bind-type") {
		r.BindType = api.BindingRuleBindType(*f.bindType)
	}
}

func (c *aclCmd) printBindingRule(r *api.ACLBindingRule) int {
	if *c.format == "json" {
		return c.json(r)
	}
	fmt.Fprintf(c.stdout, "ID:           %s\nAuthMethod:   %s\nDescription:  %s\nBindType:     %s\nBindName:     %s\nSelector:     %s\n",
		r.ID, r.AuthMethod, r.Description, r.BindType, r.BindName, r.Selector)
	return 0
}

func runACLBindingRuleCreate(args []string, stdout, stderr io.Writer) int {
	c := newACLCmd("acl binding-rule create", "acl binding-rule create [options] -method <name> -bind-type <type> -bind-name <name>",
		"Creates a binding rule: what a login through the method is granted when its claims match the selector.", stdout, stderr)
	f := addRuleFlags(c)
	client, code, ok := c.start(args)
	if !ok {
		return code
	}
	if *f.method == "" || *f.bindType == "" || *f.bindName == "" {
		fmt.Fprintln(stderr, "Missing required '-method', '-bind-type' or '-bind-name' flag")
		return 1
	}
	r := &api.ACLBindingRule{}
	f.apply(c, r)
	out, _, err := client.ACL().BindingRuleCreate(r, nil)
	if err != nil {
		return c.fail("create binding rule", err)
	}
	return c.printBindingRule(out)
}

func bindingRuleByID(client *api.Client, id string) (*api.ACLBindingRule, error) {
	if id == "" {
		return nil, fmt.Errorf("must specify the -id parameter")
	}
	r, _, err := client.ACL().BindingRuleRead(id, nil)
	if err == nil && r == nil {
		err = fmt.Errorf("binding rule %q not found", id)
	}
	return r, err
}

func runACLBindingRuleRead(args []string, stdout, stderr io.Writer) int {
	c := newACLCmd("acl binding-rule read", "acl binding-rule read [options] -id <id>", "Reads a binding rule.", stdout, stderr)
	id := c.fs.String("id", "", "The rule's `ID`.")
	client, code, ok := c.start(args)
	if !ok {
		return code
	}
	r, err := bindingRuleByID(client, *id)
	if err != nil {
		return c.fail("read binding rule", err)
	}
	return c.printBindingRule(r)
}

func runACLBindingRuleUpdate(args []string, stdout, stderr io.Writer) int {
	c := newACLCmd("acl binding-rule update", "acl binding-rule update [options] -id <id>",
		"Updates a binding rule: the flags given replace those fields.", stdout, stderr)
	id := c.fs.String("id", "", "The rule's `ID`.")
	f := addRuleFlags(c)
	client, code, ok := c.start(args)
	if !ok {
		return code
	}
	r, err := bindingRuleByID(client, *id)
	if err != nil {
		return c.fail("find the binding rule", err)
	}
	f.apply(c, r)
	out, _, err := client.ACL().BindingRuleUpdate(r, nil)
	if err != nil {
		return c.fail("update binding rule", err)
	}
	return c.printBindingRule(out)
}

func runACLBindingRuleList(args []string, stdout, stderr io.Writer) int {
	c := newACLCmd("acl binding-rule list", "acl binding-rule list [options]", "Lists binding rules.", stdout, stderr)
	method := c.fs.String("method", "", "List only the rules of the auth method with this `name`.")
	client, code, ok := c.start(args)
	if !ok {
		return code
	}
	list, _, err := client.ACL().BindingRuleList(*method, nil)
	if err != nil {
		return c.fail("retrieve the binding rule list", err)
	}
	if *c.format == "json" {
		return c.json(list)
	}
	for i, r := range list {
		if i > 0 {
			fmt.Fprintln(stdout)
		}
		c.printBindingRule(r)
	}
	return 0
}

func runACLBindingRuleDelete(args []string, stdout, stderr io.Writer) int {
	c := newACLCmd("acl binding-rule delete", "acl binding-rule delete [options] -id <id>", "Deletes a binding rule.", stdout, stderr)
	id := c.fs.String("id", "", "The rule's `ID`.")
	client, code, ok := c.startRequiring(args, "id", id)
	if !ok {
		return code
	}
	if _, err := client.ACL().BindingRuleDelete(*id, nil); err != nil {
		return c.fail(fmt.Sprintf("delete binding rule %s", *id), err)
	}
	fmt.Fprintf(stdout, "Binding rule %q deleted successfully\n", *id)
	return 0
}
