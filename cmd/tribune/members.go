package main

import (
	"fmt"
	"io"
	"net"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/hashicorp/consul/api"
)

// memberStatus names a gossip member's status code as Serf does.
func memberStatus(code int) string {
	switch code {
	case 0:
		return "none"
	case 1:
		return "alive"
	case 2:
		return "leaving"
	case 3:
		return "left"
	case 4:
		return "failed"
	}
	return "unknown"
}

// memberType is "server" for a member tagged role=consul, "client" for
// role=node.
func memberType(tags map[string]string) string {
	switch tags[api.MemberTagKeyRole] {
	case api.MemberTagValueRoleServer:
		return "server"
	case api.MemberTagValueRoleClient:
		return "client"
	}
	return "unknown"
}

// runMembers implements "members": the gossip members the agent knows of.
// It exits 2 when no member matches the filters, as Consul's does.
func runMembers(args []string, stdout, stderr io.Writer) int {
	var hf httpFlags
	fs := newFlagSet("members", "members [options]",
		"Lists the members of the cluster the agent knows of, with their state.", stderr, &hf)
	detailed := fs.Bool("detailed", false, "Print every member's tags instead of the summary columns.")
	status := fs.String("status", ".*", "Only members whose status (alive, leaving, left, failed) matches this `regexp`.")
	wan := fs.Bool("wan", false, "List the members of the WAN gossip pool (servers of every datacenter).")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "Too many arguments (expected 0, got %d)\n", fs.NArg())
		return 1
	}
	statusRe, err := regexp.Compile(*status)
	if err != nil {
		fmt.Fprintf(stderr, "Failed to compile status regexp: %v\n", err)
		return 1
	}
	client, err := hf.client()
	if err != nil {
		fmt.Fprintf(stderr, "Error connecting to agent: %v\n", err)
		return 1
	}
	members, err := client.Agent().Members(*wan)
	if err != nil {
		fmt.Fprintf(stderr, "Error retrieving members: %v\n", err)
		return 1
	}
	var shown []*api.AgentMember
	for _, m := range members {
		if statusRe.MatchString(memberStatus(m.Status)) {
			shown = append(shown, m)
		}
	}
	if len(shown) == 0 {
		return 2
	}
	sort.Slice(shown, func(i, j int) bool { return shown[i].Name < shown[j].Name })
	var rows [][]string
	if *detailed {
		rows = append(rows, []string{"Node", "Address", "Status", "Tags"})
	} else {
		rows = append(rows, []string{"Node", "Address", "Status", "Type", "Build", "Protocol", "DC"})
	}
	for _, m := range shown {
		addr := net.JoinHostPort(m.Addr, strconv.Itoa(int(m.Port)))
		if *detailed {
			rows = append(rows, []string{m.Name, addr, memberStatus(m.Status), formatMap(m.Tags, ",")})
			continue
		}
		build := m.Tags["build"]
		// Builds are tagged "version:revision"; the table shows the version.
		if i := strings.IndexByte(build, ':'); i >= 0 {
			build = build[:i]
		}
		rows = append(rows, []string{m.Name, addr, memberStatus(m.Status), memberType(m.Tags),
			build, m.Tags["vsn"], m.Tags[api.MemberTagKeyDatacenter]})
	}
	writeTable(stdout, rows)
	return 0
}
