"""The blobstore end to end (docs/services.md, "blobstore"): upload URLs
from the real API server, multipart uploads through the real front end to
the app's success handler, blobs served in place of an app's response,
FetchData and DeleteBlob, and the bad inputs each get their status while
the server keeps serving.
"""

import base64
import email.parser
import email.policy
import hashlib
import http.client
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from apiclient import HttpClient, field_bytes, field_varint, parse_fields

# BlobstoreServiceError codes.
PERMISSION_DENIED = 3
BLOB_NOT_FOUND = 4
DATA_INDEX_OUT_OF_RANGE = 5
BLOB_FETCH_SIZE_TOO_LARGE = 6


@pytest.fixture(scope="module")
def server(appfront_module):
    return appfront_module("blobstore")


def api(af):
    return HttpClient(af.hostport("api")[1])


def upload_url(af, path="/done", total=None, per_blob=None):
    payload = field_bytes(1, path)
    if total is not None:
        payload += field_varint(2, total)
    if per_blob is not None:
        payload += field_varint(3, per_blob)
    r = api(af).call("blobstore", "CreateUploadURL", payload)
    assert r.ok, r
    url = parse_fields(r.response)[1][0].decode()
    host, port = af.hostport("main")
    m = re.fullmatch(r"http://([^/]+)(/_ah/upload/[A-Za-z0-9_-]+)", url)
    assert m, url
    assert m.group(1).endswith(f":{port}"), (url, port)
    return m.group(2)


def fetch(af, key, start, end):
    return api(af).call("blobstore", "FetchData",
                        field_bytes(1, key) + field_varint(2, start & (2**64 - 1)) +
                        field_varint(3, end))


def delete(af, *keys):
    r = api(af).call("blobstore", "DeleteBlob", b"".join(field_bytes(1, k) for k in keys))
    assert r.ok, r


def multipart(parts, boundary="----appfrontTestBoundary7MA4YWxk"):
    """parts: (name, filename or None, content type or None, bytes)."""
    out = b""
    for name, filename, ctype, data in parts:
        out += f"--{boundary}\r\n".encode()
        disp = f'form-data; name="{name}"'
        if filename is not None:
            disp += f'; filename="{filename}"'
        out += f"Content-Disposition: {disp}\r\n".encode()
        if ctype:
            out += f"Content-Type: {ctype}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", out


def request(af, method, path, body=None, headers=None):
    host, port = af.hostport("main")
    c = http.client.HTTPConnection(host, port, timeout=10)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
    finally:
        c.close()


def records(af):
    path = af.app_dirs[0].parent / "requests.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


REPO = Path(__file__).resolve().parents[2]


