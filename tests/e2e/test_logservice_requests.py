"""logservice Read returns real request logs: every request the front end
finished (forwarded to an instance, or answered by appfront itself: static
files, redirects, errors) is a record that Read joins with the app log lines
carrying its request id (docs/services.md, "logservice")."""

import json
import re
import time

from apiclient import HttpClient, field_bytes, field_varint, parse_fields

# RequestLog field numbers (proto/logservice.proto).
APP_ID, VERSION_ID, REQUEST_ID, IP, NICKNAME = 1, 2, 3, 4, 5
START, END, LATENCY, MCYCLES = 6, 7, 8, 9
METHOD, RESOURCE, HTTP_VERSION, STATUS, SIZE = 10, 11, 12, 13, 14
REFERRER, USER_AGENT, URL_MAP_ENTRY, COMBINED, HOST = 15, 16, 17, 18, 20
FINISHED, LINE, MODULE_ID = 27, 29, 37


def api_client(af):
    _, port = af.hostport("api")
    return HttpClient(port)


def read_logs(af, request_ids=(), app_logs=True, count=None, extra=b""):
    """logservice.Read: a list of {field: [values]} RequestLogs."""
    req = field_bytes(1, "e2e-app")
    for rid in request_ids:
        req += field_bytes(6, rid)
    if app_logs:
        req += field_varint(10, 1)
    if count is not None:
        req += field_varint(9, count)
    req += extra
    c = api_client(af)
    try:
        r = c.call("logservice", "Read", req)
    finally:
        c.close()
    assert r.ok, r
    return [parse_fields(b) for b in parse_fields(r.response or b"").get(1, [])]


def wait_logs(af, pred, *args, **kw):
    """read_logs until pred(logs) holds (5 s at most): a record reaches the
    logservice at the end of the front end's loop turn, which may come
    just after the client has its response."""
    deadline = time.monotonic() + 5
    while True:
        logs = read_logs(af, *args, **kw)
        if pred(logs) or time.monotonic() > deadline:
            return logs
        time.sleep(0.02)


def text(log, field):
    return log[field][0].decode() if field in log else None


def flush_line(af, request_id, message, level=1):
    line = field_varint(1, int(time.time() * 1e6)) + field_varint(2, level) + \
        field_bytes(3, message)
    c = api_client(af)
    try:
        r = c.call("logservice", "Flush", field_bytes(1, field_bytes(2, line)),
                   request_id=request_id)
    finally:
        c.close()
    assert r.ok, r


def test_forwarded_request_is_a_real_request_log(appfront):
    af = appfront(direct=True)
    start = time.time()
    status, _, body = af.get("/headers?x=1", headers={
        "User-Agent": "e2e-agent/1.0", "Referer": "http://example.test/from"})
    assert status == 200
    seen = {k.lower(): v for k, v in json.loads(body).items()}
    rid = seen["x-appengine-api-ticket"]
    # The app logs a line under the ticket it was given, as a library does.
    flush_line(af, rid, "line from the app", level=3)

    logs = wait_logs(af, lambda l: len(l) == 1 and STATUS in l[0] and l[0][STATUS] != [0],
                     [rid])
    assert len(logs) == 1, logs
    log = logs[0]
    assert text(log, REQUEST_ID) == rid
    assert text(log, APP_ID) == "e2e-app"
    assert text(log, MODULE_ID) == "default" and text(log, VERSION_ID) == "1"
    assert text(log, METHOD) == "GET"
    assert text(log, RESOURCE) == "/headers?x=1"
    assert text(log, HTTP_VERSION) == "HTTP/1.1"
    assert log[STATUS] == [200]
    assert log[SIZE] == [len(body)]
    assert text(log, IP) == "127.0.0.1"
    assert text(log, USER_AGENT) == "e2e-agent/1.0"
    assert text(log, REFERRER) == "http://example.test/from"
    host, port = af.hostport("main")
    assert text(log, HOST) == f"{host}:{port}"
    assert log[FINISHED] == [1]
    assert log[MCYCLES] == [0]
    assert text(log, URL_MAP_ENTRY) == "/.*"  # the handler that matched, as app.yaml says
    assert NICKNAME not in log
    s, e = log[START][0], log[END][0]
    assert start * 1e6 - 1e6 < s <= e <= time.time() * 1e6 + 1e6
    assert log[LATENCY] == [e - s]
    combined = text(log, COMBINED)
    assert re.fullmatch(
        r'127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] '
        r'"GET /headers\?x=1 HTTP/1\.1" 200 \d+ "http://example\.test/from" "e2e-agent/1\.0"',
        combined), combined
    lines = [parse_fields(l) for l in log.get(LINE, [])]
    assert [(l[2][0], l[3][0]) for l in lines] == [(3, b"line from the app")]

    # Without include_app_logs: the same log, no lines.
    logs = read_logs(af, [rid], app_logs=False)
    assert len(logs) == 1 and LINE not in logs[0]
    # minimum_log_level above the line's level: not selected.
    assert read_logs(af, [rid], extra=field_varint(7, 4)) == []


