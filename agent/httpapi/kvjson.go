package httpapi

import (
	"encoding/base64"
	"encoding/json"
	"strconv"

	"github.com/tribune-mesh/tribune/catalog"
)

// appendKVEntriesJSON appends es as encodeJSON writes it (not ?pretty),
// byte for byte, without reflection: the answer of every KV read.
func appendKVEntriesJSON(b []byte, es []*catalog.KVEntry) []byte {
	if es == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i, e := range es {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendKVEntryJSON(b, e)
	}
	return append(b, ']')
}

func appendKVEntryJSON(b []byte, e *catalog.KVEntry) []byte {
	if e == nil {
		return append(b, "null"...)
	}
	b = append(b, `{"LockIndex":`...)
	b = strconv.AppendUint(b, e.LockIndex, 10)
	b = append(b, `,"Key":`...)
	b = appendJSONString(b, e.Key)
	b = append(b, `,"Flags":`...)
	b = strconv.AppendUint(b, e.Flags, 10)
	b = append(b, `,"Value":`...)
	if e.Value == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '"')
		b = base64.StdEncoding.AppendEncode(b, e.Value)
		b = append(b, '"')
	}
	if e.Session != "" {
		b = append(b, `,"Session":`...)
		b = appendJSONString(b, e.Session)
	}
	b = append(b, `,"CreateIndex":`...)
	b = strconv.AppendUint(b, e.CreateIndex, 10)
	b = append(b, `,"ModifyIndex":`...)
	b = strconv.AppendUint(b, e.ModifyIndex, 10)
	return append(b, '}')
}

// appendJSONString appends s quoted as encoding/json quotes it (HTML
// characters escaped, invalid UTF-8 replaced): printable ASCII that needs
// no escape as it is, anything else through encoding/json itself.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