def go_parse_upload(content_type, body):
    """The official Go library's blobstore.ParseUpload on a request the
    success handler received (tests/go/src/parseupload)."""
    go = shutil.which("go")
    gocode = Path("/usr/share/gocode/src/google.golang.org/appengine/blobstore")
    if not go or not gocode.is_dir():
        pytest.skip("go or the official Go library is not installed")
    build = Path(os.environ.get("APPFRONT_BUILD", REPO / "build"))
    env = dict(os.environ, GO111MODULE="off", GOPROXY="off", GOFLAGS="",
               GOPATH=f"{REPO / 'tests' / 'go'}:/usr/share/gocode",
               GOCACHE=str(build / "go-cache"))
    r = subprocess.run([go, "run", "parseupload"], input=json.dumps(
        {"content_type": content_type, "body": body}).encode(), env=env,
        capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode()
    return json.loads(r.stdout)


def still_serving(af):
    assert request(af, "GET", "/")[2] == b"ok"


def test_upload_serve_fetch_delete(server):
    path = upload_url(server, "/done?tag=one")
    big = os.urandom(300_000)
    ctype, body = multipart([
        ("title", None, None, b"holiday \xc3\xa9t\xc3\xa9"),
        ("photo", "pic.bin", "image/png", big),
        ("notes", "notes.txt", "text/plain", b"hello blobstore"),
        ("empty", "", "application/octet-stream", b""),
    ])
    before = len(records(server))
    status, headers, got = request(server, "POST", path, body, {"Content-Type": ctype})
    assert (status, got) == (200, b"stored"), (status, got)
    recs = records(server)
    assert len(recs) == before + 1
    rec = recs[-1]
    assert rec["method"] == "POST" and rec["path"] == "/done?tag=one"
    hdrs = {k.lower(): v for k, v in rec["headers"]}
    assert hdrs["content-type"].startswith("multipart/form-data; boundary=")
    assert int(hdrs["content-length"]) == len(rec["body"].encode("latin-1"))

    # The rewritten form, parsed as a mail parser (as App Engine's
    # libraries do): the field as sent, each file as message/external-body.
    msg = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(
        b"Content-Type: " + hdrs["content-type"].encode() + b"\r\n\r\n" +
        rec["body"].encode("latin-1"))
    parts = msg.get_payload()
    assert len(parts) == 3, [p.get("Content-Disposition") for p in parts]  # no empty input
    assert parts[0].get_param("name", header="content-disposition") == "title"
    assert parts[0].get_payload(decode=True) == b"holiday \xc3\xa9t\xc3\xa9"
    keys = {}
    for part, name, data, ctype_in in ((parts[1], "photo", big, "image/png"),
                                       (parts[2], "notes", b"hello blobstore", "text/plain")):
        assert part.get_content_type() == "message/external-body"
        assert part.get_param("access-type") == "X-AppEngine-BlobKey"
        key = part.get_param("blob-key")
        assert key and re.fullmatch(r"[A-Za-z0-9_=-]+", key)
        assert part.get_param("name", header="content-disposition") == name
        inner = part.get_payload()[0] if part.is_multipart() else \
            email.parser.Parser().parsestr(part.get_payload())
        assert inner["Content-Type"] == ctype_in
        assert int(inner["Content-Length"]) == len(data)
        md5_hex = hashlib.md5(data).hexdigest()
        assert base64.urlsafe_b64decode(inner["Content-MD5"]).decode() == md5_hex
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}",
                            inner["X-AppEngine-Upload-Creation"])
        keys[name] = key

    # The official library reads the same form back.
    parsed = go_parse_upload(hdrs["content-type"], rec["body"])
    assert parsed["other"] == {"title": ["holiday \u00e9t\u00e9"]}
    assert sorted(parsed["blobs"]) == ["notes", "photo"]
    for name, data, ctype_in, fname in (("photo", big, "image/png", "pic.bin"),
                                        ("notes", b"hello blobstore", "text/plain",
                                         "notes.txt")):
        (b,) = parsed["blobs"][name]
        assert b["BlobKey"] == keys[name] and b["Size"] == len(data)
        assert b["ContentType"] == ctype_in and b["Filename"] == fname
        assert b["MD5"] == hashlib.md5(data).hexdigest()
        assert b["CreationTime"].startswith("20")

    # Served in place of the app's body; the header never reaches the client.
    k = keys["photo"]
    status, headers, got = request(server, "GET", f"/serve?key={k}")
    assert status == 200 and got == big
    assert headers["content-type"] == "image/png"
    assert headers["content-length"] == str(len(big))
    assert "x-appengine-blobkey" not in headers
    assert headers["x-served-by"] == "app"  # the app's other headers stay
    status, headers, got = request(server, "HEAD", f"/serve?key={k}")
    assert status == 200 and got == b"" and headers["content-length"] == str(len(big))
    # The app's own Content-Type wins over the blob's.
    status, headers, got = request(server, "GET", f"/serve?key={k}&ctype=application/x-mine")
    assert status == 200 and headers["content-type"] == "application/x-mine"

    # Ranges: the request's Range, then the app's X-AppEngine-BlobRange.
    status, headers, got = request(server, "GET", f"/serve?key={k}",
                                   headers={"Range": "bytes=10-19"})
    assert status == 206 and got == big[10:20]
    assert headers["content-range"] == f"bytes 10-19/{len(big)}"
    status, headers, got = request(server, "GET", f"/serve?key={k}",
                                   headers={"Range": "bytes=-5"})
    assert status == 206 and got == big[-5:]
    status, headers, got = request(server, "GET", f"/serve?key={k}&range=bytes=299990-")
    assert status == 206 and got == big[299990:]
    assert headers["content-range"] == f"bytes 299990-{len(big) - 1}/{len(big)}"
    status, headers, got = request(server, "GET", f"/serve?key={k}",
                                   headers={"Range": "bytes=999999-"})
    assert status == 416 and got == b""
    assert headers["content-range"] == f"bytes */{len(big)}"
    # Unknown blob, or a blob response that is not 200: dev_appserver's 500.
    status, headers, got = request(server, "GET", "/serve?key=AAAAAAAAAAAAAAAAAAAAAA")
    assert status == 500 and got == b""
    status, _, _ = request(server, "GET", f"/serve?key={k}&status=404")
    assert status == 500

    # FetchData: inclusive ranges, App Engine's errors.
    r = fetch(server, k, 0, 99)
    assert r.ok and parse_fields(r.response)[1000][0] == big[:100]
    r = fetch(server, k, 299_900, 400_000)
    assert r.ok and parse_fields(r.response)[1000][0] == big[299_900:]
    r = fetch(server, k, 5, 4)
    assert r.app_error[0] == DATA_INDEX_OUT_OF_RANGE, r
    r = fetch(server, k, 0, 1_015_808)
    assert r.app_error[0] == BLOB_FETCH_SIZE_TOO_LARGE, r
    r = fetch(server, "nosuchblob", 0, 1)
    assert r.app_error[0] == BLOB_NOT_FOUND, r

    # Delete: the entity and the file go.
    files = list((server.workdir / "storage" / "blobs").glob(k))
    assert len(files) == 1
    delete(server, k, keys["notes"])
    assert not files[0].exists()
    r = fetch(server, k, 0, 1)
    assert r.app_error[0] == BLOB_NOT_FOUND, r
    assert request(server, "GET", f"/serve?key={k}")[0] == 500
    still_serving(server)


