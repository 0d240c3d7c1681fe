package httpapi

import (
	"testing"
	"time"
)

func TestParseCacheControl(t *testing.T) {
	for _, c := range []struct {
		in         []string
		maxAge     time.Duration
		staleIfErr time.Duration
		bad        bool
	}{
		{nil, -1, -1, false},
		{[]string{"max-age=30"}, 30 * time.Second, -1, false},
		{[]string{"max-age=30, stale-if-error=259200"}, 30 * time.Second, 259200 * time.Second, false},
		{[]string{"Max-Age=\"5\"", "stale-if-error=1"}, 5 * time.Second, time.Second, false},
		{[]string{"must-revalidate, no-store"}, 0, -1, false},
		{[]string{"max-age=-1"}, 0, 0, true},
		{[]string{"max-age=abc"}, 0, 0, true},
		{[]string{"stale-if-error="}, 0, 0, true},
	} {
		cc, err := parseCacheControl(c.in)
		if c.bad {
			if err == nil {
				t.Errorf("%q: no error", c.in)
			}
			continue
		}
		if err != nil || cc.maxAge != c.maxAge || cc.staleIfError != c.staleIfErr {
			t.Errorf("%q: %+v %v, want max-age %v stale-if-error %v", c.in, cc, err, c.maxAge, c.staleIfErr)
		}
	}
}
