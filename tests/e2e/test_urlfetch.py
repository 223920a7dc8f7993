"""urlfetch.Fetch end to end: the real `appfront api` fetching from real
servers on loopback (docs/services.md, "urlfetch").

The origin is Python's http.server in a thread (for well-formed HTTP) and
raw sockets (for a server that never answers, one that answers garbage, one
that closes at once). The URLFetch messages use proto2 groups, so they are
encoded and decoded here by hand, like the envelope in apiclient.py.

The concurrency tests prove DESIGN.md's "slow external I/O must not stall
the serialized backend": while a Fetch waits on a slow server other calls
are answered at once, and several fetches wait at the same time.
"""

import functools
import gzip
import json
import os
import socket
import ssl
import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from apiclient import (BYTES, END_GROUP, FIXED64, START_GROUP, VARINT, ApiServer, field_bytes,
                       field_varint, read_varint, varint)

CERTS = Path(__file__).resolve().parent / "certs"

# URLFetchServiceError codes (proto/urlfetch_service.proto).
INVALID_URL = 1
FETCH_ERROR = 2
UNSPECIFIED_ERROR = 3
RESPONSE_TOO_LARGE = 4
DEADLINE_EXCEEDED = 5
SSL_CERTIFICATE_ERROR = 6
TOO_MANY_REDIRECTS = 10
MALFORMED_REPLY = 11
CONNECTION_ERROR = 12
PAYLOAD_TOO_LARGE = 13

GET, POST, HEAD, PUT, DELETE, PATCH = 1, 2, 3, 4, 5, 6

# remote_api RpcError
BAD_REQUEST = 8


# --- URLFetch messages ---------------------------------------------------------


def fetch_request(url, method=GET, headers=(), payload=None, follow=None, deadline=None,
                  validate=None):
    out = field_varint(1, method) + field_bytes(2, url)
    for k, v in headers:
        out += (varint(3 << 3 | START_GROUP) + field_bytes(4, k) + field_bytes(5, v)
                + varint(3 << 3 | END_GROUP))
    if payload is not None:
        out += field_bytes(6, payload)
    if follow is not None:
        out += field_varint(7, int(follow))
    if deadline is not None:
        out += varint(8 << 3 | FIXED64) + struct.pack("<d", deadline)
    if validate is not None:
        out += field_varint(9, int(validate))
    return out


class FetchResponse:
    def __init__(self, buf):
        self.content = b""
        self.status = None
        self.headers = []
        self.truncated = False
        self.sent = self.received = None
        self.final_url = None
        pos = 0
        key = value = None
        in_group = False
        while pos < len(buf):
            tag, pos = read_varint(buf, pos)
            num, wt = tag >> 3, tag & 7
            if wt == START_GROUP:
                assert num == 3 and not in_group
                in_group, key, value = True, None, None
                continue
            if wt == END_GROUP:
                assert num == 3 and in_group and key is not None and value is not None
                self.headers.append((key, value))
                in_group = False
                continue
            if wt == VARINT:
                v, pos = read_varint(buf, pos)
            elif wt == BYTES:
                n, pos = read_varint(buf, pos)
                v, pos = bytes(buf[pos:pos + n]), pos + n
            else:
                raise AssertionError(f"unexpected wire type {wt}")
            if in_group:
                if num == 4:
                    key = v.decode("latin-1")
                elif num == 5:
                    value = v.decode("latin-1")
                continue
            if num == 1:
                self.content = v
            elif num == 2:
                self.status = v
            elif num == 6:
                self.truncated = bool(v)
            elif num == 7:
                self.sent = v
            elif num == 8:
                self.received = v
            elif num == 9:
                self.final_url = v.decode()
        assert not in_group, "unterminated Header group"
        assert self.status is not None, "StatusCode is required"

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


def fetch(client, url, **kw):
    """One Fetch; returns the Response envelope."""
    return client.call("urlfetch", "Fetch", fetch_request(url, **kw))


def fetch_ok(client, url, **kw):
    r = fetch(client, url, **kw)
    assert r.ok, r
    return FetchResponse(r.response)


