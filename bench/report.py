#!/usr/bin/env python3
"""Writes docs/benchmarks.md and docs/plots/*.png from bench/results/.

Usage: report.py RESULTS_DIR DOCS_DIR

Everything in the document comes from the raw results of one run of
bench/run.sh, except the analysis in bench/notes.md, which is included as
written. A section of docs/benchmarks.md between the markers
<!-- BEGIN datastore --> and <!-- END datastore --> belongs to the datastore
engineer (bench/datastore/) and is carried over unchanged.
"""
import csv
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

RES, DOCS = sys.argv[1], sys.argv[2]
HERE = os.path.dirname(os.path.abspath(__file__))
PLOTS = os.path.join(DOCS, "plots")
OUT = os.path.join(DOCS, "benchmarks.md")

TARGET_NAMES = {
    "appfront": "appfront",
    "appfront-log": "appfront, default request log",
    "appfront-auto": "appfront, automatic scaling (defaults)",
    "nginx": "nginx",
    "haproxy": "haproxy",
    "direct": "upstream alone (TCP, the limit)",
    "redis": "redis",
}


def rows(name):
    path = os.path.join(RES, name)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def load(name):
    path = os.path.join(RES, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def fmt_int(x):
    return f"{x:,.0f}"


def fmt_us(us):
    us = float(us)
    if us >= 10000:
        return f"{us / 1000:.0f} ms"
    if us >= 1000:
        return f"{us / 1000:.1f} ms"
    return f"{us:.0f} µs"


def status(ok, detail):
    return ("**met**" if ok else "**missed**") + f" — {detail}"


meta = load("meta.json") or {}
proxy = rows("proxy.csv")
conc = rows("concurrency.csv")
memory = rows("memory.csv")
api = rows("api.csv")
startup = load("startup.json")
aetest = load("aetest.json")


# ---- proxy aggregates --------------------------------------------------------

def kept(r):
    return r.get("kept", "1") != "0"


def proxy_stats(target, conns):
    every = [r for r in proxy if r["target"] == target and int(r["conns"]) == conns]
    rs = [r for r in every if kept(r)]
    if not rs:
        return None
    rps = [float(r["rps"]) for r in rs]
    return {
        "runs": len(rs),
        "redone": len(every) - len(rs),
        "min": min(rps),
        "med": med(rps),
        "max": max(rps),
        "p50": med([float(r["p50_us"]) for r in rs]),
        "p99": med([float(r["p99_us"]) for r in rs]),
        "p99_max": max(float(r["p99_us"]) for r in rs),
        "p99_min": min(float(r["p99_us"]) for r in rs),
        "errors": sum(int(r["errors"]) for r in rs),
        "cpu": med([float(r["server_cpu_pct"]) for r in rs]),
        "steal": med([float(r.get("server_steal_pct") or 0) for r in rs]),
        "other": med([float(r.get("other_cpu_pct") or 0) for r in rs]),
        "other_max": max(float(r.get("other_cpu_pct") or 0) for r in rs),
    }


PROXY_TARGETS = ["appfront", "appfront-log", "nginx", "haproxy", "direct"]
CONNS = [1, 16, 256]
P = {(t, c): proxy_stats(t, c) for t in PROXY_TARGETS for c in CONNS}


def api_stats(target, placement, conns):
    every = [r for r in api if r["target"] == target and r["placement"] == placement
             and int(r["conns"]) == conns]
    rs = [r for r in every if kept(r)]
    if not rs:
        return None
    rps = [float(r["rps"]) for r in rs]
    return {
        "runs": len(rs), "redone": len(every) - len(rs),
        "min": min(rps), "med": med(rps), "max": max(rps),
        "steal": med([float(r.get("server_steal_pct") or 0) for r in rs]),
        "p50": med([float(r["p50_us"]) for r in rs]),
        "p99": med([float(r["p99_us"]) for r in rs]),
        "other": med([float(r.get("other_cpu_pct") or 0) for r in rs]),
        "cpu": med([float(r.get("server_cpu_pct") or 0) for r in rs]),
    }


A = {(t, p, c): api_stats(t, p, c) for t in ("appfront", "redis") for p in ("split", "shared")
     for c in (1, 16)}


# ---- plots -------------------------------------------------------------------

def gnuplot(script):
    try:
        subprocess.run(["gnuplot"], input=script, text=True, check=True,
                       capture_output=True)
        return True
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"report.py: gnuplot failed: {getattr(e, 'stderr', e)}", file=sys.stderr)
        return False


