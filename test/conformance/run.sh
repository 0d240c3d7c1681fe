#!/usr/bin/env bash
# make conformance: run the official Go client's own test suite
# (github.com/hashicorp/consul/api, the client of Consul 1.16) against
# tribune standing in for `consul` on PATH, and print
#   conformance: P passed, F failed, S skipped of T
# with the names of the failing top-level tests. Not part of `make test`:
# it spawns one agent per test and takes 10-25 minutes on 2 cores.
#
# CONFORMANCE_RUN narrows the tests (a go test -run pattern);
# CONFORMANCE_OUT keeps the go test -json stream in that file.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
api_version=${CONFORMANCE_API_VERSION:-v1.25.1}
work=$(mktemp -d)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT

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
(cd "$work/api" && go mod download)

out=${CONFORMANCE_OUT:-$work/conformance.json}
set +e
(cd "$work/api" && PATH="$work/bin:$PATH" go test -json -p 1 -parallel 2 -timeout 60m \
	${CONFORMANCE_RUN:+-run "$CONFORMANCE_RUN"} . ./watch/) >"$out" 2>"$work/stderr"
set -e
go run ./test/conformance/summarize <"$out"
