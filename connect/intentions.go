package connect

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/tribune-mesh/tribune/catalog"
)

// Precedence returns an intention's precedence as Consul documents it for
// one namespace: exact source and destination 9, wildcard source and exact
// destination 8, exact source and wildcard destination 6, both wildcards 5.
// Where several intentions match a connection, the highest precedence
// decides.
func Precedence(source, destination string) int {
	srcWild := source == catalog.IntentionWildcard
	dstWild := destination == catalog.IntentionWildcard
	switch {
	case !srcWild && !dstWild:
		return 9
	case srcWild && !dstWild:
		return 8
	case !srcWild && dstWild:
		return 6
	}
	return 5
}

// MaxIntentionNameBytes bounds a service name in an intention.
const MaxIntentionNameBytes = 256

// ValidateIntention checks an intention a user sent: names present and not
// too long, a wildcard only as the whole name, a known action (or L7
// permissions instead), source type consul.
func ValidateIntention(ixn *catalog.Intention) error {
	if ixn == nil {
		return errors.New("intention: missing")
	}
	for _, n := range []struct{ field, v string }{{"SourceName", ixn.SourceName}, {"DestinationName", ixn.DestinationName}} {
		if n.v == "" {
			return fmt.Errorf("intention: %s must be set", n.field)
		}
		if len(n.v) > MaxIntentionNameBytes {
			return fmt.Errorf("intention: %s longer than %d bytes", n.field, MaxIntentionNameBytes)
		}
		if strings.Contains(n.v, "*") && n.v != catalog.IntentionWildcard {
			return fmt.Errorf("intention: %s: a wildcard must be the whole name", n.field)
		}
	}
	if ixn.SourceType != "" && ixn.SourceType != catalog.IntentionSourceConsul {
		return fmt.Errorf("intention: SourceType %q: only %q is supported", ixn.SourceType, catalog.IntentionSourceConsul)
	}
	switch {
	case len(ixn.Permissions) > 0 && ixn.Action != "":
		return errors.New("intention: Action and Permissions are exclusive")
	case len(ixn.Permissions) > 0:
	case ixn.Action == catalog.IntentionAllow || ixn.Action == catalog.IntentionDeny:
	default:
		return fmt.Errorf("intention: Action %q: want allow or deny", ixn.Action)
	}
	if len(ixn.Description) > 4096 {
		return errors.New("intention: Description longer than 4096 bytes")
	}
	return nil
}

// Decision is the outcome of Authorize.
type Decision struct {
	Allowed bool
	Reason  string
	// Match is the intention that decided, nil when the default did.
	Match *catalog.Intention
}

// Authorize decides whether source may connect to destination under
// intentions: the matching intention of highest precedence decides (for an
// intention with L7 permissions, an L4 check treats it as deny, as Consul's
// authorize endpoint does); none matching, defaultAllow decides (ACL
// default_policy allow, or ACLs off).
func Authorize(intentions []*catalog.Intention, source, destination string, defaultAllow bool) Decision {
	var best *catalog.Intention
	bestPrec := -1
	for _, ixn := range intentions {
		if ixn == nil {
			continue
		}
		if !matches(ixn.SourceName, source) || !matches(ixn.DestinationName, destination) {
			continue
		}
		p := Precedence(ixn.SourceName, ixn.DestinationName)
		if p > bestPrec {
			best, bestPrec = ixn, p
		}
	}
	if best == nil {
		if defaultAllow {
			return Decision{Allowed: true, Reason: "Default behavior configured by ACLs"}
		}
		return Decision{Allowed: false, Reason: "Default behavior configured by ACLs"}
	}
	allowed := best.Action == catalog.IntentionAllow && len(best.Permissions) == 0
	return Decision{
		Allowed: allowed,
		Reason:  fmt.Sprintf("Matched L4 intention: %s => %s (%s)", best.SourceName, best.DestinationName, actionOf(best)),
		Match:   best,
	}
}

func actionOf(ixn *catalog.Intention) string {
	if len(ixn.Permissions) > 0 {
		return "L7 permissions"
	}
	return ixn.Action
}

func matches(pattern, name string) bool {
	return pattern == catalog.IntentionWildcard || pattern == name
}

// SortByPrecedence orders intentions as Consul lists them: highest
// precedence first, then by source and destination name.
func SortByPrecedence(ixns []*catalog.Intention) {
	sort.SliceStable(ixns, func(i, j int) bool {
		a, b := ixns[i], ixns[j]
		pa, pb := Precedence(a.SourceName, a.DestinationName), Precedence(b.SourceName, b.DestinationName)
		if pa != pb {
			return pa > pb
		}
		if a.DestinationName != b.DestinationName {
			return a.DestinationName < b.DestinationName
		}
		return a.SourceName < b.SourceName
	})
}
