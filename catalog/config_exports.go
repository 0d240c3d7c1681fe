package catalog

import (
	"errors"
	"fmt"
)

// exportedServicesEntry is the body of an exported-services entry: which
// services other peers (or partitions, in Enterprise) may consume.
type exportedServicesEntry struct {
	Services []struct {
		Name      string
		Namespace string
		Consumers []struct {
			Partition     string
			Peer          string
			PeerName      string
			SamenessGroup string
		}
	}
	Meta map[string]string
}

func (e *exportedServicesEntry) validate(name string) error {
	if name != "default" {
		return errors.New(`exported-services Name must be "default"`)
	}
	if err := validateMeta(e.Meta); err != nil {
		return err
	}
	if err := checkCount("Services", len(e.Services)); err != nil {
		return err
	}
	seen := map[string]bool{}
	for i, s := range e.Services {
		if s.Name == "" {
			return fmt.Errorf("Services[%d]: service name cannot be empty", i)
		}
		if s.Namespace != "" && s.Namespace != "default" && s.Namespace != "*" {
			return fmt.Errorf("Services[%d]: namespaces are a Consul Enterprise feature", i)
		}
		if seen[s.Name] {
			return fmt.Errorf("Services[%d]: duplicate service %q", i, s.Name)
		}
		seen[s.Name] = true
		if len(s.Consumers) == 0 {
			return fmt.Errorf("Services[%d]: must have at least one consumer", i)
		}
		if err := checkCount(fmt.Sprintf("Services[%d].Consumers", i), len(s.Consumers)); err != nil {
			return err
		}
		for j, c := range s.Consumers {
			peer := c.Peer
			if peer == "" {
				peer = c.PeerName
			}
			switch countSet(c.Partition != "", peer != "", c.SamenessGroup != "") {
			case 0:
				return fmt.Errorf("Services[%d].Consumers[%d]: must define at least one of Peer, Partition, or SamenessGroup", i, j)
			case 1:
			default:
				return fmt.Errorf("Services[%d].Consumers[%d]: must define at most one of Peer, Partition, or SamenessGroup", i, j)
			}
			if c.Partition != "" && c.Partition != "default" {
				return fmt.Errorf("Services[%d].Consumers[%d]: partitions are a Consul Enterprise feature", i, j)
			}
			if c.SamenessGroup != "" {
				return fmt.Errorf("Services[%d].Consumers[%d]: sameness groups are a Consul Enterprise feature", i, j)
			}
			if peer == "default" {
				return fmt.Errorf("Services[%d].Consumers[%d]: a peer cannot be named \"default\"", i, j)
			}
		}
	}
	return nil
}
