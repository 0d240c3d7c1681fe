package httpapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// FuzzDecodeBodyNoRewrite checks decodeBody's promise: a body it accepts
// decodes to strings that hold no U+FFFD unless the body itself spelled
// one, so no string is silently rewritten on its way to the Raft log.
func FuzzDecodeBodyNoRewrite(f *testing.F) {
	for _, s := range []string{`"a"`, `"\ud800"`, `"\ud834\udd1e"`, "\"\xff\"", `"\\ud800"`, `"\udc00\ud800"`, `["x",{"K":"\u00e9"}]`, `"\ufffd"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, _ := http.NewRequest("PUT", "/", bytes.NewReader(body))
		var v any
		if err := decodeBody(r, &v); err != nil {
			return
		}
		out, _ := json.Marshal(v)
		spelled := bytes.Contains(body, []byte("\uFFFD")) || strings.Contains(strings.ToLower(string(body)), `\ufffd`)
		if !spelled && bytes.Contains(out, []byte("\uFFFD")) {
			t.Fatalf("body %q decoded with a replacement character: %s", body, out)
		}
	})
}
