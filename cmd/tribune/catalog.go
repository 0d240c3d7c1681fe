package main

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"

	"github.com/hashicorp/consul/api"
)

// runCatalogServices implements "catalog services": every service name,
// sorted, optionally with its tags or only those of one node.
func runCatalogServices(args []string, stdout, stderr io.Writer) int {
	var hf httpFlags
	fs := newFlagSet("catalog services", "catalog services [options]",
		"Lists the services registered in the catalog, one a line, sorted by name.", stderr, &hf)
	node := fs.String("node", "", "List only the services of the node with this `name`.")
	tags := fs.Bool("tags", false, "Print each service's tags, comma-separated, after its name.")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "Too many arguments (expected 0, got %d)\n", fs.NArg())
		return 1
	}
	client, err := hf.client()
	if err != nil {
		fmt.Fprintf(stderr, "Error connecting to agent: %v\n", err)
		return 1
	}
	q := hf.queryOptions()
	var services map[string][]string
	if *node != "" {
		list, _, err := client.Catalog().NodeServiceList(*node, q)
		if err != nil {
			fmt.Fprintf(stderr, "Error listing services for node: %v\n", err)
			return 1
		}
		// A missing node has no services: the query simply matches nothing.
		if list != nil {
			services = map[string][]string{}
			for _, s := range list.Services {
				services[s.Service] = append(services[s.Service], s.Tags...)
			}
		}
	} else {
		services, _, err = client.Catalog().Services(q)
		if err != nil {
			fmt.Fprintf(stderr, "Error listing services: %v\n", err)
			return 1
		}
	}
	if len(services) == 0 {
		fmt.Fprintln(stderr, "No services match the given query - try expanding your search.")
		return 0
	}
	names := make([]string, 0, len(services))
	for name := range services {
		names = append(names, name)
	}
	sort.Strings(names)
	if !*tags {
		for _, name := range names {
			fmt.Fprintln(stdout, name)
		}
		return 0
	}
	rows := make([][]string, 0, len(names))
	for _, name := range names {
		t := slices.Clone(services[name])
		sort.Strings(t)
		rows = append(rows, []string{name, strings.Join(slices.Compact(t), ",")})
	}
	writeTable(stdout, rows)
	return 0
}

// runCatalogNodes implements "catalog nodes": a table of nodes, all of them
// or those providing one service.
func runCatalogNodes(args []string, stdout, stderr io.Writer) int {
	var hf httpFlags
	fs := newFlagSet("catalog nodes", "catalog nodes [options]",
		"Lists the nodes registered in the catalog with their ID, address and datacenter.", stderr, &hf)
	detailed := fs.Bool("detailed", false, "Print full node IDs, tagged addresses and node metadata.")
	filter := fs.String("filter", "", "Filter `expression` applied to the nodes, as the /v1/catalog/nodes endpoint takes it.")
	service := fs.String("service", "", "List only the nodes providing the service with this `name`.")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "Too many arguments (expected 0, got %d)\n", fs.NArg())
		return 1
	}
	client, err := hf.client()
	if err != nil {
		fmt.Fprintf(stderr, "Error connecting to agent: %v\n", err)
		return 1
	}
	q := hf.queryOptions()
	q.Filter = *filter
	var nodes []*api.Node
	if *service != "" {
		instances, _, err := client.Catalog().Service(*service, "", q)
		if err != nil {
			fmt.Fprintf(stderr, "Error listing nodes for service: %v\n", err)
			return 1
		}
		// A node running two instances of the service is listed once.
		seen := map[string]bool{}
		for _, s := range instances {
			if seen[s.Node] {
				continue
			}
			seen[s.Node] = true
			nodes = append(nodes, &api.Node{ID: s.ID, Node: s.Node, Address: s.Address, Datacenter: s.Datacenter,
				TaggedAddresses: s.TaggedAddresses, Meta: s.NodeMeta})
		}
	} else {
		nodes, _, err = client.Catalog().Nodes(q)
		if err != nil {
			fmt.Fprintf(stderr, "Error listing nodes: %v\n", err)
			return 1
		}
	}
	if len(nodes) == 0 {
		fmt.Fprintln(stderr, "No nodes match the given query - try expanding your search.")
		return 0
	}
	header := []string{"Node", "ID", "Address", "DC"}
	if *detailed {
		header = append(header, "TaggedAddresses", "Meta")
	}
	rows := [][]string{header}
	for _, n := range nodes {
		if *detailed {
			rows = append(rows, []string{n.Node, n.ID, n.Address, n.Datacenter,
				formatMap(n.TaggedAddresses, ", "), formatMap(n.Meta, ", ")})
			continue
		}
		id := n.ID
		if len(id) > 8 {
			id = id[:8]
		}
		rows = append(rows, []string{n.Node, id, n.Address, n.Datacenter})
	}
	writeTable(stdout, rows)
	return 0
}

// runCatalogDatacenters implements "catalog datacenters": every known
// datacenter, one a line.
func runCatalogDatacenters(args []string, stdout, stderr io.Writer) int {
	var hf httpFlags
	fs := newFlagSet("catalog datacenters", "catalog datacenters [options]",
		"Lists the datacenters the agent knows of, one a line.", stderr, &hf)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "Too many arguments (expected 0, got %d)\n", fs.NArg())
		return 1
	}
	client, err := hf.client()
	if err != nil {
		fmt.Fprintf(stderr, "Error connecting to agent: %v\n", err)
		return 1
	}
	dcs, err := client.Catalog().Datacenters()
	if err != nil {
		fmt.Fprintf(stderr, "Error listing datacenters: %v\n", err)
		return 1
	}
	if len(dcs) == 0 {
		fmt.Fprintln(stderr, "No datacenters found")
		return 1
	}
	for _, dc := range dcs {
		fmt.Fprintln(stdout, dc)
	}
	return 0
}
