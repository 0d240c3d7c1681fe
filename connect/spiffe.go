// Package connect is the service mesh's certificate authority and its
// authorization rules: SPIFFE identities, the built-in CA's roots (creation,
// rotation with cross-signing), leaf certificates signed from an agent's CSR,
// when a leaf must be renewed, and the evaluation of intentions.
//
// It is pure: no network, no storage, no goroutines, no clock of its own
// (callers pass the time). The state store keeps roots and intentions; the
// server's leader decides when to rotate; agents ask for leaves.
package connect

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// TrustDomain returns the trust domain of a cluster: <cluster-id>.consul.
func TrustDomain(clusterID string) string { return clusterID + ".consul" }

// DefaultNamespace is the namespace of every service (namespaces are an
// enterprise feature Tribune does not have).
const DefaultNamespace = "default"

// Kind tells which sort of identity a SPIFFE ID names.
type Kind int

// The kinds of identity Consul's SPIFFE IDs name.
const (
	KindService Kind = iota + 1
	KindAgent
	KindServer
	KindSigning
)

// ID is a parsed SPIFFE identity of the mesh.
type ID struct {
	Kind        Kind
	TrustDomain string
	Namespace   string // services only
	Datacenter  string // services, agents, servers
	Service     string // services only
	Node        string // agents only
}

// ServiceID returns the identity of service in datacenter dc.
func ServiceID(trustDomain, dc, service string) ID {
	return ID{Kind: KindService, TrustDomain: trustDomain, Namespace: DefaultNamespace, Datacenter: dc, Service: service}
}

// URI returns the ID as a URL:
//
//	service: spiffe://<td>/ns/<ns>/dc/<dc>/svc/<service>
//	agent:   spiffe://<td>/agent/client/dc/<dc>/id/<node>
//	server:  spiffe://<td>/agent/server/dc/<dc>
//	signing: spiffe://<td>
func (id ID) URI() *url.URL {
	u := &url.URL{Scheme: "spiffe", Host: id.TrustDomain}
	switch id.Kind {
	case KindService:
		u.Path = fmt.Sprintf("/ns/%s/dc/%s/svc/%s", id.Namespace, id.Datacenter, id.Service)
	case KindAgent:
		u.Path = fmt.Sprintf("/agent/client/dc/%s/id/%s", id.Datacenter, id.Node)
	case KindServer:
		u.Path = fmt.Sprintf("/agent/server/dc/%s", id.Datacenter)
	}
	return u
}

// String returns the URI's text.
func (id ID) String() string { return id.URI().String() }

// ErrBadSpiffeID is returned (wrapped) for a URI that is not one of the mesh's
// SPIFFE IDs.
var ErrBadSpiffeID = errors.New("not a SPIFFE ID of the mesh")

// ParseID parses one of the URIs URI returns.
func ParseID(s string) (ID, error) {
	if len(s) > 2048 {
		return ID{}, fmt.Errorf("%w: longer than 2048 bytes", ErrBadSpiffeID)
	}
	u, err := url.Parse(s)
	if err != nil {
		return ID{}, fmt.Errorf("%w: %v", ErrBadSpiffeID, err)
	}
	if u.Scheme != "spiffe" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return ID{}, fmt.Errorf("%w: %q", ErrBadSpiffeID, s)
	}
	id := ID{TrustDomain: strings.ToLower(u.Host)}
	parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	valid := func(vals ...string) bool {
		for _, v := range vals {
			if v == "" {
				return false
			}
		}
		return true
	}
	switch {
	case u.Path == "" || u.Path == "/":
		id.Kind = KindSigning
	case len(parts) == 6 && parts[0] == "ns" && parts[2] == "dc" && parts[4] == "svc" && valid(parts[1], parts[3], parts[5]):
		id.Kind, id.Namespace, id.Datacenter, id.Service = KindService, parts[1], parts[3], parts[5]
	case len(parts) == 6 && parts[0] == "agent" && parts[1] == "client" && parts[2] == "dc" && parts[4] == "id" && valid(parts[3], parts[5]):
		id.Kind, id.Datacenter, id.Node = KindAgent, parts[3], parts[5]
	case len(parts) == 4 && parts[0] == "agent" && parts[1] == "server" && parts[2] == "dc" && valid(parts[3]):
		id.Kind, id.Datacenter = KindServer, parts[3]
	default:
		return ID{}, fmt.Errorf("%w: %q", ErrBadSpiffeID, s)
	}
	return id, nil
}
