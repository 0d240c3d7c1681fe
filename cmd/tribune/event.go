package main

import (
	"fmt"
	"io"
	"regexp"

	"github.com/hashicorp/consul/api"
)

// runEvent implements "event": fire a user event through the agent and
// print its ID. Exit codes: 0 when the event was fired, 1 otherwise.
func runEvent(args []string, stdout, stderr io.Writer) int {
	var hf httpFlags
	fs := newFlagSet("event", "event [options] [payload]",
		"Dispatches a custom user event across the datacenter over gossip. The event needs a\n"+
			"name; the payload is optional. Regular expressions on node names, service names\n"+
			"and service tags limit which agents keep the event. Delivery is best effort.", stderr, &hf)
	name := fs.String("name", "", "Name of the event.")
	node := fs.String("node", "", "Only agents whose node name matches this `regexp` keep the event.")
	service := fs.String("service", "", "Only agents with a service whose name matches this `regexp` keep the event.")
	tag := fs.String("tag", "", "With -service, only agents whose matching service has a tag matching this `regexp` keep the event.")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if *name == "" {
		fmt.Fprintln(stderr, "Event name must be specified")
		return 1
	}
	for _, f := range []struct{ what, expr string }{{"node", *node}, {"service", *service}, {"tag", *tag}} {
		if f.expr == "" {
			continue
		}
		if _, err := regexp.Compile(f.expr); err != nil {
			fmt.Fprintf(stderr, "Failed to compile %s filter regexp: %v\n", f.what, err)
			return 1
		}
	}
	if *tag != "" && *service == "" {
		fmt.Fprintln(stderr, "Cannot provide tag filter without service filter.")
		return 1
	}
	var payload []byte
	switch fs.NArg() {
	case 0:
	case 1:
		payload = []byte(fs.Arg(0))
	default:
		fmt.Fprintln(stderr, "Too many command line arguments.")
		return 1
	}
	client, err := hf.client()
	if err != nil {
		fmt.Fprintf(stderr, "Error connecting to agent: %v\n", err)
		return 1
	}
	id, _, err := client.Event().Fire(&api.UserEvent{
		Name: *name, Payload: payload, NodeFilter: *node, ServiceFilter: *service, TagFilter: *tag,
	}, nil)
	if err != nil {
		fmt.Fprintf(stderr, "Error firing event: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "Event ID: %s\n", id)
	return 0
}
