"""The blobstore app: an instance for the blobstore tests.

It serves HTTP/1.1 on the Unix socket in APPFRONT_HTTP_SOCKET, a thread per
connection:

  GET /          200 "ok" (readiness)
  POST /done...  the upload success path: the request (method, path,
                 headers, body) is appended as one JSON object to
                 requests.jsonl in the directory above the app directory,
                 and answered 200 "stored"
  /serve?key=K   a blob-serving response: X-AppEngine-BlobKey K, and from
                 the query: range (X-AppEngine-BlobRange), ctype
                 (Content-Type; default the "auto" type Go's blobstore.Send
                 sets), status; its own body must never reach the client
"""

import json
import os
import socketserver
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler

LOG_LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def address_string(self):
        return "unix"

    def answer(self, status, body=b"", ctype="text/plain", extra=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        for k, v in extra:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        url = urllib.parse.urlsplit(self.path)
        q = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
        if url.path == "/" and self.command == "GET":
            return self.answer(200, b"ok")
        if url.path.startswith("/done"):
            record = {
                "method": self.command,
                "path": self.path,
                "headers": [[k, v] for k, v in self.headers.items()],
                "body": body.decode("latin-1"),
            }
            with LOG_LOCK:
                with open("../requests.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
            return self.answer(200, b"stored")
        if url.path == "/serve":
            extra = [("X-AppEngine-BlobKey", q.get("key", "")), ("X-Served-By", "app")]
            if "range" in q:
                extra.append(("X-AppEngine-BlobRange", q["range"]))
            ctype = q.get("ctype", "application/vnd.google.appengine.auto")
            return self.answer(int(q.get("status", "200")), b"the app's own body", ctype, extra)
        return self.answer(404, b"no such page")

    do_GET = do_POST = do_HEAD = handle_any


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
