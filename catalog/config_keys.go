package catalog

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// dataMaps are the entry fields whose keys are data (metadata, proxy
// configuration, header names, subset names), never field names.
var dataMaps = map[string]bool{
	"meta": true, "config": true, "add": true, "set": true, "arguments": true,
	"legacymeta": true, "opaque": true,
}

// keyedByName are the maps whose keys are names but whose values are
// entry structures (resolver subsets and failover).
var keyedByName = map[string]bool{"subsets": true, "failover": true}

// TranslateEntryKeys rewrites the snake_case field names of a config entry
// body (connect_timeout) into Consul's CamelCase (ConnectTimeout), as
// Consul's API accepts both, so that entries are stored and served in one
// form. Keys of data maps (Meta, proxy Config, header maps, subset names)
// are left as written.
func TranslateEntryKeys(body []byte) ([]byte, error) {
	if !bytes.Contains(body, []byte("_")) {
		return body, nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	out, err := json.Marshal(translateKeys(v, false))
	if err != nil {
		return nil, fmt.Errorf("encode: %w", err)
	}
	return out, nil
}

// translateKeys rewrites v's field names; names says v's keys are names
// (its values are still structures).
func translateKeys(v any, names bool) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, val := range x {
			key := k
			if !names {
				key = camelCase(k)
			}
			norm := strings.ToLower(strings.ReplaceAll(k, "_", ""))
			switch {
			case names:
				out[key] = translateKeys(val, false)
			case dataMaps[norm]:
				out[key] = val
			case keyedByName[norm]:
				out[key] = translateKeys(val, true)
			default:
				out[key] = translateKeys(val, false)
			}
		}
		return out
	case []any:
		for i, e := range x {
			x[i] = translateKeys(e, names)
		}
		return x
	}
	return v
}

// camelCase turns snake_case into CamelCase; a name without an underscore
// is returned as it is.
func camelCase(s string) string {
	if !strings.Contains(s, "_") {
		return s
	}
	var b strings.Builder
	for _, part := range strings.Split(s, "_") {
		if part == "" {
			continue
		}
		b.WriteString(strings.ToUpper(part[:1]) + part[1:])
	}
	return b.String()
}
