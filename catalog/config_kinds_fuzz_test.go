package catalog

import "testing"

// FuzzNormalizeConfigEntry: no body of any kind panics the checks, and a
// body they accept is accepted again as they return it.
func FuzzNormalizeConfigEntry(f *testing.F) {
	for _, s := range []string{
		`{"Subsets":{"v1":{"Filter":"Service.Meta.v == 1"}},"DefaultSubset":"v1","Failover":{"*":{"Datacenters":["dc2"]}}}`,
		`{"Splits":[{"Weight":50},{"Weight":50,"Service":"b"}]}`,
		`{"Routes":[{"Match":{"HTTP":{"PathPrefix":"/a","Methods":["GET"]}},"Destination":{"RetryOn":["reset"]}}]}`,
		`{"Listeners":[{"Port":1,"Services":[{"Name":"a"}]}],"Defaults":{"MaxConnections":null}}`,
		`{"JSONWebKeySet":{"Remote":{"URI":"https://x/"}}}`,
		`{"Services":[{"Name":"a","Consumers":[{"Peer":"p"}]}]}`,
	} {
		f.Add(s)
	}
	kinds := []string{KindServiceResolver, KindServiceSplitter, KindServiceRouter, KindIngressGateway,
		KindTerminatingGateway, KindAPIGateway, KindHTTPRoute, KindTCPRoute, KindExportedServices, KindJWTProvider}
	f.Fuzz(func(t *testing.T, body string) {
		for _, k := range kinds {
			out, err := NormalizeConfigEntry(k, "default", []byte(body))
			if err != nil {
				continue
			}
			if _, err := NormalizeConfigEntry(k, "default", out); err != nil {
				t.Fatalf("%s: normalized body %s refused: %v", k, out, err)
			}
		}
	})
}
