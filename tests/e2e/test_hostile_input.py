"""Hostile clients that are not about framing: absurd methods, targets and
versions, 10,000 header fields, a 1 MiB header line, slowloris heads and
bodies, pipelined floods, and clients that vanish mid-response.

Each case checks the documented status (docs/architecture.md), or what RFC
9112 / 9110 require where the page is silent (cited at the case), then that
the server serves normally afterwards and leaked nothing: instance slots
(20 concurrent requests still complete at once) and descriptors.
"""

import os
import socket
import struct
import threading
import time

import pytest

from conftest import RawConn, asan_options, rss_kib, still_serving
from test_hostile_smuggling import answers, assert_no_desync, assert_refused

H = b"Host: e2e\r\n"


@pytest.fixture(scope="module")
def af(appfront_module):
    return appfront_module("threadsafe", flags=[
        "--request_head_timeout=2",
        "--request_deadline=3",
    ])


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def client_conns(af):
    """Client connections appfront still holds on its main port: its socket
    descriptors whose local port is that port (pooled connections to
    instances and new instances' pipes are not counted: those vary with
    scaling, not with leaks)."""
    pid = af.proc.pid
    _, port = af.hostport()
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            local_port = int(f[1].rsplit(":", 1)[1], 16)
            if local_port == port and f[3] != "0A" and f[9] in inodes:
                n += 1
    return n


def wait_no_client_conns(af, timeout=5.0):
    deadline = time.monotonic() + timeout
    while client_conns(af) and time.monotonic() < deadline:
        time.sleep(0.05)
    return client_conns(af)


def concurrent_ok(af, n=20, path="/sleep?ms=100", within=3.0):
    """N concurrent requests all answer 200 within WITHIN seconds: no
    instance slot or queue place was leaked by what came before."""
    results = [None] * n

    def one(i):
        try:
            results[i] = af.get(path, timeout=within + 5)[0]
        except OSError as e:
            results[i] = repr(e)

    t0 = time.monotonic()
    ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(within + 10)
    took = time.monotonic() - t0
    assert results == [200] * n, f"after the attack: {results}\n{af.stderr()[-3000:]}"
    assert took < within, f"{n} concurrent requests took {took:.1f} s"


# --- methods, targets, versions ------------------------------------------------

METHODS = [
    # docs/architecture.md: a malformed request line is 400. An unknown but
    # well-formed method is 501 by RFC 9110 §9.1; appfront's parser knows
    # only its own table, so 400 is accepted too. Both close.
    ("unknown", b"FROB / HTTP/1.1\r\n" + H + b"\r\n", {400, 501}),
    ("lowercase", b"get / HTTP/1.1\r\n" + H + b"\r\n", {400, 501}),
    ("5000_bytes", b"G" * 5000 + b" / HTTP/1.1\r\n" + H + b"\r\n", {400, 501}),
    ("binary", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40, {400}),
    ("empty", b" / HTTP/1.1\r\n" + H + b"\r\n", {400}),
    ("connect", b"CONNECT e2e:443 HTTP/1.1\r\n" + H + b"\r\n", {501}),
]


@pytest.mark.parametrize("name,raw,statuses", METHODS, ids=[m[0] for m in METHODS])
def test_absurd_methods(af, name, raw, statuses):
    assert_refused(af, raw, statuses)


TARGETS = [
    # docs/architecture.md: a target that is not origin-form, absolute-form
    # or (for OPTIONS) "*" is 400 (RFC 9112 §3.2).
    ("authority_form", b"GET e2e:80 HTTP/1.1\r\n" + H + b"\r\n", {400}),
    ("asterisk_with_get", b"GET * HTTP/1.1\r\n" + H + b"\r\n", {400}),
    ("empty", b"GET  HTTP/1.1\r\n" + H + b"\r\n", {400}),
    ("space_inside", b"GET /a b HTTP/1.1\r\n" + H + b"\r\n", {400}),
    ("control_byte", b"GET /a\x01b HTTP/1.1\r\n" + H + b"\r\n", {400}),
    ("del_byte", b"GET /a\x7fb HTTP/1.1\r\n" + H + b"\r\n", {400}),
    # docs/architecture.md: the head is at most 64 KiB (431), the target
    # included.
    ("70_kib", b"GET /" + b"a" * (70 * 1024) + b" HTTP/1.1\r\n" + H + b"\r\n", {431}),
]


