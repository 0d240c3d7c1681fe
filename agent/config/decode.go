package config

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// This file turns decoded JSON or HCL values (maps, lists, strings, numbers,
// booleans) into Go values. Coercion is weak in the way Consul's is: "8500"
// is accepted where a number is wanted, "true" where a boolean is, and a
// single string where a list is. HCL v1 decodes every block as a list of
// maps; objectList undoes that.

// typeName describes a decoded value for error messages.
func typeName(v interface{}) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case bool:
		return "boolean"
	case json.Number, int, int64, float64:
		return "number"
	case []interface{}:
		return "list"
	case map[string]interface{}, []map[string]interface{}:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

// joinPath appends key to a dotted key path.
func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func indexPath(path string, i int) string {
	return fmt.Sprintf("%s[%d]", path, i)
}

func sortedKeys(m map[string]interface{}) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// objectList returns v as a list of objects to apply in order. HCL gives
// []map[string]interface{} for blocks (one map per repetition); JSON gives a
// single map, or a list of maps for keys like services.
func objectList(path string, v interface{}) ([]map[string]interface{}, error) {
	switch t := v.(type) {
	case nil:
		return nil, nil
	case map[string]interface{}:
		return []map[string]interface{}{t}, nil
	case []map[string]interface{}:
		return t, nil
	case []interface{}:
		out := make([]map[string]interface{}, 0, len(t))
		for i, e := range t {
			objs, err := objectList(indexPath(path, i), e)
			if err != nil {
				return nil, err
			}
			out = append(out, objs...)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%s: expected an object, got %s", path, typeName(v))
}

// toString coerces v to a string.
func toString(path string, v interface{}) (string, error) {
	switch t := v.(type) {
	case string:
		return t, nil
	case json.Number:
		return t.String(), nil
	case int:
		return strconv.Itoa(t), nil
	case int64:
		return strconv.FormatInt(t, 10), nil
	case float64:
		return strconv.FormatFloat(t, 'g', -1, 64), nil
	case bool:
		return strconv.FormatBool(t), nil
	}
	return "", fmt.Errorf("%s: expected a string, got %s", path, typeName(v))
}

// toBool coerces v to a boolean.
func toBool(path string, v interface{}) (bool, error) {
	switch t := v.(type) {
	case bool:
		return t, nil
	case string:
		b, err := strconv.ParseBool(strings.TrimSpace(t))
		if err != nil {
			return false, fmt.Errorf("%s: expected a boolean, got %q", path, t)
		}
		return b, nil
	case json.Number, int, int64, float64:
		n, err := toInt(path, v)
		if err != nil || (n != 0 && n != 1) {
			return false, fmt.Errorf("%s: expected a boolean, got %v", path, v)
		}
		return n == 1, nil
	}
	return false, fmt.Errorf("%s: expected a boolean, got %s", path, typeName(v))
}

// maxIntFloat bounds the floats converted to int: 2^63, the first float64
// past math.MaxInt64. Integral floats above 2^53 lose precision, as they
// already did when they were decoded.
const maxIntFloat = 1 << 63

// toInt coerces v to an int.
func toInt(path string, v interface{}) (int, error) {
	switch t := v.(type) {
	case int:
		return t, nil
	case int64:
		if t > math.MaxInt || t < math.MinInt {
			return 0, fmt.Errorf("%s: integer %d out of range", path, t)
		}
		return int(t), nil
	case float64:
		if t != math.Trunc(t) || math.Abs(t) >= maxIntFloat {
			return 0, fmt.Errorf("%s: expected an integer, got %v", path, t)
		}
		return toInt(path, int64(t))
	case json.Number:
		return parseIntString(path, t.String())
	case string:
		return parseIntString(path, strings.TrimSpace(t))
	}
	return 0, fmt.Errorf("%s: expected an integer, got %s", path, typeName(v))
}

func parseIntString(path, s string) (int, error) {
	if n, err := strconv.ParseInt(s, 10, 0); err == nil {
		return int(n), nil
	}
	// JSON numbers such as 1e3 or 8500.0 are integers too.
	if f, err := strconv.ParseFloat(s, 64); err == nil && f == math.Trunc(f) && math.Abs(f) < maxIntFloat {
		return toInt(path, int64(f))
	}
	return 0, fmt.Errorf("%s: expected an integer, got %q", path, s)
}

// toDuration coerces v to a duration. Strings use Go's syntax ("10s",
// "1h30m"). Numbers are nanoseconds when allowNanos is set (the HTTP API's
// form); otherwise only 0 is accepted, as Consul's files read "30" as a
// duration without a unit.
func toDuration(path string, v interface{}, allowNanos bool) (time.Duration, error) {
	switch t := v.(type) {
	case string:
		d, err := time.ParseDuration(strings.TrimSpace(t))
		if err != nil {
			return 0, fmt.Errorf("%s: invalid duration %q", path, t)
		}
		return d, nil
	case json.Number, int, int64, float64:
		s, _ := toString(path, v)
		if allowNanos {
			n, err := toInt(path, v)
			if err != nil {
				return 0, fmt.Errorf("%s: invalid duration %s", path, s)
			}
			return time.Duration(n), nil
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("%s: invalid duration %q", path, s)
		}
		return d, nil
	}
	return 0, fmt.Errorf("%s: expected a duration string like \"10s\", got %s", path, typeName(v))
}

// toStringList coerces v to a list of strings; a single string is a list of
// one.
func toStringList(path string, v interface{}) ([]string, error) {
	switch t := v.(type) {
	case nil:
		return nil, nil
	case []string:
		return append([]string(nil), t...), nil
	case []interface{}:
		out := make([]string, 0, len(t))
		for i, e := range t {
			s, err := toString(indexPath(path, i), e)
			if err != nil {
				return nil, err
			}
			out = append(out, s)
		}
		return out, nil
	case string, json.Number, int, int64, float64, bool:
		s, err := toString(path, v)
		if err != nil {
			return nil, err
		}
		return []string{s}, nil
	}
	return nil, fmt.Errorf("%s: expected a list of strings, got %s", path, typeName(v))
}

// toStringMap coerces v to a map of strings.
func toStringMap(path string, v interface{}) (map[string]string, error) {
	objs, err := objectList(path, v)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string)
	for _, m := range objs {
		for _, k := range sortedKeys(m) {
			s, err := toString(joinPath(path, k), m[k])
			if err != nil {
				return nil, err
			}
			out[k] = s
		}
	}
	return out, nil
}

// toRawMap returns v as a plain map, with HCL's one-element block lists
// folded into objects all the way down, for blocks this package stores
// without interpreting.
func toRawMap(path string, v interface{}) (map[string]interface{}, error) {
	objs, err := objectList(path, v)
	if err != nil {
		return nil, err
	}
	out := make(map[string]interface{})
	for _, m := range objs {
		for k, e := range m {
			out[k] = foldEntry(k, e)
		}
	}
	return out, nil
}

// blockListKeys are the keys of stored blocks whose value is a list of
// objects even when HCL gives one block (`upstreams { ... }` once): they
// stay lists instead of being folded into an object.
var blockListKeys = map[string]bool{"upstreams": true, "paths": true}

// isBlockListKey reports whether a key, in any of its spellings
// (snake_case, CamelCase), names a list of blocks.
func isBlockListKey(k string) bool {
	return blockListKeys[strings.ToLower(strings.ReplaceAll(k, "_", ""))]
}

// foldEntry folds the value of key k: a list of blocks under a key of
// blockListKeys stays a list, whatever its length.
func foldEntry(k string, v interface{}) interface{} {
	if l, ok := v.([]map[string]interface{}); ok && isBlockListKey(k) {
		items := make([]interface{}, len(l))
		for i, m := range l {
			items[i] = foldHCL(m)
		}
		return items
	}
	return foldHCL(v)
}

func foldHCL(v interface{}) interface{} {
	switch t := v.(type) {
	case []map[string]interface{}:
		if len(t) == 1 {
			return foldHCL(t[0])
		}
		out := make([]interface{}, len(t))
		for i, m := range t {
			out[i] = foldHCL(m)
		}
		return out
	case map[string]interface{}:
		out := make(map[string]interface{}, len(t))
		for k, e := range t {
			out[k] = foldEntry(k, e)
		}
		return out
	case []interface{}:
		out := make([]interface{}, len(t))
		for i, e := range t {
			out[i] = foldHCL(e)
		}
		return out
	}
	return v
}
