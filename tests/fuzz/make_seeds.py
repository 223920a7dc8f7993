#!/usr/bin/env python3
"""Writes the committed seed corpora of tests/fuzz/corpus/ from the tables
below, so a seed is reviewed as text here rather than as a binary file.
Run from anywhere: tests/fuzz/make_seeds.py. Files are named by the hash of
their content, as libFuzzer names what it adds."""

import hashlib
import struct
from pathlib import Path

HERE = Path(__file__).resolve().parent

# ---- fuzz_request: byte 0 is the setup (see fuzz_request.c) ---------------

INSTANCE = 0x00
DIRECT = 0x01
UNAVAILABLE = 0x02
QUEUED = 0x03
SMALL_BODY = 0x04
TRICKLE = 0x08
CHUNKED_OUT = 0x10
INST_CLOSE = 0x20
INST_TRICKLE = 0x40
MARK = b"\n#instance#\n"

H = b"Host: a\r\n"
requests = [
    b"GET / HTTP/1.1\r\n" + H + b"\r\n",
    b"GET /headers?x=1 HTTP/1.1\r\n" + H + b"X-AppEngine-User-Email: spoof@x\r\nCookie: dev_appserver_login=a@b.c:True:42\r\n\r\n",
    b"HEAD / HTTP/1.1\r\n" + H + b"\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\nhello",
    b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nTrailer: x\r\n\r\n",
    b"POST /echo HTTP/1.1\r\n" + H + b"Expect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
    b"GET / HTTP/1.1\r\n" + H + b"\r\nGET /2 HTTP/1.1\r\n" + H + b"\r\nHEAD /3 HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n",
    # Smuggling shapes: each must be refused or framed one way only.
    b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n" + H + b"\r\n",
    b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
    b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
    b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n-1\r\n\r\n",
    b"GET / HTTP/1.1\n" + b"Host: a\n\n",
    b"GET / HTTP/1.1\rHost: a\r\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
    b"FOO / HTTP/1.1\r\n" + H + b"\r\n",
    b"CONNECT a:443 HTTP/1.1\r\n" + H + b"\r\n",
    b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n",
    b"GET http://a/x HTTP/1.1\r\n" + H + b"\r\n",
    b"GET / HTTP/1.1\r\n" + H + b"Upgrade: websocket\r\nConnection: Upgrade, X-Foo\r\nX-Foo: 1\r\n\r\n",
    b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 100\r\n\r\n" + b"a" * 100,
]
replies = [
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.0 200 OK\r\n\r\nclose-delimited",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nConnection: close, X-Drop\r\nX-Drop: 1\r\nKeep-Alive: 5\r\n\r\nbody",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
    b"not http at all\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
    b"HTTP/1.1 999 Odd\r\nContent-Length: 0\r\n\r\n",
]

seeds = {"request": [], "api": [], "appyaml": [], "multipart": []}
for i, r in enumerate(requests):
    for setup in (INSTANCE, (DIRECT | TRICKLE), (UNAVAILABLE if i % 3 == 0 else QUEUED),
                  INSTANCE | SMALL_BODY | CHUNKED_OUT | INST_CLOSE):
        seeds["request"].append(bytes([setup]) + r)
for i, rep in enumerate(replies):
    req = requests[i % len(requests)]
    seeds["request"].append(bytes([INSTANCE | INST_TRICKLE]) + req + MARK + rep)
    seeds["request"].append(bytes([INSTANCE]) + requests[0] + requests[2] + MARK + rep)

# ---- fuzz_api: byte 0 bit 0 = HTTP (1) or framed (0) ----------------------


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(num, data):
    return varint(num << 3 | 2) + varint(len(data)) + data


def envelope(service, method, req=b"", rid=None):
    e = field(2, service) + field(3, method) + field(4, req)
    if rid is not None:
        e += field(5, rid)
    return e


calls = [
    # MemcacheSetRequest's items are a proto2 group: start tag 0x0b, end 0x0c.
    envelope(b"memcache", b"Set", b"\x0b" + field(2, b"k") + field(3, b"v") + b"\x0c"),
    envelope(b"memcache", b"Delete", b"\x0b" + field(2, b"k") + b"\x0c"),
    envelope(b"memcache", b"Get", field(1, b"k")),
    envelope(b"memcache", b"Increment", field(1, b"n") + bytes([0x10, 0x05])),
    envelope(b"memcache", b"FlushAll"),
    envelope(b"memcache", b"Stats"),
    envelope(b"user", b"CreateLoginURL", field(1, b"/dest")),
    envelope(b"user", b"CreateLogoutURL", field(1, b"/dest")),
    envelope(b"app_identity_service", b"GetDefaultVersionHostname"),
    envelope(b"app_identity_service", b"GetServiceAccountName"),
    envelope(b"capability_service", b"IsEnabled", field(1, b"datastore_v3")),
    envelope(b"modules", b"GetModules"),
    envelope(b"modules", b"GetNumInstances"),
    envelope(b"logservice", b"Flush", field(1, b"\x0a\x05hello")),
    envelope(b"logservice", b"Read", b"", b"rid"),
    envelope(b"mail", b"Send", field(1, field(1, b"a@b") + field(3, b"subj"))),
    envelope(b"nosuch", b"Method"),
    envelope(b"memcache", b"NoSuch"),
    b"\xff\xff\xff",
    b"",
]
for c in calls:
    seeds["api"].append(b"\x00" + struct.pack(">I", len(c)) + c)
    http = (b"POST /rpc_http HTTP/1.1\r\nHost: a\r\nX-Google-RPC-Service-Deadline: 5\r\n"
            b"Content-Length: " + str(len(c)).encode() + b"\r\n\r\n" + c)
    seeds["api"].append(b"\x01" + http)