os.makedirs(PLOTS, exist_ok=True)
tmp = tempfile.mkdtemp(prefix="afreport.")
plots = {}

COLORS = {"appfront": "#1f77b4", "appfront-log": "#9ecae1", "nginx": "#2ca02c",
          "haproxy": "#ff7f0e", "direct": "#7f7f7f"}

if proxy:
    present = [t for t in PROXY_TARGETS if any(P[(t, c)] for c in CONNS)]
    dat = os.path.join(tmp, "proxy.dat")
    with open(dat, "w") as f:
        for c in CONNS:
            f.write(f'"{c} conn{"s" if c > 1 else ""}"')
            for t in present:
                s = P[(t, c)]
                if s:
                    f.write(f" {s['med']:.0f} {s['min']:.0f} {s['max']:.0f} {s['p99'] / 1000:.3f}")
                else:
                    f.write(" 0 0 0 0")
            f.write("\n")
    n = len(present)
    plot_rps = ", ".join(
        f"'{dat}' using {2 + 4 * i}:{3 + 4 * i}:{4 + 4 * i}:xtic(1) title '{TARGET_NAMES[t]}' "
        f"lc rgb '{COLORS[t]}'"
        for i, t in enumerate(present))
    plot_p99 = ", ".join(
        f"'{dat}' using {5 + 4 * i}:xtic(1) title '{TARGET_NAMES[t]}' lc rgb '{COLORS[t]}'"
        for i, t in enumerate(present))
    common = f"""
set terminal pngcairo size 900,480 font 'DejaVu Sans,10'
set style data histogram
set style histogram errorbars gap 1 lw 1
set style fill solid 0.85 border -1
set key top left
set grid ytics
set boxwidth 0.9
"""
    if gnuplot(common + f"""
set output '{PLOTS}/proxy-rps.png'
set title "GET / through each proxy: requests/s (median of {meta.get('runs', '?')} runs, bars min..max)"
set ylabel 'requests/s'
set yrange [0:*]
plot {plot_rps}
"""):
        plots["proxy-rps"] = "plots/proxy-rps.png"
    if gnuplot(common.replace("histogram errorbars gap 1 lw 1", "histogram clustered gap 1") + f"""
set output '{PLOTS}/proxy-p99.png'
set title "GET / through each proxy: p99 latency, ms (median of runs; log scale)"
set ylabel 'p99 latency (ms)'
set logscale y
plot {plot_p99}
"""):
        plots["proxy-p99"] = "plots/proxy-p99.png"

if api:
    dat = os.path.join(tmp, "api.dat")
    with open(dat, "w") as f:
        for p, pname in (("split", "client core 1"), ("shared", "client core 0")):
            for c in (1, 16):
                a, r = A[("appfront", p, c)], A[("redis", p, c)]
                if a and r:
                    f.write(f'"{c} conn{"s" if c > 1 else ""}, {pname}" {a["med"]:.0f} '
                            f'{a["min"]:.0f} {a["max"]:.0f} {r["med"]:.0f} {r["min"]:.0f} '
                            f'{r["max"]:.0f}\n')
    if gnuplot(f"""
set terminal pngcairo size 1000,420 font 'DejaVu Sans,9'
set output '{PLOTS}/api.png'
set title "memcache Get through libappfront.a vs redis GET (redis-benchmark), Unix sockets"
set style data histogram
set style histogram errorbars gap 1 lw 1
set style fill solid 0.85 border -1
set key top left
set grid ytics
set ylabel 'calls/s'
set yrange [0:*]
plot '{dat}' using 2:3:4:xtic(1) title 'appfront memcache Get' lc rgb '#1f77b4', \\
     '' using 5:6:7 title 'redis GET' lc rgb '#d62728'
"""):
        plots["api"] = "plots/api.png"


