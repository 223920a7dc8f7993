#!/bin/bash
# bench/callgrind-api.sh — user-space instructions and system calls per API
# call (memcache Get over the framed socket, bench/apibench), for iterating
# on a change between full `make bench` runs.
#
#   bench/callgrind-api.sh [CONNS [SECONDS [BINARY]]]   (defaults 16 3 build/appfront)
#
# Runs `BINARY api` under callgrind on core 0, warms it for a second with
# apibench on core 1, counts instructions during a SECONDS run at CONNS
# connections and prints the instructions per call and the top functions.
# Then runs BINARY again without valgrind and counts its system calls during
# a SECONDS run, with `strace -c -f` and, where perf is available, with
# `perf stat` on the syscall tracepoints (strace slows the server, so the
# system calls per API call, not the rate, is the figure). Instruction and system call counts
# do not move with the machine's load, unlike calls/s: the figures to
# compare two builds with.
# CALLGRIND_OUT=DIR keeps the dump there (callgrind_annotate reads it).
# STRACE=0 skips the system call counts.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
build=${APPFRONT_BUILD:-$repo/build}
CONNS=${1:-16} SECS=${2:-3} BIN=${3:-$build/appfront}
make -s -C "$here" BUILD="$build" >&2
B=$build/bench
T=$(mktemp -d /tmp/afcgapi.XXXXXX)
OUT=${CALLGRIND_OUT:-$T/out}
mkdir -p "$OUT"
PID=
cleanup() {
    [ -n "$PID" ] && kill "$PID" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT

# start_api LOG [WRAPPER...]: starts `BINARY api`, sets PID and SOCK.
start_api() {
    local log=$1
    shift
    "$@" "$BIN" api --api_port=0 --admin_port=0 --dev_appserver_log_level=warning \
        --storage_path="$T/storage" >"$log" 2>&1 &
    PID=$!
    local port=
    for _ in $(seq 300); do
        port=$(sed -n 's/^Starting API server at: http:\/\/[^:]*:\([0-9]*\).*/\1/p' "$log" | head -1)
        [ -n "$port" ] && break
        sleep 0.1
    done
    [ -n "$port" ] || { echo "appfront did not start: $(tail -3 "$log")" >&2; exit 1; }
    # `appfront api` prints only its HTTP port; the framed socket's path is
    # in the info document at GET /.
    SOCK=$(curl -sf "http://127.0.0.1:$port/" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["socket"])')
}
stop_api() {
    kill "$PID"
    wait "$PID" 2>/dev/null || true
    PID=
}
calls() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["all_calls"])' "$1"; }

start_api "$T/log" taskset -c 0 valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$OUT/callgrind.%p"
pid=$PID
taskset -c 1 "$B/apibench" "$SOCK" "$CONNS" 1 >/dev/null
callgrind_control -i on "$PID" >/dev/null
taskset -c 1 "$B/apibench" "$SOCK" "$CONNS" "$SECS" >"$T/ab"
callgrind_control -i off "$PID" >/dev/null
stop_api
n=$(calls "$T/ab")
f=$OUT/callgrind.$pid
ir=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
echo "$CONNS connections: $n calls, $ir instructions, $((ir / n)) per call"
(
    set +o pipefail # head closes its input early
    callgrind_annotate "$f" 2>/dev/null | sed -n '/^Ir *file:function/,$p' | sed 1,2d |
        grep -v '^$' | head -"${CALLGRIND_TOP:-30}" | sed -E 's/ +\[[^]]*\]$//'
)

[ "${STRACE:-1}" = 1 ] || exit 0
# syscount strace|perf: counts the server's system calls with that tool
# while apibench runs, into $T/sc.
syscount() {
    start_api "$T/log2" taskset -c 0
    taskset -c 1 "$B/apibench" "$SOCK" "$CONNS" 1 >/dev/null
    if [ "$1" = strace ]; then
        strace -c -f -p "$PID" -o "$T/sc" 2>"$T/sc.err" &
    else
        perf stat -x, -p "$PID" -e "$ev" -o "$T/sc" &
    fi
    local st=$!
    sleep 0.5 # the tool attaches to every thread
    if [ "$1" = strace ]; then
        for _ in $(seq 50); do
            grep -q attached "$T/sc.err" && break
            sleep 0.1
        done
    fi
    taskset -c 1 "$B/apibench" "$SOCK" "$CONNS" "$SECS" >"$T/ab"
    kill -INT "$st"
    wait "$st" 2>/dev/null || true
    stop_api
    n=$(calls "$T/ab")
}
syscount strace
echo
echo "system calls (strace -c -f), $n calls:"
awk -v n="$n" '
    $1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" { c = $4; name = $NF; tot += c
        if (c / n >= 0.005) printf "  %-16s %6.2f per call\n", name, c / n }
    END { printf "  %-16s %6.2f per call\n", "total", tot / n }' "$T/sc"
# strace stops the server at every system call, which changes how calls
# batch up; perf's tracepoints do not.
command -v perf >/dev/null || exit 0
ev=raw_syscalls:sys_enter
for s in read write readv writev epoll_ctl epoll_wait ioctl futex; do ev=$ev,syscalls:sys_enter_$s; done
syscount perf
echo
echo "system calls (perf stat), $n calls:"
awk -F, -v n="$n" '$3 ~ /sys_enter/ { name = $3; sub(/.*sys_enter_?/, "", name)
    if (name == "") name = "total"
    printf "  %-16s %6.2f per call\n", name, $1 / n }' "$T/sc"
