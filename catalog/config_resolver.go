package catalog

import (
	"errors"
	"fmt"
	"regexp"
	"sort"

	"github.com/hashicorp/go-bexpr"
)

// ServiceResolverEntry is the body of a service-resolver entry: which
// instances of a service make up each subset, where requests go instead
// (Redirect), where they fail over to, and connection settings.
type ServiceResolverEntry struct {
	DefaultSubset  string                             `json:",omitempty"`
	Subsets        map[string]ServiceResolverSubset   `json:",omitempty"`
	Redirect       *ServiceResolverRedirect           `json:",omitempty"`
	Failover       map[string]ServiceResolverFailover `json:",omitempty"`
	ConnectTimeout Duration                           `json:",omitempty"`
	RequestTimeout Duration                           `json:",omitempty"`
	LoadBalancer   *LoadBalancer                      `json:",omitempty"`
	Meta           map[string]string                  `json:",omitempty"`
}

// ServiceResolverSubset selects instances with a bexpr filter.
type ServiceResolverSubset struct {
	Filter      string `json:",omitempty"`
	OnlyPassing bool   `json:",omitempty"`
}

// ServiceResolverRedirect sends every request for the service elsewhere.
type ServiceResolverRedirect struct {
	Service       string `json:",omitempty"`
	ServiceSubset string `json:",omitempty"`
	Namespace     string `json:",omitempty"`
	Partition     string `json:",omitempty"`
	Datacenter    string `json:",omitempty"`
	Peer          string `json:",omitempty"`
	SamenessGroup string `json:",omitempty"`
}

// ServiceResolverFailover lists where requests go when a subset has no
// healthy instance.
type ServiceResolverFailover struct {
	Service       string                          `json:",omitempty"`
	ServiceSubset string                          `json:",omitempty"`
	Namespace     string                          `json:",omitempty"`
	Datacenters   []string                        `json:",omitempty"`
	Targets       []ServiceResolverFailoverTarget `json:",omitempty"`
	Policy        *ServiceResolverFailoverPolicy  `json:",omitempty"`
	SamenessGroup string                          `json:",omitempty"`
}

// ServiceResolverFailoverTarget is one failover destination.
type ServiceResolverFailoverTarget struct {
	Service       string `json:",omitempty"`
	ServiceSubset string `json:",omitempty"`
	Partition     string `json:",omitempty"`
	Namespace     string `json:",omitempty"`
	Datacenter    string `json:",omitempty"`
	Peer          string `json:",omitempty"`
}

// ServiceResolverFailoverPolicy orders failover targets.
type ServiceResolverFailoverPolicy struct {
	Mode    string   `json:",omitempty"`
	Regions []string `json:",omitempty"`
}

// LoadBalancer is a resolver's load-balancing policy.
type LoadBalancer struct {
	Policy             string              `json:",omitempty"`
	RingHashConfig     *RingHashConfig     `json:",omitempty"`
	LeastRequestConfig *LeastRequestConfig `json:",omitempty"`
	HashPolicies       []HashPolicy        `json:",omitempty"`
}

// RingHashConfig configures the ring_hash policy.
type RingHashConfig struct {
	MinimumRingSize uint64 `json:",omitempty"`
	MaximumRingSize uint64 `json:",omitempty"`
}

// LeastRequestConfig configures the least_request policy.
type LeastRequestConfig struct {
	ChoiceCount uint32 `json:",omitempty"`
}

// HashPolicy is one input of a hash-based policy.
type HashPolicy struct {
	Field        string        `json:",omitempty"`
	FieldValue   string        `json:",omitempty"`
	CookieConfig *CookieConfig `json:",omitempty"`
	SourceIP     bool          `json:",omitempty"`
	Terminal     bool          `json:",omitempty"`
}

// CookieConfig configures hashing on a cookie.
type CookieConfig struct {
	Session bool     `json:",omitempty"`
	TTL     Duration `json:",omitempty"`
	Path    string   `json:",omitempty"`
}

// validSubsetName is the shape Consul requires of subset names.
var validSubsetName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)

