"""urlfetch through an outbound proxy, end to end: the real `appfront api`
started with http_proxy / https_proxy / no_proxy in its environment, a tiny
proxy written here, and the origins of test_urlfetch.py (docs/services.md,
"urlfetch", "Proxy").

The proxy takes every name to mean 127.0.0.1, so the tests use names that
resolve nowhere ("origin.test"): a fetch that reaches its origin through
one of them went through the proxy, and one that should have gone direct
fails to resolve. Loopback addresses are always fetched directly.
"""

import base64
import json
import os
import socket
import threading
from urllib.parse import urlsplit

import pytest

from apiclient import ApiServer
from test_urlfetch import (CERTS, DEADLINE_EXCEEDED, FETCH_ERROR, POST, SSL_CERTIFICATE_ERROR,
                           RawServer, fetch, fetch_error, fetch_ok, read_head, start_origin)

DNS_ERROR = 7
PROXY_VARS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY")


def pipe(a, b):
    """Copies both ways until both sides are done, then closes both."""
    def copy(src, dst):
        try:
            while True:
                d = src.recv(65536)
                if not d:
                    break
                dst.sendall(d)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    t = threading.Thread(target=copy, args=(b, a), daemon=True)
    t.start()
    copy(a, b)
    t.join(10)
    a.close()
    b.close()


class TinyProxy:
    """An HTTP proxy on loopback. An absolute-form request is forwarded in
    origin form; CONNECT host:port opens a tunnel, or gets 403 when host is
    in `refuse`; with `auth`, a request without that Proxy-Authorization
    gets 407. Every host is taken to be 127.0.0.1. `seen` lists (method,
    target, headers) of every request.

    A forwarded request is the connection's only one: its response gets
    `Connection: close` (and the origin's close ends it). A tunnel lasts
    as long as both ends keep it."""

    def __init__(self, refuse=(), auth=None):
        self.refuse = set(refuse)
        self.auth = auth
        self.seen = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        buf = read_head(c)
        head, _, extra = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        self.seen.append((method, target, headers))
        if self.auth and headers.get("proxy-authorization") != self.auth:
            c.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                      b"Proxy-Authenticate: Basic realm=\"t\"\r\nContent-Length: 0\r\n\r\n")
            c.close()
            return
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            if host.strip("[]") in self.refuse:
                c.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                c.close()
                return
            up = socket.create_connection(("127.0.0.1", int(port)))
            c.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            u = urlsplit(target)
            assert u.scheme == "http", target  # absolute form
            up = socket.create_connection(("127.0.0.1", u.port or 80))
            path = (u.path or "/") + (f"?{u.query}" if u.query else "")
            up.sendall(f"{method} {path} HTTP/1.1\r\n".encode()
                       + "\r\n".join(lines[1:]).encode("latin-1") + b"\r\n\r\n")
        if extra:
            up.sendall(extra)
        if method != "CONNECT":
            head, _, rest = read_head(up).partition(b"\r\n\r\n")
            c.sendall(head + b"\r\nConnection: close\r\n\r\n" + rest)
        pipe(c, up)

    def targets(self):
        return [(m, t) for m, t, _ in self.seen]

    def close(self):
        self.sock.close()


def api_with(tmp_path, **env):
    """`appfront api` with the given proxy variables (and only those) in its
    environment; the test process's own stays as it is."""
    full = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    full.update(env)
    return ApiServer(tmp_path, env=full).start()


@pytest.fixture(scope="module")
def origin_port():
    srv = start_origin()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def tls_port():
    srv = start_origin(tls=True)
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def proxy():
    p = TinyProxy(refuse={"refused.test"})
    yield p
    p.close()


def stopped(srv):
    assert srv.stop() == 0, "\n".join(srv.lines[-30:])


