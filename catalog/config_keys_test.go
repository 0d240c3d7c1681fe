package catalog

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestTranslateEntryKeys(t *testing.T) {
	in := `{"default_subset":"v1","connect_timeout":"5s","subsets":{"v_1":{"only_passing":true,"filter":"x"}},
		"failover":{"*":{"service_subset":"v_1","targets":[{"service_subset":"a"}]}},
		"meta":{"my_key":"v"},"Config":{"local_connect_timeout_ms":1000},
		"request_headers":{"set":{"x_foo":"1"}},"ConnectTimeout2":1.5}`
	out, err := TranslateEntryKeys([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"DefaultSubset": "v1", "ConnectTimeout": "5s",
		"subsets":         map[string]any{"v_1": map[string]any{"OnlyPassing": true, "filter": "x"}},
		"failover":        map[string]any{"*": map[string]any{"ServiceSubset": "v_1", "targets": []any{map[string]any{"ServiceSubset": "a"}}}},
		"meta":            map[string]any{"my_key": "v"},
		"Config":          map[string]any{"local_connect_timeout_ms": float64(1000)},
		"RequestHeaders":  map[string]any{"set": map[string]any{"x_foo": "1"}},
		"ConnectTimeout2": 1.5,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v\nwant %v", got, want)
	}
	// Without an underscore the body is kept byte for byte.
	plain := []byte(`{"Meta":{"a":"b"},"N":1.50}`)
	if out, _ := TranslateEntryKeys(plain); string(out) != string(plain) {
		t.Errorf("plain body rewritten: %s", out)
	}
}
