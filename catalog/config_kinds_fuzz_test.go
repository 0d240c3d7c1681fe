package catalog

import (
	"encoding/json"
	"reflect"
	"testing"
)

// FuzzNormalizeConfigEntry: no body of any kind panics the key
// translation or the checks, translation is idempotent, and a body the
// checks accept is accepted again as they return it.
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
	f.Add(`{"default_subset":"v1","subsets":{"v1":{"only_passing":true}},"meta":{"a_b":"c"}}`)
	f.Fuzz(func(t *testing.T, body string) {
		translated, err := TranslateEntryKeys([]byte(body))
		if err != nil {
			return
		}
		var v1, v2 any
		if json.Unmarshal(translated, &v1) != nil {
			return // not JSON: kept as it was, for the decoders to refuse
		}
		again, err := TranslateEntryKeys(translated)
		if err != nil || json.Unmarshal(again, &v2) != nil || !reflect.DeepEqual(v1, v2) {
			t.Fatalf("translating twice changed %s into %s (%v)", translated, again, err)
		}
		for _, k := range kinds {
			out, err := NormalizeConfigEntry(k, "default", translated)
			if err != nil {
				continue
			}
			if _, err := NormalizeConfigEntry(k, "default", out); err != nil {
				t.Fatalf("%s: normalized body %s refused: %v", k, out, err)
			}
		}
	})
}
