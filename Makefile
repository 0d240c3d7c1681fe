# Tribune: a Consul-compatible service-discovery and service-mesh control plane.
GO ?= go
PKGS ?= ./...
BIN ?= bin/tribune

.PHONY: run build test test-race bench bench-dns bench-xds fuzz lint fmt vet staticcheck clean conformance

run:
	$(GO) run ./cmd/tribune agent -dev

build:
	$(GO) build -o $(BIN) ./cmd/tribune

# The test command of README.md and .ci/run. Fuzz targets run their seed
# corpus here; see `make fuzz` for a longer run.
test:
	$(GO) vet $(PKGS)
	$(GO) test -count=1 -timeout 14m $(PKGS)

test-race:
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

# Benchmarks: figures are printed with their units (see test/bench/doc.go).
# Each benchmark runs its fixed-duration workload (BENCH_DURATION, default
# 10s) once against real tribune processes, hence -benchtime 1x.
BENCH_RUN ?= .
bench:
	$(GO) test -run '^$$' -bench '$(BENCH_RUN)' -benchtime 1x -count 1 -timeout 60m ./test/bench/

# Every fuzz target of the repo (found by `func Fuzz` in test files), each
# for FUZZTIME. A slow target spends most of its time minimizing new
# inputs; FUZZMINIMIZETIME bounds that per input.
FUZZTIME ?= 30s
FUZZMINIMIZETIME ?= 5s
fuzz:
	@set -e; for dir in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
		for t in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go | sed 's/^func //'); do \
			echo "== $$dir $$t"; \
			$(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $$dir; \
		done; \
	done

fmt:
	gofmt -w .

vet:
	$(GO) vet $(PKGS)

staticcheck:
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 $(PKGS)

lint: vet staticcheck
	@test -z "$$(gofmt -l .)" || (gofmt -l . && exit 1)

clean:
	rm -rf bin

# DNS benchmark: dnsperf (Debian package dnsperf) against an agent holding
# 1,000 services x 3 instances; BENCH_DNS_DURATION (default 30s).
bench-dns:
	BENCH_DURATION=$${BENCH_DNS_DURATION:-30s} $(GO) test -run '^$$' -bench 'DNSPerf' -benchtime 1x -count 1 -timeout 30m ./test/bench/

# Jepsen-style fault tests (test/fault, needs root, ip and iptables): RUNS
# runs, each under a random fault schedule of DURATION. `make test` runs only
# the short schedule. JEPSEN_SEED replays a run; JEPSEN_FAULTS narrows the
# faults; see test/fault/jepsen_test.go. TestJepsenFederation runs the same
# under the multi-DC nemesis (two federated datacenters; JEPSEN_FED_FAULTS
# narrows its faults; see test/fault/fed_test.go).
RUNS ?= 3
DURATION ?= 60s
.PHONY: jepsen
jepsen:
	JEPSEN_RUNS=$(RUNS) JEPSEN_DURATION=$(DURATION) $(GO) test -count=1 -v -timeout 0 -run '^(TestJepsen|TestStaleFollowerReadsAreCaught|TestJepsenFederation)$$' ./test/fault/

# The official Go client's own test suite (github.com/hashicorp/consul/api
# v1.25.1, the client of Consul 1.16) against tribune as `consul` on PATH;
# prints "conformance: P passed, F failed, S skipped of T". 10-25 minutes;
# CONFORMANCE_RUN narrows it (a go test -run pattern), CONFORMANCE_SKIP
# leaves tests out (-skip), CONFORMANCE_PATCH_SDK=1 runs it against a temp
# copy of the sdk harness that does not wait for Connect CA roots and
# service-intentions (see test/conformance/run.sh).
conformance:
	bash test/conformance/run.sh

# xDS benchmark: 1,000 sidecars (delta ADS streams from the benchmark
# process) on one dev agent, 5 upstreams each, 200 services x 3 instances:
# initial config, catalog change -> EDS ACKs, intention change -> RBAC ACKs
# (p50/p99/max), agent RSS per proxy. BENCH_XDS_PROXIES, BENCH_XDS_ROUNDS.
bench-xds:
	$(GO) test -run '^$$' -bench 'XDS1000Proxies' -benchtime 1x -count 1 -timeout 20m ./test/bench/