def test_session_is_single_use_and_unknown_is_404(server):
    path = upload_url(server)
    ctype, body = multipart([("f", "a.txt", "text/plain", b"one")])
    assert request(server, "POST", path, body, {"Content-Type": ctype})[0] == 200
    status, _, got = request(server, "POST", path, body, {"Content-Type": ctype})
    assert status == 404 and b"upload session" in got, got
    status, _, got = request(server, "POST", "/_ah/upload/nosuchsession", body,
                             {"Content-Type": ctype})
    assert status == 404 and b"never created" in got, got
    still_serving(server)


def test_bad_uploads_get_clear_errors(server):
    ctype, body = multipart([("f", "a.txt", "text/plain", b"x" * 100)])
    # Not multipart.
    path = upload_url(server)
    status, _, got = request(server, "POST", path, b"a=b",
                             {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 400 and b"multipart/form-data" in got, got
    # Not POST.
    status, _, got = request(server, "GET", path)
    assert status == 405, (status, got)
    # The body ends before its closing boundary.
    status, _, got = request(server, "POST", path, body[:-30], {"Content-Type": ctype})
    assert status == 400 and b"closing boundary" in got, got
    # Garbage after a boundary.
    bad = b"--B\r\nContent-Disposition: form-data; name=x\r\n\r\nv\r\n--Bxx"
    status, _, got = request(server, "POST", path, bad,
                             {"Content-Type": "multipart/form-data; boundary=B"})
    assert status == 400 and b"Malformed" in got, got
    # A boundary RFC 2046 does not allow.
    status, _, got = request(server, "POST", path, body,
                             {"Content-Type": "multipart/form-data; boundary=" + "x" * 80})
    assert status == 400, (status, got)
    # None of those used the session up: it still takes one good upload.
    assert request(server, "POST", path, body, {"Content-Type": ctype})[0] == 200

    # Limits of the upload URL: 413 with the reason.
    path = upload_url(server, per_blob=50)
    status, _, got = request(server, "POST", path, body, {"Content-Type": ctype})
    assert status == 413 and b"max_upload_size_per_blob_bytes" in got, got
    path = upload_url(server, total=150)
    ctype2, body2 = multipart([("f", "a.txt", None, b"x" * 100), ("g", "b.txt", None, b"y" * 100)])
    status, _, got = request(server, "POST", path, body2, {"Content-Type": ctype2})
    assert status == 413 and b"max_upload_size_bytes" in got, got
    # The front end's own body limit still applies.
    still_serving(server)
    # Nothing of the refused uploads is left behind.
    assert list((server.workdir / "storage" / "blobs" / "tmp").iterdir()) == []


def test_upload_refusals_from_the_api(server):
    r = api(server).call("blobstore", "CreateUploadURL",
                         field_bytes(1, "/done") + field_bytes(4, "bucket"))
    assert r.app_error[0] == PERMISSION_DENIED and "Cloud Storage" in r.app_error[1], r
    r = api(server).call("blobstore", "CreateUploadURL", field_bytes(1, "done"))
    assert r.app_error is not None, r


def test_blobstore_path_flag(appfront, tmp_path):
    where = tmp_path / "myblobs"
    af = appfront("blobstore", flags=[f"--blobstore_path={where}"])
    path = upload_url(af)
    ctype, body = multipart([("f", "a.txt", "text/plain", b"kept here")])
    assert request(af, "POST", path, body, {"Content-Type": ctype})[0] == 200
    files = [p for p in where.iterdir() if p.is_file()]
    assert len(files) == 1 and files[0].read_bytes() == b"kept here"
    assert (where / "tmp").is_dir()
