#!/bin/bash
# bench/probe.sh — a quick side-by-side of the proxy point only, for
# iterating on a change between full `make bench` runs.
#
#   bench/probe.sh [CONNS [RUNS [SECONDS]]]      (defaults 16 5 3)
#
# With APPFRONT_B=/path/to/another/appfront, that binary runs too, as
# target "appfront-b": an A/B comparison of two builds in the same run.
# With PROBE_LOG=1 appfront keeps its default request log (to a file).
# With PROBE_IDLE=N each round starts after N seconds of idle, and with
# PROBE_ROTATE=1 the targets' order turns by one each round, so that each
# is first after the idle as often as the others (the summary then gives
# medians by position too). PROBE_WARM=N runs each target for N seconds,
# unmeasured, right before each of its measured runs (as bench/run.sh does).
#
# Starts the bench upstream, appfront (no request log), nginx and haproxy as
# bench/run.sh configures them, servers on core 0 and wrk on core 1, then
# runs the targets interleaved RUNS times and prints each run and the
# medians, with each proxy's CPU time per request (user + system, from
# /proc, children included) and the upstream's. Writes nothing into the
# tree; docs/benchmarks.md comes only from `make bench`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
build=${APPFRONT_BUILD:-$repo/build}
CONNS=${1:-16} RUNS=${2:-5} SECS=${3:-3}
make -s -C "$here" BUILD="$build" >&2
B=$build/bench
T=$(mktemp -d /tmp/afprobe.XXXXXX)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    sleep 0.5
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    rm -rf "$T"
}
trap cleanup EXIT
start() {
    local name=$1
    shift
    taskset -c 0 "$@" >"$T/$name.log" 2>&1 &
    PIDS+=("$!")
}
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_http() {
    for _ in $(seq 100); do
        curl -sf -o /dev/null --max-time 1 "$1" && return 0
        sleep 0.1
    done
    echo "$1 does not answer" >&2
    exit 1
}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

start upstream "$B/upstream" --unix "$T/up.sock"
for _ in $(seq 100); do [ -S "$T/up.sock" ] && break; sleep 0.1; done

mkdir -p "$T/app"
cat >"$T/app/app.yaml" <<EOF
runtime: native
entrypoint: exec $B/upstream
threadsafe: true
automatic_scaling:
  max_concurrent_requests: 80
  min_instances: 1
  max_instances: 1
EOF
start_af() { # start_af NAME BINARY: prints the port
    local quiet=--dev_appserver_log_level=warning
    [ "${PROBE_LOG:-0}" = 1 ] && quiet=
    start "$1" "$2" --port=0 --admin_port=0 --api_port=0 --automatic_restart=false \
        $quiet --storage_path="$T/storage-$1" "$T/app"
    local p
    for _ in $(seq 100); do
        p=$(sed -n 's/^Starting module "default" running at: http:\/\/[^:]*:\([0-9]*\).*/\1/p' "$T/$1.log" | head -1)
        [ -n "$p" ] && { echo "$p"; return 0; }
        sleep 0.1
    done
    echo "$1 did not start: $(tail -3 "$T/$1.log")" >&2
    exit 1
}
start_af appfront "$build/appfront" >"$T/port"
AFP=$(cat "$T/port")
TARGETS=(appfront nginx haproxy)
if [ -n "${APPFRONT_B:-}" ]; then
    start_af appfront-b "$APPFRONT_B" >"$T/port"
    AFB=$(cat "$T/port")
    TARGETS=(appfront appfront-b nginx haproxy)
fi

NGP=$(port)
mkdir -p "$T/nginx"
sed -e "s|@DIR@|$T/nginx|g; s|@SOCK@|$T/up.sock|g; s|@PORT@|$NGP|g; s|@NOFILE@|4096|g; s|@CONNS@|4000|g" \
    "$here/nginx.conf.in" >"$T/nginx.conf"
start nginx nginx -p "$T/nginx" -e "$T/nginx/error.log" -c "$T/nginx.conf"
HAP=$(port)
mkdir -p "$T/haproxy"
sed -e "s|@DIR@|$T/haproxy|g; s|@SOCK@|$T/up.sock|g; s|@PORT@|$HAP|g; s|@MAXCONN@|2000|g" \
    "$here/haproxy.cfg.in" >"$T/haproxy.cfg"