def fetch_error(client, url, code, **kw):
    r = fetch(client, url, **kw)
    assert r.app_error is not None, r
    assert r.app_error[0] == code, r
    return r.app_error[1]


# --- the origin servers --------------------------------------------------------

GZIP_TEXT = b"".join(b"line %d of the gzip test content\n" % i for i in range(2000))


@functools.lru_cache(maxsize=None)
def gzip_zeros(n):
    """n zero bytes as one gzip member, made a MiB at a time."""
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = [z.compress(bytes(min(n - i, 1 << 20))) for i in range(0, n, 1 << 20)]
    return b"".join(out) + z.flush()


def gzip_body(q):
    """The content /gzip serves for the query q (see Origin._gzip)."""
    if "zeros" in q:
        return gzip_zeros(int(q["zeros"]))
    # mtime=0: the same bytes every time (the header holds a timestamp).
    body = b"".join(gzip.compress(GZIP_TEXT, mtime=0) for _ in range(int(q.get("members", "1"))))
    if "corrupt" in q:
        # A byte in the middle of the deflate data.
        mid = len(body) // 2
        body = body[:mid] + bytes([body[mid] ^ 0xFF]) + body[mid + 1:]
    if "cut" in q:
        body = body[:-int(q["cut"])]
    return body


class Origin(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, code, body=b"", headers=()):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self):
        u = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        body = self._body()
        if u.path == "/echo":
            doc = {"method": self.command, "path": self.path,
                   "headers": [[k, v] for k, v in self.headers.items()],
                   "body": body.decode("latin-1")}
            self._send(200, json.dumps(doc).encode(),
                       [("Content-Type", "application/json"), ("X-Origin", "yes")])
        elif u.path == "/status":
            self._send(int(q["code"]), b"status body")
        elif u.path == "/redirect":
            n = int(q.get("n", "1"))
            code = int(q.get("code", "302"))
            target = f"/redirect?n={n - 1}&code={code}" if n > 1 else q.get("to", "/echo")
            self._send(code, b"moved", [("Location", target)])
        elif u.path == "/loop":
            self._send(302, b"", [("Location", "/loop")])
        elif u.path == "/slow":
            time.sleep(int(q["ms"]) / 1000)
            self._send(200, b"slow done")
        elif u.path == "/big":
            n = int(q["n"])
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            chunk = b"x" * (1 << 20)
            try:
                while n > 0:
                    self.wfile.write(chunk[:n])
                    n -= min(n, len(chunk))
            except OSError:
                pass  # the client stops reading at its limit
        elif u.path == "/gzip":
            self._gzip(q)
        elif u.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in (b"hello, ", b"chunked ", b"world"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        elif u.path == "/close":
            # No length: the body ends with the connection.
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"until the end")
            self.close_connection = True
        else:
            self._send(404, b"no such path")

    def _gzip(self, q):
        """Gzip content whatever the request asked (gzip_body), with
        Content-Encoding `enc` (default gzip), chunked when `chunked` is
        set; X-Got-Accept-Encoding says what the request carried."""
        body = gzip_body(q)
        got = self.headers.get("Accept-Encoding", "(none)")
        headers = [("Content-Type", "text/plain"), ("Content-Encoding", q.get("enc", "gzip")),
                   ("X-Got-Accept-Encoding", got)]
        if "chunked" not in q:
            self._send(200, body, headers)
            return
        self.send_response(200)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i in range(0, len(body), 1000):
            piece = body[i:i + 1000]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle


class OriginServer(ThreadingHTTPServer):
    daemon_threads = True


def start_origin(tls=False):
    srv = OriginServer(("127.0.0.1", 0), Origin)
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(CERTS / "server.pem", CERTS / "server.key")
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


class RawServer:
    """A TCP server on loopback whose every connection gets `behave(conn)`
    in a thread of its own."""

    def __init__(self, behave):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.behave = behave
        self.conns = []
        self.stopping = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self.behave, args=(c,), daemon=True).start()

    def close(self):
        self.stopping = True
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


