package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"time"
)

// ServiceDefinition is a service registered with the local agent, from the
// services/service configuration keys or a /v1/agent/service/register body.
// The JSON names are the HTTP API's.
type ServiceDefinition struct {
	// ID is the service instance ID; empty means Name (see ServiceID).
	ID string `json:"ID,omitempty"`
	// Name is the service name; required.
	Name string `json:"Name"`
	// Tags are the service tags.
	Tags []string `json:"Tags,omitempty"`
	// Address is the service address; empty means the node's.
	Address string `json:"Address,omitempty"`
	// TaggedAddresses are extra addresses by tag ("lan", "wan", ...).
	TaggedAddresses map[string]ServiceAddress `json:"TaggedAddresses,omitempty"`
	// Meta is free-form metadata, with the same limits as node_meta.
	Meta map[string]string `json:"Meta,omitempty"`
	// Port is the service port.
	Port int `json:"Port,omitempty"`
	// Kind is "" for a typical service, or "connect-proxy",
	// "mesh-gateway", "terminating-gateway", "ingress-gateway" or
	// "api-gateway".
	Kind string `json:"Kind,omitempty"`
	// EnableTagOverride lets the catalog's copy of the tags win over the
	// agent's during anti-entropy.
	EnableTagOverride bool `json:"EnableTagOverride,omitempty"`
	// Weights are the DNS SRV weights; {1, 1} when not given.
	Weights Weights `json:"Weights"`
	// Check is a single check for the service.
	Check *CheckDefinition `json:"Check,omitempty"`
	// Checks are more checks for the service.
	Checks []CheckDefinition `json:"Checks,omitempty"`
	// Token is the ACL token used to register the service.
	Token string `json:"Token,omitempty"`
	// Connect is the connect block, kept as decoded.
	Connect map[string]interface{} `json:"Connect,omitempty"`
	// Proxy is the proxy block of a connect-proxy, kept as decoded.
	Proxy map[string]interface{} `json:"Proxy,omitempty"`
	// SocketPath is socket_path: a Unix socket the service listens on,
	// instead of an address and port.
	SocketPath string `json:"SocketPath,omitempty"`
	// Locality is locality: the region and zone the instance runs in.
	Locality *Locality `json:"Locality,omitempty"`
}

// Locality is where a service instance runs.
type Locality struct {
	// Region is the region.
	Region string `json:"Region,omitempty"`
	// Zone is the zone within the region.
	Zone string `json:"Zone,omitempty"`
}

// ServiceAddress is one of a service's tagged addresses.
type ServiceAddress struct {
	// Address is the IP address or host name.
	Address string `json:"Address"`
	// Port is the port.
	Port int `json:"Port"`
}

// Weights are a service's DNS SRV weights by health.
type Weights struct {
	// Passing is the weight while every check passes; at least 1.
	Passing int `json:"Passing"`
	// Warning is the weight while a check warns.
	Warning int `json:"Warning"`
}

