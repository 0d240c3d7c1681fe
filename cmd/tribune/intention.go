package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/hashicorp/consul/api"
)

func intentionCommands() map[string]command {
	return map[string]command{
		"intention":        {"Interact with Connect service intentions", groupCommand("intention", "Creates, reads, checks and deletes service intentions.")},
		"intention create": {"Create intentions", runIntentionCreate},
		"intention check":  {"Check whether a connection between two services is allowed", runIntentionCheck},
		"intention get":    {"Show information about an intention", runIntentionGet},
		"intention delete": {"Delete an intention", runIntentionDelete},
		"intention list":   {"List all intentions", runIntentionList},
		"intention match":  {"Show intentions that match a source or destination", runIntentionMatch},
	}
}

// intentionCmd is the flag set and client of an intention command.
type intentionCmd struct {
	hf     httpFlags
	fs     *flag.FlagSet
	stdout io.Writer
	stderr io.Writer
}

func newIntentionCmd(name, synopsis, help string, stdout, stderr io.Writer) *intentionCmd {
	c := &intentionCmd{stdout: stdout, stderr: stderr}
	c.fs = newFlagSet(name, synopsis, help, stderr, &c.hf)
	return c
}

// start parses args, checks the number of positional arguments (between
// lo and hi) and returns the client.
func (c *intentionCmd) start(args []string, lo, hi int) (*api.Client, int, bool) {
	if code, ok := parseFlags(c.fs, args); !ok {
		return nil, code, false
	}
	if n := c.fs.NArg(); n < lo || n > hi {
		if lo == hi {
			fmt.Fprintf(c.stderr, "Error: command requires exactly %d arguments, got %d\n", lo, n)
		} else {
			fmt.Fprintf(c.stderr, "Error: command requires %d or %d arguments, got %d\n", lo, hi, n)
		}
		return nil, 1, false
	}
	client, err := c.hf.client()
	if err != nil {
		fmt.Fprintf(c.stderr, "Error connecting to agent: %v\n", err)
		return nil, 1, false
	}
	return client, 0, true
}

// either checks two exclusive flags and reports whether the second is
// set; ok is false (with the error printed) when both are.
func (c *intentionCmd) either(first, second *bool, firstName, secondName string) (isSecond, ok bool) {
	if *first && *second {
		c.fail("Only one of %s or %s may be specified", firstName, secondName)
		return false, false
	}
	return *second, true
}

func (c *intentionCmd) fail(format string, args ...any) int {
	fmt.Fprintf(c.stderr, format+"\n", args...)
	return 1
}

// lookup finds the intention the positional arguments name: SRC DST, or
// a legacy ID.
func (c *intentionCmd) lookup(client *api.Client) (*api.Intention, error) {
	var (
		ixn *api.Intention
		err error
	)
	if c.fs.NArg() == 2 {
		ixn, _, err = client.Connect().IntentionGetExact(c.fs.Arg(0), c.fs.Arg(1), c.hf.queryOptions())
	} else {
		//lint:ignore SA1019 Consul's CLI still takes a legacy intention ID.
		ixn, _, err = client.Connect().IntentionGet(c.fs.Arg(0), c.hf.queryOptions())
	}
	if err == nil && ixn == nil {
		err = errors.New("intention not found")
	}
	return ixn, err
}

func runIntentionCreate(args []string, stdout, stderr io.Writer) int {
	c := newIntentionCmd("intention create", "intention create [options] SRC DST",
		"Creates an intention from SRC to DST, allowing the connection unless -deny is given.", stdout, stderr)
	allow := c.fs.Bool("allow", false, "Allow the connection (the default).")
	deny := c.fs.Bool("deny", false, "Deny the connection.")
	replace := c.fs.Bool("replace", false, "Replace an existing intention with the same source and destination.")
	description := c.fs.String("description", "", "A description of the intention.")
	var meta listValue
	c.fs.Var(&meta, "meta", "Metadata as key=value; may be repeated.")
	client, code, ok := c.start(args, 2, 2)
	if !ok {
		return code
	}
	action := api.IntentionActionAllow
	if isDeny, ok := c.either(allow, deny, "-allow", "-deny"); !ok {
		return 1
	} else if isDeny {
		action = api.IntentionActionDeny
	}
	ixn := &api.Intention{SourceName: c.fs.Arg(0), DestinationName: c.fs.Arg(1), Action: action, Description: *description}
	for _, kv := range meta {
		k, v, found := strings.Cut(kv, "=")
		if !found || k == "" {
			return c.fail("Invalid -meta %q: want key=value", kv)
		}
		if ixn.Meta == nil {
			ixn.Meta = map[string]string{}
		}
		ixn.Meta[k] = v
	}
	if !*replace {
		if cur, _, err := client.Connect().IntentionGetExact(ixn.SourceName, ixn.DestinationName, nil); err == nil && cur != nil {
			return c.fail("Error creating intention %q: an intention from %s to %s already exists (use -replace)",
				ixnString(ixn), ixn.SourceName, ixn.DestinationName)
		}
	}
	if _, err := client.Connect().IntentionUpsert(ixn, nil); err != nil {
		return c.fail("Error creating intention %q: %v", ixnString(ixn), err)
	}
	fmt.Fprintf(stdout, "Created: %s\n", ixnString(ixn))
	return 0
}

func ixnString(ixn *api.Intention) string {
	return fmt.Sprintf("%s => %s (%s)", ixn.SourceName, ixn.DestinationName, ixnAction(ixn))
}

