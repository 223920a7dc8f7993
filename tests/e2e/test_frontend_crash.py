"""A dead instance costs the requests it held a 502 that shows its stderr,
and the app keeps serving: the instance is respawned.

Issue 2, "Must show": /crash -> 502 with the stderr tail; the next request
succeeds within 2 s. Also: an instance that answers garbage -> 502.
"""

import threading
import time

from conftest import pid_alive

CRASH_LINE = b"hello: crashing on purpose"


def test_crash_gives_502_with_stderr_tail_and_next_request_succeeds(appfront):
    af = appfront("threadsafe")
    before = af.instance_pid()

    status, _, body = af.get("/crash")
    t0 = time.monotonic()
    assert status == 502, (status, body[:300])
    assert CRASH_LINE in body, f"the 502 page lacks the instance's last stderr lines: {body!r}"

    # The very next request, not a retry loop.
    status, _, body = af.get("/", timeout=5)
    elapsed = time.monotonic() - t0
    assert status == 200, (status, body[:300], af.stderr()[-2000:])
    assert elapsed < 2.0, f"the request after a crash took {elapsed:.2f} s"

    after = af.instance_pid()
    assert after != before
    assert not pid_alive(before)


def test_crash_fails_every_request_the_instance_held(appfront):
    # One instance (max_instances: 1) holding three sleeping requests when
    # a fourth one kills it: all four get the 502 with the stderr tail.
    af = appfront("threadsafe_wide")
    results = []

    def sleeper():
        results.append(af.get("/sleep?ms=3000", timeout=10))

    threads = [threading.Thread(target=sleeper) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.3)  # let the three reach the instance
    crash = af.get("/crash")
    for t in threads:
        t.join(10)
    assert crash[0] == 502
    assert len(results) == 3
    for status, _, body in results:
        assert status == 502, (status, body[:300])
        assert CRASH_LINE in body, body
    status, _, _ = af.get("/", timeout=5)
    assert status == 200


def test_garbage_answer_gives_502(appfront):
    af = appfront("threadsafe")
    status, _, body = af.get("/garbage")
    assert status == 502, (status, body[:300])
    status, _, body = af.get("/", timeout=5)
    assert status == 200, (status, body[:300])
