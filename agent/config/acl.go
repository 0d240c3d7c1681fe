package config

import (
	"errors"
	"fmt"
	"strings"
)

// addLegacyACLFields adds the pre-1.4 top-level ACL keys Consul still
// accepts (acl_master_token and friends), each of which warns and sets its
// acl.* equivalent.
func addLegacyACLFields(c *Config, fields map[string]field) {
	legacy := map[string]struct {
		newName string
		f       field
	}{
		"acl_master_token":           {"acl.tokens.initial_management", stringField(&c.ACL.Tokens.InitialManagement)},
		"acl_token":                  {"acl.tokens.default", stringField(&c.ACL.Tokens.Default)},
		"acl_agent_token":            {"acl.tokens.agent", stringField(&c.ACL.Tokens.Agent)},
		"acl_agent_master_token":     {"acl.tokens.agent_recovery", stringField(&c.ACL.Tokens.AgentRecovery)},
		"acl_replication_token":      {"acl.tokens.replication", stringField(&c.ACL.Tokens.Replication)},
		"acl_default_policy":         {"acl.default_policy", stringField(&c.ACL.DefaultPolicy)},
		"acl_down_policy":            {"acl.down_policy", stringField(&c.ACL.DownPolicy)},
		"acl_ttl":                    {"acl.token_ttl", durationField(&c.ACL.TokenTTL)},
		"acl_enable_key_list_policy": {"acl.enable_key_list_policy", boolField(&c.ACL.EnableKeyListPolicy)},
	}
	for k, v := range legacy {
		if _, taken := fields[k]; !taken {
			fields[k] = deprecatedField(v.newName, v.f)
		}
	}
}

// maxACLTokenLen bounds a configured token: a secret is a UUID in practice.
const maxACLTokenLen = 256

// validateACLTokens checks the configured tokens: no whitespace (a token
// read from a file with its trailing newline would never match) and a
// bounded length. The anonymous token's secret is not a valid setting.
func validateACLTokens(c *Config) error {
	var errs []error
	for _, t := range []struct{ name, v string }{
		{"acl.tokens.initial_management", c.ACL.Tokens.InitialManagement},
		{"acl.tokens.agent", c.ACL.Tokens.Agent},
		{"acl.tokens.agent_recovery", c.ACL.Tokens.AgentRecovery},
		{"acl.tokens.default", c.ACL.Tokens.Default},
		{"acl.tokens.replication", c.ACL.Tokens.Replication},
		{"acl.tokens.config_file_service_registration", c.ACL.Tokens.ConfigFileRegistration},
	} {
		switch {
		case t.v == "":
		case strings.TrimSpace(t.v) != t.v || strings.ContainsAny(t.v, " \t\r\n"):
			errs = append(errs, fmt.Errorf("%s: must not contain whitespace", t.name))
		case len(t.v) > maxACLTokenLen:
			errs = append(errs, fmt.Errorf("%s: longer than %d characters", t.name, maxACLTokenLen))
		case t.v == "anonymous" && t.name != "acl.tokens.default":
			errs = append(errs, fmt.Errorf("%s: %q is the anonymous token's secret", t.name, t.v))
		}
	}
	if c.ACL.Tokens.InitialManagement != "" && c.ACL.Tokens.InitialManagement == c.ACL.Tokens.AgentRecovery {
		errs = append(errs, errors.New("acl.tokens.agent_recovery: must differ from acl.tokens.initial_management"))
	}
	return errors.Join(errs...)
}