def read_head(c):
    buf = b""
    c.settimeout(10)
    while b"\r\n\r\n" not in buf:
        d = c.recv(65536)
        if not d:
            break
        buf += d
    return buf


@pytest.fixture(scope="module")
def origin():
    srv = start_origin()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    srv = ApiServer(tmp_path_factory.mktemp("urlfetch")).start()
    yield srv
    assert srv.stop() == 0, "\n".join(srv.lines[-30:])


@pytest.fixture
def client(api):
    c = api.framed()
    yield c
    c.close()


# --- round trips -----------------------------------------------------------------


def test_get_round_trip(client, origin):
    r = fetch_ok(client, origin + "/echo?a=1&b=two",
                 headers=[("X-Custom", "value 1"), ("Accept", "text/plain")])
    assert r.status == 200
    assert r.header("X-Origin") == "yes"
    assert r.header("Content-Type") == "application/json"
    assert not r.truncated
    assert r.final_url is None  # no redirect
    assert r.sent > 0 and r.received > len(r.content)
    doc = json.loads(r.content)
    assert doc["method"] == "GET"
    assert doc["path"] == "/echo?a=1&b=two"
    sent = {k.lower(): v for k, v in doc["headers"]}
    assert sent["x-custom"] == "value 1"
    assert sent["accept"] == "text/plain"
    assert sent["host"] == origin[len("http://"):]
    assert "AppEngine-Google" in sent["user-agent"]


def test_post_put_patch_delete_with_body(client, origin):
    payload = bytes(range(256)) * 40
    for method, name in ((POST, "POST"), (PUT, "PUT"), (PATCH, "PATCH")):
        r = fetch_ok(client, origin + "/echo", method=method, payload=payload,
                     headers=[("Content-Type", "application/octet-stream")])
        doc = json.loads(r.content)
        assert doc["method"] == name
        assert doc["body"].encode("latin-1") == payload
        sent = {k.lower(): v for k, v in doc["headers"]}
        assert sent["content-length"] == str(len(payload))
        assert sent["content-type"] == "application/octet-stream"
    # DELETE carries no payload (App Engine ignores it for other methods).
    doc = json.loads(fetch_ok(client, origin + "/echo", method=DELETE, payload=b"x").content)
    assert doc["method"] == "DELETE" and doc["body"] == ""


def test_head_and_empty_post(client, origin):
    r = fetch_ok(client, origin + "/echo", method=HEAD)
    assert r.status == 200 and r.content == b""
    assert int(r.header("Content-Length")) > 0  # the length a GET would have
    doc = json.loads(fetch_ok(client, origin + "/echo", method=POST).content)
    assert doc["method"] == "POST" and doc["body"] == ""


def test_user_agent_and_service_owned_headers(client, origin):
    r = fetch_ok(client, origin + "/echo",
                 headers=[("User-Agent", "myapp/1.0"), ("Host", "evil.example"),
                          ("Content-Length", "999"), ("X-Forwarded-For", "1.2.3.4"),
                          ("Connection", "keep-alive")])
    sent = {k.lower(): v for k, v in json.loads(r.content)["headers"]}
    assert sent["user-agent"].startswith("myapp/1.0 AppEngine-Google")
    assert sent["host"] == origin[len("http://"):]
    assert "x-forwarded-for" not in sent
    # The app's Connection is dropped, and the service sends none: HTTP/1.1
    # keeps the connection, which the pool may reuse.
    assert "connection" not in sent


def test_status_codes_are_not_errors(client, origin):
    for code in (201, 404, 500, 503):
        r = fetch_ok(client, origin + f"/status?code={code}")
        assert r.status == code
        assert r.content == b"status body"


def test_chunked_and_close_delimited(client, origin):
    r = fetch_ok(client, origin + "/chunked")
    assert r.content == b"hello, chunked world"
    assert r.header("Transfer-Encoding") is None  # de-chunked
    r = fetch_ok(client, origin + "/close")
    assert r.content == b"until the end"