def test_http_through_proxy_in_absolute_form(tmp_path, proxy, origin_port):
    srv = api_with(tmp_path, http_proxy=proxy.url)
    try:
        c = srv.framed()
        url = f"http://origin.test:{origin_port}/echo?x=1"
        r = fetch_ok(c, url, headers=[("X-Custom", "v")])
        doc = json.loads(r.content)
        assert doc["path"] == "/echo?x=1"
        sent = {k.lower(): v for k, v in doc["headers"]}
        assert sent["host"] == f"origin.test:{origin_port}" and sent["x-custom"] == "v"
        assert proxy.targets() == [("GET", url)]
        # A body goes through too.
        doc = json.loads(fetch_ok(c, url, method=POST, payload=b"through").content)
        assert doc["method"] == "POST" and doc["body"] == "through"
        # https is not http_proxy's: it goes direct (and cannot resolve).
        r = fetch(c, f"https://origin.test:{origin_port}/", deadline=2)
        assert r.app_error and r.app_error[0] in (DNS_ERROR, DEADLINE_EXCEEDED), r
        assert len(proxy.seen) == 2
        c.close()
    finally:
        stopped(srv)


def test_https_through_connect_tunnel(tmp_path, proxy, tls_port):
    # SSL_CERT_FILE: the test CA is trusted, so only the name can fail.
    srv = api_with(tmp_path, HTTPS_PROXY=proxy.url, SSL_CERT_FILE=str(CERTS / "ca.pem"))
    try:
        c = srv.framed()
        r = fetch_ok(c, f"https://origin.test:{tls_port}/echo?tls=1", validate=False)
        assert json.loads(r.content)["path"] == "/echo?tls=1"
        assert proxy.targets() == [("CONNECT", f"origin.test:{tls_port}")]
        assert proxy.seen[0][2]["host"] == f"origin.test:{tls_port}"
        # TLS is with the origin, checked against the origin's name: its
        # certificate is trusted but names 127.0.0.1, not origin.test.
        detail = fetch_error(c, f"https://origin.test:{tls_port}/echo", SSL_CERTIFICATE_ERROR)
        assert "mismatch" in detail, detail
        # The first tunnel was kept: another unchecked fetch runs in it, but
        # the checked one above could not (its TLS must check the name).
        assert len(proxy.seen) == 2
        r = fetch_ok(c, f"https://origin.test:{tls_port}/echo?again=1", validate=False)
        assert json.loads(r.content)["path"] == "/echo?again=1"
        assert len(proxy.seen) == 2
        c.close()
    finally:
        stopped(srv)


def test_no_proxy_and_loopback_go_direct(tmp_path, proxy, origin_port):
    srv = api_with(tmp_path, http_proxy=proxy.url, NO_PROXY="example.invalid, .bypass.test")
    try:
        c = srv.framed()
        # Listed: direct, so the name does not resolve and the proxy sees nothing.
        for url in (f"http://x.bypass.test:{origin_port}/echo",
                    f"http://bypass.test:{origin_port}/echo"):
            r = fetch(c, url, deadline=2)
            assert r.app_error and r.app_error[0] in (DNS_ERROR, DEADLINE_EXCEEDED), r
        assert proxy.seen == []
        # Loopback, named or not: direct, although no_proxy does not list it.
        for host in ("127.0.0.1", "localhost"):
            r = fetch_ok(c, f"http://{host}:{origin_port}/echo")
            assert r.status == 200
        assert proxy.seen == []
        # Anything else: through the proxy.
        assert fetch_ok(c, f"http://origin.test:{origin_port}/echo").status == 200
        assert len(proxy.seen) == 1
        c.close()
    finally:
        stopped(srv)

    srv = api_with(tmp_path, http_proxy=proxy.url, no_proxy="*")
    try:
        c = srv.framed()
        r = fetch(c, f"http://origin.test:{origin_port}/echo", deadline=2)
        assert r.app_error and r.app_error[0] in (DNS_ERROR, DEADLINE_EXCEEDED), r
        assert len(proxy.seen) == 1
        c.close()
    finally:
        stopped(srv)


def test_redirect_from_a_proxied_host_to_loopback(tmp_path, proxy, origin_port):
    # Each hop chooses again: the redirect to 127.0.0.1 goes direct.
    srv = api_with(tmp_path, http_proxy=proxy.url)
    try:
        c = srv.framed()
        to = f"http://127.0.0.1:{origin_port}/echo?hop=2"
        r = fetch_ok(c, f"http://origin.test:{origin_port}/redirect?to={to}")
        assert json.loads(r.content)["path"] == "/echo?hop=2"
        assert r.final_url == to
        assert len(proxy.seen) == 1
        c.close()
    finally:
        stopped(srv)


