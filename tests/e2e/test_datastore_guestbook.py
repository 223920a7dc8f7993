"""examples/guestbook end to end: a native C app storing greetings in the
datastore through the C client library (entity builder, Put, Get, ancestor
query with a descending order and a limit) and caching its front page in
memcache, under the real appfront."""

import re
import urllib.parse

from conftest import BUILD

GUESTBOOK_BIN = BUILD / "examples" / "guestbook"


def guestbook_app(tmp_path, name="guestbook"):
    app = tmp_path / name
    app.mkdir()
    (app / "app.yaml").write_text(
        "application: guestbook\nruntime: native\n"
        f"entrypoint: exec {GUESTBOOK_BIN}\nthreadsafe: false\n"
        "handlers:\n- url: /.*\n  script: auto\n")
    return app


def sign(af, author, content):
    body = urllib.parse.urlencode({"author": author, "content": content})
    status, headers, out = af.get("/sign", method="POST", body=body,
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 303, (status, out)
    m = re.match(r"^/#g(\d+)$", headers["location"])
    assert m, headers
    return int(m.group(1))


def test_guestbook(appfront, tmp_path):
    assert GUESTBOOK_BIN.exists(), f"{GUESTBOOK_BIN} missing: run make"
    db = tmp_path / "guestbook.sqlite3"
    app = guestbook_app(tmp_path)
    af = appfront(app_dirs=[app], flags=[f"--datastore_path={db}"])

    # (The harness's readiness check already rendered and cached the page.)
    status, headers, body = af.get("/")
    assert status == 200 and headers["x-guestbook-cache"] == "hit"
    assert b"0 greetings shown" in body

    first = sign(af, "ada", "<b>hi</b> & bye")
    status, headers, body = af.get("/")
    assert headers["x-guestbook-cache"] == "miss", "signing did not drop the cached page"
    assert b"&lt;b&gt;hi&lt;/b&gt; &amp; bye" in body and b"<b>hi</b>" not in body.split(b"<ul>")[1]
    status, headers, again = af.get("/")
    assert headers["x-guestbook-cache"] == "hit" and again == body

    ids = [sign(af, f"user{i}", f"greeting number {i}") for i in range(25)]
    assert len(set(ids + [first])) == 26, "ids handed out twice"
    status, headers, body = af.get("/")
    assert headers["x-guestbook-cache"] == "miss"
    shown = [int(x) for x in re.findall(rb"<li id=g(\d+)", body)]
    dates = [int(x) for x in re.findall(rb"data-date=(\d+)", body)]
    assert len(shown) == 20 and b"20 greetings shown" in body
    assert dates == sorted(dates, reverse=True), "not newest first"
    assert shown[0] == ids[-1] and first not in shown

    status, _, body = af.get(f"/greeting?id={first}")
    assert status == 200 and body == b"ada: <b>hi</b> & bye\n"
    status, _, _ = af.get("/greeting?id=987654321")
    assert status == 404

    # The greetings outlive appfront. (Another app directory: the harness
    # finds an appfront's instances by their directory.)
    assert not af.stop()
    af = appfront(app_dirs=[guestbook_app(tmp_path, "again")], flags=[f"--datastore_path={db}"])
    status, _, body = af.get(f"/greeting?id={first}")
    assert status == 200 and body.startswith(b"ada:")