// CheckDefinition is a health check registered with the local agent, from
// the checks/check configuration keys, a service's check(s), or a
// /v1/agent/check/register body. The JSON names are the HTTP API's.
type CheckDefinition struct {
	// ID is the check ID (also read from CheckID / check_id).
	ID string `json:"ID,omitempty"`
	// Name is the check name.
	Name string `json:"Name,omitempty"`
	// Notes is free-form text for humans.
	Notes string `json:"Notes,omitempty"`
	// ServiceID ties the check to a service on this agent.
	ServiceID string `json:"ServiceID,omitempty"`
	// Token is the ACL token used to register the check.
	Token string `json:"Token,omitempty"`
	// Status is the initial status: "passing", "warning" or "critical".
	Status string `json:"Status,omitempty"`

	// ScriptArgs is the command of a script check (args in files).
	ScriptArgs []string `json:"ScriptArgs,omitempty"`
	// HTTP is the URL of an HTTP check.
	HTTP string `json:"HTTP,omitempty"`
	// Header are the HTTP check's request headers.
	Header map[string][]string `json:"Header,omitempty"`
	// Method is the HTTP check's method (default GET).
	Method string `json:"Method,omitempty"`
	// Body is the HTTP check's request body.
	Body string `json:"Body,omitempty"`
	// DisableRedirects stops the HTTP check following redirects.
	DisableRedirects bool `json:"DisableRedirects,omitempty"`
	// TLSSkipVerify skips certificate verification for HTTP, gRPC, H2PING
	// and TCP-with-TLS checks.
	TLSSkipVerify bool `json:"TLSSkipVerify,omitempty"`
	// TLSServerName is the SNI name those checks send.
	TLSServerName string `json:"TLSServerName,omitempty"`
	// TCP is the host:port of a TCP check.
	TCP string `json:"TCP,omitempty"`
	// TCPUseTLS makes the TCP check do a TLS handshake.
	TCPUseTLS bool `json:"TCPUseTLS,omitempty"`
	// UDP is the host:port of a UDP check.
	UDP string `json:"UDP,omitempty"`
	// GRPC is the host:port[/service] of a gRPC health check.
	GRPC string `json:"GRPC,omitempty"`
	// GRPCUseTLS makes the gRPC check use TLS.
	GRPCUseTLS bool `json:"GRPCUseTLS,omitempty"`
	// H2PING is the host:port of an HTTP/2 PING check.
	H2PING string `json:"H2PING,omitempty"`
	// H2PingUseTLS makes the H2PING check use TLS.
	H2PingUseTLS bool `json:"H2PingUseTLS,omitempty"`
	// AliasNode is the node of an alias check.
	AliasNode string `json:"AliasNode,omitempty"`
	// AliasService is the service of an alias check.
	AliasService string `json:"AliasService,omitempty"`
	// DockerContainerID runs ScriptArgs inside this container.
	DockerContainerID string `json:"DockerContainerID,omitempty"`
	// Shell is the shell a Docker check runs ScriptArgs with.
	Shell string `json:"Shell,omitempty"`

	// TTL makes this a TTL check that must be updated within TTL.
	TTL time.Duration `json:"TTL,omitempty"`
	// Interval is how often an active check runs.
	Interval time.Duration `json:"Interval,omitempty"`
	// Timeout bounds one run of an active check.
	Timeout time.Duration `json:"Timeout,omitempty"`
	// DeregisterCriticalServiceAfter deregisters the check's service after
	// it has been critical this long; zero never does.
	DeregisterCriticalServiceAfter time.Duration `json:"DeregisterCriticalServiceAfter,omitempty"`
	// SuccessBeforePassing is the number of consecutive successes before
	// the status becomes passing.
	SuccessBeforePassing int `json:"SuccessBeforePassing,omitempty"`
	// FailuresBeforeWarning is the number of consecutive failures before
	// the status becomes warning.
	FailuresBeforeWarning int `json:"FailuresBeforeWarning,omitempty"`
	// FailuresBeforeCritical is the number of consecutive failures before
	// the status becomes critical.
	FailuresBeforeCritical int `json:"FailuresBeforeCritical,omitempty"`
	// OutputMaxSize caps the stored output; zero means the agent's
	// check_output_max_size.
	OutputMaxSize int `json:"OutputMaxSize,omitempty"`
}

// DecodeServiceDefinition decodes a service definition from a decoded JSON
// or HCL object. Keys may be spelled as in the HTTP API ("EnableTagOverride")
// or as in configuration files ("enable_tag_override"); durations may be
// strings ("10s") or numbers of nanoseconds. Unknown keys are ignored.
// The result is not validated; call Validate.
func DecodeServiceDefinition(m map[string]interface{}) (*ServiceDefinition, error) {
	return decodeService("", m, true, func(string) {})
}

// DecodeCheckDefinition decodes a check definition the way
// DecodeServiceDefinition decodes a service.
func DecodeCheckDefinition(m map[string]interface{}) (*CheckDefinition, error) {
	return decodeCheck("", m, true, func(string) {})
}

