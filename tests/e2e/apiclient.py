"""A small client of appfront's API server for the end-to-end tests.

It speaks both transports of docs/api.md with real sockets: the framed Unix
socket (4-byte big-endian length + encoded remote_api.Request) and HTTP POST
on the TCP port. The protobuf encoding is written out by hand (a few varints
and length-delimited fields), because Debian's python3-protobuf is not a
dependency of this project; the field numbers are those of
proto/remote_api.proto and proto/memcache.proto.

ApiServer starts the real binary as `appfront api` and stops it through its
admin server, checking the exit status.
"""

import http.client
import json
import os
import re
import socket
import struct
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("APPFRONT_BUILD", REPO / "build")).resolve()
APPFRONT_BIN = BUILD / "appfront"

# remote_api RpcError codes.
UNKNOWN = 0
CALL_NOT_FOUND = 1
PARSE_ERROR = 2
REQUEST_TOO_LARGE = 5
DEADLINE_EXCEEDED = 12

MAX_MESSAGE = 32 << 20

# --- protobuf wire format ----------------------------------------------------

VARINT, FIXED64, BYTES, START_GROUP, END_GROUP, FIXED32 = 0, 1, 2, 3, 4, 5


def varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_bytes(num, data):
    if isinstance(data, str):
        data = data.encode()
    return varint(num << 3 | BYTES) + varint(len(data)) + data


def field_varint(num, v):
    return varint(num << 3 | VARINT) + varint(v)


def read_varint(buf, pos):
    v = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return v, pos


def parse_fields(buf):
    """{field number: [values]} of a message without groups: varints as
    ints, length-delimited fields as bytes, fixed fields as ints."""
    out = {}
    pos = 0
    while pos < len(buf):
        tag, pos = read_varint(buf, pos)
        num, wt = tag >> 3, tag & 7
        if wt == VARINT:
            v, pos = read_varint(buf, pos)
        elif wt == BYTES:
            n, pos = read_varint(buf, pos)
            if pos + n > len(buf):
                raise ValueError("truncated field")
            v, pos = bytes(buf[pos : pos + n]), pos + n
        elif wt == FIXED32:
            v, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        elif wt == FIXED64:
            v, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        else:
            raise ValueError(f"unexpected wire type {wt}")
        out.setdefault(num, []).append(v)
    return out


# --- the envelope --------------------------------------------------------------


def encode_request(service, method, payload=b"", request_id=None):
    """An encoded remote_api.Request."""
    out = field_bytes(2, service) + field_bytes(3, method) + field_bytes(4, payload)
    if request_id is not None:
        out += field_bytes(5, request_id)
    return out


class Response:
    """A decoded remote_api.Response."""

    def __init__(self, data):
        f = parse_fields(data)
        self.response = f.get(1, [None])[0]
        self.app_error = None
        self.rpc_error = None
        if 3 in f:
            e = parse_fields(f[3][0])
            self.app_error = (e[1][0], e.get(2, [b""])[0].decode())
        if 5 in f:
            e = parse_fields(f[5][0])
            self.rpc_error = (e[1][0], e.get(2, [b""])[0].decode())

    @property
    def ok(self):
        return self.rpc_error is None and self.app_error is None

    def __repr__(self):
        return f"Response(response={self.response!r}, app_error={self.app_error}, rpc_error={self.rpc_error})"


# --- memcache messages (proto/memcache.proto) ----------------------------------------


def memcache_increment(key, delta=1, initial=None, namespace=None):
    out = field_bytes(1, key) + field_varint(2, delta)
    if namespace:
        out += field_bytes(4, namespace)
    if initial is not None:
        out += field_varint(5, initial)
    return out


def memcache_increment_value(resp_bytes):
    """new_value of a MemcacheIncrementResponse, or None on a miss."""
    return parse_fields(resp_bytes).get(1, [None])[0]


# --- transports ------------------------------------------------------------------


