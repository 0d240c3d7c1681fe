#!/usr/bin/env bash
# make conformance: run the official Go client's own test suite
# (github.com/hashicorp/consul/api, the client of Consul 1.16) against
# tribune standing in for `consul` on PATH, and print
#   conformance: P passed, F failed, S skipped of T
# with the names of the failing top-level tests. Not part of `make test`:
# it spawns one agent per test and takes 10-25 minutes on 2 cores.
#
# CONFORMANCE_RUN narrows the tests (a go test -run pattern);
# CONFORMANCE_SKIP leaves tests out (a go test -skip pattern), e.g. those
# that block for the whole timeout while an endpoint is missing;
# CONFORMANCE_OUT keeps the go test -json stream in that file.
# CONFORMANCE_PATCH_SDK=1 runs the suite against a local copy of its test
# harness (github.com/hashicorp/consul/sdk, at the version the client's
# go.mod requires) whose WaitForActiveCARoot and WaitForServiceIntentions
# return at once, wired in with a `replace` in the temporary copy of the
# client's go.mod: it measures the core API while Connect CA roots and
# service-intentions config entries are not served. Nothing of the sdk
# enters this repository; the copy lives and dies in the temp dir.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
api_version=${CONFORMANCE_API_VERSION:-v1.25.1}
work=$(mktemp -d)
# The client's harness does not stop an agent whose own setup wait failed:
# kill whatever still runs from this run's binary when the run ends.
# The trap runs under set -e: a pkill that finds nothing (exit 1) must not
# end it before the temp dir is removed, nor turn a passing run into a
# failing exit status.
trap 'pkill -KILL -f "$work/bin/consul" 2>/dev/null || true; chmod -R u+w "$work" 2>/dev/null || true; rm -rf "$work"' EXIT

cd "$root"
mkdir -p "$work/bin"
go build -o "$work/bin/consul" ./cmd/tribune

# Fetch the client module with the Go toolchain and copy it somewhere
# writable (the module cache is read-only).
dir=$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "github.com/hashicorp/consul/api@$api_version" |
	sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
if [ -z "$dir" ] || [ ! -d "$dir" ]; then
	echo "conformance: could not fetch github.com/hashicorp/consul/api@$api_version" >&2
	exit 1
fi
cp -r "$dir" "$work/api"
chmod -R u+w "$work/api"

if [ "${CONFORMANCE_PATCH_SDK:-}" = 1 ]; then
	sdk_version=$(sed -n 's/^[[:space:]]*github.com\/hashicorp\/consul\/sdk \(v[^[:space:]]*\).*$/\1/p' "$work/api/go.mod" | head -n1)
	sdk_dir=$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "github.com/hashicorp/consul/sdk@$sdk_version" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	if [ -z "$sdk_version" ] || [ -z "$sdk_dir" ] || [ ! -d "$sdk_dir" ]; then
		echo "conformance: could not fetch github.com/hashicorp/consul/sdk@$sdk_version" >&2
		exit 1
	fi
	cp -r "$sdk_dir" "$work/sdk"
	chmod -R u+w "$work/sdk"
	server_go="$work/sdk/testutil/server.go"
	for fn in WaitForActiveCARoot WaitForServiceIntentions; do
		grep -q "^func (s \*TestServer) $fn(t testing.TB) {\$" "$server_go" || {
			echo "conformance: $fn not found in $server_go; cannot patch the sdk" >&2
			exit 1
		}
		sed -i "s/^func (s \*TestServer) $fn(t testing.TB) {\$/&\n\treturn \/\/ CONFORMANCE_PATCH_SDK: Connect is not awaited/" "$server_go"
	done
	echo "replace github.com/hashicorp/consul/sdk => ../sdk" >>"$work/api/go.mod"
	echo "conformance: sdk $sdk_version patched: Connect CA roots and service-intentions are not awaited" >&2
fi
(cd "$work/api" && go mod download)

out=${CONFORMANCE_OUT:-$work/conformance.json}
set +e
(cd "$work/api" && PATH="$work/bin:$PATH" go test -json -p 1 -parallel 2 -timeout 60m \
	${CONFORMANCE_RUN:+-run "$CONFORMANCE_RUN"} ${CONFORMANCE_SKIP:+-skip "$CONFORMANCE_SKIP"} . ./watch/) >"$out" 2>"$work/stderr"
set -e
if [ -s "$work/stderr" ]; then
	echo "conformance: go test stderr (last lines):" >&2
	tail -n 20 "$work/stderr" >&2
fi
go run ./test/conformance/summarize <"$out"