// SubsetNames returns the resolver's subset names, sorted.
func (e *ServiceResolverEntry) SubsetNames() []string {
	out := make([]string, 0, len(e.Subsets))
	for k := range e.Subsets {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (e *ServiceResolverEntry) validate(name string) error {
	if err := validateMeta(e.Meta); err != nil {
		return err
	}
	if err := checkCount("Subsets", len(e.Subsets)); err != nil {
		return err
	}
	if err := checkCount("Failover", len(e.Failover)); err != nil {
		return err
	}
	for _, sub := range e.SubsetNames() {
		if !validSubsetName.MatchString(sub) {
			return fmt.Errorf("Subset %q is invalid: a subset name must be lower-case letters, digits and dashes", sub)
		}
		if f := e.Subsets[sub].Filter; f != "" {
			if _, err := bexpr.CreateEvaluator(f); err != nil {
				return fmt.Errorf("Bad Filter for Subset %q: %w", sub, err)
			}
		}
	}
	if e.DefaultSubset != "" {
		if _, ok := e.Subsets[e.DefaultSubset]; !ok {
			return fmt.Errorf("DefaultSubset %q is not a valid subset", e.DefaultSubset)
		}
	}
	if r := e.Redirect; r != nil {
		if len(e.Subsets) > 0 {
			return errors.New("Redirect and Subsets cannot both be set")
		}
		if len(e.Failover) > 0 {
			return errors.New("Redirect and Failover cannot both be set")
		}
		if *r == (ServiceResolverRedirect{}) {
			return errors.New("Redirect is empty")
		}
		if r.ServiceSubset != "" && (r.Service == "" || r.Service == name) {
			return fmt.Errorf("Redirect.ServiceSubset %q is not a valid subset of %q", r.ServiceSubset, name)
		}
		if r.Peer != "" && r.Datacenter != "" {
			return errors.New("Redirect: Peer cannot be set with Datacenter")
		}
		if r.SamenessGroup != "" {
			return errors.New("Redirect: sameness groups are a Consul Enterprise feature")
		}
		if r.Partition != "" && r.Partition != "default" {
			return errors.New("Redirect: partitions are a Consul Enterprise feature")
		}
	}
	keys := make([]string, 0, len(e.Failover))
	for k := range e.Failover {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, subset := range keys {
		f := e.Failover[subset]
		if subset != "*" {
			if _, ok := e.Subsets[subset]; !ok {
				return fmt.Errorf("Bad Failover[%q]: not a valid subset", subset)
			}
		}
		if f.Service == "" && f.ServiceSubset == "" && f.Namespace == "" && len(f.Datacenters) == 0 &&
			len(f.Targets) == 0 && f.SamenessGroup == "" {
			return fmt.Errorf("Bad Failover[%q]: one of Service, ServiceSubset, Namespace, Targets, SamenessGroup, or Datacenters is required", subset)
		}
		if f.SamenessGroup != "" {
			return fmt.Errorf("Bad Failover[%q]: sameness groups are a Consul Enterprise feature", subset)
		}
		if len(f.Targets) > 0 && (f.Service != "" || f.ServiceSubset != "" || f.Namespace != "" || len(f.Datacenters) > 0) {
			return fmt.Errorf("Bad Failover[%q]: Targets cannot be set with Service, ServiceSubset, Namespace, or Datacenters", subset)
		}
		if f.ServiceSubset != "" && (f.Service == "" || f.Service == name) {
			if _, ok := e.Subsets[f.ServiceSubset]; !ok {
				return fmt.Errorf("Bad Failover[%q].ServiceSubset %q is not a valid subset of %q", subset, f.ServiceSubset, name)
			}
		}
		if err := checkCount(fmt.Sprintf("Failover[%q].Targets", subset), len(f.Targets)+len(f.Datacenters)); err != nil {
			return err
		}
		for _, dc := range f.Datacenters {
			if dc == "" {
				return fmt.Errorf("Bad Failover[%q].Datacenters: found empty datacenter", subset)
			}
		}
		for i, t := range f.Targets {
			if t.Peer != "" && t.Datacenter != "" {
				return fmt.Errorf("Bad Failover[%q].Targets[%d]: Peer cannot be set with Datacenter", subset, i)
			}
			if t.Partition != "" && t.Partition != "default" {
				return fmt.Errorf("Bad Failover[%q].Targets[%d]: partitions are a Consul Enterprise feature", subset, i)
			}
			if t.ServiceSubset != "" && (t.Service == "" || t.Service == name) {
				if _, ok := e.Subsets[t.ServiceSubset]; !ok {
					return fmt.Errorf("Bad Failover[%q].Targets[%d].ServiceSubset %q is not a valid subset of %q", subset, i, t.ServiceSubset, name)
				}
			}
		}
		if p := f.Policy; p != nil && p.Mode != "" && p.Mode != "default" && p.Mode != "order-by-locality" {
			return fmt.Errorf("Bad Failover[%q].Policy: mode %q is not valid", subset, p.Mode)
		}
	}
	if e.ConnectTimeout < 0 {
		return fmt.Errorf("Bad ConnectTimeout '%s', must be >= 0", e.ConnectTimeout)
	}
	if e.RequestTimeout < 0 {
		return fmt.Errorf("Bad RequestTimeout '%s', must be >= 0", e.RequestTimeout)
	}
	return e.LoadBalancer.validate()
}

func (lb *LoadBalancer) validate() error {
	if lb == nil {
		return nil
	}
	switch lb.Policy {
	case "", "random", "round_robin", "least_request", "ring_hash", "maglev":
	default:
		return fmt.Errorf("Bad LoadBalancer policy: %q is not supported", lb.Policy)
	}
	if lb.LeastRequestConfig != nil && lb.Policy != "least_request" {
		return fmt.Errorf("LeastRequestConfig specified for incompatible load balancing policy %q", lb.Policy)
	}
	if lb.RingHashConfig != nil && lb.Policy != "ring_hash" {
		return fmt.Errorf("RingHashConfig specified for incompatible load balancing policy %q", lb.Policy)
	}
	if rh := lb.RingHashConfig; rh != nil && rh.MaximumRingSize != 0 && rh.MinimumRingSize > rh.MaximumRingSize {
		return errors.New("Bad LoadBalancer RingHashConfig: MinimumRingSize is greater than MaximumRingSize")
	}
	if len(lb.HashPolicies) > 0 && lb.Policy != "ring_hash" && lb.Policy != "maglev" {
		return fmt.Errorf("HashPolicies specified for non-hash-based Policy: %q", lb.Policy)
	}
	if err := checkCount("HashPolicies", len(lb.HashPolicies)); err != nil {
		return err
	}
	for i, hp := range lb.HashPolicies {
		switch hp.Field {
		case "", "header", "cookie", "query_parameter":
		default:
			return fmt.Errorf("Bad LoadBalancer HashPolicy[%d]: %q is not a supported field", i, hp.Field)
		}
		if hp.SourceIP && hp.Field != "" {
			return fmt.Errorf("Bad LoadBalancer HashPolicy[%d]: a single hash policy cannot hash both a source address and a %q", i, hp.Field)
		}
		if hp.Field != "" && hp.FieldValue == "" {
			return fmt.Errorf("Bad LoadBalancer HashPolicy[%d]: field %q was specified without a FieldValue", i, hp.Field)
		}
		if hp.FieldValue != "" && hp.Field == "" {
			return fmt.Errorf("Bad LoadBalancer HashPolicy[%d]: FieldValue requires a Field to apply to", i)
		}
		if hp.CookieConfig != nil {
			if hp.Field != "cookie" {
				return fmt.Errorf("Bad LoadBalancer HashPolicy[%d]: cookie_config provided for %q", i, hp.Field)
			}
			if hp.CookieConfig.Session && hp.CookieConfig.TTL != 0 {
				return fmt.Errorf("Bad LoadBalancer HashPolicy[%d]: a session cookie cannot have an associated TTL", i)
			}
		}
	}
	return nil
}