class FramedClient:
    """One connection to the framed Unix socket."""

    def __init__(self, path, timeout=10.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)

    def send_frame(self, body):
        self.sock.sendall(struct.pack(">I", len(body)) + body)

    def _recv_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError("the API server closed the connection")
            buf += chunk
        return bytes(buf)

    def recv_frame(self):
        (n,) = struct.unpack(">I", self._recv_exact(4))
        assert n <= MAX_MESSAGE, f"reply frame of {n} bytes"
        return Response(self._recv_exact(n))

    def call(self, service, method, payload=b"", request_id=None):
        self.send_frame(encode_request(service, method, payload, request_id))
        return self.recv_frame()

    def at_eof(self):
        """True when the server closed the connection (within the timeout)."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self):
        self.sock.close()


class HttpClient:
    """One keep-alive HTTP connection to the API port, as the Go library
    uses it."""

    def __init__(self, port, host="127.0.0.1", timeout=10.0):
        self.conn = http.client.HTTPConnection(host, port, timeout=timeout)

    def post(self, body, path="/rpc_http", deadline=None, headers=None):
        h = {
            "Content-Type": "application/octet-stream",
            "X-Google-RPC-Service-Endpoint": "app-engine-apis",
            "X-Google-RPC-Service-Method": "/VMRemoteAPI.CallRemoteAPI",
        }
        if deadline is not None:
            h["X-Google-RPC-Service-Deadline"] = str(deadline)
        h.update(headers or {})
        self.conn.request("POST", path, body=body, headers=h)
        r = self.conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()

    def call(self, service, method, payload=b"", request_id=None, deadline=None):
        status, headers, body = self.post(encode_request(service, method, payload, request_id),
                                          deadline=deadline)
        assert status == 200, (status, body)
        assert headers.get("Content-Type") == "application/octet-stream", headers
        return Response(body)

    def close(self):
        self.conn.close()


# --- the server ----------------------------------------------------------------------

API_LINE = re.compile(r"^Starting API server at: http://([^:\s]+):(\d+)\s*$")
ADMIN_LINE = re.compile(r"^Starting admin server at: (http://\S+)\s*$")


class ApiServer:
    """`appfront api` with every port 0. Its stderr is drained by a thread
    into self.lines for the whole run."""

    def __init__(self, workdir, flags=(), env=None):
        self.workdir = Path(workdir)
        self.flags = list(flags)
        self.env = env  # the server's whole environment; None: the test's
        self.lines = []
        self.port = None
        self.admin = None
        self.info = None
        self._cond = threading.Condition()

    def start(self, timeout=10.0):
        if not APPFRONT_BIN.exists():
            raise AssertionError(f"{APPFRONT_BIN} does not exist: run `make` first")
        self.proc = subprocess.Popen(
            [str(APPFRONT_BIN), "api", "--api_port=0", "--admin_port=0",
             f"--storage_path={self.workdir / 'storage'}"] + self.flags,
            cwd=self.workdir, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, start_new_session=True)
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.port is None or self.admin is None:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError("appfront api did not print its startup lines:\n"
                                         + "\n".join(self.lines))
                self._cond.wait(left)
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=5) as r:
            self.info = json.load(r)
        self.socket_path = self.info["socket"]
        return self

    def _drain(self):
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            with self._cond:
                self.lines.append(line)
                m = API_LINE.match(line)
                if m:
                    self.port = int(m.group(2))
                m = ADMIN_LINE.match(line)
                if m:
                    self.admin = m.group(1)
                self._cond.notify_all()

    def framed(self, timeout=10.0):
        return FramedClient(self.socket_path, timeout)

    def http(self, timeout=10.0):
        return HttpClient(self.port, timeout=timeout)

    def alive(self):
        return self.proc.poll() is None

    def stop(self, timeout=10.0):
        """GET /quit on the admin server; returns the exit status."""
        if self.proc.poll() is None:
            try:
                urllib.request.urlopen(self.admin + "/quit", timeout=5).read()
            except OSError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("appfront api did not exit after /quit")
        return self.proc.returncode
