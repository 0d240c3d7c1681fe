// Package bench is the benchmark harness of DESIGN.md testing layer 5.
//
// It builds ./cmd/tribune once, starts real agent processes on free
// 127.0.0.1 ports, and drives them over HTTP with the official Go client
// github.com/hashicorp/consul/api, as the reference Consul measurements
// were taken. Every figure is printed on its own line as
//
//	bench: <setup> <workload> <parameters> <unit>=<value>
//
// and reported with testing.B.ReportMetric. When a `consul` binary is on
// PATH, the -dev workloads also run against `consul agent -dev` and the
// ratio tribune/consul is printed.
//
// The workloads run only under -bench (each benchmark runs its
// fixed-duration workload once whatever b.N is):
//
//	make bench                      # all of it, BENCH_DURATION=10s
//	BENCH_DURATION=3s BENCH_WATCHERS=5000,10000 make bench
//	make bench BENCH_RUN=Cluster    # a -bench pattern
//	make bench BENCH_RUN=RaftDBCluster BENCH_RAFTDB_WRITES=1000000
//	make bench BENCH_RUN=Scale BENCH_SCALE_NODES=10000
//
// Without -bench (go test ./..., make test) only a millisecond unit test
// of the harness runs.
//
// Environment:
//
//	BENCH_DURATION  length of each throughput run (default 10s)
//	BENCH_WATCHERS  comma-separated blocked-watcher counts (default 5000)
//	BENCH_WATCH_PPROF=<prefix> the agent's goroutine/heap profiles while the
//	                watchers are parked, CPU profile and execution trace of
//	                the wake (<prefix>.cpu, .trace)
//	BENCH_WATCH_CLIENT_PPROF=<file> CPU profile of the watchers' process
//	                over the wake
//	BENCH_FAILOVERS number of leader kills (default 5)
//	BENCH_RAFTDB_WRITES writes of BenchmarkRaftDB and BenchmarkRaftDBCluster
//	                (default 100000; the figure is 1000000, ~20 min
//	                on 2 busy cores). The cluster run fails when a server's log
//	                store outgrows the bound computed from its
//	                raft_snapshot_threshold and raft_trailing_logs, and
//	                flags a last tenth more than 10 % slower than the first
//	BENCH_SCALE_NODES nodes of BenchmarkScale, each with 10 services of 2
//	                checks (default 1000, ~1 min; the figure is
//	                10000: 100,000 registrations, ~15 min on 2 busy cores)
//	BENCH_SCALE_PPROF=<dir> BenchmarkScale saves the leader's heap and CPU
//	                profiles of the leader and the client agent there
//	BENCH_KEEP=1    keep the temporary directory with the agents' logs
//	BENCH_TRIBUNE   use this tribune binary instead of building one
//	BENCH_DEV_PPROF=<prefix> save the -dev agent's CPU and alloc profiles
//	                and a trace of each DevKVWrite/DevRead workload
//
// The -dev KV workloads also report the agent's CPU time per request
// (agent-cpu-per-op, from /proc over the run): on a shared machine it moves
// far less than the throughput.
package bench