seeds["api"] += [
    b"\x00" + struct.pack(">I", len(calls[0])) + calls[0] + struct.pack(">I", len(calls[1])) + calls[1],
    b"\x00\x7f\xff\xff\xff",
    b"\x00\x00\x00\x00\x00",
    b"\x01GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"\x01POST /clear?stub=memcache HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    b"\x01POST /clear HTTP/1.0\r\n\r\n",
    b"\x01POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
    + hex(len(calls[1]))[2:].encode() + b"\r\n" + calls[1] + b"\r\n0\r\n\r\n",
    b"\x01POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999\r\n\r\n",
    b"\x01PUT / HTTP/1.1\r\nHost: a\r\n\r\nGET /x HTTP/1.1\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n",
    b"\x01POST / HTTP/1.1\r\nHost: a\r\nX-Google-RPC-Service-Deadline: nan\r\nContent-Length: 0\r\n\r\n",
]

# ---- fuzz_appyaml: the file itself ----------------------------------------

seeds["appyaml"] = [
    b"runtime: native\nentrypoint: ./app\n",
    b"""application: guestbook
service: default
version: 2
runtime: go121
threadsafe: true
entrypoint: exec ./app --port $PORT
env_variables:
  A: "1"
  B: two
default_expiration: "4d 5h"
skip_files:
- ^(.*/)?\\.git/.*
- .*\\.bak$
handlers:
- url: /static
  static_dir: static
  expiration: "1d"
  http_headers:
    X-Foo: bar
- url: /(.*\\.(png|jpg))$
  static_files: img/\\1
  upload: img/.*\\.(png|jpg)$
  mime_type: image/png
  require_matching_file: true
  application_readable: false
- url: /admin/.*
  script: auto
  login: admin
  auth_fail_action: unauthorized
  secure: always
  redirect_http_response_code: 301
- url: /.*
  script: _go_app
error_handlers:
- file: err.html
- error_code: over_quota
  file: quota.html
automatic_scaling:
  max_concurrent_requests: 50
  min_instances: 1
  max_instances: 5
""",
    b"runtime: native\nmanual_scaling:\n  instances: 3\n",
    b"runtime: native\nbasic_scaling:\n  max_instances: 2\n  idle_timeout: 5m\n",
    b"runtime: native\nbasic_scaling:\n  max_instances: 2\n  idle_timeout: 1h\n",
    b"runtime: native\nautomatic_scaling:\n  min_idle_instances: automatic\n  max_idle_instances: 2\n",
    b"runtime: native\nthreadsafe: no\nhandlers:\n- url: /(\n  script: auto\n",
    b"runtime: [1, 2]\n",
    b"runtime: native\nhandlers: {a: b}\n",
    b"&a runtime: *a\n",
    b"a: &x [*x]\n",
    b"runtime: native\nenv_variables:\n  ? [complex]\n  : key\n",
    b"%YAML 1.1\n---\nruntime: native\n...\n---\nruntime: other\n",
    b"runtime: \"\\u0000native\"\n",
    b"runtime: native\nautomatic_scaling:\n  max_concurrent_requests: 99999999999999999999\n",
    b"\t runtime: native",
    b"runtime: !!binary aGVsbG8=\n",
]


# multipart: a Content-Type value, a newline, the body (fuzz_multipart.c).
MP = b"multipart/form-data; boundary=XyZ\n"
seeds["multipart"] += [
    MP + b"--XyZ\r\nContent-Disposition: form-data; name=\"t\"\r\n\r\nhello\r\n--XyZ--\r\n",
    MP + b"--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.txt\"\r\n"
    b"Content-Type: text/plain\r\n\r\nline\r\n--XyY\r\n-\r\r\n\r\n--Xy\r\n--XyZ--",
    MP + b"preamble\r\n--XyZ  \r\n\r\nno headers\r\n--XyZ\r\n\r\n\r\n--XyZ--epilogue",
    b"multipart/form-data; boundary=\"a b:c\"\n--a b:c\r\nA: 1\r\n\r\nx\r\n--a b:c--",
    b"Multipart/Form-Data;boundary=b\n--b\r\ncontent-disposition: form-data; name=e; filename=\"q\\\"x\"\r\n\r\n\r\n--b--",
    MP + b"--XyZ\r\nA: 1\r\n folded\r\n\r\n",
    MP + b"--XyZ\r\nA: 1\r\n\r\nx\r\n--XyZzz",
    MP + b"--XyZ--",
    MP + b"--XyZ\rx",
    b"multipart/mixed; boundary=b\n--b--",
    b"multipart/form-data\n",
]


def main():
    for target, items in seeds.items():
        d = HERE / "corpus" / target
        d.mkdir(parents=True, exist_ok=True)
        for data in items:
            (d / hashlib.sha1(data).hexdigest()).write_bytes(data)
        print(f"{target}: {len(items)} seeds in {d}")


if __name__ == "__main__":
    main()
