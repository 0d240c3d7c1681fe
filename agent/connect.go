package agent

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tribune-mesh/tribune/agent/config"
	"github.com/tribune-mesh/tribune/agent/httpapi"
	"github.com/tribune-mesh/tribune/agent/leafcert"
	"github.com/tribune-mesh/tribune/clock"
	"github.com/tribune-mesh/tribune/connect"
)

// connectCAConfig reads connect.ca_config (snake_case or CamelCase keys,
// durations as strings) into the built-in CA's configuration, defaults
// filled, and checks it, with the cluster ID it names (cluster_id, for
// tests that need a fixed trust domain; empty means a random one). Keys the
// built-in provider does not use are ignored, as Consul's provider ignores
// them.
func connectCAConfig(cfg *config.Config) (out connect.Config, clusterID string, err error) {
	if p := cfg.Connect.CAProvider; p != "" && p != "consul" {
		return out, "", fmt.Errorf("connect.ca_provider %q: only the built-in provider \"consul\" is supported", p)
	}
	for k, v := range cfg.Connect.CAConfig {
		key := strings.ToLower(strings.ReplaceAll(k, "_", ""))
		var err error
		switch key {
		case "clusterid":
			s, ok := v.(string)
			if !ok || !isUUID(s) {
				err = fmt.Errorf("not a UUID: %v", v)
			}
			clusterID = s
		case "leafcertttl":
			out.LeafCertTTL, err = configDuration(v)
		case "rootcertttl":
			out.RootCertTTL, err = configDuration(v)
		case "intermediatecertttl":
			out.IntermediateCertTTL, err = configDuration(v)
		case "privatekeytype":
			s, ok := v.(string)
			if !ok {
				err = fmt.Errorf("not a string: %v", v)
			}
			out.PrivateKeyType = s
		case "privatekeybits":
			switch x := v.(type) {
			case int:
				out.PrivateKeyBits = x
			case int64:
				out.PrivateKeyBits = int(x)
			case float64:
				out.PrivateKeyBits = int(x)
			case string:
				out.PrivateKeyBits, err = strconv.Atoi(x)
			default:
				err = fmt.Errorf("not a number: %v", v)
			}
		}
		if err != nil {
			return out, "", fmt.Errorf("connect.ca_config.%s: %w", k, err)
		}
	}
	out = out.WithDefaults()
	if err := out.Validate(); err != nil {
		return out, "", fmt.Errorf("connect.ca_config: %w", err)
	}
	return out, clusterID, nil
}

// isUUID reports whether s is a UUID in its canonical text form.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
				return false
			}
		}
	}
	return true
}

func configDuration(v any) (time.Duration, error) {
	switch x := v.(type) {
	case string:
		return time.ParseDuration(x)
	case time.Duration:
		return x, nil
	}
	return 0, fmt.Errorf("not a duration: %v", v)
}

// newLeafCerts builds the agent's leaf certificate cache over its server or
// its RPC client.
func (a *Agent) newLeafCerts() *leafcert.Manager {
	cfg := leafcert.Config{Reader: a.backend, Datacenter: a.cfg.Datacenter, Clock: clock.New(), Logger: a.logger.Named("leafcert")}
	if a.server != nil {
		cfg.Signer = a.server
	} else {
		cfg.Signer = a.client
	}
	return leafcert.New(cfg)
}

// connectCA returns what the API changes the CA through.
func (a *Agent) connectCA() httpapi.ConnectCA {
	if a.server != nil {
		return a.server
	}
	return a.client
}