# --- compression: dev_appserver's transparent gzip ----------------------------------


def test_gzip_decoded_when_the_app_asked_for_no_encoding(client, origin):
    r = fetch_ok(client, origin + "/gzip")
    assert r.header("X-Got-Accept-Encoding") == "gzip"  # the service asked for it
    assert r.content == GZIP_TEXT
    assert r.header("Content-Encoding") is None
    assert r.header("Content-Length") == str(len(GZIP_TEXT))
    assert r.header("Content-Type") == "text/plain"
    assert not r.truncated
    assert r.received < len(GZIP_TEXT)  # what came over the wire was compressed
    # The service's Accept-Encoding is sent to every server, the echo too.
    doc = json.loads(fetch_ok(client, origin + "/echo").content)
    assert {k.lower(): v for k, v in doc["headers"]}["accept-encoding"] == "gzip"


def test_gzip_multi_member_chunked_and_x_gzip(client, origin):
    r = fetch_ok(client, origin + "/gzip?members=3&chunked=1")
    assert r.content == GZIP_TEXT * 3
    assert r.header("Content-Encoding") is None
    assert r.header("Content-Length") is None  # none was sent; none is made up
    r = fetch_ok(client, origin + "/gzip?enc=x-gzip")
    assert r.content == GZIP_TEXT and r.header("Content-Encoding") is None


def test_gzip_passed_through_when_the_app_set_accept_encoding(client, origin):
    raw = gzip_body({})
    for value in ("gzip", "identity", "br;q=1.0, gzip;q=0.5", ""):
        r = fetch_ok(client, origin + "/gzip", headers=[("Accept-Encoding", value)])
        assert r.header("X-Got-Accept-Encoding") == value
        assert r.content == raw, value
        assert r.header("Content-Encoding") == "gzip"
        assert r.header("Content-Length") == str(len(raw))


def test_other_encodings_pass_through(client, origin):
    raw = gzip_body({})
    for enc in ("br", "deflate", "gzip, br"):
        r = fetch_ok(client, origin + "/gzip?enc=" + enc.replace(" ", "%20"))
        assert r.content == raw, enc
        assert r.header("Content-Encoding") == enc


def test_gzip_head(client, origin):
    r = fetch_ok(client, origin + "/gzip", method=HEAD)
    assert r.status == 200 and r.content == b""
    assert r.header("Content-Encoding") is None
    # HEAD keeps the length the server gave.
    assert r.header("Content-Length") == str(len(gzip_body({})))


@pytest.mark.parametrize("query, words", [
    ("corrupt=1", "invalid"),
    ("cut=20", "cut short"),
    ("cut=20&chunked=1", "cut short"),
])
def test_gzip_damaged_is_fetch_error(client, origin, query, words):
    detail = fetch_error(client, origin + "/gzip?" + query, FETCH_ERROR)
    assert "gzip content" in detail and words in detail, detail
    assert origin + "/gzip" in detail
    # The server goes on serving.
    assert fetch_ok(client, origin + "/gzip").content == GZIP_TEXT


def test_gzip_truncated_after_decoding(client, origin):
    # 33 MiB of content in about 33 KiB: the 32 MiB limit counts decoded bytes.
    r = fetch_ok(client, origin + f"/gzip?zeros={33 << 20}")
    assert r.truncated
    assert (32 << 20) - 4096 < len(r.content) <= 32 << 20
    assert r.content.count(0) == len(r.content)
    assert r.header("Content-Length") == str(len(r.content))
    assert r.header("Content-Encoding") is None
    # Exactly under the limit: whole.
    r = fetch_ok(client, origin + f"/gzip?zeros={4 << 20}")
    assert len(r.content) == 4 << 20 and not r.truncated


