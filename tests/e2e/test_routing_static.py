"""Static handlers of app.yaml (issue 3): static_dir, static_files with
upload and \\N references, mime_type, expiration and default_expiration,
http_headers, require_matching_file, validators and 304, HEAD, ranges, path
safety, skip_files, and a 100 MiB file served with flat memory.

The app is tests/e2e/apps/routing (see its app.yaml); routing_helpers adds
symlinks, a FIFO, a dot-file and a sparse 100 MiB file."""

import email.utils
import threading
import time

import pytest
import requests

from conftest import RawConn, rss_kib
from routing_helpers import BIG_SIZE, SECRET, start_routing

APPS_FILE = {
    "style": b"body { color: #333; }\n",
    "alphabet": b"0123456789abcdefghijklmnopqrstuvwxyz\n",
}


@pytest.fixture(scope="module")
def af(appfront_module):
    return start_routing(appfront_module)


def get(af, path, **kw):
    kw.setdefault("allow_redirects", False)
    kw.setdefault("timeout", 10)
    return requests.get(af.url(path), **kw)


def raw(af, target, method="GET", extra=""):
    """One request with exactly this target (no client normalization)."""
    with RawConn(af) as c:
        c.send(f"{method} {target} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n"
               .encode("latin-1"))
        return c.read_response(method)


# --- the handler fields -------------------------------------------------------


def test_static_dir_serves_with_type_cache_and_headers(af):
    r = get(af, "/static/style.css")
    assert r.status_code == 200
    assert r.content == APPS_FILE["style"]
    assert r.headers["Content-Type"] == "text/css"
    # default_expiration: 2h.
    assert r.headers["Cache-Control"] == "public, max-age=7200"
    expires = email.utils.parsedate_to_datetime(r.headers["Expires"])
    date = email.utils.parsedate_to_datetime(r.headers["Date"])
    assert abs((expires - date).total_seconds() - 7200) <= 1
    # http_headers of the handler.
    assert r.headers["X-Static-Handler"] == "public"
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert r.headers["ETag"].startswith('"')
    assert r.headers["Accept-Ranges"] == "bytes"
    email.utils.parsedate_to_datetime(r.headers["Last-Modified"])
    assert int(r.headers["Content-Length"]) == len(APPS_FILE["style"])


def test_content_type_by_extension_table(af):
    for path, ctype in [("/static/app.js", "text/javascript"),
                        ("/static/index.html", "text/html"),
                        ("/static/sub/page.html", "text/html"),
                        ("/static/data.unknownext", "application/octet-stream"),
                        ("/img/cat.png", "image/png"),
                        ("/img/dog.gif", "image/gif")]:
        r = get(af, path)
        assert r.status_code == 200, path
        assert r.headers["Content-Type"] == ctype, path


def test_expiration_of_the_handler_wins(af):
    r = get(af, "/short/style.css")
    assert r.status_code == 200
    assert r.headers["Cache-Control"] == "public, max-age=30"
    assert "X-Static-Handler" not in r.headers


def test_static_files_with_backreferences_and_upload(af):
    r = get(af, "/img/cat.png")
    assert r.status_code == 200 and r.content.startswith(b"\x89PNG")
    assert get(af, "/img/dog.gif").content.startswith(b"GIF89a")
    # url matches, the file exists, but upload does not name it.
    assert get(af, "/up/cat.png").status_code == 200
    assert get(af, "/up/notes.txt").status_code == 404


def test_mime_type_and_http_headers_override(af):
    r = get(af, "/typed/style.css")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/x-appfront-test"
    # The handler's own Cache-Control replaces appfront's.
    assert r.headers["Cache-Control"] == "private, max-age=5"


def test_require_matching_file(af):
    r = get(af, "/opt/here.txt")
    assert r.status_code == 200 and r.content == b"optional file\n"
    # Missing: the next handler (a script) gets it; hello's own 404 says so.
    r = get(af, "/opt/missing.txt")
    assert r.status_code == 404
    assert r.content == b"not found: /opt/missing.txt\n"


def test_missing_file_directory_and_fifo_are_404(af):
    for path in ["/static/nope.css", "/static/", "/static/sub", "/static/sub/",
                 "/static/fifo", "/img/nope.png"]:
        r = get(af, path)
        assert r.status_code == 404, path


