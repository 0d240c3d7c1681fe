package acl

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl"
	"github.com/hashicorp/hcl/hcl/ast"
	"github.com/hashicorp/hcl/hcl/parser"
	"github.com/hashicorp/hcl/hcl/token"
)

// Level is the access a rule grants. The zero value means "no rule".
type Level uint8

const (
	// LevelNone means no rule matched: the next authorizer in the chain
	// (ultimately default_policy) decides.
	LevelNone Level = iota
	// LevelRead grants reads.
	LevelRead
	// LevelList grants reads and listing (keys only, with
	// acl.enable_key_list_policy).
	LevelList
	// LevelWrite grants reads, listing and writes.
	LevelWrite
	// LevelDeny refuses everything, whatever other policies grant.
	LevelDeny
)

// String returns the level as written in rules.
func (l Level) String() string {
	switch l {
	case LevelRead:
		return "read"
	case LevelList:
		return "list"
	case LevelWrite:
		return "write"
	case LevelDeny:
		return "deny"
	}
	return ""
}

// merge combines the levels two policies grant for the same rule: deny wins,
// then write > list > read.
func merge(a, b Level) Level {
	if a == LevelDeny || b == LevelDeny {
		return LevelDeny
	}
	if a > b {
		return a
	}
	return b
}

// Resource names the kinds of resource a rule can govern.
type Resource string

// The resources with exact and prefix rules.
const (
	ResourceKey     Resource = "key"
	ResourceService Resource = "service"
	ResourceNode    Resource = "node"
	ResourceSession Resource = "session"
	ResourceEvent   Resource = "event"
	ResourceQuery   Resource = "query"
	ResourceAgent   Resource = "agent"
)

// The scalar resources: one level each, no names.
const (
	ResourceACL      Resource = "acl"
	ResourceKeyring  Resource = "keyring"
	ResourceOperator Resource = "operator"
	ResourceMesh     Resource = "mesh"
	ResourcePeering  Resource = "peering"
)

var namedResources = map[Resource]bool{
	ResourceKey: true, ResourceService: true, ResourceNode: true, ResourceSession: true,
	ResourceEvent: true, ResourceQuery: true, ResourceAgent: true,
}

var scalarResources = map[Resource]bool{
	ResourceACL: true, ResourceKeyring: true, ResourceOperator: true, ResourceMesh: true, ResourcePeering: true,
}

// Rule is one rule of a policy: a level on a resource name (Exact) or on
// every name starting with Name (prefix).
type Rule struct {
	Resource Resource
	Name     string
	Prefix   bool
	Level    Level
	// Intentions is the level on the intentions of a service rule; LevelNone
	// when the rule does not set it.
	Intentions Level
}

// Rules is a parsed policy: its named rules and its scalar levels.
type Rules struct {
	Named   []Rule
	Scalars map[Resource]Level
}

// Limits on rules text, so that a request cannot make the parser or the
// authorizer arbitrarily expensive.
const (
	// MaxRulesBytes bounds the size of one policy's rules text.
	MaxRulesBytes = 128 << 10
	// MaxRules bounds the number of rules in one policy.
	MaxRules = 4096
)

// ParseError is a malformed rule, with the line it is on.
type ParseError struct {
	Line int
	Msg  string
}

func (e *ParseError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("Failed to parse ACL rules: line %d: %s", e.Line, e.Msg)
	}
	return "Failed to parse ACL rules: " + e.Msg
}

func errAt(pos token.Pos, format string, args ...any) error {
	return &ParseError{Line: pos.Line, Msg: fmt.Sprintf(format, args...)}
}

