"""Every limit of issue 2, "Forwarding", answered with its status, and the
server still serving after each (checked on a new connection).

Written on raw sockets: no HTTP client library would send these requests.
The shared server runs with a 1 MiB body limit, a 1 s head timeout and a
1 s request deadline so that each case is quick.
"""

import time

import pytest

from conftest import RawConn, still_serving

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def af(appfront_module):
    return appfront_module("threadsafe", flags=[
        f"--max_request_body_bytes={MIB}",
        "--request_head_timeout=1",
        "--request_deadline=1",
    ])


def refused(af, raw, status, expect_close=True, timeout=5.0):
    """Sends RAW on a new connection; asserts the answer is STATUS with a
    body saying something, (when EXPECT_CLOSE) that appfront then closes the
    connection, and that it still serves afterwards."""
    with RawConn(af, timeout=timeout) as c:
        c.send(raw)
        r = c.read_response()
        assert r.status == status, f"wanted {status}, got {r!r}"
        assert r.body.strip(), f"{status} without a body saying why"
        if expect_close:
            assert c.closed_by_peer(3.0), f"connection left open after {status}"
    still_serving(af)
    return r


def test_head_over_64_kib_is_431(af):
    # The head is never finished: appfront must refuse it once it is past
    # 64 KiB, without waiting for the end. (Sending nothing more after that
    # also keeps the client's unread bytes from turning the close into a
    # reset that would swallow the answer.)
    raw = b"GET / HTTP/1.1\r\nHost: e2e\r\nX-Big: " + b"a" * (65 * 1024)
    refused(af, raw, 431)


def test_many_headers_over_64_kib_is_431(af):
    line = b"X-Many: " + b"b" * 100 + b"\r\n"
    raw = b"GET / HTTP/1.1\r\nHost: e2e\r\n" + line * 700
    refused(af, raw, 431)


def test_head_just_under_64_kib_is_served(af):
    with RawConn(af) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: e2e\r\nX-Big: " + b"a" * (60 * 1024) + b"\r\n\r\n")
        r = c.read_response()
    assert r.status == 200, r


def test_body_over_limit_is_413_without_reading_it(af):
    # Only the head is sent: the 413 must come without appfront waiting for
    # a body it is going to refuse.
    t0 = time.monotonic()
    r = refused(af, b"POST /echo HTTP/1.1\r\nHost: e2e\r\nContent-Length: %d\r\n\r\n"
                % (2 * MIB), 413, expect_close=False)
    assert time.monotonic() - t0 < 3.0, r


def test_body_over_limit_with_expect_gets_413_not_100(af):
    with RawConn(af) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: e2e\r\nExpect: 100-continue\r\n"
               b"Content-Length: %d\r\n\r\n" % (2 * MIB))
        status, _, _ = c.read_head()
        assert status == 413, f"wanted 413 instead of 100 Continue, got {status}"
    still_serving(af)


def test_body_at_limit_is_served(af):
    body = b"z" * MIB
    with RawConn(af) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: e2e\r\nContent-Length: %d\r\n\r\n" % len(body)
               + body)
        r = c.read_response()
    assert r.status == 200, r
    assert r.body == body


def test_malformed_request_line_is_400(af):
    refused(af, b"THIS IS NOT HTTP\r\n\r\n", 400)


def test_malformed_header_is_400(af):
    refused(af, b"GET / HTTP/1.1\r\nHost: e2e\r\nA header without a colon\r\n\r\n", 400)


def test_content_length_with_transfer_encoding_is_400(af):
    refused(af, b"POST /echo HTTP/1.1\r\nHost: e2e\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400)


def test_two_different_content_lengths_are_400(af):
    refused(af, b"POST /echo HTTP/1.1\r\nHost: e2e\r\nContent-Length: 5\r\n"
            b"Content-Length: 6\r\n\r\nhello!", 400)


def test_transfer_coding_other_than_chunked_is_501(af):
    refused(af, b"POST /echo HTTP/1.1\r\nHost: e2e\r\nTransfer-Encoding: gzip\r\n\r\n", 501)


def test_unfinished_head_is_408_after_the_timeout(af):
    t0 = time.monotonic()
    r = refused(af, b"GET / HTTP/1.1\r\nHost: e2e\r\n", 408)
    elapsed = time.monotonic() - t0
    assert 0.8 <= elapsed <= 3.5, f"408 after {elapsed:.2f} s with --request_head_timeout=1 ({r})"


def test_request_deadline_is_504(af):
    t0 = time.monotonic()
    status, _, body = af.get("/sleep?ms=3000", timeout=10)
    elapsed = time.monotonic() - t0
    assert status == 504, (status, body[:300])
    assert 0.8 <= elapsed <= 2.5, f"504 after {elapsed:.2f} s with --request_deadline=1"
    still_serving(af)


def test_excess_connections_are_closed(appfront):
    limit = 4
    af = appfront("threadsafe", flags=[f"--max_connections={limit}"])
    time.sleep(0.2)  # the readiness check's connection is closed on both ends
    held = [RawConn(af) for _ in range(limit)]
    time.sleep(0.2)  # all accepted before the excess arrives
    excess = [RawConn(af) for _ in range(2)]
    try:
        for c in excess:
            assert c.closed_by_peer(3.0), "a connection over --max_connections stayed open"
            # Closed cleanly: nothing, or one response that says why.
            if c.buf:
                assert c.buf.startswith(b"HTTP/1.1 503"), c.buf[:200]
        # The ones within the limit are served.
        for c in held:
            c.send(b"GET / HTTP/1.1\r\nHost: e2e\r\n\r\n")
            assert c.read_response().status == 200
    finally:
        for c in held + excess:
            c.close()
    # Room again once they are gone.
    deadline = time.monotonic() + 3
    while True:
        try:
            still_serving(af)
            break
        except (AssertionError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
