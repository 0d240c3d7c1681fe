package acl

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	bexpr "github.com/hashicorp/go-bexpr"
	"github.com/tribune-mesh/tribune/catalog"
)

// Bindings are what a login's matching binding rules grant: identities, and
// roles and policies by name.
type Bindings struct {
	ServiceIdentities []*catalog.ACLServiceIdentity
	NodeIdentities    []*catalog.ACLNodeIdentity
	Roles             []string
	Policies          []string
}

// Empty reports whether no rule matched: the login is then refused.
func (b *Bindings) Empty() bool {
	return len(b.ServiceIdentities)+len(b.NodeIdentities)+len(b.Roles)+len(b.Policies) == 0
}

// MaxSelectorBytes bounds a binding rule's selector.
const MaxSelectorBytes = 4 << 10

// ValidateBindingRule checks a binding rule a user sent: a known bind type,
// a selector that parses, and a bind name whose ${...} references are
// selectable values.
func ValidateBindingRule(r *catalog.ACLBindingRule) error {
	if r == nil {
		return errors.New("binding rule: missing")
	}
	if r.AuthMethod == "" {
		return errors.New("binding rule: AuthMethod must be set")
	}
	switch r.BindType {
	case catalog.BindTypeService, catalog.BindTypeNode, catalog.BindTypeRole, catalog.BindTypePolicy:
	default:
		return fmt.Errorf("binding rule: BindType %q: want service, node, role or policy", r.BindType)
	}
	if r.BindName == "" {
		return errors.New("binding rule: BindName must be set")
	}
	if len(r.Selector) > MaxSelectorBytes {
		return fmt.Errorf("binding rule: Selector longer than %d bytes", MaxSelectorBytes)
	}
	if r.Selector != "" {
		if _, err := bexpr.CreateEvaluator(r.Selector); err != nil {
			return fmt.Errorf("binding rule: Selector: %w", err)
		}
	}
	if _, err := interpolate(r.BindName, nil, true); err != nil {
		return fmt.Errorf("binding rule: BindName: %w", err)
	}
	return nil
}

// EvaluateBindingRules returns what the rules grant to id. Rules of other
// auth methods must already be filtered out.
func EvaluateBindingRules(rules []*catalog.ACLBindingRule, id *Identity, datacenter string) (*Bindings, error) {
	datum := map[string]any{"value": id.Values, "list": id.Lists}
	out := &Bindings{}
	for _, r := range rules {
		if r.Selector != "" {
			ev, err := bexpr.CreateEvaluator(r.Selector)
			if err != nil {
				return nil, fmt.Errorf("binding rule %s: selector: %w", r.ID, err)
			}
			ok, err := ev.Evaluate(datum)
			if err != nil || !ok {
				continue // a selector naming an absent field does not match
			}
		}
		name, err := interpolate(r.BindName, id.Values, false)
		if err != nil {
			return nil, fmt.Errorf("binding rule %s: %w", r.ID, err)
		}
		if !validBindName(name) {
			return nil, fmt.Errorf("binding rule %s: bind name %q is not a valid name", r.ID, name)
		}
		switch r.BindType {
		case catalog.BindTypeService:
			out.ServiceIdentities = append(out.ServiceIdentities, &catalog.ACLServiceIdentity{ServiceName: name})
		case catalog.BindTypeNode:
			out.NodeIdentities = append(out.NodeIdentities, &catalog.ACLNodeIdentity{NodeName: name, Datacenter: datacenter})
		case catalog.BindTypeRole:
			out.Roles = append(out.Roles, name)
		case catalog.BindTypePolicy:
			out.Policies = append(out.Policies, name)
		}
	}
	return out, nil
}

var refPattern = regexp.MustCompile(`\$\{([^}]*)\}`)

// interpolate replaces ${value.<name>} in s. With check it only checks the
// references' syntax.
func interpolate(s string, values map[string]string, check bool) (string, error) {
	var err error
	out := refPattern.ReplaceAllStringFunc(s, func(m string) string {
		ref := strings.TrimSpace(m[2 : len(m)-1])
		name, ok := strings.CutPrefix(ref, "value.")
		if !ok || !validSelectableName(name) {
			err = fmt.Errorf("reference %q: only ${value.<name>} may be used", m)
			return ""
		}
		if check {
			return "x"
		}
		v, ok := values[name]
		if !ok {
			err = fmt.Errorf("reference %q: the login has no %s", m, ref)
			return ""
		}
		return v
	})
	if err != nil {
		return "", err
	}
	if strings.Contains(out, "${") {
		return "", errors.New("unterminated ${ reference")
	}
	return out, nil
}

// validBindName reports whether a bound service, node, role or policy name
// is acceptable: 1-256 letters, digits, '-', '_' and '.'.
func validBindName(s string) bool {
	if s == "" || len(s) > 256 {
		return false
	}
	for _, r := range s {
		if !(r == '_' || r == '-' || r == '.' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}