@pytest.mark.parametrize("name,raw,statuses", TARGETS, ids=[t[0] for t in TARGETS])
def test_absurd_targets(af, name, raw, statuses):
    assert_refused(af, raw, statuses)


@pytest.mark.parametrize("target", [
    b"/../../../../etc/passwd",
    b"/%00%ff%2e%2e/%c0%af",
    b"/\xff\xfe\x80",
    b"/" + b"%41" * 5000,
    b"/?" + b"&a=b" * 3000,
], ids=["dot_dot", "percent_junk", "high_bytes", "15_kib_escapes", "3000_params"])
def test_odd_but_valid_targets_are_forwarded(af, target):
    # Valid request-target syntax, however strange, is the app's business:
    # forwarded, answered by the app, and the connection stays usable.
    rs, _ = answers(af, b"GET " + target + b" HTTP/1.1\r\n" + H + b"\r\nGET / HTTP/1.1\r\n" + H
                    + b"\r\n", limit=2)
    assert len(rs) == 2 and rs[1].status == 200, rs
    assert rs[0].status < 500, rs[0]


def test_absolute_form_is_accepted_and_forwarded_as_origin_form(af):
    # RFC 9112 §3.2.2: a server must accept absolute-form; the app gets the
    # path and query, as from any client.
    rs, _ = answers(af, b"GET http://e2e/headers?x=1 HTTP/1.1\r\n" + H + b"\r\n"
                    b"GET HTTP://E2E HTTP/1.1\r\n" + H + b"\r\n", limit=2)
    assert len(rs) == 2, rs
    assert rs[0].status == 200 and rs[0].body.startswith(b"{"), rs[0]  # /headers' JSON
    assert rs[1].status == 200 and b"Hello" in rs[1].body, rs[1]  # no path: "/"


