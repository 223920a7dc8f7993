#!/bin/sh
# The Go compatibility harness (docs/api.md, "Go compatibility tests").
#
# Runs, against the appfront binary in $APPFRONT_BUILD (default build/):
#   1. tests of the official Go library itself, google.golang.org/appengine/
#      aetest, which start appfront the way any Go App Engine project's tests
#      do (aetest.NewInstance execs $APPENGINE_DEV_APPSERVER_BINARY with
#      dev_appserver's flags and scrapes its startup lines);
#   2. our own tests in tests/go/src/appfronttest, written against the
#      official library's public API.
# The library is Debian's golang-google-appengine-dev, used in GOPATH mode
# (no module download, no network: GOPROXY=off).
#
# Environment:
#   APPFRONT_BUILD  build directory holding appfront (set by `make gotest`)
#   AETEST_RUN      -run pattern for the official aetest tests; default
#                   'TestContext|TestUsers|TestBasicAPICalls' (the last one
#                   drives the datastore).
#   GOTEST_RUN      -run pattern for our tests (default: all)
#
# Exit status: 0 when every test passed, 1 otherwise; 2 when the harness
# cannot run at all (no go, no library, no binary).
set -u

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
build=${APPFRONT_BUILD:-$repo/build}
case $build in /*) ;; *) build=$repo/$build ;; esac
gocode=/usr/share/gocode

die() {
    echo "tests/go/run.sh: $*" >&2
    exit 2
}

command -v go >/dev/null 2>&1 ||
    die "go is not installed: install golang-go (Go 1.19 or later) to run the Go tests"
[ -d "$gocode/src/google.golang.org/appengine/aetest" ] ||
    die "the official Go library is missing: install golang-google-appengine-dev ($gocode)"
[ -x "$build/appfront" ] || die "$build/appfront does not exist: run make first"

export GO111MODULE=off
export GOPATH="$here:$gocode"
export GOPROXY=off
export GOFLAGS=
# Inside the build directory, so `make clean` clears it and HOME is not needed.
export GOCACHE="$build/go-cache"
# aetest starts "$APPENGINE_DEV_APPSERVER_BINARY <flags> APPDIR"; its own
# tests skip themselves unless APPENGINE_DEV_APPSERVER names a file.
export APPENGINE_DEV_APPSERVER="$build/appfront"
export APPENGINE_DEV_APPSERVER_BINARY="$build/appfront"

# -p 1: one test binary at a time; each test starts its own appfront and
# builds a small Go app, which is load enough on a small machine.
status=0
go test ${GOTEST_FLAGS:-} -count=1 -p 1 -timeout 300s -run "${AETEST_RUN:-TestContext|TestUsers|TestBasicAPICalls}" \
    google.golang.org/appengine/aetest || status=1
go test ${GOTEST_FLAGS:-} -count=1 -p 1 -timeout 600s -run "${GOTEST_RUN:-.}" appfronttest/... || status=1
exit $status
