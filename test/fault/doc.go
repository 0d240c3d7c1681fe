// Package fault runs Jepsen-style fault tests against real tribune
// processes (DESIGN.md, testing layer 4).
//
// Every test runs inside a network namespace that it creates: the host
// process makes the namespace and re-runs the same test binary inside it
// (Enter), so agents, workload clients and faults never touch the host
// network. Inside, each agent has its own loopback address (127.0.0.x) and
// runs under its own uid; a per-uid routing rule makes every connection an
// agent opens leave from its own address, so iptables rules written by
// address cut exactly the links between the chosen agents.
//
// A run starts a cluster (three servers, two client agents), drives
// workloads through different agents while a seeded nemesis partitions,
// kills, pauses, restarts and wipes servers, heals everything, and then
// checks the histories:
//
//   - kv: a register per key (read with ?consistent, write, CAS) checked for
//     linearizability with porcupine; default-mode and ?stale reads are
//     recorded apart and their staleness is reported, not judged.
//   - lock: api.Lock holders append to a log through check-session
//     transactions; the log must show one fencing token at a time, in
//     LockIndex order, and lose no acknowledged append.
//   - catalog: every acknowledged registration is eventually visible on
//     every server.
//   - durable: every acknowledged KV write survives, on every server.
//
// TestJepsenFederation runs two federated datacenters (dc1 primary, dc2
// secondary, three servers and a client each, ACLs with token replication,
// dc1's servers at 127.0.0.1x and dc2's at 127.0.0.3x) under a nemesis of
// WAN partitions, partitions of the primary's leader and kills and pauses
// of either leader, and checks:
//
//   - global (one writer): one process updates ACL policies,
//     service-defaults and service-intentions through agents of both
//     datacenters (dc2 forwards); every version a read of dc2 shows is one
//     dc1 committed, writes through dc2 inside a WAN cut fail with an
//     answer, and dc2 converges to dc1's state within a stated bound;
//   - kv and crossdc: a register per datacenter, the same keys in both with
//     different values, used from both sides with ?dc=: linearizable, and
//     never another datacenter's value;
//   - failover: a prepared query in dc2 whose instances there are critical
//     answers with dc1's instance, or nothing while the WAN is cut.
//
// The package owns the processes it starts and the namespace it makes; both
// are removed when the test ends, on failure and on interrupt too.
package fault