start haproxy haproxy -db -f "$T/haproxy.cfg"

declare -A URL=([appfront]="http://127.0.0.1:$AFP/" [nginx]="http://127.0.0.1:$NGP/"
    [haproxy]="http://127.0.0.1:$HAP/" [appfront-b]="http://127.0.0.1:${AFB:-0}/")
for t in "${TARGETS[@]}"; do
    wait_http "${URL[$t]}"
    taskset -c 1 wrk -t1 -c"$CONNS" -d1s "${URL[$t]}" >/dev/null
done
# CPU ticks (user + system, every thread) of processes.
ticks() {
    local p sum=0
    for p in "$@"; do
        sum=$((sum + $(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$sum"
}
# A proxy's processes (nginx's master and worker), and its upstream's:
# appfront's instance is its child, the others share the one started above.
proxy_pids() { case $1 in appfront*) echo "${SPID[$1]}" ;; *) echo "${SPID[$1]}" $(pgrep -P "${SPID[$1]}") ;; esac; }
up_pids() { case $1 in appfront*) pgrep -P "${SPID[$1]}" ;; *) echo "${PIDS[0]}" ;; esac; }
declare -A SPID=([appfront]=${PIDS[1]} [nginx]=${PIDS[-2]} [haproxy]=${PIDS[-1]})
[ -n "${APPFRONT_B:-}" ] && SPID[appfront-b]=${PIDS[2]}
HZ=$(getconf CLK_TCK)
for r in $(seq "$RUNS"); do
    [ "${PROBE_IDLE:-0}" != 0 ] && sleep "$PROBE_IDLE"
    order=("${TARGETS[@]}")
    if [ "${PROBE_ROTATE:-0}" = 1 ]; then
        k=$(((r - 1) % ${#TARGETS[@]}))
        order=("${TARGETS[@]:k}" "${TARGETS[@]:0:k}")
    fi
    pos=0
    for t in "${order[@]}"; do
        pos=$((pos + 1))
        [ "${PROBE_WARM:-0}" != 0 ] && taskset -c 1 wrk -t1 -c"$CONNS" -d"$PROBE_WARM"s "${URL[$t]}" >/dev/null
        pp=$(proxy_pids "$t") up=$(up_pids "$t")
        p0=$(ticks $pp) u0=$(ticks $up)
        j=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"$SECS"s -s "$here/wrk-report.lua" "${URL[$t]}" | grep '^{')
        p1=$(ticks $pp) u1=$(ticks $up)
        # CPU time on the server core: the proxy's, and its upstream's.
        j="${j%\}}, \"cpu_us\": $(((p1 - p0) * 1000000 / HZ)), \"up_cpu_us\": $(((u1 - u0) * 1000000 / HZ)), \"pos\": $pos}"
        echo "$t $j" | tee -a "$T/runs"
    done
done
python3 - "$T/runs" "$CONNS" <<'EOF'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    t, j = line.split(" ", 1)
    rows.setdefault(t, []).append(json.loads(j))
ng = statistics.median(d["rps"] for d in rows["nginx"])
print(f"{sys.argv[2]} connections, medians:")
for t, ds in rows.items():
    rps = statistics.median(d["rps"] for d in ds)
    print(f"  {t:10} {rps:9.0f} req/s  {rps / ng:4.2f}x nginx  p50 {statistics.median(d['p50_us'] for d in ds):6.0f} us"
          f"  p99 {statistics.median(d['p99_us'] for d in ds):6.0f} us"
          f"  cpu/req {statistics.median(d['cpu_us'] / d['requests'] for d in ds):5.2f} us"
          f" (+upstream {statistics.median(d['up_cpu_us'] / d['requests'] for d in ds):4.2f})")
if len({d["pos"] for ds in rows.values() for d in ds}) > 1:
    print("by position in the round (median req/s, p99):")
    for t, ds in rows.items():
        cells = []
        for pos in sorted({d["pos"] for d in ds}):
            sel = [d for d in ds if d["pos"] == pos]
            cells.append(f"{pos}: {statistics.median(d['rps'] for d in sel):6.0f} {statistics.median(d['p99_us'] for d in sel):5.0f} us")
        print(f"  {t:10} " + "  ".join(cells))
EOF
