"""urlfetch connection reuse end to end: the real `appfront api` fetching
from a keep-alive HTTP/1.1 server on loopback, written here so that it can
count what reuse is about — the connections it accepted, the requests on
each, the connections the client closed (docs/services.md, "urlfetch",
"Connection reuse").

The pool's bounds (urlfetch.h): 4 idle connections per origin, 32 in all,
4 s idle.
"""

import os
import socket
import ssl
import threading
import time
from urllib.parse import parse_qs, urlsplit

import pytest

from apiclient import ApiServer
from test_urlfetch import (CERTS, CONNECTION_ERROR, DELETE, GET, HEAD, POST, PUT, fetch,
                           fetch_ok)

PER_KEY = 4
IDLE_S = 4


class CountingServer:
    """An HTTP/1.1 server on loopback, one thread per connection, keeping
    connections open unless told otherwise. Paths:

      /ok          200 "ok" (Content-Length), connection kept
      /close       200 with Connection: close, then closes
      /http10      an HTTP/1.0 answer without keep-alive, then closes
      /http10ka    an HTTP/1.0 answer with Connection: keep-alive, kept
      /eof         a body without length, ended by closing
      /extra       200 "ok" followed by bytes that belong to no response
      /hangup      200 "ok" (no Connection field), then closes at once
      /redirect    302 to /ok
      /wait?n=K    answers once K /wait requests wait together

    A request with Connection: close gets /close's answer. With
    drop_reused, the second and later requests of a connection are read
    and then the connection is closed without an answer."""

    def __init__(self, tls=False, drop_reused=False):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.ctx = None
        if tls:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(CERTS / "server.pem", CERTS / "server.key")
        self.drop_reused = drop_reused
        self.lock = threading.Lock()
        self.accepted = 0
        self.requests = []  # (connection number, method, path, body)
        self.client_closed = 0  # connections the client closed between requests
        self.server_closed = threading.Event()  # set by /hangup once closed
        self.barriers = {}
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path):
        return f"{'https' if self.ctx else 'http'}://127.0.0.1:{self.port}{path}"

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                n = self.accepted
                self.conns.append(c)
            threading.Thread(target=self._serve, args=(c, n), daemon=True).start()

    def _read_request(self, c, buf):
        while b"\r\n\r\n" not in buf:
            d = c.recv(65536)
            if not d:
                return None, buf
            buf += d
        head, _, buf = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        length = 0
        close = False
        for line in lines[1:]:
            k, _, v = line.partition(":")
            if k.strip().lower() == "content-length":
                length = int(v)
            elif k.strip().lower() == "connection":
                close = "close" in v.lower()
        while len(buf) < length:
            d = c.recv(65536)
            if not d:
                return None, buf
            buf += d
        return (method, target, buf[:length], close), buf[length:]

    def _serve(self, c, n):
        try:
            if self.ctx:
                c = self.ctx.wrap_socket(c, server_side=True)
            c.settimeout(30)
            buf = b""
            on_conn = 0
            while True:
                req, buf = self._read_request(c, buf)
                if req is None:
                    if not buf:
                        with self.lock:
                            self.client_closed += 1
                    return
                method, target, body, close = req
                on_conn += 1
                with self.lock:
                    self.requests.append((n, method, target, body))
                if self.drop_reused and on_conn > 1:
                    return
                if close:
                    # RFC 9112 section 9.6: the client's close is honoured.
                    self._answer(c, method, "/close")
                    return
                if not self._answer(c, method, target):
                    return
        except (OSError, ssl.SSLError):
            return
        finally:
            try:
                c.close()
            except OSError:
                pass

    def _answer(self, c, method, target):
        """Sends the answer; returns whether the connection goes on."""
        u = urlsplit(target)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        body = b"" if method == "HEAD" else b"ok"
        ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n" + body
        if u.path == "/ok":
            c.sendall(ok)
        elif u.path == "/close":
            c.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n" + body)
            return False
        elif u.path == "/http10":
            c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n" + body)
            return False
        elif u.path == "/http10ka":
            c.sendall(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\n"
                      + body)
        elif u.path == "/eof":
            c.sendall(b"HTTP/1.1 200 OK\r\n\r\n" + body)
            return False
        elif u.path == "/extra":
            c.sendall(ok + b"JUNK")
        elif u.path == "/hangup":
            c.sendall(ok)
            c.close()
            self.server_closed.set()
            return False
        elif u.path == "/redirect":
            c.sendall(b"HTTP/1.1 302 Found\r\nLocation: /ok\r\nContent-Length: 5\r\n\r\nmoved")
        elif u.path == "/wait":
            k = int(q["n"])
            with self.lock:
                b = self.barriers.setdefault(k, threading.Barrier(k))
            b.wait(10)
            c.sendall(ok)
        else:
            c.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        return True

    def methods(self):
        with self.lock:
            return [m for _, m, _, _ in self.requests]

    def wait_for(self, what, want, timeout=3.0):
        """Waits until getattr(self, what) == want; returns the last value."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            with self.lock:
                v = getattr(self, what)
            if v == want:
                return v
            time.sleep(0.01)
        return v

    def close(self):
        self.sock.close()
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.close()
            except OSError:
                pass


@pytest.fixture
def api(tmp_path):
    srv = ApiServer(tmp_path).start()
    yield srv
    assert srv.stop() == 0, "\n".join(srv.lines[-30:])


@pytest.fixture
def client(api):
    c = api.framed()
    yield c
    c.close()


@pytest.fixture
def server():
    s = CountingServer()
    yield s
    s.close()


def test_sequential_fetches_use_one_connection(client, server):
    for _ in range(20):
        assert fetch_ok(client, server.url("/ok")).content == b"ok"
    # Every method, a redirect to the same origin and HTTP/1.0 with
    # keep-alive run on it too.
    assert fetch_ok(client, server.url("/ok"), method=POST, payload=b"p").content == b"ok"
    assert fetch_ok(client, server.url("/ok"), method=PUT, payload=b"p").content == b"ok"
    assert fetch_ok(client, server.url("/ok"), method=DELETE).content == b"ok"
    assert fetch_ok(client, server.url("/ok"), method=HEAD).content == b""
    r = fetch_ok(client, server.url("/redirect"))
    assert r.content == b"ok" and r.final_url == server.url("/ok")
    for _ in range(3):
        assert fetch_ok(client, server.url("/http10ka")).content == b"ok"
    assert server.accepted == 1
    assert len(server.requests) == 29
    assert {n for n, _, _, _ in server.requests} == {1}
    # Another port is another origin: a connection of its own.
    other = CountingServer()
    try:
        for _ in range(3):
            assert fetch_ok(client, other.url("/ok")).content == b"ok"
        assert other.accepted == 1 and server.accepted == 1
    finally:
        other.close()


def test_concurrent_fetches_and_the_idle_bound(api, server):
    def round_of(n):
        results = [None] * n

        def one(i):
            c = api.framed(timeout=20)
            try:
                results[i] = fetch(c, server.url(f"/wait?n={n}"), deadline=15)
            finally:
                c.close()

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        for r in results:
            assert r is not None and r.ok, r

    # Eight fetches that wait for each other need eight connections; then
    # four stay idle and four are closed by appfront.
    round_of(8)
    assert server.accepted == 8
    assert server.wait_for("client_closed", 8 - PER_KEY) == 8 - PER_KEY
    # Four at once now run on the idle four.
    round_of(PER_KEY)
    assert server.accepted == 8
    # Six need two more.
    round_of(6)
    assert server.accepted == 10
    assert server.wait_for("client_closed", 8 - PER_KEY + 2) == 8 - PER_KEY + 2


@pytest.mark.parametrize("path, why", [
    ("/close", "Connection: close"),
    ("/http10", "HTTP/1.0 without keep-alive"),
    ("/eof", "a body ended by the close"),
    ("/extra", "bytes after the response"),
])
def test_connections_not_reusable_are_not_reused(client, server, path, why):
    for _ in range(3):
        assert fetch_ok(client, server.url(path)).content == b"ok", why
    assert server.accepted == 3, why
    # The one after them is kept again (/extra's JUNK aside, nothing is
    # left over from those answers).
    fetch_ok(client, server.url("/ok"))
    fetch_ok(client, server.url("/ok"))
    assert server.accepted == 4, why


def test_server_closing_idle_connections(client, server):
    # The server closes each connection right after its answer, without
    # saying so: the next fetch notices and connects again, and a POST is
    # sent exactly once.
    for method in (GET, POST, GET, POST):
        server.server_closed.clear()
        r = fetch_ok(client, server.url("/hangup"), method=method, payload=b"x")
        assert r.content == b"ok"
        assert server.server_closed.wait(5)
    assert server.accepted == 4
    assert server.methods() == ["GET", "POST", "GET", "POST"]


def test_stale_connection_retried_for_get_never_for_post(client):
    # The server takes a second request on a connection and closes without
    # an answer, as a server does when its keep-alive timeout fires just as
    # the request arrives.
    server = CountingServer(drop_reused=True)
    try:
        assert fetch_ok(client, server.url("/ok")).content == b"ok"
        # GET: the kept connection fails before any answer; the fetch runs
        # again on a new one and succeeds.
        assert fetch_ok(client, server.url("/ok?second")).content == b"ok"
        assert server.accepted == 2
        assert server.methods() == ["GET", "GET", "GET"]
        # POST on the kept (second) connection: it may have been read, so
        # it is not sent again; the app gets CONNECTION_ERROR saying why.
        r = fetch(client, server.url("/ok"), method=POST, payload=b"once")
        assert r.app_error and r.app_error[0] == CONNECTION_ERROR, r
        assert "not sent again" in r.app_error[1], r
        time.sleep(0.2)
        assert server.methods() == ["GET", "GET", "GET", "POST"]
        assert server.accepted == 2
        # PUT and DELETE may be repeated; a POST on a new connection works.
        assert fetch_ok(client, server.url("/ok"), method=POST, payload=b"new").content == b"ok"
        assert fetch_ok(client, server.url("/ok"), method=PUT, payload=b"p").content == b"ok"
        assert server.methods()[-3:] == ["POST", "PUT", "PUT"]
        assert server.accepted == 4
    finally:
        server.close()


def test_idle_connection_closed_after_the_idle_timeout(client, server):
    fetch_ok(client, server.url("/ok"))
    t0 = time.monotonic()
    assert server.wait_for("client_closed", 1, timeout=IDLE_S + 3) == 1
    took = time.monotonic() - t0
    assert IDLE_S - 0.5 <= took <= IDLE_S + 2.5, took
    fetch_ok(client, server.url("/ok"))
    assert server.accepted == 2


def test_https_reuse_and_certificate_checking(tmp_path, monkeypatch):
    server = CountingServer(tls=True)
    monkeypatch.setenv("SSL_CERT_FILE", str(CERTS / "ca.pem"))
    srv = ApiServer(tmp_path).start()
    try:
        c = srv.framed()
        for _ in range(5):
            assert fetch_ok(c, server.url("/ok"), validate=False).content == b"ok"
        assert server.accepted == 1
        # A fetch that must check the certificate does not take the
        # unchecked connection; checked ones then share theirs.
        for _ in range(3):
            assert fetch_ok(c, server.url("/ok"), validate=True).content == b"ok"
        assert server.accepted == 2
        assert fetch_ok(c, server.url("/ok"), validate=False).content == b"ok"
        assert server.accepted == 2
        assert {n for n, _, _, _ in server.requests} == {1, 2}
        # A request in several TLS records on a kept connection is not held
        # back by Nagle's algorithm until the server's delayed ACK (40 ms a
        # request): twenty POSTs take milliseconds.
        t0 = time.monotonic()
        for _ in range(20):
            r = fetch_ok(c, server.url("/ok"), method=POST, payload=b"p" * 3000, validate=False)
            assert r.content == b"ok"
        took = time.monotonic() - t0
        assert took < 0.5, took
        assert server.accepted == 2
        c.close()
    finally:
        assert srv.stop() == 0, "\n".join(srv.lines[-30:])
        server.close()


def test_stop_with_idle_connections(tmp_path, server):
    # Idle connections are closed when the server stops (ASan's leak check
    # included in the exit status).
    srv = ApiServer(tmp_path).start()
    c = srv.framed()
    fetch_ok(c, server.url("/ok"))
    c.close()
    assert srv.stop() == 0, "\n".join(srv.lines[-30:])
    assert server.wait_for("client_closed", 1) == 1
