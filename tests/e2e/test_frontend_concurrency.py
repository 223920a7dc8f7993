"""Requests reach instances concurrently, within each app's limits.

Issue 2, "Must show": 50 concurrent GET /sleep?ms=300 with threadsafe: true
all answer 200 within 1.5 s; with threadsafe: false and one manual instance
five of them take at least 1.5 s (one at a time), while the same five
through the back-door direct port, which skips per-instance serialization,
take well under 1 s.
"""

import http.client
import threading
import time

import pytest

from conftest import processes_in


def concurrent_gets(af, path, n, which="main", timeout=15.0):
    """N clients, each on its own connection (opened beforehand), send GET
    PATH at the same moment. Returns (elapsed seconds from the release to
    the last answer, [(status, body)])."""
    host, port = af.hostport(which)
    conns = []
    for _ in range(n):
        c = http.client.HTTPConnection(host, port, timeout=timeout)
        c.connect()
        conns.append(c)
    barrier = threading.Barrier(n + 1)
    results = [None] * n
    done = [0.0] * n

    def one(i):
        barrier.wait()
        try:
            conns[i].request("GET", path)
            r = conns[i].getresponse()
            results[i] = (r.status, r.read())
        except Exception as e:  # reported in the assertion below
            results[i] = (None, repr(e).encode())
        done[i] = time.monotonic()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.monotonic()
    for t in threads:
        t.join(timeout + 5)
    for c in conns:
        c.close()
    return max(done) - t0, results


def assert_all_ok(results, af):
    bad = [(i, s, b[:200]) for i, (s, b) in enumerate(results) if s != 200]
    assert not bad, f"{len(bad)} of {len(results)} failed: {bad[:5]}\n{af.stderr()[-3000:]}"
    assert all(b == b"slept 300 ms\n" for _, b in results)


def test_50_concurrent_sleeps_on_one_wide_instance(appfront):
    # max_concurrent_requests: 50, max_instances: 1 — pure concurrency of
    # one instance's connection pool, no scaling involved.
    af = appfront("threadsafe_wide")
    elapsed, results = concurrent_gets(af, "/sleep?ms=300", 50)
    assert_all_ok(results, af)
    assert elapsed < 1.5, f"50 concurrent 300 ms sleeps took {elapsed:.2f} s"


def test_50_concurrent_sleeps_with_default_threadsafe(appfront):
    # The defaults: 10 per instance, automatic scaling adds instances while
    # requests wait.
    af = appfront("threadsafe")
    elapsed, results = concurrent_gets(af, "/sleep?ms=300", 50)
    assert_all_ok(results, af)
    assert elapsed < 1.5, f"50 concurrent 300 ms sleeps took {elapsed:.2f} s"


@pytest.fixture(scope="module")
def serial(appfront_module):
    return appfront_module("serial", direct=True)


def test_threadsafe_false_serializes_main_port(serial):
    elapsed, results = concurrent_gets(serial, "/sleep?ms=300", 5)
    assert_all_ok(results, serial)
    assert elapsed >= 1.5, (
        f"5 sleeps of 300 ms on one threadsafe: false instance took only {elapsed:.2f} s: "
        "they were not serialized"
    )


def test_direct_port_is_not_serialized(serial):
    elapsed, results = concurrent_gets(serial, "/sleep?ms=300", 5, which="direct")
    assert_all_ok(results, serial)
    assert elapsed < 0.9, f"5 sleeps of 300 ms through the direct port took {elapsed:.2f} s"


def test_manual_scaling_runs_exactly_one_instance(serial):
    # Both ports reach the same single instance.
    pids = {serial.instance_pid() for _ in range(3)}
    pids |= {serial.instance_pid("direct") for _ in range(3)}
    assert len(pids) == 1, f"manual_scaling instances: 1 answered from pids {pids}"


def test_automatic_scaling_stops_at_max_module_instances(appfront):
    # 30 requests, 10 per instance, at most 2 instances: two rounds of
    # 300 ms, and never a third instance.
    af = appfront("threadsafe", flags=["--max_module_instances=2"])
    most = [0]
    stop = threading.Event()

    def count():
        while not stop.is_set():
            n = sum("hello" in cmd for cmd in processes_in(af.app_dirs).values())
            most[0] = max(most[0], n)
            time.sleep(0.02)

    counter = threading.Thread(target=count)
    counter.start()
    try:
        elapsed, results = concurrent_gets(af, "/sleep?ms=300", 30)
    finally:
        stop.set()
        counter.join(5)
    assert_all_ok(results, af)
    assert most[0] <= 2, f"{most[0]} instances with --max_module_instances=2"
    assert elapsed >= 0.55, f"30 requests on 2 x 10 slots took only {elapsed:.2f} s"
