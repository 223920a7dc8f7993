"""Faults on the API side, inside a full appfront with a running instance:
API clients that vanish mid-call (queued, running, or while their reply is
being written), by close and by reset, on both transports. Afterwards the
API server answers, the app's own API calls work (hello's /counter goes
through memcache), no call was run twice or lost, and no descriptor leaked.
"""

import json
import os
import socket
import struct
import threading
import time
import urllib.request

import pytest

from apiclient import (FramedClient, HttpClient, encode_request, field_bytes,
                       memcache_increment, memcache_increment_value)

H = b"Host: localhost\r\n"  # a name the API server answers (docs/cli.md, --enable_host_checking)


@pytest.fixture(scope="module")
def af(appfront_module):
    return appfront_module("threadsafe")


def api_port(af):
    return int(af.urls["api"].rsplit(":", 1)[1].rstrip("/"))


def framed_path(af):
    with urllib.request.urlopen(af.urls["api"].rstrip("/") + "/", timeout=5) as r:
        return json.loads(r.read())["socket"]


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def reset(s):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def memcache_set(key, value):
    # MemcacheSetRequest { repeated group Item = 1 { key = 2; value = 3 } }
    # (proto/memcache.proto): a group is a start tag (1 << 3 | 3), its
    # fields, an end tag (1 << 3 | 4).
    return b"\x0b" + field_bytes(2, key) + field_bytes(3, value) + b"\x0c"


def counter(af):
    status, _, body = af.get("/counter")
    assert status == 200, (status, body)
    return body


def test_api_clients_vanishing_mid_call(af):
    port = api_port(af)
    path = framed_path(af)
    pid = af.proc.pid
    key = b"fault-api-counter"
    # A warm-up call on each transport, then the baseline of descriptors.
    h = HttpClient(port)
    assert h.call("memcache", "Increment", memcache_increment(key, 0, initial=0)).ok
    h.close()
    fds = fd_count(pid)
    inc = encode_request("memcache", "Increment", memcache_increment(key, 1, initial=0))

    complete = 0

    def burst(worker):
        nonlocal complete
        for i in range(50):
            kind = (worker + i) % 5
            if kind == 0:  # framed: whole call, then gone (close)
                f = FramedClient(path)
                f.send_frame(inc)
                f.close()
            elif kind == 1:  # framed: whole call, then reset
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(path)
                s.sendall(struct.pack(">I", len(inc)) + inc)
                reset(s)
            elif kind == 2:  # HTTP: whole call, then reset
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                s.sendall(b"POST /rpc_http HTTP/1.1\r\n" + H + b"Content-Length: %d\r\n\r\n" % len(inc) + inc)
                reset(s)
            elif kind == 3:  # HTTP: half the body, then gone
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                s.sendall(b"POST /rpc_http HTTP/1.1\r\n" + H + b"Content-Length: %d\r\n\r\n" % len(inc)
                          + inc[: len(inc) // 2])
                s.close()
                continue
            else:  # framed: a frame header promising 10 MB, some bytes, gone
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(path)
                s.sendall(struct.pack(">I", 10 << 20) + b"x" * 4096)
                reset(s)
                continue
            with lock:
                complete += 1

    lock = threading.Lock()
    ts = [threading.Thread(target=burst, args=(w,)) for w in range(10)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    time.sleep(0.5)  # the backend works through what was queued

    # Every complete call ran exactly once; halves never ran.
    f = FramedClient(path)
    r = f.call("memcache", "Increment", memcache_increment(key, 0, initial=0))
    f.close()
    assert r.ok, r
    assert memcache_increment_value(r.response) == complete, \
        f"{memcache_increment_value(r.response)} increments ran for {complete} complete calls"

    # The app's own API calls still work, through the front end.
    a = counter(af)
    b = counter(af)
    assert a != b, (a, b)
    deadline = time.monotonic() + 5
    while fd_count(pid) > fds + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert fd_count(pid) <= fds + 2, f"descriptors: {fds} before, {fd_count(pid)} after"


def test_api_client_vanishing_while_its_reply_is_written(af):
    # 16 values of 900 KB (memcache's item limit is 1 MB) read back in one
    # Get by clients that reset the connection after the first bytes of the
    # reply: the listener is mid-write when they go.
    port = api_port(af)
    path = framed_path(af)
    keys = [b"big%d" % i for i in range(16)]
    f = FramedClient(path, timeout=30)
    for k in keys:
        assert f.call("memcache", "Set", memcache_set(k, b"v" * 900_000)).ok
    f.close()
    big = b"v" * (16 * 900_000)
    get = encode_request("memcache", "Get", b"".join(field_bytes(1, k) for k in keys))
    for i in range(6):
        if i % 2:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            s.sendall(struct.pack(">I", len(get)) + get)
        else:
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"POST /rpc_http HTTP/1.1\r\n" + H + b"Content-Length: %d\r\n\r\n" % len(get) + get)
        s.settimeout(10)
        s.recv(1024)
        reset(s)
    h = HttpClient(port, timeout=30)
    r = h.call("memcache", "Get", b"".join(field_bytes(1, k) for k in keys))
    h.close()
    assert r.ok and len(r.response) > len(big), r.rpc_error
    assert counter(af)
