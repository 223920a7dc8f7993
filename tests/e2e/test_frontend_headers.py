"""The header policy of shared/DESIGN.md, "Forwarded requests".

- every X-AppEngine-* header a client sends is removed before the app sees
  it, then appfront adds its own: one request id as X-AppEngine-Request-Log-Id,
  X-Appengine-Dev-Request-Id and X-AppEngine-API-Ticket, X-AppEngine-Country:
  ZZ, X-AppEngine-User-IP, X-Forwarded-For, X-Forwarded-Proto;
- hop-by-hop headers (RFC 9110 section 7.6.1), and those the Connection
  header names, are removed in both directions;
- the direct port sets X-AppEngine-Inbound-AppId: dev~APP when absent.
"""

import json

import pytest

from conftest import RawConn

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


@pytest.fixture(scope="module")
def af(appfront_module):
    return appfront_module("threadsafe", direct=True)


def app_headers(af, headers=None, which="main"):
    """The headers the app received, as {lowercase name: value}."""
    status, _, body = af.get("/headers", which=which, headers=headers)
    assert status == 200, (status, body[:300])
    return {k.lower(): v for k, v in json.loads(body).items()}


def test_client_sent_appengine_headers_never_reach_the_app(af):
    seen = app_headers(af, {
        "X-AppEngine-User-Email": "mallory@example.com",
        "X-AppEngine-User-Id": "42",
        "X-AppEngine-User-Nickname": "mallory",
        "x-appengine-user-is-admin": "1",
        "X-APPENGINE-COUNTRY": "US",
        "X-AppEngine-Request-Log-Id": "spoofed-id",
        "X-AppEngine-Something-New": "spoofed",
    })
    for name in ("x-appengine-user-email", "x-appengine-user-id",
                 "x-appengine-user-nickname", "x-appengine-user-is-admin",
                 "x-appengine-something-new"):
        assert name not in seen, f"{name} reached the app: {seen}"
    assert "mallory" not in json.dumps(seen)
    assert seen.get("x-appengine-country") == "ZZ"
    assert seen.get("x-appengine-request-log-id") != "spoofed-id"


def test_appfront_adds_its_own_headers(af):
    seen = app_headers(af)
    rid = seen.get("x-appengine-request-log-id")
    assert rid, f"no X-AppEngine-Request-Log-Id: {seen}"
    assert seen.get("x-appengine-dev-request-id") == rid
    assert seen.get("x-appengine-api-ticket") == rid
    assert seen.get("x-appengine-country") == "ZZ"
    assert seen.get("x-appengine-user-ip") in LOOPBACK, seen
    assert seen.get("x-forwarded-for", "").split(",")[-1].strip() in LOOPBACK, seen
    assert seen.get("x-forwarded-proto") == "http"
    host, port = af.hostport("main")
    assert seen.get("x-appengine-default-version-hostname", "").endswith(f":{port}"), seen


def test_request_ids_differ_between_requests(af):
    ids = {app_headers(af)["x-appengine-request-log-id"] for _ in range(5)}
    assert len(ids) == 5, ids


def test_client_x_forwarded_for_is_extended_not_trusted(af):
    seen = app_headers(af, {"X-Forwarded-For": "203.0.113.7"})
    # The client's own address comes last; the app may see the claimed one
    # before it, but appfront's user IP is the peer address.
    assert seen.get("x-appengine-user-ip") in LOOPBACK, seen
    assert seen.get("x-forwarded-for", "").split(",")[-1].strip() in LOOPBACK, seen


def test_hop_by_hop_request_headers_are_removed(af):
    # Written by hand: http.client would not send two Connection tokens and
    # these headers the way a misbehaving client does.
    with RawConn(af) as c:
        c.send(b"GET /headers HTTP/1.1\r\n"
               b"Host: e2e\r\n"
               b"Connection: keep-alive, X-Drop-Me\r\n"
               b"X-Drop-Me: should-not-arrive\r\n"
               b"Keep-Alive: timeout=4242\r\n"
               b"TE: trailers\r\n"
               b"Proxy-Connection: keep-alive-4242\r\n"
               b"X-Keep-Me: arrives\r\n"
               b"\r\n")
        r = c.read_response()
    assert r.status == 200, r
    seen = {k.lower(): v for k, v in json.loads(r.body).items()}
    assert seen.get("x-keep-me") == "arrives"
    for name in ("x-drop-me", "keep-alive", "te", "proxy-connection"):
        assert name not in seen, f"{name} reached the app: {seen}"
    assert "x-drop-me" not in seen.get("connection", "").lower()
    assert "4242" not in json.dumps(seen)


def test_hop_by_hop_response_headers_are_removed(af):
    query = ("Connection=X-Resp-Drop&X-Resp-Drop=from-app&Keep-Alive=timeout%3D4242"
             "&Proxy-Connection=x-app-4242&Upgrade=x-app-proto%2F4242&TE=x-app-te-4242"
             "&X-Resp-Keep=from-app")
    with RawConn(af) as c:
        c.send(f"GET /response_headers?{query} HTTP/1.1\r\nHost: e2e\r\n\r\n".encode())
        r = c.read_response()
    assert r.status == 200, r
    assert r.header("X-Resp-Keep") == "from-app"
    assert r.header("X-Resp-Drop") is None, r.headers
    for name, value in r.headers:
        assert "4242" not in value, f"hop-by-hop {name}: {value} passed from the app"
        assert "x-resp-drop" not in value.lower(), f"{name}: {value} passed from the app"
    assert r.header("Proxy-Connection") is None
    assert r.header("TE") is None
    assert r.header("Upgrade") is None


def test_direct_port_sets_inbound_appid(af):
    seen = app_headers(af, which="direct")
    assert seen.get("x-appengine-inbound-appid") == "dev~e2e-app", seen


def test_main_port_does_not_set_inbound_appid(af):
    seen = app_headers(af)
    assert "x-appengine-inbound-appid" not in seen, seen