def test_gzip_bomb_is_bounded(api, origin):
    # 256 MiB of zeros, about 256 KiB compressed: decoding stops at the
    # limit, quickly, and the server goes on answering.
    n = 256 << 20
    gzip_zeros(n)  # made before the clock starts
    c = api.framed(timeout=30)
    try:
        t0 = time.monotonic()
        r = fetch_ok(c, origin + f"/gzip?zeros={n}", deadline=30)
        took = time.monotonic() - t0
        assert r.truncated and len(r.content) > (32 << 20) - 4096
        assert took < 20, took
        assert fetch_ok(c, origin + "/echo").status == 200
    finally:
        c.close()


# --- redirects -----------------------------------------------------------------------


def test_redirects_followed(client, origin):
    r = fetch_ok(client, origin + "/redirect?n=3")
    assert r.status == 200
    assert json.loads(r.content)["path"] == "/echo"
    assert r.final_url == origin + "/echo"


def test_redirect_303_turns_post_into_get_307_keeps_it(client, origin):
    doc = json.loads(fetch_ok(client, origin + "/redirect?n=1&code=303", method=POST,
                              payload=b"data").content)
    assert doc["method"] == "GET" and doc["body"] == ""
    doc = json.loads(fetch_ok(client, origin + "/redirect?n=1&code=307", method=POST,
                              payload=b"data").content)
    assert doc["method"] == "POST" and doc["body"] == "data"


def test_redirect_not_followed(client, origin):
    r = fetch_ok(client, origin + "/redirect?n=1", follow=False)
    assert r.status == 302
    assert r.header("Location") == "/echo"
    assert r.content == b"moved"
    assert r.final_url is None


def test_too_many_redirects(client, origin):
    detail = fetch_error(client, origin + "/loop", TOO_MANY_REDIRECTS)
    assert "more than 5" in detail
    # Five are fine.
    assert fetch_ok(client, origin + "/redirect?n=5").status == 200


# --- failures --------------------------------------------------------------------------


def test_deadline_exceeded_against_silent_server(client):
    silent = RawServer(lambda c: read_head(c))  # reads, never answers
    try:
        t0 = time.monotonic()
        detail = fetch_error(client, f"http://127.0.0.1:{silent.port}/", DEADLINE_EXCEEDED,
                             deadline=0.5)
        took = time.monotonic() - t0
        assert 0.4 < took < 4, took
        assert "0.5 s" in detail, detail
    finally:
        silent.close()


def test_deadline_already_past(client, origin):
    fetch_error(client, origin + "/echo", DEADLINE_EXCEEDED, deadline=-1.0)


def test_connection_refused(client):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    detail = fetch_error(client, f"http://127.0.0.1:{port}/", CONNECTION_ERROR)
    assert "refused" in detail.lower(), detail


def test_closed_without_answer(client):
    srv = RawServer(lambda c: (read_head(c), c.close()))
    try:
        detail = fetch_error(client, f"http://127.0.0.1:{srv.port}/", CONNECTION_ERROR)
        assert "without answering" in detail, detail
    finally:
        srv.close()


def test_malformed_reply(client):
    def garbage(c):
        read_head(c)
        c.sendall(b"this is not HTTP at all\r\n\r\n")
        c.close()

    srv = RawServer(garbage)
    try:
        detail = fetch_error(client, f"http://127.0.0.1:{srv.port}/", MALFORMED_REPLY)
        assert "not HTTP" in detail, detail
    finally:
        srv.close()


def test_body_cut_short(client):
    def short(c):
        read_head(c)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
        c.close()

    srv = RawServer(short)
    try:
        fetch_error(client, f"http://127.0.0.1:{srv.port}/", MALFORMED_REPLY)
    finally:
        srv.close()


def test_huge_response_head(client):
    def huge(c):
        read_head(c)
        try:
            c.sendall(b"HTTP/1.1 200 OK\r\n" + b"X-Filler: " + b"y" * (200 << 10) + b"\r\n\r\n")
        except OSError:
            pass
        c.close()

    srv = RawServer(huge)
    try:
        fetch_error(client, f"http://127.0.0.1:{srv.port}/", RESPONSE_TOO_LARGE)
    finally:
        srv.close()


