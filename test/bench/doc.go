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
//
// Without -bench (go test ./..., make test) only a millisecond unit test
// of the harness runs.
//
// Environment:
//
//	BENCH_DURATION  length of each throughput run (default 10s)
//	BENCH_WATCHERS  comma-separated blocked-watcher counts (default 5000)
//	BENCH_FAILOVERS number of leader kills (default 5)
//	BENCH_RAFTDB_WRITES writes of BenchmarkRaftDB (default 100000)
//	BENCH_KEEP=1    keep the temporary directory with the agents' logs
//	BENCH_TRIBUNE   use this tribune binary instead of building one
//	BENCH_DEV_PPROF=<prefix> save the -dev agent's CPU and alloc profiles
//	                and a trace of each DevKVWrite/DevRead workload
//
// The -dev KV workloads also report the agent's CPU time per request
// (agent-cpu-per-op, from /proc over the run): on a shared machine it moves
// far less than the throughput.
package bench
