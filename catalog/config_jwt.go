package catalog

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
)

// jwtProviderEntry is the body of a jwt-provider entry: where the keys
// that verify a JWT come from, and where the token is found.
type jwtProviderEntry struct {
	JSONWebKeySet *struct {
		Local *struct {
			JWKS     string
			Filename string
		}
		Remote *struct {
			URI              string
			RequestTimeoutMs int
			CacheDuration    Duration
			RetryPolicy      *struct {
				NumRetries         int
				RetryPolicyBackOff *struct {
					BaseInterval Duration
					MaxInterval  Duration
				}
			}
			JWKSCluster *struct {
				DiscoveryType   string
				ConnectTimeout  Duration
				TLSCertificates *struct {
					CaCertificateProviderInstance *struct{ InstanceName string }
					TrustedCA                     *struct {
						Filename            string
						EnvironmentVariable string
						InlineString        string
						InlineBytes         []byte
					}
				}
			}
		}
	}
	Issuer    string
	Audiences []string
	Locations []*struct {
		Header     *struct{ Name string }
		QueryParam *struct{ Name string }
		Cookie     *struct{ Name string }
	}
	Forwarding *struct {
		HeaderName string
	}
	ClockSkewSeconds int
	CacheConfig      *struct{ Size int }
	Meta             map[string]string
}

func (e *jwtProviderEntry) validate(string) error {
	if err := validateMeta(e.Meta); err != nil {
		return err
	}
	ks := e.JSONWebKeySet
	if ks == nil {
		return errors.New("JSONWebKeySet is required")
	}
	if (ks.Local == nil) == (ks.Remote == nil) {
		return errors.New("must specify exactly one of Local or Remote JSON Web key set")
	}
	if l := ks.Local; l != nil {
		if (l.JWKS == "") == (l.Filename == "") {
			return errors.New("must specify exactly one of String or filename for local keyset")
		}
		if l.JWKS != "" {
			if _, err := base64.StdEncoding.DecodeString(l.JWKS); err != nil {
				return errors.New("JWKS must be valid base64 encoded string")
			}
		}
	}
	if r := ks.Remote; r != nil {
		if r.URI == "" {
			return errors.New("remote JWKS URI is required")
		}
		if u, err := url.ParseRequestURI(r.URI); err != nil || u.Host == "" {
			return fmt.Errorf("remote JWKS URI %q is invalid", r.URI)
		}
		if r.RequestTimeoutMs < 0 || r.CacheDuration < 0 {
			return errors.New("remote JWKS: RequestTimeoutMs and CacheDuration cannot be negative")
		}
		if p := r.RetryPolicy; p != nil {
			if p.NumRetries < 0 {
				return errors.New("remote JWKS: RetryPolicy.NumRetries cannot be negative")
			}
			if b := p.RetryPolicyBackOff; b != nil && b.MaxInterval != 0 && b.BaseInterval > b.MaxInterval {
				return errors.New("remote JWKS: retry backoff BaseInterval cannot be greater than MaxInterval")
			}
		}
		if c := r.JWKSCluster; c != nil {
			switch c.DiscoveryType {
			case "", "STRICT_DNS", "STATIC", "LOGICAL_DNS", "EDS", "ORIGINAL_DST":
			default:
				return fmt.Errorf("unsupported jwks cluster discovery type: %q", c.DiscoveryType)
			}
			if t := c.TLSCertificates; t != nil {
				if (t.CaCertificateProviderInstance == nil) == (t.TrustedCA == nil) {
					return errors.New("must specify exactly one of CaCertificateProviderInstance or TrustedCA for JWKS' TLSCertificates")
				}
				if ca := t.TrustedCA; ca != nil && countSet(ca.Filename != "", ca.EnvironmentVariable != "", ca.InlineString != "", len(ca.InlineBytes) > 0) != 1 {
					return errors.New("must specify exactly one of Filename, EnvironmentVariable, InlineString or InlineBytes for JWKS' TrustedCA")
				}
			}
		}
	}
	if err := checkCount("Locations", len(e.Locations)+len(e.Audiences)); err != nil {
		return err
	}
	for i, l := range e.Locations {
		if l == nil || countSet(l.Header != nil, l.QueryParam != nil, l.Cookie != nil) != 1 {
			return fmt.Errorf("Locations[%d]: must set exactly one of: JWT location header, query param or cookie", i)
		}
	}
	if e.Forwarding != nil && e.Forwarding.HeaderName == "" {
		return errors.New("Forwarding.HeaderName is required")
	}
	if e.ClockSkewSeconds < 0 {
		return errors.New("ClockSkewSeconds cannot be negative")
	}
	if e.CacheConfig != nil && e.CacheConfig.Size < 0 {
		return errors.New("CacheConfig.Size cannot be negative")
	}
	return nil
}
