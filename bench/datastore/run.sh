#!/bin/sh
# The datastore benchmark (docs/datastore.md, "Benchmark"): dsbench drives
# build/appfront through the official Go library, as tests/go/run.sh does.
#
#   bench/datastore/run.sh [-n 10000] [-queries 500]
#
# Environment: APPFRONT_BUILD (default build/). Prints a Markdown table.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
build=${APPFRONT_BUILD:-$repo/build}
case $build in /*) ;; *) build=$repo/$build ;; esac
[ -x "$build/appfront" ] || { echo "bench/datastore/run.sh: $build/appfront missing: run make" >&2; exit 2; }
export GO111MODULE=off GOPROXY=off GOFLAGS=
export GOPATH="$here:/usr/share/gocode"
export GOCACHE="$build/go-cache"
export APPENGINE_DEV_APPSERVER_BINARY="$build/appfront"
mkdir -p "$build/bench"
go build -o "$build/bench/dsbench" dsbench
echo "appfront $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?'), $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores"
echo
exec "$build/bench/dsbench" "$@"
