"""dev_appserver flags with an effect on what the app sees (-A /
--application, --auth_domain, --default_gcs_bucket_name), the host-checking
flags appfront accepts, and dev_appserver flags appfront accepts without
acting on them (one startup warning each). Real binary, real HTTP."""

import http.client
import json

import requests

from apiclient import HttpClient, encode_request, field_bytes, parse_fields
from conftest import run_appfront


def env_of(af):
    status, _, body = af.get("/env")
    assert status == 200, body[:300]
    return json.loads(body)


def headers_seen(resp):
    assert resp.status_code == 200, (resp.status_code, resp.text[:300])
    return {k.lower(): v for k, v in json.loads(resp.content).items()}


def api_call(af, service, method, payload=b""):
    _, port = af.hostport("api")
    c = HttpClient(port)
    try:
        r = c.call(service, method, payload)
    finally:
        c.close()
    assert r.ok, r
    return parse_fields(r.response or b"")


def test_application_flag_overrides_app_yaml(appfront):
    # The template's app.yaml says "application: e2e-app".
    af = appfront(flags=["-A", "flag-app"], direct=True)
    assert env_of(af)["GAE_APPLICATION"] == "dev~flag-app"
    # The back-door port names the app as the inbound app id.
    status, _, body = af.get("/headers", which="direct")
    assert status == 200
    seen = {k.lower(): v for k, v in json.loads(body).items()}
    assert seen["x-appengine-inbound-appid"] == "dev~flag-app"
    # app_identity's answers follow: GetServiceAccountName (field 1).
    f = api_call(af, "app_identity_service", "GetServiceAccountName")
    assert f[1][0] == b"flag-app@appspot.gserviceaccount.com"


def test_application_long_form_and_default_without_it(appfront):
    af = appfront(flags=["--application=other-app"])
    assert env_of(af)["GAE_APPLICATION"] == "dev~other-app"
    af2 = appfront()
    assert env_of(af2)["GAE_APPLICATION"] == "dev~e2e-app"


def test_application_overrides_disagreeing_modules(appfront):
    a = appfront.app()
    b = appfront.app(yaml_extra="service: second\n")
    text = (b / "app.yaml").read_text().replace("application: e2e-app", "application: other")
    (b / "app.yaml").write_text(text)
    # Without -A the two application ids stop appfront.
    r = run_appfront(["--port=0", "--admin_port=0", "--api_port=0", a, b], cwd=a.parent,
                     app_dirs=[a, b])
    assert r.returncode != 0 and not r.timed_out, r
    assert "different applications" in r.stderr, r.stderr
    af = appfront(app_dirs=[a, b], flags=["-A", "one-app"])
    assert env_of(af)["GAE_APPLICATION"] == "dev~one-app"


def test_bad_application_id_is_a_one_line_error(tmp_path):
    for bad in ("Bad_App", "../escape", "dev~app"):
        r = run_appfront(["-A", bad, tmp_path], cwd=tmp_path)
        assert r.returncode == 2, r
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "is not an application id" in lines[0], r.stderr


def test_default_gcs_bucket_name(appfront):
    af = appfront(flags=["--default_gcs_bucket_name=my-bucket"])
    f = api_call(af, "app_identity_service", "GetDefaultGcsBucketName")
    assert f[1][0] == b"my-bucket"
    af2 = appfront()
    f = api_call(af2, "app_identity_service", "GetDefaultGcsBucketName")
    assert f[1][0] == b"e2e-app.appspot.com"


def login(s, af, email):
    r = s.get(af.url("/_ah/login"), params={"email": email, "action": "Login", "continue": "/"},
              allow_redirects=False, timeout=10)
    assert r.status_code == 302, (r.status_code, r.text[:300])


def test_auth_domain_reaches_the_app_and_the_oauth_user(appfront):
    af = appfront(flags=["--auth_domain=example.com"])
    with requests.Session() as s:
        login(s, af, "alice@example.com")
        h = headers_seen(s.get(af.url("/headers"), timeout=10))
        assert h["x-appengine-user-email"] == "alice@example.com"
        assert h["x-appengine-auth-domain"] == "example.com"
    # No user, no auth domain field; a client cannot send its own.
    h = headers_seen(requests.get(af.url("/headers"), headers={"X-AppEngine-Auth-Domain": "evil"},
                                  timeout=10))
    assert "x-appengine-auth-domain" not in h
    # user.GetOAuthUser: auth_domain is field 3.
    f = api_call(af, "user", "GetOAuthUser", field_bytes(1, "email"))
    assert f[3][0] == b"example.com"


def test_auth_domain_defaults_to_gmail(appfront):
    af = appfront()
    with requests.Session() as s:
        login(s, af, "bob@gmail.com")
        h = headers_seen(s.get(af.url("/headers"), timeout=10))
        assert h["x-appengine-auth-domain"] == "gmail.com"


