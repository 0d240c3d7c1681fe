package xds

import (
	"strings"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// A sidecar's TLS material reaches Envoy as two SDS secrets over the same
// ADS stream, which every TLS context (the public listener's, each upstream
// cluster's) names instead of carrying inline copies:
//   - LeafSecretName: the proxy's leaf certificate and private key;
//   - RootsSecretName: the CA roots that peers' certificates must chain
//     to (the SAN check of each upstream stays in its cluster, combined
//     with the roots: CombinedValidationContext).
//
// Consul inlines the certificates in every cluster and listener. Naming
// them instead makes the clusters of an upstream identical for every proxy,
// so the agent holds (and hashes) one copy shared by all its proxies, each
// response is ~2 KiB per cluster smaller, and a leaf renewal or root
// rotation re-sends one small secret rather than every cluster and the
// public listener. The names are those Envoy shows for Istio's and
// consul-dataplane's proxies. Proxyless gRPC clients get no TLS context
// (BuildProxyless), so no secrets either.
const (
	// LeafSecretName is the SDS secret of the proxy's leaf certificate.
	LeafSecretName = "default"
	// RootsSecretName is the SDS secret of the CA roots.
	RootsSecretName = "ROOTCA"
)

// addSecrets adds the proxy's two secrets.
func (b *builder) addSecrets(p *Proxy) {
	b.add(resource.SecretType, "leaf|"+fingerprint(p.LeafCert, p.LeafKey), func() (types.Resource, error) {
		return &tlsv3.Secret{Name: LeafSecretName, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inline(p.LeafCert),
			PrivateKey:       inline(p.LeafKey),
		}}}, nil
	})
	// Every proxy of the agent reads the same roots: one secret for all.
	b.add(resource.SecretType, "roots|"+fingerprint(p.Roots...), func() (types.Resource, error) {
		return &tlsv3.Secret{Name: RootsSecretName, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: inline(strings.Join(p.Roots, "")),
		}}}, nil
	})
}

// sdsSecret names a secret served over the ADS stream.
func sdsSecret(name string) *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: adsSource()}
}

// commonTLS is the common part of a sidecar's TLS contexts: TLS 1.2 at
// least, the leaf and the roots from their secrets, and the checks of v
// (the peer's SPIFFE ID; nil: none, any leaf of the roots will do).
func commonTLS(v *tlsv3.CertificateValidationContext) *tlsv3.CommonTlsContext {
	c := &tlsv3.CommonTlsContext{
		TlsParams:                      &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2},
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sdsSecret(LeafSecretName)},
	}
	if v == nil {
		c.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{ValidationContextSdsSecretConfig: sdsSecret(RootsSecretName)}
	} else {
		c.ValidationContextType = &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
			DefaultValidationContext:         v,
			ValidationContextSdsSecretConfig: sdsSecret(RootsSecretName),
		}}
	}
	return c
}
