"""Load faults: 10,000 concurrent idle connections held while others are
served, and a soak whose memory must stay flat.

The soak runs APPFRONT_SOAK_REQUESTS requests (default 100,000, about 5 s
here; the issue's 1,000,000 with APPFRONT_SOAK=1, about 45 s) with wrk over
16 keep-alive connections, after a warm-up of a fifth of that, and requires
appfront's RSS to grow by less than 1 % between the end of the warm-up and
the end of the soak. Figures are printed (pytest -s) and recorded in
docs/reliability.md.
"""

import os
import re
import resource
import shutil
import socket
import subprocess
import time

import pytest

from conftest import asan_options, rss_kib, still_serving

IDLE = 10_000


@pytest.fixture
def raised_nofile():
    """Raises this process's descriptor limit (appfront inherits it) to hold
    IDLE connections on both sides, or skips."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = IDLE + 1000
    if hard != resource.RLIM_INFINITY and hard < want:
        pytest.skip(f"RLIMIT_NOFILE hard limit is {hard}; {want} descriptors are needed for "
                    f"{IDLE} idle connections (raise it with ulimit -Hn)")
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    except (ValueError, OSError) as e:
        pytest.skip(f"cannot raise RLIMIT_NOFILE to {want}: {e}")
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_ten_thousand_idle_connections_held_while_serving(appfront, raised_nofile):
    af = appfront("threadsafe", flags=["--max_connections=20000", "--request_head_timeout=60"])
    host, port = af.hostport()
    pid = af.proc.pid
    before = rss_kib(pid)
    socks = []
    t0 = time.monotonic()
    try:
        for i in range(IDLE):
            s = socket.socket()
            s.setblocking(True)
            s.settimeout(10)
            s.connect((host, port))
            socks.append(s)
            if i % 2000 == 1999:
                still_serving(af)  # served while the idle ones pile up
        opened = time.monotonic() - t0
        # appfront accepted them all: its descriptors count them.
        deadline = time.monotonic() + 10
        while len(os.listdir(f"/proc/{pid}/fd")) < IDLE and time.monotonic() < deadline:
            time.sleep(0.1)
        held = len(os.listdir(f"/proc/{pid}/fd"))
        assert held >= IDLE, f"appfront holds {held} descriptors for {IDLE} connections"
        # Served normally with all of them open: latency of 50 requests.
        lat = []
        for _ in range(50):
            a = time.monotonic()
            still_serving(af)
            lat.append(time.monotonic() - a)
        lat.sort()
        grown = rss_kib(pid) - before
        print(f"\n{IDLE} idle connections opened in {opened:.1f} s; appfront RSS +{grown} KiB "
              f"({grown * 1024 / IDLE:.0f} B per connection); request latency with them "
              f"held: median {lat[25] * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms")
        assert lat[-1] < 1.0, f"a request took {lat[-1]:.2f} s with {IDLE} idle connections"
        # Some of them now send a request and are answered.
        for s in socks[::1000]:
            s.sendall(b"GET / HTTP/1.1\r\nHost: e2e\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 200"), "an idle connection was not served"
    finally:
        for s in socks:
            s.close()
    # Once they are gone, appfront lets go of them.
    deadline = time.monotonic() + 10
    while len(os.listdir(f"/proc/{pid}/fd")) > 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(os.listdir(f"/proc/{pid}/fd")) <= 200, "closed connections were not released"
    still_serving(af)


def _wrk_slice(url, seconds, conns=16):
    """One wrk run of SECONDS: (requests done, seconds taken)."""
    out = subprocess.run(["wrk", "-c", str(conns), "-t", "2", "-d", f"{seconds}s", url],
                         capture_output=True, text=True, timeout=seconds + 60)
    assert out.returncode == 0, out.stderr
    m = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m|h)\b", out.stdout)
    assert m, out.stdout
    took = float(m.group(2)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(3)]
    assert "Non-2xx" not in out.stdout, f"errors during the soak:\n{out.stdout}"
    errors = re.search(r"Socket errors: (.*)", out.stdout)
    assert not errors, f"socket errors during the soak: {errors.group(1)}"
    return int(m.group(1)), took


def _wrk(url, requests, rate=10000.0):
    """At least REQUESTS requests with wrk (16 keep-alive connections), in
    slices of at most 10 s sized by the rate seen so far (wrk itself only
    knows durations): (requests done, seconds)."""
    done, took = 0, 0.0
    while done < requests:
        secs = max(1, min(10, round((requests - done) / rate + 0.5)))
        n, t = _wrk_slice(url, secs)
        done, took = done + n, took + t
        rate = max(1000.0, done / took)
    return done, took


def test_soak_rss_growth_under_one_percent(appfront):
    if not shutil.which("wrk"):
        pytest.skip("wrk is not installed")
    full = os.environ.get("APPFRONT_SOAK") == "1"
    target = int(os.environ.get("APPFRONT_SOAK_REQUESTS", 1_000_000 if full else 100_000))
    af = appfront("threadsafe", env={"ASAN_OPTIONS": asan_options("quarantine_size_mb=0")})
    pid = af.proc.pid
    url = af.url("/")
    # Warm-up: a fifth of the requests, so that pools, instances and the
    # allocator reach their steady state before the baseline.
    warm_n, warm_s = _wrk(url, target // 5)
    time.sleep(0.5)
    rss0 = rss_kib(pid)
    n, took = _wrk(url, target, rate=warm_n / warm_s)
    time.sleep(0.5)
    rss1 = rss_kib(pid)
    growth = (rss1 - rss0) / rss0
    print(f"\nsoak: {n} requests in {took:.1f} s ({n / took:.0f} req/s) after {warm_n} warm-up "
          f"requests; appfront RSS {rss0} KiB -> {rss1} KiB ({growth * 100:+.2f} %)")
    assert n >= target * 0.99, f"only {n} requests in {took:.1f} s (wanted {target})"
    assert growth < 0.01, f"RSS grew {growth * 100:.2f} % ({rss0} -> {rss1} KiB) over {n} requests"
    still_serving(af)