def get_with_host(af, which, path, host, method="GET", body=None, headers=None):
    """One request with the given Host field (http.client leaves a given Host alone)."""
    h, port = af.hostport(which)
    c = http.client.HTTPConnection(h, port, timeout=10)
    try:
        c.request(method, path, body=body, headers=dict(headers or {}, Host=host))
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def rpc(af, host):
    body = encode_request("memcache", "Get", b"")
    return get_with_host(af, "api", "/rpc_http", host, method="POST", body=body, headers={
        "Content-Type": "application/octet-stream",
        "X-Google-RPC-Service-Endpoint": "app-engine-apis",
        "X-Google-RPC-Service-Method": "/VMRemoteAPI.CallRemoteAPI"})


def test_host_checking_refuses_other_names_on_admin_and_api(appfront):
    """DNS rebinding: a page whose name now resolves to 127.0.0.1 sends that
    name as Host; the admin console and the API server refuse it."""
    af = appfront()
    _, admin_port = af.hostport("admin")
    _, api_port = af.hostport("api")
    for host in (f"localhost:{admin_port}", f"127.0.0.1:{admin_port}", f"[::1]:{admin_port}",
                 "default.localhost"):
        status, body = get_with_host(af, "admin", "/", host)
        assert status == 200, (host, status, body[:200])
    status, body = get_with_host(af, "admin", "/", "evil.example:8000")
    assert status == 403, body
    assert b'does not answer for Host "evil.example:8000"' in body
    assert b"--addn_host=NAME or --enable_host_checking=false" in body
    # Nothing the page asks for passes, the token-guarded POSTs included.
    status, _ = get_with_host(af, "admin", "/memcache", "evil.example", method="POST",
                              body=b"action=flush")
    assert status == 403
    # The hostile name is not reflected as HTML.
    status, body = get_with_host(af, "admin", "/", "<b>x</b>.example")
    assert status in (400, 403)
    # The API server: GET / and the RPC.
    status, _ = get_with_host(af, "api", "/", f"localhost:{api_port}")
    assert status == 200
    status, body = rpc(af, f"localhost:{api_port}")
    assert status == 200, body
    status, body = get_with_host(af, "api", "/", "evil.example")
    assert status == 403 and b'does not answer for Host "evil.example"' in body, body
    status, body = rpc(af, "evil.example")
    assert status == 403, body
    # A cut-off Host is refused, not ignored.
    status, _ = get_with_host(af, "api", "/", "a" * 300 + ".example")
    assert status == 403
    # The app's own port is not checked: apps are reached by any name.
    status, _ = get_with_host(af, "main", "/", "evil.example")
    assert status == 200


def test_addn_host_and_disabling(appfront):
    af = appfront(flags=["--addn_host=dev.example", "--addn_host", "*.lan.example"])
    assert get_with_host(af, "admin", "/", "dev.example:8000")[0] == 200
    assert get_with_host(af, "admin", "/", "box.lan.example")[0] == 200
    assert get_with_host(af, "admin", "/", "a.box.lan.example")[0] == 403
    assert rpc(af, "dev.example")[0] == 200
    assert get_with_host(af, "api", "/", "other.example")[0] == 403
    af2 = appfront(flags=["--enable_host_checking=false"])
    assert get_with_host(af2, "admin", "/", "evil.example")[0] == 200
    assert rpc(af2, "evil.example")[0] == 200
    assert not [l for l in af2.lines if "WARNING" in l and "host" in l.lower()]


def test_ignored_flags_warn_once_and_serve(appfront):
    af = appfront(flags=["--search_indexes_path=/nonexistent/search", "--enable_console",
                         "--ssl_port=8443", "--ssl_port=9443"])
    warnings = [l for l in af.lines if "has no effect in appfront" in l]
    assert any("--search_indexes_path has no effect in appfront: search indexes live in "
               "search.sqlite3 under --storage_path"
               in l for l in warnings), af.lines
    assert any("--enable_console has no effect" in l for l in warnings)
    assert sum("--ssl_port has no effect in appfront: there is no https port" in l
               for l in warnings) == 1
    assert af.get("/")[0] == 200


def test_ignored_flags_still_check_their_values(tmp_path):
    r = run_appfront(["--enable_console=sure", tmp_path], cwd=tmp_path)
    assert r.returncode == 2
    assert "--enable_console: 'sure' is not a boolean" in r.stderr


def test_app_yaml_application_cannot_escape_the_default_storage(appfront, tmp_path):
    app = appfront.app()
    text = (app / "app.yaml").read_text().replace("application: e2e-app",
                                                  "application: ../../escaped")
    (app / "app.yaml").write_text(text)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    r = run_appfront(["--port=0", "--admin_port=0", "--api_port=0", app], cwd=tmp_path,
                     app_dirs=[app], env={"TMPDIR": str(tmp)})
    assert r.returncode != 0 and not r.timed_out, r
    # The loader refuses the id, as App Engine spells none like it.
    assert "application: '../../escaped' is not an application id" in r.stderr, r.stderr
    assert not (tmp_path / "escaped").exists() and not (tmp.parent.parent / "escaped").exists()
