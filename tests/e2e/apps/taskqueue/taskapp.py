"""The task app: an instance for the task queue tests.

It serves HTTP/1.1 on the Unix socket in APPFRONT_HTTP_SOCKET, a thread per
connection. Every request except GET / is appended, as one JSON object
(method, path, headers, body), to requests.jsonl in the directory above the
app directory (outside it, so the file watcher does not restart the app for
it), so a test sees exactly what reached the app. The
answer depends on the path:

  GET /                   200 "ok" (readiness)
  /ok..., /_ah/queue/...  200
  /admin/...              200 (app.yaml makes these login: admin)
  /fail...                500
  /flaky?n=N              500 while X-AppEngine-TaskRetryCount < N, then 200
  /slow?ms=N              200 after N ms
  /headers                200, the request's headers as JSON
"""

import json
import os
import socket
import socketserver
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler

LOG_LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def address_string(self):
        return "unix"

    def answer(self, status, body=b"", ctype="text/plain"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        if url.path == "/" and self.command == "GET":
            return self.answer(200, b"ok")
        record = {
            "method": self.command,
            "path": self.path,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body": body.decode("latin-1"),
            "time": time.time(),
        }
        with LOG_LOCK:
            with open("../requests.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
        p = url.path
        if p.startswith("/fail"):
            return self.answer(500, b"failing on purpose")
        if p.startswith("/flaky"):
            want = int(query.get("n", ["1"])[0])
            retry = int(self.headers.get("X-AppEngine-TaskRetryCount") or 0)
            return self.answer(500 if retry < want else 200, b"flaky")
        if p.startswith("/slow"):
            time.sleep(int(query.get("ms", ["100"])[0]) / 1000)
            return self.answer(200, b"slow")
        if p.startswith("/headers"):
            return self.answer(200, json.dumps(record["headers"]).encode(), "application/json")
        return self.answer(200, b"done")

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = handle_any


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
