package main

import (
	"fmt"
	"io"
)

// runReload implements "reload".
func runReload(args []string, stdout, stderr io.Writer) int {
	var hf httpFlags
	fs := newFlagSet("reload", "reload [options]", "Makes the agent reload its configuration files.", stderr, &hf)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	client, err := hf.client()
	if err != nil {
		fmt.Fprintf(stderr, "Error connecting to agent: %v\n", err)
		return 1
	}
	if err := client.Agent().Reload(); err != nil {
		fmt.Fprintf(stderr, "Error reloading: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, "Configuration reload triggered")
	return 0
}

// runMaint implements "maint": node or service maintenance mode.
func runMaint(args []string, stdout, stderr io.Writer) int {
	var hf httpFlags
	fs := newFlagSet("maint", "maint [options]", "Places a node or service into maintenance mode, or lists what is in it.", stderr, &hf)
	enable := fs.Bool("enable", false, "Enable maintenance mode.")
	disable := fs.Bool("disable", false, "Disable maintenance mode.")
	reason := fs.String("reason", "", "A text reason for maintenance mode.")
	service := fs.String("service", "", "The ID of a service to place in maintenance mode instead of the node.")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if *enable && *disable {
		fmt.Fprintln(stderr, "Only one of -enable or -disable may be provided")
		return 1
	}
	client, err := hf.client()
	if err != nil {
		fmt.Fprintf(stderr, "Error connecting to agent: %v\n", err)
		return 1
	}
	ag := client.Agent()
	switch {
	case !*enable && !*disable:
		checks, err := ag.Checks()
		if err != nil {
			fmt.Fprintf(stderr, "Error listing checks: %v\n", err)
			return 1
		}
		for id, c := range checks {
			switch {
			case id == "_node_maintenance":
				fmt.Fprintf(stdout, "Node:\n  Name:   %s\n  Reason: %s\n\n", c.Node, c.Notes)
			case len(id) > len("_service_maintenance:") && id[:len("_service_maintenance:")] == "_service_maintenance:":
				fmt.Fprintf(stdout, "Service:\n  ID:     %s\n  Reason: %s\n\n", c.ServiceID, c.Notes)
			}
		}
		return 0
	case *service != "":
		if *enable {
			err = ag.EnableServiceMaintenance(*service, *reason)
		} else {
			err = ag.DisableServiceMaintenance(*service)
		}
		if err != nil {
			fmt.Fprintf(stderr, "Error toggling maintenance mode: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "Service maintenance is now %s for %q\n", map[bool]string{true: "enabled", false: "disabled"}[*enable], *service)
	default:
		if *enable {
			err = ag.EnableNodeMaintenance(*reason)
		} else {
			err = ag.DisableNodeMaintenance()
		}
		if err != nil {
			fmt.Fprintf(stderr, "Error toggling maintenance mode: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "Node maintenance is now %s\n", map[bool]string{true: "enabled", false: "disabled"}[*enable])
	}
	return 0
}