// UnmarshalJSON decodes s from JSON with DecodeServiceDefinition's rules,
// so an HTTP handler can decode a request body straight into it.
func (s *ServiceDefinition) UnmarshalJSON(b []byte) error {
	if string(bytes.TrimSpace(b)) == "null" {
		return nil // encoding/json's convention: null leaves the value alone
	}
	m, err := decodeJSONObject(b)
	if err != nil {
		return err
	}
	d, err := DecodeServiceDefinition(m)
	if err != nil {
		return err
	}
	*s = *d
	return nil
}

// UnmarshalJSON decodes c from JSON with DecodeCheckDefinition's rules.
func (c *CheckDefinition) UnmarshalJSON(b []byte) error {
	if string(bytes.TrimSpace(b)) == "null" {
		return nil // encoding/json's convention: null leaves the value alone
	}
	m, err := decodeJSONObject(b)
	if err != nil {
		return err
	}
	d, err := DecodeCheckDefinition(m)
	if err != nil {
		return err
	}
	*c = *d
	return nil
}

// decodeJSONObject decodes a JSON object keeping numbers exact. JSON null
// gives a nil map, which decodes to a zero definition.
func decodeJSONObject(b []byte) (map[string]interface{}, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]interface{}
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	return m, nil
}

// ServiceID returns the ID the service is registered under: ID, or Name
// when ID is empty.
func (s *ServiceDefinition) ServiceID() string {
	if s.ID != "" {
		return s.ID
	}
	return s.Name
}

// normalizeKey folds the spellings Consul accepts for one field
// ("DeregisterCriticalServiceAfter", "deregister_critical_service_after")
// to one form.
func normalizeKey(k string) string {
	k = strings.ToLower(k)
	return strings.NewReplacer("_", "", "-", "").Replace(k)
}

// defField decodes one definition key. allowNanos says whether numeric
// durations are nanoseconds.
type defField func(path string, v interface{}, allowNanos bool, unknown func(string)) error

// decodeDef applies m to fields by normalized key. ignored lists API fields
// accepted and dropped silently.
func decodeDef(path string, m map[string]interface{}, fields map[string]defField, ignored map[string]bool, allowNanos bool, unknown func(string)) error {
	for _, k := range sortedKeys(m) {
		p := joinPath(path, k)
		n := normalizeKey(k)
		f, ok := fields[n]
		if !ok {
			if !ignored[n] {
				unknown(p)
			}
			continue
		}
		if err := f(p, m[k], allowNanos, unknown); err != nil {
			return err
		}
	}
	return nil
}

func defString(dst *string) defField {
	return func(path string, v interface{}, _ bool, _ func(string)) error {
		s, err := toString(path, v)
		*dst = s
		return err
	}
}

func defBool(dst *bool) defField {
	return func(path string, v interface{}, _ bool, _ func(string)) error {
		b, err := toBool(path, v)
		*dst = b
		return err
	}
}

func defInt(dst *int) defField {
	return func(path string, v interface{}, _ bool, _ func(string)) error {
		n, err := toInt(path, v)
		*dst = n
		return err
	}
}

func defDuration(dst *time.Duration) defField {
	return func(path string, v interface{}, allowNanos bool, _ func(string)) error {
		d, err := toDuration(path, v, allowNanos)
		*dst = d
		return err
	}
}

func defList(dst *[]string) defField {
	return func(path string, v interface{}, _ bool, _ func(string)) error {
		l, err := toStringList(path, v)
		*dst = l
		return err
	}
}

func defStringMap(dst *map[string]string) defField {
	return func(path string, v interface{}, _ bool, _ func(string)) error {
		m, err := toStringMap(path, v)
		*dst = m
		return err
	}
}

func defRawMap(dst *map[string]interface{}) defField {
	return func(path string, v interface{}, _ bool, _ func(string)) error {
		m, err := toRawMap(path, v)
		*dst = m
		return err
	}
}

