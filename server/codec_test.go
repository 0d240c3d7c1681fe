package server

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/tribune-mesh/tribune/catalog"
)

func codecSamples() []any {
	e := &catalog.KVEntry{Key: "bench/12/0042", Value: []byte{0, 1, 0xff}, Flags: 7, Session: "s"}
	e.CreateIndex, e.ModifyIndex = 10, 99999
	return []any{
		&catalog.ReadRequest{Op: catalog.ReadKVGet, Key: "k\xff", NodeMeta: map[string]string{"rack": "r1"},
			Options: catalog.QueryOptions{MinQueryIndex: 5, MaxQueryTime: 5 * time.Minute, AllowStale: true, MaxStaleDuration: time.Second}},
		&ReadResponseWire{Leader: "10.0.0.1:8300", Resp: &catalog.ReadResponse{KV: e, KVs: []*catalog.KVEntry{e, nil},
			Meta: catalog.QueryMeta{Index: 99999, KnownLeader: true, LastContact: 3 * time.Millisecond}}},
	}
}

// TestCodecDecodesWhatEncodingJSONWrites: the RPC codec's decoder reads what
// encoding/json (the codec's encoder, and older peers') writes into the same
// values encoding/json would.
func TestCodecDecodesWhatEncodingJSONWrites(t *testing.T) {
	for _, v := range codecSamples() {
		data, err := jsonCodec{}.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		std, _ := json.Marshal(v)
		if string(data) != string(std) {
			t.Fatalf("codec writes %s, encoding/json %s", data, std)
		}
		want := reflect.New(reflect.TypeOf(v).Elem()).Interface()
		got := reflect.New(reflect.TypeOf(v).Elem()).Interface()
		if err := json.Unmarshal(data, want); err != nil {
			t.Fatal(err)
		}
		if err := (jsonCodec{}).Unmarshal(data, got); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("codec decodes %s to\n%#v\nencoding/json to\n%#v", data, got, want)
		}
	}
}

func BenchmarkReadResponseCodec(b *testing.B) {
	resp := codecSamples()[1]
	data, _ := json.Marshal(resp)
	for _, c := range []struct {
		name      string
		unmarshal func([]byte, any) error
	}{{"encoding-json", json.Unmarshal}, {"codec", jsonCodec{}.Unmarshal}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				var out ReadResponseWire
				if err := c.unmarshal(data, &out); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
