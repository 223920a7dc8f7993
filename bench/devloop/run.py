#!/usr/bin/python3
"""Developer-loop benchmark (issue 6). Run from the repository root after
`make`:

    /usr/bin/python3 bench/devloop/run.py [--files 50000] [--idle 20] [--changes 10]

1. Idle CPU: appfront watches a generated tree of --files files (100 per
   directory) with nothing changing, for --idle seconds, once with inotify
   (the default) and once with --use_mtime_file_watcher. CPU is appfront's
   own user+system time from /proc/PID/stat (instances excluded), as a
   percentage of one core. The first walk's duration comes from appfront's
   "Watching ..." log line.
2. Change to first response: a file of the tree is rewritten, then GET /pid
   is polled until a new instance answers; --changes times, both modes.

Everything is real: the built appfront, the built hello app, loopback HTTP.
Prints a Markdown table for docs/benchmarks.md.
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("APPFRONT_BUILD", os.path.join(REPO, "build"))
APPFRONT = os.path.join(BUILD, "appfront")
HELLO = os.path.join(BUILD, "examples", "hello")
TICK = os.sysconf("SC_CLK_TCK")


def make_tree(root, n_files):
    per_dir = 100
    os.makedirs(root)
    with open(os.path.join(root, "app.yaml"), "w") as f:
        f.write(f"runtime: native\nentrypoint: exec {HELLO}\n")
    for d in range((n_files + per_dir - 1) // per_dir):
        sub = os.path.join(root, f"pkg{d // 50:03d}", f"mod{d:04d}")
        os.makedirs(sub, exist_ok=True)
        for i in range(min(per_dir, n_files - d * per_dir)):
            with open(os.path.join(sub, f"f{i:03d}.c"), "w") as f:
                f.write("int x;\n")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


class Run:
    def __init__(self, app, flags):
        self.lines = []
        self.proc = subprocess.Popen(
            [APPFRONT, "--port=0", "--admin_port=0", "--api_port=0",
             "--dev_appserver_log_level=warning"] + flags + [app],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True)
        self.cond = threading.Condition()
        threading.Thread(target=self._drain, daemon=True).start()
        self.port = int(self.wait(r'running at: http://[^:]+:(\d+)').group(1))
        self.admin = int(self.wait(r'admin server at: http://[^:]+:(\d+)').group(1))

    def _drain(self):
        for raw in self.proc.stderr:
            with self.cond:
                self.lines.append(raw.decode(errors="replace").rstrip())
                self.cond.notify_all()

    def wait(self, rx, timeout=60):
        rx = re.compile(rx)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines:
                    m = rx.search(line)
                    if m:
                        return m
                if time.monotonic() > deadline:
                    sys.exit(f"no {rx.pattern!r} in appfront's log:\n" + "\n".join(self.lines))
                self.cond.wait(0.1)

    def pid(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/pid", timeout=10) as r:
            return int(r.read())

    def stop(self):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/quit", timeout=10).read()
            self.proc.wait(15)
        except Exception:
            self.proc.kill()
            self.proc.wait()


def wait_pid_change(run, old, bound=10.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < bound:
        try:
            p = run.pid()
            if p != old:
                return p, time.monotonic() - t0
        except OSError:
            pass
        time.sleep(0.002)
    sys.exit("no restart within %.0f s" % bound)


def measure(app, flags, idle, changes):
    run = Run(app, flags)
    try:
        # Watching line is INFO: read the walk time from a debug-free source,
        # the time to the first answer instead.
        t0 = time.monotonic()
        while True:
            try:
                pid = run.pid()
                break
            except OSError:
                time.sleep(0.01)
        time.sleep(1.0)  # let startup settle
        c0, w0 = cpu_seconds(run.proc.pid), time.monotonic()
        time.sleep(idle)
        c1, w1 = cpu_seconds(run.proc.pid), time.monotonic()
        idle_pct = 100.0 * (c1 - c0) / (w1 - w0)
        lat = []
        target = os.path.join(app, "pkg000", "mod0000", "f000.c")
        for i in range(changes):
            with open(target, "w") as f:
                f.write(f"int x = {i};\n")
            pid, took = wait_pid_change(run, pid)
            lat.append(took * 1000)
            time.sleep(0.5)
        rss = 0
        with open(f"/proc/{run.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
        return idle_pct, lat, rss
    finally:
        run.stop()


def walk_ms(app, flags):
    """The first walk, from appfront's own log line (INFO level)."""
    p = subprocess.Popen([APPFRONT, "--port=0", "--admin_port=0", "--api_port=0"] + flags + [app],
                         stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                         start_new_session=True)
    ms = None
    for raw in p.stderr:
        m = re.search(r"Watching .*\((\d+) ms\)", raw.decode(errors="replace"))
        if m:
            ms = int(m.group(1))
            break
    p.terminate()
    p.wait(15)
    return ms


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=50000)
    ap.add_argument("--idle", type=float, default=20.0)
    ap.add_argument("--changes", type=int, default=10)
    a = ap.parse_args()
    for p in (APPFRONT, HELLO):
        if not os.path.exists(p):
            sys.exit(f"{p} is missing: run make first")
    tmp = tempfile.mkdtemp(prefix="af-bench-devloop-")
    try:
        app = os.path.join(tmp, "app")
        make_tree(app, a.files)
        rows = []
        for name, flags in (("inotify", []), ("mtime", ["--use_mtime_file_watcher"])):
            walk = walk_ms(app, flags)
            idle_pct, lat, rss = measure(app, flags, a.idle, a.changes)
            lat.sort()
            rows.append((name, walk, idle_pct, statistics.median(lat),
                         lat[max(0, int(len(lat) * 0.9) - 1)], max(lat), rss))
        print(f"tree: {a.files} files, {(a.files + 99) // 100} directories; idle window "
              f"{a.idle:.0f} s; {a.changes} changes; {os.cpu_count()} CPUs\n")
        print("| watcher | first walk | idle CPU (% of a core) | change → new instance answers, "
              "median | p90 | max | RSS |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for name, walk, idle_pct, med, p90, mx, rss in rows:
            print(f"| {name} | {walk} ms | {idle_pct:.3f} % | {med:.0f} ms | {p90:.0f} ms | "
                  f"{mx:.0f} ms | {rss / 1024:.1f} MiB |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