// ixnAction is an intention's action, "L7" for one with permissions.
func ixnAction(ixn *api.Intention) string {
	if ixn.Action == "" {
		return "L7"
	}
	return string(ixn.Action)
}

func runIntentionCheck(args []string, stdout, stderr io.Writer) int {
	c := newIntentionCmd("intention check", "intention check [options] SRC DST",
		"Checks whether a connection from SRC to DST would be allowed: prints Allowed (exit 0) or Denied (exit 2).", stdout, stderr)
	client, code, ok := c.start(args, 2, 2)
	if !ok {
		return code
	}
	allowed, _, err := client.Connect().IntentionCheck(&api.IntentionCheck{
		Source: c.fs.Arg(0), Destination: c.fs.Arg(1), SourceType: api.IntentionSourceConsul}, c.hf.queryOptions())
	if err != nil {
		return c.fail("Error checking the connection: %v", err)
	}
	if !allowed {
		fmt.Fprintln(stdout, "Denied")
		return 2
	}
	fmt.Fprintln(stdout, "Allowed")
	return 0
}

func runIntentionGet(args []string, stdout, stderr io.Writer) int {
	c := newIntentionCmd("intention get", "intention get [options] SRC DST | ID", "Shows one intention.", stdout, stderr)
	client, code, ok := c.start(args, 1, 2)
	if !ok {
		return code
	}
	ixn, err := c.lookup(client)
	if err != nil {
		return c.fail("Error: %v", err)
	}
	rows := [][]string{
		{"Source:", ixn.SourceName},
		{"Destination:", ixn.DestinationName},
	}
	if ixn.Action != "" {
		rows = append(rows, []string{"Action:", string(ixn.Action)})
	}
	if ixn.ID != "" {
		rows = append(rows, []string{"ID:", ixn.ID})
	}
	if ixn.Description != "" {
		rows = append(rows, []string{"Description:", ixn.Description})
	}
	if len(ixn.Meta) > 0 {
		rows = append(rows, []string{"Meta:", formatMap(ixn.Meta, ", ")})
	}
	rows = append(rows, []string{"Precedence:", strconv.Itoa(ixn.Precedence)})
	if !ixn.CreatedAt.IsZero() {
		rows = append(rows, []string{"Created At:", ixn.CreatedAt.Format("Mon, 02 Jan 2006 15:04:05 MST")})
	}
	if len(ixn.Permissions) > 0 {
		rows = append(rows, []string{"Permissions:", strconv.Itoa(len(ixn.Permissions)) + " L7 permission(s)"})
	}
	writeTable(stdout, rows)
	return 0
}

func runIntentionDelete(args []string, stdout, stderr io.Writer) int {
	c := newIntentionCmd("intention delete", "intention delete [options] SRC DST | ID", "Deletes one intention.", stdout, stderr)
	client, code, ok := c.start(args, 1, 2)
	if !ok {
		return code
	}
	var err error
	if c.fs.NArg() == 2 {
		_, err = client.Connect().IntentionDeleteExact(c.fs.Arg(0), c.fs.Arg(1), nil)
	} else {
		//lint:ignore SA1019 Consul's CLI still takes a legacy intention ID.
		_, err = client.Connect().IntentionDelete(c.fs.Arg(0), nil)
	}
	if err != nil {
		return c.fail("Error deleting intention: %v", err)
	}
	fmt.Fprintln(stdout, "Intention deleted.")
	return 0
}

func runIntentionList(args []string, stdout, stderr io.Writer) int {
	c := newIntentionCmd("intention list", "intention list [options]", "Lists every intention.", stdout, stderr)
	client, code, ok := c.start(args, 0, 0)
	if !ok {
		return code
	}
	list, _, err := client.Connect().Intentions(c.hf.queryOptions())
	if err != nil {
		return c.fail("Error listing intentions: %v", err)
	}
	if len(list) == 0 {
		fmt.Fprintln(stdout, "There are no intentions.")
		return 0
	}
	rows := [][]string{{"ID", "Source", "Action", "Destination", "Precedence"}}
	for _, ixn := range list {
		rows = append(rows, []string{ixn.ID, ixn.SourceName, ixnAction(ixn), ixn.DestinationName, strconv.Itoa(ixn.Precedence)})
	}
	writeTable(stdout, rows)
	return 0
}

func runIntentionMatch(args []string, stdout, stderr io.Writer) int {
	c := newIntentionCmd("intention match", "intention match [options] NAME",
		"Lists the intentions that match NAME as a destination (the default) or, with -source, as a source, in precedence order.", stdout, stderr)
	source := c.fs.Bool("source", false, "Match intentions with NAME as the source.")
	destination := c.fs.Bool("destination", false, "Match intentions with NAME as the destination.")
	client, code, ok := c.start(args, 1, 1)
	if !ok {
		return code
	}
	by := api.IntentionMatchDestination
	if isSource, ok := c.either(destination, source, "-destination", "-source"); !ok {
		return 1
	} else if isSource {
		by = api.IntentionMatchSource
	}
	name := c.fs.Arg(0)
	res, _, err := client.Connect().IntentionMatch(&api.IntentionMatch{By: by, Names: []string{name}}, c.hf.queryOptions())
	if err != nil {
		return c.fail("Error matching the intentions: %v", err)
	}
	for _, ixn := range res[name] {
		fmt.Fprintln(stdout, ixnString(ixn))
	}
	return 0
}