def test_oversized_response_is_truncated(client, origin):
    n = (32 << 20) + (1 << 20)
    r = fetch_ok(client, origin + f"/big?n={n}")
    assert r.status == 200
    assert r.truncated
    # Cut at 32 MiB, less what the rest of the reply takes.
    assert (32 << 20) - 4096 < len(r.content) <= 32 << 20
    assert r.content[:10] == b"xxxxxxxxxx"
    # A response under the limit is whole.
    r = fetch_ok(client, origin + f"/big?n={3 << 20}")
    assert len(r.content) == 3 << 20 and not r.truncated


def test_payload_too_large(client, origin):
    detail = fetch_error(client, origin + "/echo", PAYLOAD_TOO_LARGE, method=POST,
                         payload=b"p" * ((10 << 20) + 1))
    assert "10 MiB" in detail
    # Exactly 10 MiB is allowed.
    r = fetch_ok(client, origin + "/echo", method=POST, payload=b"p" * (10 << 20))
    assert len(json.loads(r.content)["body"]) == 10 << 20


@pytest.mark.parametrize("url, words", [
    ("", "empty"),
    ("ftp://example.com/file", "scheme \"ftp\""),
    ("/relative/path", "not an absolute"),
    ("http://", "no host"),
    ("http://user:secret@127.0.0.1/", "credentials"),
    ("http://127.0.0.1:99999/", "port"),
    ("http://127.0.0.1/a path", "space"),
    ("http://bad_host!/", "invalid character"),
    ("http://127.0.0.1/" + "a" * 2100, "2048"),
])
def test_invalid_url(client, url, words):
    detail = fetch_error(client, url, INVALID_URL)
    assert words in detail, detail


def test_bad_method_headers_and_request(client, origin):
    fetch_error(client, origin + "/echo", UNSPECIFIED_ERROR, method=9)
    detail = fetch_error(client, origin + "/echo", FETCH_ERROR,
                         headers=[("X-Bad", "a\r\nInjected: yes")])
    assert "control" in detail
    fetch_error(client, origin + "/echo", FETCH_ERROR, headers=[("Bad Name", "v")])
    # Not a URLFetchRequest at all, or without its required Url.
    r = client.call("urlfetch", "Fetch", b"\xff\xff\xff")
    assert r.rpc_error and r.rpc_error[0] == BAD_REQUEST, r
    r = client.call("urlfetch", "Fetch", field_varint(1, GET))
    assert r.rpc_error and r.rpc_error[0] == BAD_REQUEST and "Url" in r.rpc_error[1], r


def test_http_transport_too(api, origin):
    c = api.http()
    try:
        r = c.call("urlfetch", "Fetch", fetch_request(origin + "/echo"))
        assert r.ok, r
        assert FetchResponse(r.response).status == 200
    finally:
        c.close()


# --- concurrency: the backend is never held ----------------------------------------------


def memcache_get(key):
    return field_bytes(1, key)


def test_other_calls_answered_while_fetch_waits(api, origin):
    slow = api.framed()
    fast = api.framed()
    try:
        t0 = time.monotonic()
        slow.send_frame(__import__("apiclient").encode_request(
            "urlfetch", "Fetch", fetch_request(origin + "/slow?ms=2000", deadline=10)))
        time.sleep(0.2)  # the fetch is now waiting on the origin
        for _ in range(10):
            r = fast.call("memcache", "Get", memcache_get(b"k"))
            assert r.ok, r
        quick = time.monotonic() - t0
        # Ten calls while the fetch waits: far below its 2 s.
        assert quick < 1.5, quick
        r = slow.recv_frame()
        assert r.ok, r
        assert FetchResponse(r.response).content == b"slow done"
        assert time.monotonic() - t0 >= 1.9
    finally:
        slow.close()
        fast.close()


def test_fetches_run_concurrently(api, origin):
    n = 6
    results = [None] * n

    def one(i):
        c = api.framed(timeout=20)
        try:
            results[i] = fetch(c, origin + "/slow?ms=1000", deadline=15)
        finally:
            c.close()

    t0 = time.monotonic()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    took = time.monotonic() - t0
    for r in results:
        assert r is not None and r.ok, r
    # One after the other would take 6 s.
    assert took < 4.0, took


