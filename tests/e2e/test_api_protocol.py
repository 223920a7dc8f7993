"""The API server of the real binary (`appfront api`), driven over both
transports with real sockets: envelope errors, size limits, clients that go
away mid-call, garbage, and many concurrent clients losing nothing.

See docs/api.md for the protocol these tests hold the server to.
"""

import os
import random
import socket
import struct
import threading
import time

import pytest

from apiclient import (CALL_NOT_FOUND, MAX_MESSAGE, PARSE_ERROR, REQUEST_TOO_LARGE, ApiServer,
                       HttpClient, Response, encode_request, memcache_increment,
                       memcache_increment_value)


@pytest.fixture
def api(tmp_path):
    srv = ApiServer(tmp_path).start()
    yield srv
    alive = srv.alive()
    status = srv.stop()
    assert alive, "appfront died during the test:\n" + "\n".join(srv.lines[-20:])
    assert status == 0, f"appfront exited {status}:\n" + "\n".join(srv.lines[-20:])
    # The framed socket is removed at shutdown.
    assert not os.path.exists(srv.socket_path)


def test_info_document(api):
    assert api.info["server"] == "appfront"
    assert api.info["app_id"]
    assert os.path.exists(api.info["socket"])
    assert oct(os.stat(api.info["socket"]).st_mode & 0o777) == "0o600"
    assert "memcache" in api.info["services"]


def test_bad_envelope_both_transports(api):
    f = api.framed()
    for junk in (b"", b"\xff" * 7, b"\x12\x05abc", os.urandom(64)):
        f.send_frame(junk)
        r = f.recv_frame()
        assert r.rpc_error and r.rpc_error[0] == PARSE_ERROR, (junk, r)
    # The connection survives a bad envelope.
    r = f.call("nosuchservice", "Get")
    assert r.rpc_error[0] == CALL_NOT_FOUND
    f.close()

    h = api.http()
    status, headers, body = h.post(b"\xff\xff\xff\xff")
    assert status == 200
    assert Response(body).rpc_error[0] == PARSE_ERROR
    # Keep-alive: the same connection answers again.
    r = h.call("nosuchservice", "Get")
    assert r.rpc_error[0] == CALL_NOT_FOUND
    h.close()


def test_unknown_service_and_method(api):
    h = api.http()
    r = h.call("nosuchservice", "Get")
    assert r.rpc_error[0] == CALL_NOT_FOUND
    assert "nosuchservice" in r.rpc_error[1]
    r = h.call("memcache", "NoSuchMethod")
    assert r.rpc_error[0] == CALL_NOT_FOUND
    assert "NoSuchMethod" in r.rpc_error[1]
    h.close()


def test_oversized_frame_is_refused_and_closed(api):
    f = api.framed()
    # Just the header of a frame one byte over the limit: the server must
    # answer at once rather than wait for (or buffer) 32 MiB.
    f.sock.sendall(struct.pack(">I", MAX_MESSAGE + 1))
    r = f.recv_frame()
    assert r.rpc_error[0] == REQUEST_TOO_LARGE
    assert f.at_eof()
    f.close()

    c = socket.create_connection(("127.0.0.1", api.port), timeout=10)
    c.sendall(b"POST /rpc_http HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
              % (MAX_MESSAGE + 1))
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = c.recv(4096)
        assert chunk, "closed without an answer"
        data += chunk
    assert data.startswith(b"HTTP/1.1 200")
    assert b"Connection: close" in data
    c.close()

    # Still serving.
    assert api.http().call("nosuch", "X").rpc_error[0] == CALL_NOT_FOUND