def test_no_handler_is_404_with_the_default_error_page(af):
    r = get(af, "/no/handler/here")
    assert r.status_code == 404
    assert b"appfront-e2e-default-error" in r.content
    assert r.headers["Content-Type"] == "text/html"


def test_post_to_a_static_file_is_405(af):
    r = requests.post(af.url("/static/style.css"), data=b"x", timeout=10)
    assert r.status_code == 405
    assert r.headers["Allow"] == "GET, HEAD"


def test_keep_alive_across_static_answers(af):
    with RawConn(af) as c:
        c.send(b"GET /static/style.css HTTP/1.1\r\nHost: x\r\n\r\n"
               b"GET /img/cat.png HTTP/1.1\r\nHost: x\r\n\r\n"
               b"GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        a, b, p = c.read_response(), c.read_response(), c.read_response()
    assert (a.status, b.status, p.status) == (200, 200, 200)
    assert a.body == APPS_FILE["style"]
    assert int(p.body) > 0


# --- conditional requests, HEAD, ranges ------------------------------------------


def test_if_none_match_and_if_modified_since_give_304(af):
    r = get(af, "/static/style.css")
    etag, lm = r.headers["ETag"], r.headers["Last-Modified"]
    for headers in [{"If-None-Match": etag},
                    {"If-None-Match": f'"other", W/{etag}'},
                    {"If-None-Match": "*"},
                    {"If-Modified-Since": lm}]:
        r2 = get(af, "/static/style.css", headers=headers)
        assert r2.status_code == 304, headers
        assert r2.content == b""
        assert r2.headers["ETag"] == etag
        assert r2.headers["Cache-Control"] == "public, max-age=7200"
    # A stale tag wins over a fresh date (RFC 9110 section 13.2.2).
    r3 = get(af, "/static/style.css", headers={"If-None-Match": '"stale"',
                                               "If-Modified-Since": lm})
    assert r3.status_code == 200 and r3.content == APPS_FILE["style"]
    r4 = get(af, "/static/style.css",
             headers={"If-Modified-Since": "Sun, 06 Nov 1994 08:49:37 GMT"})
    assert r4.status_code == 200


def test_head_has_the_length_and_no_body(af):
    resp = raw(af, "/static/alphabet.txt", method="HEAD")
    assert resp.status == 200
    assert int(resp.header("Content-Length")) == len(APPS_FILE["alphabet"])
    assert resp.body == b""
    # And nothing else came after the head: the connection is clean.
    with RawConn(af) as c:
        c.send(b"HEAD /static/alphabet.txt HTTP/1.1\r\nHost: x\r\n\r\n"
               b"GET /static/alphabet.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        h = c.read_response("HEAD")
        g = c.read_response()
    assert h.status == 200 and g.body == APPS_FILE["alphabet"]


@pytest.mark.parametrize("spec,start,end", [
    ("bytes=0-9", 0, 9),
    ("bytes=10-", 10, 36),
    ("bytes=-5", 32, 36),
    ("bytes=30-1000", 30, 36),
])
def test_single_range_is_206(af, spec, start, end):
    data = APPS_FILE["alphabet"]
    r = get(af, "/static/alphabet.txt", headers={"Range": spec})
    assert r.status_code == 206
    assert r.content == data[start:end + 1]
    assert r.headers["Content-Range"] == f"bytes {start}-{end}/{len(data)}"


def test_unsatisfiable_range_is_416(af):
    n = len(APPS_FILE["alphabet"])
    for spec in ["bytes=37-", "bytes=100-200", "bytes=-0"]:
        r = get(af, "/static/alphabet.txt", headers={"Range": spec})
        assert r.status_code == 416, spec
        assert r.headers["Content-Range"] == f"bytes */{n}"
        assert "Cache-Control" not in r.headers
    r = get(af, "/static/empty.txt", headers={"Range": "bytes=0-"})
    assert r.status_code == 416


def test_multi_range_and_bad_range_serve_the_whole_file(af):
    data = APPS_FILE["alphabet"]
    for spec in ["bytes=0-1,5-6", "bytes=5-2", "lines=1-2", "bytes=x-y"]:
        r = get(af, "/static/alphabet.txt", headers={"Range": spec})
        assert r.status_code == 200, spec
        assert r.content == data


def test_if_range(af):
    r = get(af, "/static/alphabet.txt")
    etag = r.headers["ETag"]
    r = get(af, "/static/alphabet.txt", headers={"Range": "bytes=0-1", "If-Range": etag})
    assert r.status_code == 206
    r = get(af, "/static/alphabet.txt", headers={"Range": "bytes=0-1", "If-Range": '"old"'})
    assert r.status_code == 200 and len(r.content) == len(APPS_FILE["alphabet"])


def test_range_is_ignored_on_head(af):
    resp = raw(af, "/static/alphabet.txt", method="HEAD", extra="Range: bytes=0-1\r\n")
    assert resp.status == 200


# --- path safety --------------------------------------------------------------------

TRAVERSAL = [
    "/static/../secret.txt",
    "/static/../../outside/passwd",
    "/static/./style.css",
    "/static/%2e%2e/secret.txt",
    "/static/%2E%2E/secret.txt",
    "/static/.%2e/secret.txt",
    "/static/%2e./secret.txt",
    "/static/..%2fsecret.txt",
    "/static/..%2Fsecret.txt",
    "/static/%2e%2e%2fsecret.txt",
    "/static/..%5csecret.txt",
    "/static/..\\secret.txt",
    "/static/style.css%00.png",
    "/static/%00",
    "/static/out",
    "/static/updir/passwd",
    "/static/sub/../../secret.txt",
    "/img/..%2f..%2fsecret.txt",
    "/up/..%2fsecret.txt",
    "/up/../secret.txt",
    "/typed/%2e%2e/secret.txt",
    "/typed/../secret.txt",
    "/static//../secret.txt",
]


@pytest.mark.parametrize("target", TRAVERSAL)
def test_traversal_never_leaves_the_app(af, target):
    resp = raw(af, target)
    assert resp.status == 404, (target, resp)
    assert SECRET not in resp.body
    assert b"TOP SECRET" not in resp.body


def test_symlink_inside_the_app_is_served(af):
    r = get(af, "/static/in")
    assert r.status_code == 200 and r.content.startswith(b"TOP SECRET: app root")


def test_malformed_escape_is_400(af):
    assert raw(af, "/static/%zz").status == 400


def test_skip_files_are_not_served(af):
    assert get(af, "/static/.hidden").status_code == 404
    # Nor through a symlink with an innocent name.
    assert get(af, "/static/dotlink").status_code == 404


def test_allow_skipped_files(appfront):
    af2 = start_routing(appfront, flags=["--allow_skipped_files"])
    r = get(af2, "/static/.hidden")
    assert r.status_code == 200 and r.content == b"a dot-file, skipped\n"
    # Outside stays outside.
    assert raw(af2, "/static/out").status == 404


# --- a big file -------------------------------------------------------------------


def test_100_mib_file_with_flat_memory(af):
    pid = af.proc.pid
    get(af, "/static/style.css")  # warm
    before = rss_kib(pid)
    peak = before
    got = 0
    with requests.get(af.url("/big"), stream=True, timeout=30) as r:
        assert r.status_code == 200
        assert int(r.headers["Content-Length"]) == BIG_SIZE
        assert r.headers["Content-Type"] == "application/octet-stream"
        it = r.iter_content(chunk_size=1 << 20)
        got += len(next(it))
        # Stop reading a while: whatever appfront buffered is now at its peak.
        time.sleep(0.3)
        peak = max(peak, rss_kib(pid))
        for i, chunk in enumerate(it):
            assert chunk.count(0) == len(chunk) or chunk == b"\0" * len(chunk)
            got += len(chunk)
            if i % 16 == 0:
                peak = max(peak, rss_kib(pid))
    peak = max(peak, rss_kib(pid))
    assert got == BIG_SIZE
    # sendfile(2): the file never passes through appfront's memory.
    assert peak - before < 8 * 1024, f"RSS grew from {before} KiB to {peak} KiB"


def test_range_of_the_big_file(af):
    r = get(af, "/big", headers={"Range": f"bytes={BIG_SIZE - 10}-"})
    assert r.status_code == 206
    assert r.content == b"\0" * 10
    assert r.headers["Content-Range"] == f"bytes {BIG_SIZE - 10}-{BIG_SIZE - 1}/{BIG_SIZE}"


def test_concurrent_static_requests(af):
    errors = []

    def worker():
        try:
            with requests.Session() as s:
                for _ in range(20):
                    r = s.get(af.url("/static/alphabet.txt"), timeout=10)
                    if r.status_code != 200 or r.content != APPS_FILE["alphabet"]:
                        errors.append((r.status_code, r.content[:50]))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