# ---- the document --------------------------------------------------------------

md = []
w = md.append
w("# Benchmarks")
w("")
w("Generated by `bench/run.sh` (`make bench`) from the raw results in `bench/results/`; "
  "do not edit by hand — the analysis comes from `bench/notes.md`. Every figure "
  "is measured in the same run as what it is compared with.")
w("")
if meta.get("quick"):
    w("> **This is a quick smoke run (`BENCH_QUICK=1`): one short run per point. "
      "Do not quote these figures.**")
    w("")
w("| | |")
w("| --- | --- |")
w(f"| date | {meta.get('date', '?')} |")
w(f"| command | `{meta.get('command', 'make bench')}` ({meta.get('seconds_total', '?')} s) |")
w(f"| machine | {meta.get('cpu', '?')}, {meta.get('cores', '?')} cores, {meta.get('memory', '?')}, "
  f"{meta.get('os', '?')}, kernel {meta.get('kernel', '?')}"
  + f"; a container ({meta.get('virt') or '?'}) on a virtual machine with shared cores "
  f"(cpuidle driver {meta.get('cpuidle') or '?'}; the hypervisor steals time, see *steal*)"
  + " |")
w(f"| placement | servers (and the upstream app) on core {meta.get('server_cpu', 0)}, "
  f"load generators on core {meta.get('client_cpu', 1)} (`taskset`) |")
w(f"| runs | {meta.get('runs', '?')} runs × {meta.get('seconds_per_run', '?')} s per point, "
  "targets interleaved within each run; before each point the run waits (10 s at most, "
  f"{meta.get('quiet_waited_s', '?')} s in all this time) until other processes use less than "
  f"{meta.get('quiet_pct', '?')}% of a core"
  + (f"; the upstream app was killed from outside and restarted {meta['upstream_restarts']} time(s)"
     if meta.get("upstream_restarts") else "") + " |")
v = meta.get("versions", {})
w(f"| versions | appfront {meta.get('appfront_commit', '?')}"
  + (" with uncommitted changes of the shared checkout" if meta.get("appfront_dirty") else "")
  + (f" (binary {meta['appfront_sha256']}"
     + ("; **rebuilt by someone during the run: later sections may measure a newer binary**"
        if meta.get("appfront_rebuilt_during_run") else "") + ")"
     if meta.get("appfront_sha256") else "")
  + f", nginx {v.get('nginx', '?')}, "
  f"haproxy {v.get('haproxy', '?')}, redis {v.get('redis', '?')}, wrk {v.get('wrk', '?')}, "
  f"{v.get('go', 'go ?')}, libevent {v.get('libevent', '?')} |")
w("")

# Targets
w("## Issue 7 targets")
w("")
w("| target | measured | status |")
w("| --- | --- | --- |")


def ratio(a, b):
    return a / b if b else float("nan")


for c in (16, 256):
    af = P.get(("appfront", c))
    for other in ("nginx", "haproxy"):
        o = P.get((other, c))
        if not af or not o:
            continue
        r = ratio(af["med"], o["med"])
        p99_ok = af["p99"] <= o["p99"]
        ok = r >= 1.1 and p99_ok
        detail = f"{r:.2f}× (needs 1.10×)"
        if r < 1.1:
            detail += f", {(1.1 - r) / 1.1 * 100:.0f}% short"
        detail += f"; p99 {fmt_us(af['p99'])} vs {fmt_us(o['p99'])}" + (
            "" if p99_ok else
            f" (worse; {other}'s own runs spread {fmt_us(o['p99_min'])}–{fmt_us(o['p99_max'])})")
        w(f"| proxy ≥ 1.1× {other} at {c} connections, p99 no worse | "
          f"{fmt_int(af['med'])} vs {fmt_int(o['med'])} req/s | {status(ok, detail)} |")
