"""An app instance that fails on purpose, for the fault tests.

It serves HTTP/1.1 on the Unix socket in APPFRONT_HTTP_SOCKET, one thread
per connection, and does what the path says:

  GET /                 200 "Hello from the fault app"
  GET /pid              its process id
  GET /hang             reads the request, never answers (the connection stays open)
  GET /garbage?kind=K   writes a broken response (see GARBAGE), then closes
  GET /stream?ms=N      a chunked response, one 1 KiB chunk every N ms, forever
  GET /die_mid_body     head with Content-Length: 100000, 1000 bytes, then exit(3)
  GET /die_mid_chunks   head, three chunks, then exit(3)
  GET /die              exit(3) without answering

Every request line it reads is appended to requests.log in its working
directory (the app directory), so a test can tell which requests reached it.
"""

import os
import socket
import sys
import threading
import time
import urllib.parse

GARBAGE = {
    "text": b"this is not HTTP at all\r\n\r\n",
    "status": b"HTTP/1.1 2xx Broken\r\nContent-Length: 0\r\n\r\n",
    "header": b"HTTP/1.1 200 OK\r\nBad Header Without Colon\r\nContent-Length: 0\r\n\r\n",
    "cl_te": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "two_cl": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "neg_cl": b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    "bad_chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "huge_head": b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (80 * 1024) + b"\r\nContent-Length: 0\r\n\r\n",
    "switch": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: evil\r\nConnection: upgrade\r\n\r\n",
    "nul": b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n",
    "ws_colon": b"HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello",
    "100_ws_colon": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello",
    "binary": bytes(range(256)) * 4,
    # Statuses that never have a body (RFC 9112 §6.3), sent with one.
    "304_body": b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n0123456789",
    "204_body": b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "100_body": b"HTTP/1.1 100 Continue\r\nContent-Length: 5\r\n\r\nhello"
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "empty": b"",
}

LOG = open("requests.log", "ab", buffering=0)
LOG_LOCK = threading.Lock()


def reply(conn, status, body, extra=b""):
    conn.sendall(b"HTTP/1.1 %d X\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n%s"
                 % (status, len(body), extra, body))


def read_request(f):
    """The request line and headers; drains a Content-Length body. None at EOF."""
    line = f.readline(65536)
    if not line:
        return None, None
    headers = {}
    while True:
        h = f.readline(65536)
        if h in (b"\r\n", b"\n", b""):
            break
        name, _, value = h.partition(b":")
        headers[name.strip().lower()] = value.strip()
    n = int(headers.get(b"content-length", b"0") or 0)
    if n:
        f.read(n)
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        while True:
            size = int(f.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while f.readline() not in (b"\r\n", b"\n", b""):
                    pass
                break
            f.read(size + 2)
    return line, headers


def serve(conn):
    f = conn.makefile("rb")
    try:
        while True:
            line, headers = read_request(f)
            if line is None:
                return
            with LOG_LOCK:
                LOG.write(line.rstrip(b"\r\n") + b"\n")
            parts = line.split()
            target = urllib.parse.urlsplit(parts[1].decode("latin-1") if len(parts) > 1 else "/")
            q = dict(urllib.parse.parse_qsl(target.query))
            path = target.path
            if path == "/":
                reply(conn, 200, b"Hello from the fault app\n")
            elif path == "/pid":
                reply(conn, 200, str(os.getpid()).encode())
            elif path == "/hang":
                while True:
                    time.sleep(3600)
            elif path == "/garbage":
                conn.sendall(GARBAGE[q.get("kind", "text")])
                conn.shutdown(socket.SHUT_WR)
                return
            elif path == "/stream":
                ms = int(q.get("ms", "50"))
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n")
                while True:
                    conn.sendall(b"400\r\n" + b"s" * 1024 + b"\r\n")
                    time.sleep(ms / 1000)
            elif path == "/die_mid_body":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"d" * 1000)
                time.sleep(0.2)
                sys.stderr.write("faultapp: dying mid-body on purpose\n")
                os._exit(3)
            elif path == "/die_mid_chunks":
                conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                             + b"3\r\nabc\r\n" * 3)
                time.sleep(0.2)
                sys.stderr.write("faultapp: dying mid-chunks on purpose\n")
                os._exit(3)
            elif path == "/die":
                sys.stderr.write("faultapp: dying on purpose\n")
                os._exit(3)
            else:
                reply(conn, 404, b"not found\n")
    except (OSError, ValueError):
        return
    finally:
        try:
            conn.close()
        except OSError:
            pass


def main():
    path = os.environ["APPFRONT_HTTP_SOCKET"]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(512)
    sys.stderr.write(f"faultapp: listening on {path} (pid {os.getpid()})\n")
    while True:
        conn, _ = s.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


main()