# --- https -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_origin():
    srv = start_origin(tls=True)
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def test_https_certificate_not_trusted(client, tls_origin):
    detail = fetch_error(client, f"https://127.0.0.1:{tls_origin}/echo", SSL_CERTIFICATE_ERROR)
    assert "certificate" in detail, detail
    # Without validation the same fetch works.
    r = fetch_ok(client, f"https://127.0.0.1:{tls_origin}/echo", validate=False)
    assert r.status == 200 and json.loads(r.content)["method"] == "GET"


def test_https_validated_with_trusted_ca(tmp_path, tls_origin, monkeypatch):
    # OpenSSL reads SSL_CERT_FILE for its default CA store.
    monkeypatch.setenv("SSL_CERT_FILE", str(CERTS / "ca.pem"))
    srv = ApiServer(tmp_path).start()
    try:
        c = srv.framed()
        r = fetch_ok(c, f"https://127.0.0.1:{tls_origin}/echo?tls=1", method=POST, payload=b"s")
        doc = json.loads(r.content)
        assert doc["path"] == "/echo?tls=1" and doc["body"] == "s"
        # The certificate names 127.0.0.1 only: another name fails.
        detail = fetch_error(c, f"https://localhost:{tls_origin}/echo", SSL_CERTIFICATE_ERROR)
        assert "mismatch" in detail or "certificate" in detail, detail
        c.close()
    finally:
        assert srv.stop() == 0


def test_https_to_plain_server(client, origin):
    port = origin.rsplit(":", 1)[1]
    fetch_error(client, f"https://127.0.0.1:{port}/echo", FETCH_ERROR, validate=False)


# --- names, disconnects, shutdown --------------------------------------------------------


def test_name_from_hosts_file(client, origin):
    # "localhost" is resolved without blocking (evdns reads /etc/hosts).
    port = origin.rsplit(":", 1)[1]
    r = fetch_ok(client, f"http://localhost:{port}/echo")
    assert r.status == 200
    assert {k.lower(): v for k, v in json.loads(r.content)["headers"]}["host"] == \
        f"localhost:{port}"


def test_unresolvable_name_is_bounded(client):
    # Nothing but loopback is reachable here: the lookup either fails
    # (DNS_ERROR) or outlives the deadline (DEADLINE_EXCEEDED), never more.
    t0 = time.monotonic()
    r = fetch(client, "http://no-such-host.invalid/", deadline=1.0)
    assert r.app_error and r.app_error[0] in (7, DEADLINE_EXCEEDED), r
    assert time.monotonic() - t0 < 5


def test_client_gone_mid_fetch_and_stop_with_fetches_in_flight(tmp_path, origin):
    silent = RawServer(lambda c: read_head(c))
    srv = ApiServer(tmp_path).start()
    try:
        import apiclient
        # A client that goes away while its fetch waits: the reply is dropped.
        gone = srv.framed()
        gone.send_frame(apiclient.encode_request(
            "urlfetch", "Fetch", fetch_request(origin + "/slow?ms=300")))
        time.sleep(0.1)
        gone.close()
        time.sleep(0.4)
        c = srv.framed()
        assert fetch_ok(c, origin + "/echo").status == 200
        # Fetches still waiting (on DNS, on a silent server) when the server
        # stops are cancelled; the exit status (ASan's leak check included)
        # stays 0.
        for url in (f"http://127.0.0.1:{silent.port}/", "http://no-such-host.invalid/"):
            w = srv.framed()
            w.send_frame(apiclient.encode_request("urlfetch", "Fetch",
                                                  fetch_request(url, deadline=30)))
        time.sleep(0.3)
        t0 = time.monotonic()
        assert srv.stop() == 0, "\n".join(srv.lines[-30:])
        assert time.monotonic() - t0 < 5
    finally:
        if srv.alive():
            srv.stop()
        silent.close()
