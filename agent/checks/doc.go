// Package checks runs the probing health checks of a local agent: HTTP, TCP,
// UDP, gRPC, H2PING, script and alias checks, with Consul's documented
// semantics (status from the probe result, per-probe timeout, output size
// limit, success_before_passing / failures_before_warning /
// failures_before_critical thresholds).
//
// A Check owns one goroutine that probes its target and reports each status
// change to its owner through the Notifier delegate. The package decides
// nothing about the catalog: it does not import agent, server or catalog, and
// it never registers or deregisters anything. TTL checks are not here; they
// have no probe and live with the agent's local state.
package checks
