package catalog

import "time"

// CARoot is one root of the Connect CA, as stored. Its JSON form is
// Consul's CARoot plus PrivateKey, which the state store must keep (the
// leader signs with it) and which every API answer must drop: answer with
// Public().
type CARoot struct {
	ID                  string
	Name                string
	SerialNumber        uint64
	SigningKeyID        string
	ExternalTrustDomain string
	NotBefore           time.Time
	NotAfter            time.Time
	RootCert            string
	// IntermediateCerts are certificates that chain leaves signed by this
	// root's key to other roots (the cross-signed certificate during a
	// rotation).
	IntermediateCerts []string `json:",omitempty"`
	// PrivateKey is the root's signing key in PEM. Never returned by the API.
	PrivateKey     string `json:",omitempty"`
	Active         bool
	RotatedOutAt   time.Time `json:",omitempty"`
	PrivateKeyType string
	PrivateKeyBits int
	RaftIndex
}

// Public returns a copy of the root without its private key.
func (r *CARoot) Public() *CARoot {
	c := *r
	c.PrivateKey = ""
	c.IntermediateCerts = append([]string(nil), r.IntermediateCerts...)
	return &c
}

// IntentionSourceConsul is the only intention source type: a service of
// the mesh.
const IntentionSourceConsul = "consul"

// Intention actions.
const (
	IntentionAllow = "allow"
	IntentionDeny  = "deny"
)

// IntentionWildcard is the name that matches every service.
const IntentionWildcard = "*"

// Intention allows or denies connections from a source service to a
// destination service, in Consul's wire form (L4 only; Permissions hold L7
// rules as given).
type Intention struct {
	ID              string
	Description     string `json:",omitempty"`
	SourceNS        string `json:",omitempty"`
	SourceName      string
	DestinationNS   string `json:",omitempty"`
	DestinationName string
	SourceType      string
	Action          string            `json:",omitempty"`
	Permissions     []any             `json:",omitempty"`
	Meta            map[string]string `json:",omitempty"`
	Precedence      int
	CreatedAt       time.Time
	UpdatedAt       time.Time
	Hash            []byte `json:",omitempty"`
	RaftIndex
}
