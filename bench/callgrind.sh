#!/bin/bash
# bench/callgrind.sh — user-space instructions per proxied request, for
# iterating on a change between full `make bench` runs.
#
#   bench/callgrind.sh [CONNS [SECONDS [BINARY]]]     (defaults 16 3 build/appfront)
#
# Runs BINARY under callgrind on core 0 in front of the bench upstream (one
# instance, max_concurrent_requests 80, as bench/run.sh configures it),
# warms it for a second with wrk on core 1, counts instructions during a
# SECONDS run at CONNS connections, and prints the instructions per request
# and the top functions. Instruction counts do not move with the machine's
# load, unlike requests/s: the figure to compare two builds with.
# CALLGRIND_OUT=DIR keeps the dump there (callgrind_annotate reads it).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
build=${APPFRONT_BUILD:-$repo/build}
CONNS=${1:-16} SECS=${2:-3} BIN=${3:-$build/appfront}
make -s -C "$here" BUILD="$build" >&2
B=$build/bench
T=$(mktemp -d /tmp/afcg.XXXXXX)
OUT=${CALLGRIND_OUT:-$T/out}
mkdir -p "$T/app" "$OUT"
PID=
cleanup() {
    [ -n "$PID" ] && kill "$PID" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT
cat >"$T/app/app.yaml" <<Y
runtime: native
entrypoint: exec $B/upstream
threadsafe: true
automatic_scaling:
  max_concurrent_requests: 80
  min_instances: 1
  max_instances: 1
Y
taskset -c 0 valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/callgrind.%p" \
    "$BIN" --port=0 --admin_port=0 --api_port=0 --automatic_restart=false \
    --dev_appserver_log_level=warning --storage_path="$T/storage" "$T/app" >"$T/log" 2>&1 &
PID=$!
pid=$PID
port=
for _ in $(seq 300); do
    port=$(sed -n 's/^Starting module "default" running at: http:\/\/[^:]*:\([0-9]*\).*/\1/p' "$T/log" | head -1)
    [ -n "$port" ] && break
    sleep 0.1
done
[ -n "$port" ] || { echo "appfront did not start: $(tail -3 "$T/log")" >&2; exit 1; }
taskset -c 1 wrk -t1 -c"$CONNS" -d1s "http://127.0.0.1:$port/" >/dev/null
callgrind_control -i on "$PID" >/dev/null
n=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"$SECS"s -s "$here/wrk-report.lua" "http://127.0.0.1:$port/" |
    grep '^{' | python3 -c 'import json, sys; print(json.load(sys.stdin)["requests"])')
callgrind_control -i off "$PID" >/dev/null
kill "$PID"
wait "$PID" 2>/dev/null || true
PID=
f=$OUT/callgrind.$pid
ir=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
echo "$CONNS connections: $n requests, $ir instructions, $((ir / n)) per request"
set +o pipefail
callgrind_annotate "$f" 2>/dev/null | sed -n '/^Ir *file:function/,$p' | sed 1,2d | grep -v '^$' |
    head -"${CALLGRIND_TOP:-30}" | sed -E 's/ +\[[^]]*\]$//'