def test_options_asterisk_is_forwarded(af):
    rs, _ = answers(af, b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n", limit=1)
    assert rs and rs[0].status < 500 and rs[0].status != 400, rs


VERSIONS = [
    # RFC 9110 §15.6.6 / RFC 9112 §2.3: a major version the server does not
    # speak is 505; HTTP/2 has no text request line at all.
    ("http_2_0", b"GET / HTTP/2.0\r\n" + H + b"\r\n", {400, 505}),
    ("http_3_1", b"GET / HTTP/3.1\r\n" + H + b"\r\n", {400, 505}),
    ("http_9_9", b"GET / HTTP/9.9\r\n" + H + b"\r\n", {400, 505}),
    ("http_1_10", b"GET / HTTP/1.10\r\n" + H + b"\r\n", {400, 505}),
    ("lowercase", b"GET / http/1.1\r\n" + H + b"\r\n", {400}),
    ("no_slash", b"GET / HTTP1.1\r\n" + H + b"\r\n", {400}),
    ("h2_preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", {400, 505}),
]


@pytest.mark.parametrize("name,raw,statuses", VERSIONS, ids=[v[0] for v in VERSIONS])
def test_absurd_versions(af, name, raw, statuses):
    assert_refused(af, raw, statuses)


def test_http_1_2_is_served_as_1_1(af):
    # RFC 9110 §2.5: a higher minor version is understood as the highest
    # one the server speaks.
    rs, _ = answers(af, b"GET / HTTP/1.2\r\n" + H + b"\r\n", limit=1)
    assert rs and rs[0].status == 200, rs


def test_http10_with_two_hosts_is_400(af):
    # RFC 9112 §3.2: "A server MUST respond with a 400 ... to any request
    # message that contains more than one Host header field line", whatever
    # its version; forwarded, the app gets two Hosts over HTTP/1.1.
    assert_refused(af, b"GET /headers HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", {400})


def test_error_answer_to_head_has_no_body(af):
    # RFC 9110 §9.3.2 / RFC 9112 §6.3: a response to HEAD ends with its
    # head. appfront's own error answers (here 400, no Host) must not carry
    # the text body they carry for GET.
    with RawConn(af) as c:
        c.send(b"HEAD / HTTP/1.1\r\n\r\n")
        status, _, headers = c.read_head()
        assert status == 400, status
        assert c.closed_by_peer(3.0)
        assert c.buf == b"", f"{len(c.buf)} body bytes after a 400 to HEAD: {c.buf[:100]!r}"
    still_serving(af)


# --- header counts and sizes -------------------------------------------------------


def test_ten_thousand_headers_is_431(af):
    # docs/architecture.md: more than 256 fields is 431. The fields are tiny
    # so that the count, not the 64 KiB size, is what refuses them.
    raw = b"GET / HTTP/1.1\r\n" + H + b"a:b\r\n" * 10000 + b"\r\n"
    assert_refused(af, raw, {431})


def _send_bg(sock, data):
    def run():
        try:
            sock.sendall(data)
        except OSError:
            pass  # appfront refused and closed before reading it all
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("where", ["value", "name"])
def test_one_mib_header_line_is_431(af, where):
    # docs/architecture.md: a head over 64 KiB is 431, answered without
    # reading the rest (the client is still sending when the answer comes).
    pid = af.proc.pid
    before = rss_kib(pid)
    big = b"a" * (1 << 20)
    line = b"X-Big: " + big if where == "value" else b"X-" + big + b": v"
    s = af.connect()
    s.settimeout(5)
    sender = _send_bg(s, b"GET / HTTP/1.1\r\n" + H + line + b"\r\n\r\n")
    c = RawConn(s)
    try:
        status, _, _ = c.read_head()
    except (ConnectionResetError, EOFError):
        # The close may reset the connection before the answer is read
        # while the client still sends: then appfront must have said 431.
        status = 431 if af.wait_for_stderr(r": 431 ", 2) else None
    finally:
        s.close()
        sender.join(5)
    assert status == 431, f"got {status}\n{af.stderr()[-2000:]}"
    assert rss_kib(pid) - before < 8 * 1024, "the refused head was buffered"
    still_serving(af)


# --- slowloris ---------------------------------------------------------------------


def test_slowloris_heads_get_408_while_others_are_served(af):
    # 50 clients each trickle a head that never ends, one field every
    # 300 ms. docs/architecture.md: 408 after --request_head_timeout (2 s
    # here) counted from the first byte, not reset by each new byte. Others
    # are served at full speed meanwhile.
    n = 50
    socks = []
    for i in range(n):
        s = af.connect()
        s.sendall(b"GET / HTTP/1.1\r\n" + H)
        socks.append(s)
    t0 = time.monotonic()
    got = {}
    lat = []
    while len(got) < n and time.monotonic() - t0 < 8:
        for i, s in enumerate(socks):
            if i in got:
                continue
            try:
                s.sendall(b"X-Slow-%d: x\r\n" % i)
            except OSError:
                pass
        a = time.monotonic()
        still_serving(af)
        lat.append(time.monotonic() - a)
        time.sleep(0.3)
        for i, s in enumerate(socks):
            if i in got:
                continue
            s.settimeout(0.01)
            try:
                data = s.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                data = b"<reset>"
            got[i] = (data, time.monotonic() - t0)
    for s in socks:
        s.close()
    assert len(got) == n, f"only {len(got)} of {n} slow heads were answered within 8 s"
    statuses = {d[:12] for d, _ in got.values()}
    assert statuses == {b"HTTP/1.1 408"}, statuses
    assert max(t for _, t in got.values()) < 5, "408s came late"
    assert max(lat) < 1.0, f"a normal request took {max(lat):.2f} s during the attack"


def test_slowloris_body_gets_504_and_frees_its_slot(af):
    # A complete head, then the body one byte every 400 ms.
    # docs/architecture.md: --request_deadline (3 s here) runs from the end
    # of the head: 504 when no response has started.
    socks = []
    for _ in range(5):
        s = af.connect()
        s.sendall(b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 100\r\n\r\n")
        socks.append(s)
    t0 = time.monotonic()
    answers_ = {}
    while len(answers_) < len(socks) and time.monotonic() - t0 < 8:
        for i, s in enumerate(socks):
            if i in answers_:
                continue
            try:
                s.sendall(b"x")
            except OSError:
                pass
            s.settimeout(0.01)
            try:
                d = s.recv(65536)
                answers_[i] = (d, time.monotonic() - t0)
            except socket.timeout:
                pass
            except ConnectionResetError:
                answers_[i] = (b"<reset>", time.monotonic() - t0)
        time.sleep(0.4)
    for s in socks:
        s.close()
    assert len(answers_) == len(socks), f"{len(answers_)} answered of {len(socks)}"
    assert {d[:12] for d, _ in answers_.values()} == {b"HTTP/1.1 504"}, answers_
    assert max(t for _, t in answers_.values()) < 6
    concurrent_ok(af)


# --- pipelined floods ---------------------------------------------------------------


def test_pipelined_flood_is_answered_in_order(af):
    n = 2000
    with RawConn(af, timeout=20) as c:
        reqs = b"".join(b"GET /headers HTTP/1.1\r\n" + H + b"X-N: %d\r\n\r\n" % i for i in range(n))
        sender = _send_bg(c.sock, reqs)
        t0 = time.monotonic()
        for i in range(n):
            r = c.read_response()
            assert r.status == 200, (i, r)
            assert b'"X-N":"%d"' % i in r.body, f"answer {i} out of order: {r.body[:200]!r}"
        sender.join(5)
        assert time.monotonic() - t0 < 30
    still_serving(af)


def test_pipelined_flood_never_read_is_bounded(appfront):
    # 20,000 pipelined requests from a client that never reads: appfront
    # must stop parsing ahead (one exchange at a time, output bounded), so
    # its memory stays flat, and it forgets the client when it vanishes.
    af = appfront("threadsafe", env={"ASAN_OPTIONS": asan_options("quarantine_size_mb=0")})
    pid = af.proc.pid
    before = rss_kib(pid)
    s = af.connect()
    s.settimeout(3)
    req = b"GET /chunked?n=8&size=4096 HTTP/1.1\r\n" + H + b"\r\n"
    sent = 0
    try:
        for _ in range(20000):
            s.sendall(req)
            sent += 1
    except (socket.timeout, OSError):
        pass  # the send buffer is full: appfront stopped reading, as it should
    time.sleep(0.5)
    grown = rss_kib(pid) - before
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()  # reset, with everything unread
    assert grown < 16 * 1024, f"RSS grew {grown} KiB for a client that never reads ({sent} sent)"
    time.sleep(0.3)
    still_serving(af)
    concurrent_ok(af)
    assert wait_no_client_conns(af) == 0, "the vanished client's connection was kept"


def test_request_after_many_keepalive_requests(af):
    # One connection carries 5000 sequential requests (not pipelined):
    # nothing per request accumulates on a connection.
    with RawConn(af, timeout=10) as c:
        for i in range(5000):
            c.send(b"GET / HTTP/1.1\r\n" + H + b"\r\n")
            assert c.read_response().status == 200, i
    still_serving(af)


# --- clients that vanish ---------------------------------------------------------------


def _reset(s):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def test_clients_vanishing_mid_response_leak_nothing(af):
    pid = af.proc.pid
    # Mid-body of a large chunked answer, by reset and by close.
    for i in range(20):
        s = af.connect()
        s.sendall(b"GET /chunked?n=1000&size=10000 HTTP/1.1\r\n" + H + b"\r\n")
        s.recv(4096)
        _reset(s) if i % 2 else s.close()
    # While the app is still working on the request.
    for i in range(30):
        s = af.connect()
        s.sendall(b"GET /sleep?ms=300 HTTP/1.1\r\n" + H + b"\r\n")
        _reset(s) if i % 2 else s.close()
    # Half way through sending a body.
    for i in range(10):
        s = af.connect()
        s.sendall(b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 1000000\r\n\r\n" + b"x" * 300000)
        _reset(s)
    # Half-closed: request sent, then shutdown(SHUT_WR) without reading.
    for i in range(10):
        s = af.connect()
        s.sendall(b"GET /sleep?ms=200 HTTP/1.1\r\n" + H + b"\r\n")
        s.shutdown(socket.SHUT_WR)
        s.close()
    time.sleep(0.5)  # let the /sleep requests finish on the instance side
    concurrent_ok(af, n=20)
    assert_no_desync(af)
    left = wait_no_client_conns(af)
    assert left == 0, f"{left} connections of vanished clients are still held"