for r in memory:
    if r["target"] != "appfront":
        continue
    b = int(r["bytes_per_conn"])
    w(f"| ≤ 1 KiB per idle keep-alive connection ({int(r['conns']):,}) | {b:,} B | "
      f"{status(b <= 1024, f'{b / 1024:.1f} KiB' + ('' if b <= 1024 else f', {b / 1024:.1f}× the budget'))} |")
for c, need in ((16, 0.5), (1, 0.35)):
    a, rr = A.get(("appfront", "split", c)), A.get(("redis", "split", c))
    if a and rr:
        r = ratio(a["med"], rr["med"])
        extra = ""
        a2, r2 = A.get(("appfront", "shared", c)), A.get(("redis", "shared", c))
        if a2 and r2:
            extra = f"; {ratio(a2['med'], r2['med']):.2f}× with client and server on one core"
        w(f"| API memcache Get ≥ {need}× redis GET at {c} connection{'s' if c > 1 else ''} | "
          f"{fmt_int(a['med'])} vs {fmt_int(rr['med'])} calls/s | "
          f"{status(r >= need, f'{r:.2f}× (needs {need}×)' + extra)} |")
if startup:
    m = startup["median_ms"]
    w(f"| API startup line within 20 ms of exec | median {m:.1f} ms "
      f"(min {startup['min_ms']:.1f}, max {startup['max_ms']:.1f}, {startup['runs']} runs) | "
      f"{status(m <= 20, f'median {m:.1f} ms')} |")
if aetest:
    m = aetest["median_ms"]
    w(f"| aetest NewInstance + Close under 100 ms | median {m:.1f} ms "
      f"(min {aetest['min_ms']:.1f}, max {aetest['max_ms']:.1f}, {aetest['runs']} runs) | "
      f"{status(m < 100, f'median {m:.1f} ms')} |")
w("")
cost_rows = {(r["target"], r["conns"]): r for r in rows("cost.csv")}
cg_rows = {r["target"]: r for r in rows("callgrind.csv")}
steady = []
for c in ("16", "256"):
    a, n = cost_rows.get(("appfront", c)), cost_rows.get(("nginx", c))
    if a and n:
        steady.append(f"CPU time per request {float(a['proxy_cpu_us']):.1f} µs vs nginx's "
                      f"{float(n['proxy_cpu_us']):.1f} µs at {c} connections "
                      f"({float(a['proxy_cpu_us']) / float(n['proxy_cpu_us']):.2f}×), "
                      f"{float(a['proxy_syscalls']):.1f} vs {float(n['proxy_syscalls']):.1f} "
                      "system calls")
if "appfront" in cg_rows and "nginx" in cg_rows:
    a, n = float(cg_rows["appfront"]["per_request"]), float(cg_rows["nginx"]["per_request"])
    steady.append(f"{a:,.0f} vs {n:,.0f} user-space instructions per request ({a / n:.2f}×)")
if steady:
    w("Steadier than requests/s on this shared machine, the proxy's cost per request: "
      + "; ".join(steady) + ". To be 1.1× nginx on a core it shares with the upstream, "
      "appfront's cost per request has to fall below nginx's.")
    w("")

# Proxy
w("## Proxy: GET / (13-byte body)")
w("")
w("wrk, one thread, on the load core; the proxies and the upstream app share the server "
  "core. Requests/s are min / **median** / max over the runs; latencies are medians over "
  "the runs of wrk's p50 and p99; *server core* is how busy the server core was "
  "(and how much of it the hypervisor stole); *other load* is the CPU, in % of one core, "
  "that processes outside the benchmark used during the runs (median, max) — this machine "
  "is shared with other work. A run measured while the hypervisor stole more than "
  f"{meta.get('steal_max', '?')}% of the server core, or other processes used more than "
  f"{meta.get('other_max', '?')}% of a core, was measured again (*redone*; "
  f"{meta.get('retried', '?')} of at most {meta.get('retry_budget', '?')} in this run) and left "
  "out of the figures; `bench/results/*.csv` keep every run, with `kept=0` on those.")
