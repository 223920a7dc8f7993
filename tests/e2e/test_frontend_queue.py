"""The wait queue is bounded in length and in time (docs/architecture.md):
a request that finds it full, or waits longer than --max_pending_latency,
gets 503 with a message, and the server keeps serving."""

import concurrent.futures
import time


def get_many(af, paths):
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(paths)) as pool:
        futures = [pool.submit(af.get, p, timeout=15) for p in paths]
        return [f.result() for f in futures]


def test_full_queue_answers_503_at_once(appfront):
    # One instance taking one request at a time, and room for two waiting.
    af = appfront("serial", flags=["--max_pending_requests=2"])
    t0 = time.monotonic()
    results = get_many(af, ["/sleep?ms=1000"] * 6)
    statuses = sorted(s for s, _, _ in results)
    # One runs, two wait their turn, three find the queue full.
    assert statuses == [200, 200, 200, 503, 503, 503], statuses
    for s, _, body in results:
        if s == 503:
            assert b"waiting" in body, body
    assert time.monotonic() - t0 < 10
    status, _, _ = af.get("/")
    assert status == 200


def test_waiting_too_long_answers_503(appfront):
    af = appfront("serial", flags=["--max_pending_latency=0.5"])
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(af.get, "/sleep?ms=2000", timeout=15)
        time.sleep(0.2)  # the first request holds the only slot
        second = pool.submit(af.get, "/", timeout=15)
        s2, _, body2 = second.result()
        waited = time.monotonic() - t0
        s1, _, _ = first.result()
    assert s1 == 200
    assert s2 == 503, body2
    assert b"became available" in body2, body2
    # Answered at the latency bound, not when the slot freed at 2 s.
    assert waited < 1.8, waited
    status, _, _ = af.get("/")
    assert status == 200
