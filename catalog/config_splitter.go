package catalog

import (
	"errors"
	"fmt"
	"math"
)

// ServiceSplitterEntry is the body of a service-splitter entry: the
// traffic of a service split by weight between services and subsets.
type ServiceSplitterEntry struct {
	Splits []ServiceSplit    `json:",omitempty"`
	Meta   map[string]string `json:",omitempty"`
}

// ServiceSplit is one share of a splitter.
type ServiceSplit struct {
	Weight          float32
	Service         string               `json:",omitempty"`
	ServiceSubset   string               `json:",omitempty"`
	Namespace       string               `json:",omitempty"`
	Partition       string               `json:",omitempty"`
	RequestHeaders  *HTTPHeaderModifiers `json:",omitempty"`
	ResponseHeaders *HTTPHeaderModifiers `json:",omitempty"`
}

// ScaledWeight is a split weight in hundredths of a percent, the unit in
// which weights must sum to 100%.
func ScaledWeight(w float32) int {
	return int(math.Round(float64(w) * 100))
}

func (e *ServiceSplitterEntry) validate(name string) error {
	if err := validateMeta(e.Meta); err != nil {
		return err
	}
	if len(e.Splits) == 0 {
		return errors.New("no splits configured")
	}
	if err := checkCount("Splits", len(e.Splits)); err != nil {
		return err
	}
	type dest struct{ svc, subset, ns string }
	seen := map[dest]bool{}
	sum := 0
	for i, s := range e.Splits {
		if s.Weight < 0 || s.Weight > 100 || math.IsNaN(float64(s.Weight)) {
			return fmt.Errorf("Splits[%d]: weight %v must be between 0 and 100", i, s.Weight)
		}
		sum += ScaledWeight(s.Weight)
		d := dest{s.Service, s.ServiceSubset, s.Namespace}
		if d.svc == "" {
			d.svc = name
		}
		if seen[d] {
			return fmt.Errorf("split destination occurs more than once: service %q subset %q", d.svc, d.subset)
		}
		seen[d] = true
		if s.Partition != "" && s.Partition != "default" {
			return fmt.Errorf("Splits[%d]: partitions are a Consul Enterprise feature", i)
		}
		if err := s.RequestHeaders.validate(fmt.Sprintf("Splits[%d].RequestHeaders", i)); err != nil {
			return err
		}
		if err := s.ResponseHeaders.validate(fmt.Sprintf("Splits[%d].ResponseHeaders", i)); err != nil {
			return err
		}
	}
	if sum != 10000 {
		return fmt.Errorf("the sum of all split weights must be 100, not %f", float32(sum)/100)
	}
	return nil
}