// ParseRules parses a policy's rules, in HCL or JSON, as Consul documents
// them:
//
//	key_prefix "app/" { policy = "write" }
//	service "web" { policy = "read" intentions = "write" }
//	operator = "read"
//
// An error is a *ParseError that names the line.
func ParseRules(src string) (*Rules, error) {
	if len(src) > MaxRulesBytes {
		return nil, &ParseError{Msg: fmt.Sprintf("rules are %d bytes, more than the limit of %d", len(src), MaxRulesBytes)}
	}
	out := &Rules{Scalars: map[Resource]Level{}}
	if strings.TrimSpace(src) == "" {
		return out, nil
	}
	file, err := parseHCL(src)
	if err != nil {
		var pe *parser.PosError
		if errors.As(err, &pe) {
			return nil, &ParseError{Line: pe.Pos.Line, Msg: pe.Err.Error()}
		}
		return nil, &ParseError{Msg: err.Error()}
	}
	list, ok := file.Node.(*ast.ObjectList)
	if !ok {
		return nil, &ParseError{Msg: "rules must be an object"}
	}
	for _, item := range list.Items {
		if err := out.addItem(item); err != nil {
			return nil, err
		}
		if len(out.Named) > MaxRules {
			return nil, &ParseError{Line: item.Pos().Line, Msg: fmt.Sprintf("more than %d rules", MaxRules)}
		}
	}
	return out, nil
}

// parseHCL parses rules text. hcl v1's JSON scanner panics on some malformed
// escapes (found by FuzzParseRules: `{"\0`); rules come from the network, so
// such a panic becomes a parse error.
func parseHCL(src string) (f *ast.File, err error) {
	defer func() {
		if r := recover(); r != nil {
			f, err = nil, fmt.Errorf("malformed rules: %v", r)
		}
	}()
	return hcl.ParseString(src)
}

// litString unquotes a string literal without token.Value, which panics on
// escapes it cannot decode.
func litString(lit *ast.LiteralType) (string, error) {
	v, err := strconv.Unquote(lit.Token.Text)
	if err != nil {
		return "", fmt.Errorf("malformed string %s", lit.Token.Text)
	}
	return v, nil
}

func keyText(k *ast.ObjectKey) string {
	s := k.Token.Text
	if k.Token.Type == token.STRING {
		if u, err := strconv.Unquote(s); err == nil {
			return u
		}
	}
	return s
}

func (r *Rules) addItem(item *ast.ObjectItem) error {
	if len(item.Keys) == 0 {
		return errAt(item.Pos(), "rule without a name")
	}
	kind := keyText(item.Keys[0])
	res := Resource(strings.TrimSuffix(kind, "_prefix"))
	prefix := strings.HasSuffix(kind, "_prefix")
	switch {
	case scalarResources[Resource(kind)]:
		if len(item.Keys) != 1 {
			return errAt(item.Pos(), "%q takes a level, as in %s = \"read\"", kind, kind)
		}
		lit, ok := item.Val.(*ast.LiteralType)
		if !ok || lit.Token.Type != token.STRING {
			return errAt(item.Pos(), "%q must be a string level", kind)
		}
		v, err := litString(lit)
		if err != nil {
			return errAt(item.Pos(), "%s: %v", kind, err)
		}
		lvl, err := parseLevel(v, false)
		if err != nil {
			return errAt(item.Pos(), "%s: %v", kind, err)
		}
		r.Scalars[Resource(kind)] = merge(r.Scalars[Resource(kind)], lvl)
		return nil
	case namedResources[res]:
	default:
		return errAt(item.Pos(), "unknown rule %q", kind)
	}
	switch len(item.Keys) {
	case 2: // key "name" { ... }
		return r.addNamed(res, prefix, keyText(item.Keys[1]), item.Val, item.Pos())
	case 1: // "key": { "name": { ... } } (JSON, or HCL's nested form)
		obj, ok := item.Val.(*ast.ObjectType)
		if !ok {
			return errAt(item.Pos(), "%q must be a block of named rules", kind)
		}
		for _, inner := range obj.List.Items {
			if len(inner.Keys) != 1 {
				return errAt(inner.Pos(), "%q: a rule takes exactly one name", kind)
			}
			if err := r.addNamed(res, prefix, keyText(inner.Keys[0]), inner.Val, inner.Pos()); err != nil {
				return err
			}
		}
		return nil
	}
	return errAt(item.Pos(), "%q: a rule takes exactly one name", kind)
}