def test_disconnect_mid_call(api):
    key = b"disconnect"
    # Clients that send a call and vanish at once, on both transports, and
    # some that vanish halfway through a frame or a request.
    for i in range(30):
        body = encode_request("memcache", "Increment", memcache_increment(key, 1, initial=0))
        if i % 3 == 0:
            f = api.framed()
            f.send_frame(body)
            f.close()
        elif i % 3 == 1:
            s = socket.create_connection(("127.0.0.1", api.port), timeout=10)
            s.sendall(b"POST /rpc_http HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body)
                      + body)
            s.close()
        else:
            f = api.framed()
            f.sock.sendall(struct.pack(">I", len(body)) + body[: len(body) // 2])
            f.close()
    # Let the backend work through what was queued, then check it is fine.
    time.sleep(0.3)
    f = api.framed()
    r = f.call("memcache", "Increment", memcache_increment(key, 0, initial=0))
    assert r.ok, r
    # Every complete call ran (the replies were dropped), the halves did not.
    assert memcache_increment_value(r.response) == 20
    f.close()


def test_garbage_does_not_crash(api):
    rng = random.Random(1234)
    for i in range(60):
        junk = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300)))
        if i % 2:
            f = api.framed(timeout=2)
            try:
                # A random header may ask for a long frame: that waits, and
                # closing it is the client's business.
                f.sock.sendall(junk)
            except OSError:
                pass
            f.close()
        else:
            s = socket.create_connection(("127.0.0.1", api.port), timeout=2)
            try:
                s.sendall(junk + b"\r\n\r\n")
                s.recv(4096)
            except OSError:
                pass
            s.close()
    assert api.alive()
    assert api.framed().call("nosuch", "X").rpc_error[0] == CALL_NOT_FOUND


def test_concurrent_increments_lose_nothing(api):
    """200 increments of one counter from 20 connections at once, half over
    the Unix socket and half over HTTP: the single backend must apply every
    one exactly once."""
    key = b"counter"
    threads, per_thread = 20, 10
    errors = []
    seen = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def worker(n):
        try:
            c = api.framed() if n % 2 else api.http()
            start.wait(10)
            for _ in range(per_thread):
                r = c.call("memcache", "Increment", memcache_increment(key, 1, initial=0))
                assert r.ok, r
                with lock:
                    seen.append(memcache_increment_value(r.response))
            c.close()
        except Exception as e:  # reported below, with the thread's number
            errors.append((n, repr(e)))

    ts = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not errors, errors
    total = threads * per_thread
    # Each call saw a distinct value: 1..200, none lost, none doubled.
    assert sorted(seen) == list(range(1, total + 1))
    r = api.framed().call("memcache", "Increment", memcache_increment(key, 0))
    assert memcache_increment_value(r.response) == total


def test_clear_one_stub(api):
    f = api.framed()
    key = b"k"
    r = f.call("memcache", "Increment", memcache_increment(key, 5, initial=0))
    assert memcache_increment_value(r.response) == 5
    h = HttpClient(api.port)
    status, _, body = h.post(b"", path="/clear?stub=memcache")
    assert status == 200, body
    status, _, body = h.post(b"", path="/clear?stub=nosuchstub")
    assert status == 404, body
    h.close()
    # Without initial value: a miss now.
    r = f.call("memcache", "Increment", memcache_increment(key, 1))
    assert r.ok and memcache_increment_value(r.response) is None
    f.close()


def test_request_id_reaches_logservice(api):
    """The envelope's request_id (field 5) is what ties an app's log lines
    to its request: logservice.Flush prints it with each line."""
    from apiclient import field_bytes, field_varint

    line = field_varint(1, int(time.time() * 1e6)) + field_varint(2, 1) + \
        field_bytes(3, "hello from the e2e test")
    group = field_bytes(2, line)
    for client in (api.framed(), api.http()):
        r = client.call("logservice", "Flush", field_bytes(1, group), request_id="ticket-123")
        assert r.ok, r
        client.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        hits = [l for l in api.lines if "ticket-123" in l and "hello from the e2e test" in l]
        if len(hits) == 2:
            break
        time.sleep(0.05)
    assert len(hits) == 2, api.lines[-10:]