def test_proxy_refusing_connect(tmp_path, proxy):
    srv = api_with(tmp_path, https_proxy=proxy.url)
    try:
        c = srv.framed()
        detail = fetch_error(c, "https://refused.test:443/", FETCH_ERROR)
        assert f"proxy 127.0.0.1:{proxy.port}" in detail, detail
        assert "refused" in detail and "403" in detail, detail
        assert "https_proxy" in detail, detail
        c.close()
    finally:
        stopped(srv)


def test_proxy_silent_or_garbled_on_connect(tmp_path):
    silent = RawServer(lambda c: read_head(c))  # reads CONNECT, never answers

    def garbage(c):
        read_head(c)
        c.sendall(b"SSH-2.0-OpenSSH\r\n\r\n")
        c.close()

    garbled = RawServer(garbage)
    srv = api_with(tmp_path, https_proxy=f"127.0.0.1:{silent.port}",
                   http_proxy=f"127.0.0.1:{garbled.port}")
    try:
        c = srv.framed()
        detail = fetch_error(c, "https://origin.test/", DEADLINE_EXCEEDED, deadline=0.5)
        assert "waiting for the proxy to open a tunnel" in detail, detail
        # An http URL is a plain request to the proxy: its garbage is the
        # reply's problem, as from any server.
        detail = fetch_error(c, "http://origin.test/", 11)  # MALFORMED_REPLY
        assert "not HTTP" in detail, detail
        c.close()
    finally:
        stopped(srv)
        silent.close()
        garbled.close()

    garbled = RawServer(garbage)
    srv = api_with(tmp_path, https_proxy=f"127.0.0.1:{garbled.port}")
    try:
        c = srv.framed()
        detail = fetch_error(c, "https://origin.test/", FETCH_ERROR)
        assert f"proxy 127.0.0.1:{garbled.port}" in detail and "not HTTP" in detail, detail
        c.close()
    finally:
        stopped(srv)
        garbled.close()


def test_proxy_unreachable(tmp_path, origin_port):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there
    srv = api_with(tmp_path, http_proxy=f"127.0.0.1:{port}",
                   https_proxy="http://no-such-proxy.invalid:3128")
    try:
        c = srv.framed()
        detail = fetch_error(c, f"http://origin.test:{origin_port}/", FETCH_ERROR)
        assert f"proxy 127.0.0.1:{port}" in detail and "http_proxy" in detail, detail
        assert "refused" in detail.lower(), detail
        r = fetch(c, "https://origin.test/", deadline=3)
        assert r.app_error, r
        if r.app_error[0] == FETCH_ERROR:  # else the lookup outlived the deadline
            assert "no-such-proxy.invalid:3128" in r.app_error[1], r
        c.close()
    finally:
        stopped(srv)


def test_proxy_credentials(tmp_path, origin_port, tls_port):
    want = "Basic " + base64.b64encode(b"user:pa@ss").decode()
    p = TinyProxy(auth=want)
    srv = api_with(tmp_path, http_proxy=f"http://user:pa%40ss@127.0.0.1:{p.port}",
                   https_proxy=f"http://user:wrong@127.0.0.1:{p.port}")
    try:
        c = srv.framed()
        assert fetch_ok(c, f"http://origin.test:{origin_port}/echo").status == 200
        assert p.seen[0][2]["proxy-authorization"] == want
        detail = fetch_error(c, f"https://origin.test:{tls_port}/", FETCH_ERROR, validate=False)
        assert "407" in detail and "credentials" in detail, detail
        assert "wrong" not in detail
        c.close()
    finally:
        stopped(srv)
        p.close()


def test_unusable_proxy_variable(tmp_path, origin_port):
    srv = api_with(tmp_path, https_proxy="socks5://127.0.0.1:1080")
    try:
        c = srv.framed()
        detail = fetch_error(c, "https://origin.test/", FETCH_ERROR)
        assert "https_proxy" in detail and "socks5" in detail, detail
        assert any("https_proxy" in line for line in srv.lines), srv.lines
        # http has no proxy: untouched.
        assert fetch_ok(c, f"http://127.0.0.1:{origin_port}/echo").status == 200
        c.close()
    finally:
        stopped(srv)