// ignoredServiceKeys are API fields Tribune accepts and does not model.
func ignoredServiceKeys() map[string]bool {
	return map[string]bool{"namespace": true, "partition": true, "peername": true}
}

// ignoredCheckKeys are API fields Tribune accepts and does not model.
func ignoredCheckKeys() map[string]bool {
	return map[string]bool{"namespace": true, "partition": true, "type": true, "osservice": true, "peername": true}
}

func decodeService(path string, v interface{}, allowNanos bool, unknown func(string)) (*ServiceDefinition, error) {
	objs, err := objectList(path, v)
	if err != nil {
		return nil, err
	}
	s := &ServiceDefinition{Weights: Weights{Passing: 1, Warning: 1}}
	fields := map[string]defField{
		"id":                defString(&s.ID),
		"name":              defString(&s.Name),
		"tags":              defList(&s.Tags),
		"address":           defString(&s.Address),
		"meta":              defStringMap(&s.Meta),
		"port":              defInt(&s.Port),
		"kind":              defString(&s.Kind),
		"enabletagoverride": defBool(&s.EnableTagOverride),
		"token":             defString(&s.Token),
		"connect":           defRawMap(&s.Connect),
		"proxy":             defRawMap(&s.Proxy),
		"taggedaddresses": func(p string, v interface{}, nanos bool, unknown func(string)) error {
			m, err := decodeTaggedAddresses(p, v, nanos, unknown)
			s.TaggedAddresses = m
			return err
		},
		"socketpath": defString(&s.SocketPath),
		"locality": func(p string, v interface{}, nanos bool, unknown func(string)) error {
			if v == nil {
				s.Locality = nil
				return nil
			}
			objs, err := objectList(p, v)
			if err != nil {
				return err
			}
			var l Locality
			fields := map[string]defField{"region": defString(&l.Region), "zone": defString(&l.Zone)}
			for _, m := range objs {
				if err := decodeDef(p, m, fields, nil, nanos, unknown); err != nil {
					return err
				}
			}
			s.Locality = &l
			return nil
		},
		"weights": func(p string, v interface{}, nanos bool, unknown func(string)) error {
			w, err := decodeWeights(p, v, nanos, unknown)
			s.Weights = w
			return err
		},
		"check": func(p string, v interface{}, nanos bool, unknown func(string)) error {
			if v == nil {
				s.Check = nil
				return nil
			}
			c, err := decodeCheck(p, v, nanos, unknown)
			s.Check = c
			return err
		},
		"checks": func(p string, v interface{}, nanos bool, unknown func(string)) error {
			objs, err := objectList(p, v)
			if err != nil {
				return err
			}
			s.Checks = nil
			for i, m := range objs {
				c, err := decodeCheck(indexPath(p, i), m, nanos, unknown)
				if err != nil {
					return err
				}
				s.Checks = append(s.Checks, *c)
			}
			return nil
		},
	}
	ignored := ignoredServiceKeys()
	for _, m := range objs {
		if err := decodeDef(path, m, fields, ignored, allowNanos, unknown); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func decodeTaggedAddresses(path string, v interface{}, allowNanos bool, unknown func(string)) (map[string]ServiceAddress, error) {
	objs, err := objectList(path, v)
	if err != nil {
		return nil, err
	}
	out := make(map[string]ServiceAddress)
	for _, m := range objs {
		for _, tag := range sortedKeys(m) {
			p := joinPath(path, tag)
			inner, err := objectList(p, m[tag])
			if err != nil {
				return nil, err
			}
			var a ServiceAddress
			fields := map[string]defField{
				"address": defString(&a.Address),
				"port":    defInt(&a.Port),
			}
			for _, im := range inner {
				if err := decodeDef(p, im, fields, nil, allowNanos, unknown); err != nil {
					return nil, err
				}
			}
			out[tag] = a
		}
	}
	return out, nil
}

func decodeWeights(path string, v interface{}, allowNanos bool, unknown func(string)) (Weights, error) {
	if v == nil {
		return Weights{Passing: 1, Warning: 1}, nil
	}
	objs, err := objectList(path, v)
	if err != nil {
		return Weights{}, err
	}
	var w Weights
	fields := map[string]defField{
		"passing": defInt(&w.Passing),
		"warning": defInt(&w.Warning),
	}
	for _, m := range objs {
		if err := decodeDef(path, m, fields, nil, allowNanos, unknown); err != nil {
			return Weights{}, err
		}
	}
	return w, nil
}

func decodeCheck(path string, v interface{}, allowNanos bool, unknown func(string)) (*CheckDefinition, error) {
	objs, err := objectList(path, v)
	if err != nil {
		return nil, err
	}
	c := &CheckDefinition{}
	fields := map[string]defField{
		"id":                             defString(&c.ID),
		"checkid":                        defString(&c.ID),
		"name":                           defString(&c.Name),
		"notes":                          defString(&c.Notes),
		"serviceid":                      defString(&c.ServiceID),
		"token":                          defString(&c.Token),
		"status":                         defString(&c.Status),
		"scriptargs":                     defList(&c.ScriptArgs),
		"args":                           defList(&c.ScriptArgs),
		"http":                           defString(&c.HTTP),
		"method":                         defString(&c.Method),
		"body":                           defString(&c.Body),
		"disableredirects":               defBool(&c.DisableRedirects),
		"tlsskipverify":                  defBool(&c.TLSSkipVerify),
		"tlsservername":                  defString(&c.TLSServerName),
		"tcp":                            defString(&c.TCP),
		"tcpusetls":                      defBool(&c.TCPUseTLS),
		"udp":                            defString(&c.UDP),
		"grpc":                           defString(&c.GRPC),
		"grpcusetls":                     defBool(&c.GRPCUseTLS),
		"h2ping":                         defString(&c.H2PING),
		"h2pingusetls":                   defBool(&c.H2PingUseTLS),
		"aliasnode":                      defString(&c.AliasNode),
		"aliasservice":                   defString(&c.AliasService),
		"dockercontainerid":              defString(&c.DockerContainerID),
		"shell":                          defString(&c.Shell),
		"ttl":                            defDuration(&c.TTL),
		"interval":                       defDuration(&c.Interval),
		"timeout":                        defDuration(&c.Timeout),
		"deregistercriticalserviceafter": defDuration(&c.DeregisterCriticalServiceAfter),
		"successbeforepassing":           defInt(&c.SuccessBeforePassing),
		"failuresbeforewarning":          defInt(&c.FailuresBeforeWarning),
		"failuresbeforecritical":         defInt(&c.FailuresBeforeCritical),
		"outputmaxsize":                  defInt(&c.OutputMaxSize),
		"header": func(p string, v interface{}, _ bool, _ func(string)) error {
			h, err := decodeHeader(p, v)
			c.Header = h
			return err
		},
	}
	ignored := ignoredCheckKeys()
	for _, m := range objs {
		if err := decodeDef(path, m, fields, ignored, allowNanos, unknown); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func decodeHeader(path string, v interface{}) (map[string][]string, error) {
	objs, err := objectList(path, v)
	if err != nil {
		return nil, err
	}
	out := make(map[string][]string)
	for _, m := range objs {
		for _, k := range sortedKeys(m) {
			l, err := toStringList(joinPath(path, k), m[k])
			if err != nil {
				return nil, err
			}
			out[k] = l
		}
	}
	return out, nil
}

// validServiceKind reports whether k is a service kind Consul defines.
func validServiceKind(k string) bool {
	switch k {
	case "", "connect-proxy", "mesh-gateway", "terminating-gateway", "ingress-gateway", "api-gateway":
		return true
	}
	return false
}

// Validate checks s and its checks. Error messages name the offending key
// in file spelling ("checks[0].interval: ...").
func (s *ServiceDefinition) Validate() error {
	var errs []error
	if s.Name == "" {
		errs = append(errs, fieldErr("name", "missing service name"))
	}
	if !validServiceKind(s.Kind) {
		errs = append(errs, fieldErrf("kind", "unknown service kind %q", s.Kind))
	}
	if s.Port < 0 || s.Port > 65535 {
		errs = append(errs, fieldErrf("port", "must be between 0 and 65535, got %d", s.Port))
	}
	for tag, a := range s.TaggedAddresses {
		if a.Port < 0 || a.Port > 65535 {
			errs = append(errs, fieldErrf("tagged_addresses."+tag+".port", "must be between 0 and 65535, got %d", a.Port))
		}
	}
	if s.Weights.Passing < 1 {
		errs = append(errs, fieldErrf("weights.passing", "must be at least 1, got %d", s.Weights.Passing))
	}
	if s.Weights.Warning < 0 {
		errs = append(errs, fieldErrf("weights.warning", "must not be negative, got %d", s.Weights.Warning))
	}
	if err := validateMeta("meta", s.Meta); err != nil {
		errs = append(errs, err)
	}
	if s.Check != nil {
		if err := s.Check.Validate(); err != nil {
			errs = append(errs, prefixErrors("check", err))
		}
	}
	for i := range s.Checks {
		if err := s.Checks[i].Validate(); err != nil {
			errs = append(errs, prefixErrors(indexPath("checks", i), err))
		}
	}
	sortErrors(errs)
	return errors.Join(errs...)
}

// Validate checks c on its own: it has exactly the fields its kind needs.
// It does not require a name, because a service's checks get one from the
// service; the agent requires it for stand-alone checks.
func (c *CheckDefinition) Validate() error {
	var errs []error
	isScript := len(c.ScriptArgs) > 0
	isDocker := c.DockerContainerID != ""
	isAlias := c.AliasService != "" || c.AliasNode != ""
	interval := isScript || c.HTTP != "" || c.TCP != "" || c.UDP != "" || c.GRPC != "" || c.H2PING != ""
	if !interval && !isAlias && c.TTL == 0 && !isDocker {
		errs = append(errs, fieldErr("", "must set one of args, http, tcp, udp, grpc, h2ping, ttl, docker_container_id, alias_service or alias_node"))
	}
	if interval && c.Interval <= 0 {
		errs = append(errs, fieldErr("interval", "must be greater than 0 for script, http, tcp, udp, grpc and h2ping checks"))
	}
	if isDocker && !isScript {
		errs = append(errs, fieldErr("args", "required for a docker_container_id check"))
	}
	if isAlias && c.Interval != 0 {
		errs = append(errs, fieldErr("interval", "must not be set for an alias check"))
	}
	if isAlias && c.TTL != 0 {
		errs = append(errs, fieldErr("ttl", "must not be set for an alias check"))
	}
	for name, d := range map[string]time.Duration{
		"ttl":                               c.TTL,
		"interval":                          c.Interval,
		"timeout":                           c.Timeout,
		"deregister_critical_service_after": c.DeregisterCriticalServiceAfter,
	} {
		if d < 0 {
			errs = append(errs, fieldErrf(name, "must not be negative, got %s", d))
		}
	}
	switch c.Status {
	case "", "passing", "warning", "critical":
	default:
		errs = append(errs, fieldErrf("status", "must be passing, warning or critical, got %q", c.Status))
	}
	for name, n := range map[string]int{
		"output_max_size":          c.OutputMaxSize,
		"success_before_passing":   c.SuccessBeforePassing,
		"failures_before_warning":  c.FailuresBeforeWarning,
		"failures_before_critical": c.FailuresBeforeCritical,
	} {
		if n < 0 {
			errs = append(errs, fieldErrf(name, "must not be negative, got %d", n))
		}
	}
	sortErrors(errs)
	return errors.Join(errs...)
}
