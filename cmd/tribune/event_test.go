package main

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

func TestEvent(t *testing.T) {
	addr := startAgent(t)
	client, err := api.NewClient(&api.Config{Address: strings.TrimPrefix(addr, "-http-addr=")})
	if err != nil {
		t.Fatal(err)
	}

	r := mustExec(t, runEvent, addr, "-name=deploy", "v1.2.3")
	m := regexp.MustCompile(`^Event ID: ([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\n$`).FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("stdout = %q, want Event ID: <uuid>", r.stdout)
	}
	waitFor(t, 5*time.Second, func() (bool, string) {
		evs, _, err := client.Event().List("deploy", nil)
		if err != nil {
			return false, err.Error()
		}
		for _, e := range evs {
			if e.ID == m[1] && string(e.Payload) == "v1.2.3" {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d events named deploy, none with ID %s", len(evs), m[1])
	})

	// Through the dispatcher, with filters: the dev agent runs no service
	// named web, so it does not keep the event, but firing succeeds.
	r = mustExec(t, run, "event", addr, "-name=filtered", "-node=.", "-service=web", "-tag=v1")
	if !strings.HasPrefix(r.stdout, "Event ID: ") {
		t.Errorf("stdout = %q", r.stdout)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{addr}, "Event name must be specified"},
		{[]string{addr, "-name=x", "-tag=v1"}, "Cannot provide tag filter without service filter."},
		{[]string{addr, "-name=x", "-node=("}, "Failed to compile node filter regexp"},
		{[]string{addr, "-name=x", "a", "b"}, "Too many command line arguments."},
		{[]string{addr, "-name=x", strings.Repeat("p", 600)}, "Error firing event"},
		{[]string{"-http-addr=" + unreachableAddr(t), "-name=x"}, "Error firing event"},
	} {
		r := runCmd(runEvent, tc.args...)
		if r.code != 1 || r.stdout != "" {
			t.Errorf("%q: %v, want exit 1 and no output", tc.args, r)
		}
		assertContains(t, "stderr", r.stderr, tc.want)
	}
}