def test_request_that_logged_nothing_appears(appfront):
    af = appfront()
    status, _, body = af.get("/headers", method="HEAD")
    assert status == 200
    status, _, body = af.get("/headers")
    rid = {k.lower(): v for k, v in json.loads(body).items()}["x-appengine-api-ticket"]
    logs = wait_logs(af, lambda l: len(l) == 1, [rid])
    assert len(logs) == 1
    assert text(logs[0], METHOD) == "GET" and logs[0][STATUS] == [200]
    assert LINE not in logs[0]
    # Newest first: the GET, then the HEAD (with no body sent).
    logs = read_logs(af, count=2)
    assert [text(l, METHOD) for l in logs] == ["GET", "HEAD"]
    assert logs[1][SIZE] == [0] and logs[1][STATUS] == [200]


def test_requests_answered_by_appfront_are_logged(appfront):
    af = appfront(template="routing")
    # A static file, a login redirect, an unknown path refused by the router
    # and a malformed request: all answered by appfront itself.
    status, _, static_body = af.get("/static/alphabet.txt")
    assert status == 200
    status, _, _ = af.get("/headers")  # login: required, no cookie
    assert status == 302
    with af.connect() as s:
        s.sendall(b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        s.recv(4096)
    logs = wait_logs(af, lambda l: any(text(x, RESOURCE) == "/x" for x in l), count=10)
    by_resource = {text(l, RESOURCE): l for l in logs}
    assert by_resource["/static/alphabet.txt"][STATUS] == [200]
    assert by_resource["/static/alphabet.txt"][SIZE] == [len(static_body)]
    assert by_resource["/headers"][STATUS] == [302]
    assert by_resource["/x"][STATUS] == [400]
    # url_map_entry: the url of the app.yaml handler that matched, as
    # written there; none for a request refused before routing.
    assert text(by_resource["/static/alphabet.txt"], URL_MAP_ENTRY) == "/static"
    assert text(by_resource["/headers"], URL_MAP_ENTRY) == "/headers"
    assert text(by_resource["/x"], URL_MAP_ENTRY) == ""
    for l in logs:
        assert l[FINISHED] == [1] and len(l[REQUEST_ID][0]) == 32


def test_logged_in_user_is_the_nickname(appfront):
    af = appfront(template="routing")
    status, _, _ = af.get("/headers", headers={
        "Cookie": "dev_appserver_login=ann@example.com:False:123"})
    assert status == 200
    logs = wait_logs(af, lambda l: any(text(x, RESOURCE) == "/headers" for x in l), count=5)
    log = next(x for x in logs if text(x, RESOURCE) == "/headers")
    assert text(log, NICKNAME) == "ann"
    assert " - ann [" in text(log, COMBINED)


def test_lines_without_a_request_are_unfinished(appfront):
    af = appfront()
    flush_line(af, "no-such-request", "orphan line")
    logs = read_logs(af, ["no-such-request"])
    assert len(logs) == 1
    assert logs[0][FINISHED] == [0]
    assert text(logs[0], METHOD) == "" and logs[0][STATUS] == [0]


def test_paging_over_records(appfront):
    af = appfront()
    for i in range(5):
        assert af.get(f"/pid?n={i}")[0] == 200
    wait_logs(af, lambda l: any(text(x, RESOURCE) == "/pid?n=4" for x in l), count=20)
    seen = []
    offset = None
    for _ in range(10):
        extra = field_bytes(5, field_bytes(1, offset)) if offset else b""
        req = field_bytes(1, "e2e-app") + field_varint(9, 2) + extra
        c = api_client(af)
        r = c.call("logservice", "Read", req)
        c.close()
        assert r.ok, r
        f = parse_fields(r.response)
        seen += [text(parse_fields(b), RESOURCE) for b in f.get(1, [])]
        if 2 not in f:
            break
        offset = parse_fields(f[2][0])[1][0]
    pids = [s for s in seen if s.startswith("/pid")]
    assert pids == [f"/pid?n={i}" for i in reversed(range(5))], seen