func (r *Rules) addNamed(res Resource, prefix bool, name string, val ast.Node, pos token.Pos) error {
	obj, ok := val.(*ast.ObjectType)
	if !ok {
		return errAt(pos, "%s %q must be a block such as { policy = \"read\" }", res, name)
	}
	rule := Rule{Resource: res, Name: name, Prefix: prefix}
	for _, f := range obj.List.Items {
		if len(f.Keys) != 1 {
			return errAt(f.Pos(), "unexpected block in %s %q", res, name)
		}
		field := keyText(f.Keys[0])
		lit, ok := f.Val.(*ast.LiteralType)
		if !ok || lit.Token.Type != token.STRING {
			return errAt(f.Pos(), "%s %q: %s must be a string", res, name, field)
		}
		v, err := litString(lit)
		if err != nil {
			return errAt(f.Pos(), "%s %q: %s: %v", res, name, field, err)
		}
		switch {
		case field == "policy":
			lvl, err := parseLevel(v, res == ResourceKey)
			if err != nil {
				return errAt(f.Pos(), "%s %q: %v", res, name, err)
			}
			rule.Level = lvl
		case field == "intentions" && res == ResourceService:
			lvl, err := parseLevel(v, false)
			if err != nil {
				return errAt(f.Pos(), "%s %q: intentions: %v", res, name, err)
			}
			rule.Intentions = lvl
		default:
			return errAt(f.Pos(), "%s %q: unknown field %q", res, name, field)
		}
	}
	if rule.Level == LevelNone && rule.Intentions == LevelNone {
		return errAt(pos, "%s %q: no policy given", res, name)
	}
	r.Named = append(r.Named, rule)
	return nil
}

func parseLevel(s string, listOK bool) (Level, error) {
	switch s {
	case "read":
		return LevelRead, nil
	case "write":
		return LevelWrite, nil
	case "deny":
		return LevelDeny, nil
	case "list":
		if listOK {
			return LevelList, nil
		}
		return LevelNone, fmt.Errorf("level \"list\" is valid only on key rules")
	}
	return LevelNone, fmt.Errorf("invalid level %q (want read, write or deny)", s)
}

// ServiceIdentityRules returns the rules a service identity stands for: write
// on the service and its sidecar proxy, read on every service and node.
func ServiceIdentityRules(service string) *Rules {
	return &Rules{
		Named: []Rule{
			{Resource: ResourceService, Name: service, Level: LevelWrite},
			{Resource: ResourceService, Name: service + "-sidecar-proxy", Level: LevelWrite},
			{Resource: ResourceService, Prefix: true, Level: LevelRead},
			{Resource: ResourceNode, Prefix: true, Level: LevelRead},
		},
		Scalars: map[Resource]Level{},
	}
}

// NodeIdentityRules returns the rules a node identity stands for: write on
// the node, read on every service.
func NodeIdentityRules(node string) *Rules {
	return &Rules{
		Named: []Rule{
			{Resource: ResourceNode, Name: node, Level: LevelWrite},
			{Resource: ResourceService, Prefix: true, Level: LevelRead},
		},
		Scalars: map[Resource]Level{},
	}
}

// GlobalManagementRules is the text of the built-in global-management
// policy: write on everything.
const GlobalManagementRules = `acl = "write"
agent_prefix "" { policy = "write" }
event_prefix "" { policy = "write" }
key_prefix "" { policy = "write" }
keyring = "write"
node_prefix "" { policy = "write" }
operator = "write"
mesh = "write"
peering = "write"
query_prefix "" { policy = "write" }
service_prefix "" { policy = "write" intentions = "write" }
session_prefix "" { policy = "write" }
`

// GlobalReadOnlyRules is the text of the built-in global-read-only policy:
// read on everything.
var GlobalReadOnlyRules = strings.ReplaceAll(GlobalManagementRules, `"write"`, `"read"`)
