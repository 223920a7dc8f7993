"""Login (issue 3): login: required | admin with auth_fail_action redirect
| unauthorized, the /_ah/login form and its dev_appserver_login cookie,
/_ah/logout, and the user headers the app receives, which come only from
that cookie. Driven with requests and a real cookie jar, as a browser
would; plus secure: always without an https port."""

import hashlib
import json
import re
import urllib.parse

import pytest
import requests

from conftest import RawConn
from routing_helpers import start_routing


@pytest.fixture(scope="module")
def af(appfront_module):
    return start_routing(appfront_module)


def dev_appserver_user_id(email):
    """dev_appserver's derivation (login.py _create_cookie_data)."""
    digest = hashlib.md5(email.lower().encode()).digest()
    return "1" + "".join("%02d" % b for b in digest)[:20]


def app_headers(resp):
    assert resp.status_code == 200, (resp.status_code, resp.text[:300])
    return {k.lower(): v for k, v in json.loads(resp.content).items()}


def login_via_form(s, af, email, admin=False, dest="/"):
    """Submits the form the way a browser does: GET with its fields."""
    params = {"email": email, "continue": dest, "action": "Login"}
    if admin:
        params["admin"] = "True"
    return s.get(af.url("/_ah/login"), params=params, allow_redirects=False, timeout=10)


def test_required_redirects_to_login_with_the_full_url(af):
    r = requests.get(af.url("/headers?a=1&b=two"), allow_redirects=False, timeout=10)
    assert r.status_code == 302
    loc = r.headers["Location"]
    assert loc.startswith("/_ah/login?continue=")
    cont = urllib.parse.unquote(loc.split("continue=", 1)[1])
    host, port = af.hostport()
    assert cont == f"http://{host}:{port}/headers?a=1&b=two"


def test_full_login_flow_with_a_cookie_jar(af):
    with requests.Session() as s:
        # Not logged in: the redirect leads to the form.
        r = s.get(af.url("/headers"), timeout=10)
        assert r.status_code == 200
        assert r.url.split("?")[0].endswith("/_ah/login")
        html = r.text
        assert 'name="email"' in html
        assert re.search(r'<input type="checkbox" name="admin" value="True"', html)
        m = re.search(r'name="continue" value="([^"]*)"', html)
        assert m and m.group(1).endswith("/headers")
        # Submit it, following the redirect back to the page.
        r = s.get(af.url("/_ah/login"),
                  params={"email": "alice@example.com", "action": "Login",
                          "continue": m.group(1).replace("&amp;", "&")},
                  timeout=10)
        assert r.url.endswith("/headers")
        h = app_headers(r)
        assert h["x-appengine-user-email"] == "alice@example.com"
        assert h["x-appengine-user-nickname"] == "alice"
        assert h["x-appengine-user-id"] == dev_appserver_user_id("alice@example.com")
        assert h["x-appengine-user-is-admin"] == "0"
        # The cookie is dev_appserver's.
        raw = s.cookies.get("dev_appserver_login")
        assert raw.strip('"') == f"alice@example.com:False:{dev_appserver_user_id('alice@example.com')}"

        # A non-admin on an admin page: 401, no redirect loop.
        r = s.get(af.url("/env"), allow_redirects=False, timeout=10)
        assert r.status_code == 401

        # Logout clears it; the page asks for login again.
        r = s.get(af.url("/_ah/logout"), params={"continue": "/pid"}, timeout=10)
        assert r.status_code == 200 and r.url.endswith("/pid")
        assert "dev_appserver_login" not in s.cookies
        r = s.get(af.url("/headers"), allow_redirects=False, timeout=10)
        assert r.status_code == 302


def test_admin_login(af):
    with requests.Session() as s:
        r = s.get(af.url("/env"), allow_redirects=False, timeout=10)
        assert r.status_code == 302
        r = login_via_form(s, af, "root@example.com", admin=True, dest="/env")
        assert r.status_code == 302 and r.headers["Location"] == "/env"
        assert 'dev_appserver_login="root@example.com:True:' in r.headers["Set-Cookie"]
        assert s.get(af.url("/env"), timeout=10).status_code == 200
        h = app_headers(s.get(af.url("/headers"), timeout=10))
        assert h["x-appengine-user-is-admin"] == "1"


def test_unauthorized_is_401(af):
    r = requests.post(af.url("/echo"), data=b"hi", allow_redirects=False, timeout=10)
    assert r.status_code == 401
    with requests.Session() as s:
        login_via_form(s, af, "bob@example.com")
        r = s.post(af.url("/echo"), data=b"hi", timeout=10)
        assert r.status_code == 200 and r.content == b"hi"


