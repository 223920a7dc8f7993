"""The background app: an instance for the system service's tests.

It serves HTTP/1.1 on the Unix socket in APPFRONT_HTTP_SOCKET, a thread per
connection, and calls the API over the framed socket in APPFRONT_API_SOCKET
(4-byte big-endian length, then a remote_api.Request written out by hand).
Every request except GET / is appended, as one JSON object (method, path,
headers, pid, and when it ended), to requests.jsonl in the directory above
the app directory.

  GET /                  200 "ok" (readiness)
  GET /pid               this process's id
  GET /pidslow           the same after 200 ms (to see two instances busy)
  GET /start[?sleep=MS]  (after MS ms) system.StartBackgroundRequest with this request's
                         API ticket: 200 {"id": ..., "pid": ...}, or 500
                         {"app_error": [code, detail]} / {"rpc_error": ...}
  GET /stats             system.GetSystemStats: 200 with the raw fields
  GET /_ah/background    sleeps BG_SLEEP_MS (environment, default 0), 200
"""

import json
import os
import socket
import socketserver
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler

LOG_LOCK = threading.Lock()


def varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | 0x80 if v else b)
        if not v:
            return bytes(out)


def field(num, data):
    if isinstance(data, str):
        data = data.encode()
    return varint(num << 3 | 2) + varint(len(data)) + data


def fields(buf):
    """{field number: [values]}: varints as ints, length-delimited as bytes,
    fixed64 as 8 raw bytes."""
    out, pos = {}, 0
    while pos < len(buf):
        key, shift = 0, 0
        while True:
            b = buf[pos]
            pos += 1
            key |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, shift = 0, 0
            while True:
                b = buf[pos]
                pos += 1
                v |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
        elif wt == 1:
            v, pos = buf[pos:pos + 8], pos + 8
        elif wt == 2:
            n, shift = 0, 0
            while True:
                b = buf[pos]
                pos += 1
                n |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
            v, pos = buf[pos:pos + n], pos + n
        else:
            raise ValueError(f"wire type {wt}")
        out.setdefault(num, []).append(v)
    return out


def api_call(service, method, payload=b"", request_id=None):
    """(response bytes or None, app_error or None, rpc_error or None)."""
    req = field(2, service) + field(3, method) + field(4, payload)
    if request_id:
        req += field(5, request_id)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(os.environ["APPFRONT_API_SOCKET"])
        s.sendall(struct.pack(">I", len(req)) + req)
        buf = b""
        while len(buf) < 4 or len(buf) < 4 + struct.unpack(">I", buf[:4])[0]:
            chunk = s.recv(65536)
            if not chunk:
                raise EOFError("the API server closed the connection")
            buf += chunk
    f = fields(buf[4:])
    errs = []
    for num in (3, 5):
        if num in f:
            e = fields(f[num][0])
            errs.append([e[1][0], e.get(2, [b""])[0].decode()])
        else:
            errs.append(None)
    return f.get(1, [None])[0], errs[0], errs[1]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def address_string(self):
        return "unix"

    def answer(self, status, body=b"", ctype="text/plain"):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def record(self, **extra):
        rec = {"method": self.command, "path": self.path,
               "headers": [[k, v] for k, v in self.headers.items()],
               "pid": os.getpid(), "time": time.time()}
        rec.update(extra)
        with LOG_LOCK:
            with open("../requests.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")

    def do_GET(self):
        if self.path == "/":
            return self.answer(200, "ok")
        if self.path == "/pid":
            return self.answer(200, str(os.getpid()))
        if self.path == "/pidslow":
            time.sleep(0.2)
            return self.answer(200, str(os.getpid()))
        self.record()
        if self.path.startswith("/start"):
            if "?sleep=" in self.path:
                time.sleep(int(self.path.split("?sleep=")[1]) / 1000)
            resp, app_error, rpc_error = api_call(
                "system", "StartBackgroundRequest",
                request_id=self.headers.get("X-AppEngine-API-Ticket"))
            if app_error or rpc_error:
                return self.answer(500, json.dumps({"app_error": app_error,
                                                    "rpc_error": rpc_error}))
            bg_id = fields(resp)[1][0].decode()
            return self.answer(200, json.dumps({"id": bg_id, "pid": os.getpid()}),
                               "application/json")
        if self.path == "/stats":
            resp, app_error, rpc_error = api_call("system", "GetSystemStats")
            if app_error or rpc_error:
                return self.answer(500, json.dumps([app_error, rpc_error]))
            out = {}
            for num, name in ((1, "cpu"), (2, "memory")):
                stat = fields(fields(resp)[num][0])
                out[name] = {str(k): struct.unpack("<d", v[0])[0] for k, v in stat.items()}
            return self.answer(200, json.dumps(out), "application/json")
        if self.path == "/_ah/background":
            time.sleep(int(os.environ.get("BG_SLEEP_MS", "0")) / 1000)
            self.record(ended=True)
            return self.answer(200, "background done")
        return self.answer(200, "done")


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def main():
    path = os.environ["APPFRONT_HTTP_SOCKET"]
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    with Server(path, Handler) as srv:
        srv.serve_forever()


if __name__ == "__main__":
    main()