w("")
for c in CONNS:
    w(f"### {c} connection{'s' if c > 1 else ''}")
    w("")
    w("| server | runs (redone) | req/s min | **median** | max | × nginx | p50 | p99 | errors | server core busy (steal) | other load |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    ng = P.get(("nginx", c))
    for t in PROXY_TARGETS:
        s = P.get((t, c))
        if not s:
            continue
        x = f"{ratio(s['med'], ng['med']):.2f}" if ng else "–"
        w(f"| {TARGET_NAMES[t]} | {s['runs']} ({s['redone']}) | {fmt_int(s['min'])} | **{fmt_int(s['med'])}** | "
          f"{fmt_int(s['max'])} | {x} | {fmt_us(s['p50'])} | {fmt_us(s['p99'])} | "
          f"{s['errors']} | {s['cpu']:.0f}% ({s['steal']:.0f}%) | {s['other']:.0f}%, {s['other_max']:.0f}% |")
    w("")
if "proxy-rps" in plots:
    w(f"![requests/s]({plots['proxy-rps']})")
    w("")
if "proxy-p99" in plots:
    w(f"![p99 latency]({plots['proxy-p99']})")
    w("")
w("Configurations (generated by `bench/run.sh` from `bench/nginx.conf.in`, "
  "`bench/haproxy.cfg.in`):")
w("")
w("- **appfront**: `app.yaml` with `runtime: native`, `entrypoint: exec build/bench/upstream`, "
  "`threadsafe: true`, `automatic_scaling: {max_concurrent_requests: 80, min_instances: 1, "
  "max_instances: 1}` — one instance, the most requests in flight App Engine allows "
  "(`manual_scaling` takes no `max_concurrent_requests` in appfront's app.yaml), like the one "
  "upstream behind nginx and haproxy. Flags `--dev_appserver_log_level=warning` (no line per "
  "request, as nginx runs with `access_log off`) and `--automatic_restart=false`. "
  "*appfront, default request log* is the same with the default log level: one line per "
  "request on stderr, redirected to a file.")
w("- **nginx**: `worker_processes 1`, `proxy_pass` to the upstream's Unix socket, upstream "
  "`keepalive 512`, `proxy_http_version 1.1`, `proxy_set_header Connection \"\"`, "
  "`access_log off`.")
w("- **haproxy**: `nbthread 1`, `http-reuse always`, keep-alive both sides, no logging.")
w("- **upstream alone**: `bench/upstream.c` (one thread, epoll) on loopback TCP: the "
  "limit a proxy can approach.")
w("")

# Cost per request
cost = rows("cost.csv")
if cost:
    w("### CPU time and system calls per request")
    w("")
    w("`perf stat -e task-clock,context-switches,raw_syscalls:sys_enter` attached to the "
      "proxy and, separately, to the upstream app during one wrk run, divided by the "
      "requests wrk counted. CPU time is counted only while the process runs, so it is far "
      "less disturbed by other load than requests/s.")
    w("")
    w("| connections | server | proxy CPU µs/req | proxy syscalls/req | proxy context switches/req | upstream CPU µs/req | upstream syscalls/req |")
    w("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in cost:
        direct = r["target"] == "direct"
        w(f"| {r['conns']} | {TARGET_NAMES.get(r['target'], r['target'])} | "
          + ("– | – | – | " if direct else
             f"{float(r['proxy_cpu_us']):.1f} | {float(r['proxy_syscalls']):.1f} | "
             f"{float(r['proxy_cs']):.2f} | ")
          + f"{float(r['upstream_cpu_us']):.1f} | {float(r['upstream_syscalls']):.1f} |")
    w("")

# Instructions per request
cg = {r["target"]: r for r in rows("callgrind.csv")}
if any(t in cg for t in ("appfront", "nginx", "haproxy")):
    w("### Instructions per request")
    w("")
    w("User-space instructions counted by callgrind (`valgrind --tool=callgrind`), each server "
      "alone on the server core under wrk with 16 connections, instrumentation on only after a "
      "warm-up; kernel work (system calls) is not included. This does not depend on the "
      "machine's other load. Top functions: `bench/results/callgrind-*.txt`.")
    w("")
    w("| server | requests | instructions/request | × nginx |")
    w("| --- | ---: | ---: | ---: |")
    ng = float(cg["nginx"]["per_request"]) if "nginx" in cg else None
    for t in ("appfront", "nginx", "haproxy"):
        if t in cg:
            r = cg[t]
            x = f"{float(r['per_request']) / ng:.2f}" if ng else "–"
            w(f"| {TARGET_NAMES[t]} | {int(r['requests']):,} | {int(r['per_request']):,} | {x} |")
    w("")

# Concurrency
if conc:
    w("## Concurrency: 100 connections on /sleep?ms=200")
    w("")
    w(f"wrk, 100 connections, {meta.get('sleep_seconds', '?')} s after a 3 s warm-up; the "
      "upstream answers after 200 ms without blocking. 100 requests in flight at once make "
      "500 req/s.")
    w("")
    w("| server | ideal | req/s | of ideal | p50 | p99 | errors | other load |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in conc:
        ideal = float(r["ideal_rps"])
        rps = float(r["rps"])
        w(f"| {TARGET_NAMES.get(r['target'], r['target'])} | {ideal:.0f} | {rps:.1f} | "
          f"{rps / ideal * 100:.0f}% | {fmt_us(r['p50_us'])} | {fmt_us(r['p99_us'])} | {r['errors']} | "
          f"{r.get('other_cpu_pct', '?')}% |")
    w("")
    w("appfront's ideal depends on the app's scaling settings: with the proxy configuration "
      "(one instance, `max_concurrent_requests: 80`) at most 80 requests run at once, so "
      "400 req/s; with App Engine's defaults (automatic scaling, 10 per instance) appfront "
      f"starts instances while requests wait ({meta.get('auto_instances', '?')} instances were "
      "running at the end).")
    w("")

# Memory
if memory:
    w("## Memory per idle keep-alive connection")
    w("")
    w("`bench/idleconns.c` opens the connections (64 at a time), sends one `GET /` on each, "
      "reads the answer and leaves it idle; the server's `VmRSS` is read before (after a "
      "1 s warm-up) and 1 s after. *open* is how many were still open at the reading. "
      "appfront runs with `--max_connections` raised to the descriptor limit "
      f"({meta.get('nofile', '?')}); haproxy needs two descriptors per `maxconn`, so it stops short "
      "of 10,000 under that limit.")
    w("")
    w("| server | connections | RSS before | RSS after | open | bytes per connection |")
    w("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in memory:
        w(f"| {TARGET_NAMES.get(r['target'], r['target'])} | {int(r['conns']):,} | "
          f"{int(r['rss_base_kb']):,} KiB | {int(r['rss_kb']):,} KiB | {int(r['open']):,} | "
          f"**{int(r['bytes_per_conn']):,}** |")
    w("")

# API
if api:
    w("## API: memcache Get vs redis GET")
    w("")
    w("appfront: `appfront api`, and `bench/apibench.c` calling `af_memcache_get` "
      "(`build/libappfront.a`) from 1 or 16 threads — the library pools one connection per "
      "thread, one call in flight each — on a key holding 3 bytes, over the framed Unix "
      "socket. redis: `redis-server` on a Unix socket, `redis-benchmark -t get` with 1 or 16 "
      "clients, no pipelining, the default 3-byte value. The socket path is read from the "
      "API server's `GET /` info document, since `appfront api` prints only its HTTP port.")
    w("")
    w("*client on core 1* is the specified placement; *client on core 0* runs the client on "
      "the server's core as well, which takes the cross-core wake-ups of this virtual "
      "machine out of the measurement (see the notes).")
    w("")
    w("| client | connections | server | runs (redone) | calls/s min | **median** | max | × redis | p50 | p99 | server core busy (steal) | other load |")
    w("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for p, pname in (("split", "core 1"), ("shared", "core 0")):
        for c in (1, 16):
            rr = A.get(("redis", p, c))
            for t in ("appfront", "redis"):
                s = A.get((t, p, c))
                if not s:
                    continue
                x = f"{ratio(s['med'], rr['med']):.2f}" if rr else "–"
                w(f"| {pname} | {c} | {t} | {s['runs']} ({s['redone']}) | {fmt_int(s['min'])} | "
                  f"**{fmt_int(s['med'])}** | "
                  f"{fmt_int(s['max'])} | {x} | {fmt_us(s['p50'])} | {fmt_us(s['p99'])} | "
                  f"{s['cpu']:.0f}% ({s['steal']:.0f}%) | {s['other']:.0f}% |")
    w("")
    if "api" in plots:
        w(f"![API calls/s]({plots['api']})")
        w("")
    if "api" in cg and "redis" in cg:
        a, r = cg["api"], cg["redis"]
        w(f"User-space instructions per call (callgrind, 16 connections, whole process): "
          f"appfront API server **{int(a['per_request']):,}** ({int(a['requests']):,} calls), "
          f"redis **{int(r['per_request']):,}** ({int(r['requests']):,} GETs): "
          f"{float(a['per_request']) / float(r['per_request']):.1f}×. "
          "Top functions: `bench/results/callgrind-api.txt`, `callgrind-redis.txt`.")
        w("")

# Startup
if startup or aetest:
    w("## Startup")
    w("")
    w("| what | runs | min | **median** | max |")
    w("| --- | ---: | ---: | ---: | ---: |")
    if startup:
        w(f"| exec of `appfront api` → `Starting API server at:` on stderr (`bench/starttime.c`) | "
          f"{startup['runs']} | {startup['min_ms']:.1f} ms | **{startup['median_ms']:.1f} ms** | "
          f"{startup['max_ms']:.1f} ms |")
    if aetest:
        w(f"| official Go `aetest.NewInstance` + `Close` (`bench/go/src/aetestbench`) | "
          f"{aetest['runs']} | {aetest['min_ms']:.1f} ms | **{aetest['median_ms']:.1f} ms** | "
          f"{aetest['max_ms']:.1f} ms |")
    w("")
    w("The aetest benchmark runs in GOPATH mode (`GO111MODULE=off`, `GOPATH=<tmp>:bench/go:"
      "/usr/share/gocode`, Debian's `golang-google-appengine-dev`) with "
      "`APPENGINE_DEV_APPSERVER_BINARY=build/appfront`; NewInstance writes an app, execs "
      "appfront and waits for its API and admin lines; Close calls `/quit` and waits for the "
      "exit. Neither is pinned to a core.")
    w("")

# Notes and profiles
notes = os.path.join(HERE, "notes.md")
if os.path.exists(notes):
    with open(notes) as f:
        w(f.read().rstrip())
    w("")


def excerpt(name, title, intro, stop=None, lines=22, skip=0):
    path = os.path.join(RES, name)
    if not os.path.exists(path):
        return
    with open(path) as f:
        text = f.read().splitlines()
    w(f"### {title}")
    w("")
    w(intro)
    w("")
    w("```")
    n = 0
    for line in text[skip:]:
        if stop and line.startswith(stop):
            break
        w(re.sub(r"\s+-\s+-\s*$", "", line.rstrip()))
        n += 1
        if n >= lines:
            break
    w("```")
    w("")


have_cg = any(os.path.exists(os.path.join(RES, f"callgrind-{t}.txt")) for t in ("appfront", "api"))
have_perf = any(os.path.exists(os.path.join(RES, f"profile-{t}.txt")) for t in ("proxy", "api"))
if have_cg or have_perf:
    w("## Profiles of this run")
    w("")
    w("Regenerated with every run. callgrind counts user-space instructions exactly "
      "(functions of libraries without symbols show as `???`); perf samples the whole "
      "process, kernel included. The virtual machine exposes no hardware counters, so perf "
      "samples with `cpu-clock`: kernel time lands on the points where interrupts are "
      "re-enabled (`_raw_spin_unlock_irqrestore`, `finish_task_switch`), which stand for "
      "system calls, the scheduler and wake-ups rather than for spinning.")
    w("")
    excerpt("callgrind-appfront.txt", "appfront proxying GET /: instructions by function (callgrind)",
            "Self instructions, then inclusive, from `bench/results/callgrind-appfront.txt`:",
            lines=60)
    excerpt("profile-proxy.txt", "appfront proxying GET /: CPU time by function (perf)",
            "From `bench/results/profile-proxy.txt`:", stop="# inclusive")
    excerpt("callgrind-api.txt", "API server, memcache Get: instructions by function (callgrind)",
            "From `bench/results/callgrind-api.txt`:", lines=60)
    excerpt("profile-api.txt", "API server, memcache Get: CPU time by function (perf)",
            "From `bench/results/profile-api.txt`:", stop="# inclusive")

w("## Running it")
w("")
w("`make bench` (about 10 minutes; `BENCH_QUICK=1 make bench` for a smoke run of 2–3 "
  "minutes whose figures are not to be quoted). `bench/run.sh` installs what is missing "
  "(wrk, nginx-light, haproxy, redis-server, redis-tools, gnuplot-nox, valgrind, linux-perf; "
  "Debian 12), builds the programs in `bench/` into `build/bench/`, needs two cores, raises "
  "the open-file limit to its hard limit, stops every server it started on exit, writes "
  "`bench/results/` and rewrites this file (keeping any section it does not write itself). "
  "`BENCH_RUNS`, `BENCH_SECONDS`, `BENCH_SERVER_CPU`, `BENCH_CLIENT_CPU`, `BENCH_PROFILE=0`, "
  "`BENCH_CALLGRIND=0`, `BENCH_QUIET_PCT`, `BENCH_STEAL_MAX`, `BENCH_OTHER_MAX` and "
  "`BENCH_RETRIES` adjust it (see the top of `bench/run.sh`).")
w("")
w("| file | what |")
w("| --- | --- |")
w("| `bench/run.sh` | the suite: servers, load, measurements, this report |")
w("| `bench/upstream.c` | the app behind every proxy: one thread, epoll, `GET /` and `/sleep?ms=N` |")
w("| `bench/idleconns.c` | holds N idle keep-alive connections for the memory figures |")
w("| `bench/apibench.c` | memcache Get through `libappfront.a` from N threads, p50/p99 |")
w("| `bench/starttime.c` | exec → startup line on stderr |")
w("| `bench/go/src/aetestbench/` | Go benchmark of `aetest.NewInstance` + `Close` |")
w("| `bench/nginx.conf.in`, `bench/haproxy.cfg.in` | the two proxies' configurations |")
w("| `bench/wrk-report.lua` | wrk's results as one JSON line |")
w("| `bench/report.py`, `bench/notes.md` | this document |")
w("")

# Carry over what others wrote in docs/benchmarks.md: a block between
# <!-- BEGIN datastore --> and <!-- END datastore -->, and any "## " section
# whose heading this script does not write (the datastore engineer's, for
# instance), verbatim and in their order.
if os.path.exists(OUT):
    with open(OUT) as f:
        old = f.read()
    mine = {line for line in md if line.startswith("## ")}
    mine |= {"## Issue 7 targets", "## Proxy: GET / (13-byte body)",
             "## Concurrency: 100 connections on /sleep?ms=200",
             "## Memory per idle keep-alive connection", "## API: memcache Get vs redis GET",
             "## Startup", "## Where the time goes, and what to change",
             "## Profiles of this run", "## Running it"}
    m = re.search(r"<!-- BEGIN datastore -->.*?<!-- END datastore -->", old, re.S)
    if m:
        w(m.group(0))
        w("")
        old = old.replace(m.group(0), "")
    for part in re.split(r"(?m)^(?=## )", old):
        heading = part.split("\n", 1)[0].rstrip()
        if heading.startswith("## ") and heading not in mine:
            w(part.rstrip())
            w("")

with open(OUT, "w") as f:
    f.write("\n".join(md).rstrip() + "\n")
print(f"report.py: wrote {OUT}", file=sys.stderr)
