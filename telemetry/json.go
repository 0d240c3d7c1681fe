package telemetry

import (
	"encoding/json"
	"io"
)

func jsonEncoder(w io.Writer, pretty bool) *json.Encoder {
	enc := json.NewEncoder(w)
	if pretty {
		enc.SetIndent("", "    ")
	}
	return enc
}