def test_login_on_a_static_handler(af):
    r = requests.get(af.url("/staticadmin/style.css"), timeout=10)
    assert r.status_code == 401
    with requests.Session() as s:
        login_via_form(s, af, "bob@example.com")
        assert s.get(af.url("/staticadmin/style.css"), timeout=10).status_code == 401
        login_via_form(s, af, "root@example.com", admin=True)
        r = s.get(af.url("/staticadmin/style.css"), timeout=10)
        assert r.status_code == 200 and r.headers["Content-Type"] == "text/css"


def test_optional_pages_get_no_user_without_the_cookie(af):
    # Spoofed user headers are removed; without a cookie there is no user.
    with RawConn(af) as c:
        c.send(b"GET /response_headers HTTP/1.1\r\nHost: x\r\n"
               b"X-AppEngine-User-Email: evil@example.com\r\nConnection: close\r\n\r\n")
        assert c.read_response().status == 200
    with requests.Session() as s:
        login_via_form(s, af, "carol@example.com")
        r = s.get(af.url("/headers"), headers={"X-AppEngine-User-Email": "evil@example.com",
                                               "X-AppEngine-User-Is-Admin": "1"}, timeout=10)
        h = app_headers(r)
        assert h["x-appengine-user-email"] == "carol@example.com"
        assert h["x-appengine-user-is-admin"] == "0"


@pytest.mark.parametrize("cookie", [
    'dev_appserver_login="nobody:True:1"',                 # no '@': nobody
    'dev_appserver_login="a\tb@example.com:True:1"',       # a tab
    'dev_appserver_login=a,b@example.com:True:1',           # not a cookie-octet
    'dev_appserver_login=a\\b@example.com:True:1',
    'dev_appserver_login="a@example.com:True:1',            # half quoted
    'dev_appserver_login=' + "a" * 300 + "@x:True:1",      # too long
])
def test_bad_cookies_are_nobody(af, cookie):
    with RawConn(af) as c:
        c.send(f"GET /headers HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n"
               f"Connection: close\r\n\r\n".encode("latin-1"))
        resp = c.read_response()
    # /headers needs login: a cookie that is not a user gets the redirect.
    assert resp.status == 302, resp


def test_control_bytes_never_reach_the_app(af):
    # The parser refuses them in any field (400), cookie included.
    with RawConn(af) as c:
        c.send(b"GET /headers HTTP/1.1\r\nHost: x\r\n"
               b"Cookie: dev_appserver_login=a\x01b@example.com:True:1\r\n\r\n")
        assert c.read_response().status == 400


def test_continue_cannot_inject_headers_or_leave_the_site(af):
    r = requests.get(af.url("/_ah/login"), allow_redirects=False, timeout=10,
                     params={"action": "Login", "email": "a@example.com",
                             "continue": "/x\r\nSet-Cookie: evil=1"})
    assert r.status_code == 302
    assert r.headers["Location"] == "/x%0D%0ASet-Cookie:%20evil=1"
    assert "evil" not in r.headers["Set-Cookie"]
    for dest in ["//evil.example/", "javascript:alert(1)", "/\\evil.example"]:
        r = requests.get(af.url("/_ah/logout"), params={"continue": dest},
                         allow_redirects=False, timeout=10)
        assert r.headers["Location"] == "/", dest
    r = requests.get(af.url("/_ah/logout"), params={"continue": "http://localhost:1/x"},
                     allow_redirects=False, timeout=10)
    assert r.headers["Location"] == "http://localhost:1/x"


def test_bad_email_shows_the_form_again(af):
    for email in ["", "no-at-sign", "a:b@example.com", "a b@example.com"]:
        r = requests.get(af.url("/_ah/login"), allow_redirects=False, timeout=10,
                         params={"action": "Login", "email": email})
        assert r.status_code == 400, email
        assert "Set-Cookie" not in r.headers
        assert 'name="email"' in r.text


def test_form_escapes_what_it_echoes(af):
    r = requests.get(af.url("/_ah/login"), timeout=10,
                     params={"continue": '/"><script>x</script>', "email": "<b>"})
    assert r.status_code == 200
    assert "<script>" not in r.text and "<b>" not in r.text


def test_secure_always_without_https_port_warns_and_serves(af):
    line = af.wait_for_stderr(r"handler '/chunked' has secure: always", timeout=2)
    assert line and "no https port" in line
    r = requests.get(af.url("/chunked"), allow_redirects=False, timeout=10)
    assert r.status_code == 200
