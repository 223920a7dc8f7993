"""End-to-end tests of the admin console (docs/admin.md).

The real appfront on the hello app. Entities, memcache items and tasks go
in through the API port, as an app's library sends them (messages encoded
by hand, proto2 groups included, field numbers of proto/); the console's
pages are then read and its forms posted with a real HTTP client, as a
browser would. What is checked is what a developer sees and what the
console must refuse: a POST without the page's token, hostile values that
must come out escaped, malformed keys, cursors and names.
"""

import base64
import html
import json
import re
import struct
import time
import urllib.parse

import pytest

from apiclient import FIXED64, HttpClient, field_bytes, field_varint, varint
from taskqueue_api import add_request, now_usec

APP = "dev~e2e-app"
START_GROUP, END_GROUP = 3, 4
HOSTILE = "<script>alert(1)</script>\"'&"
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
MEANING_BLOB, MEANING_TEXT = 14, 15

QUEUE_YAML = """queue:
- name: default
  rate: 5/s
- name: work
  rate: 1/s
- name: pullq
  mode: pull
"""


# --- datastore messages ------------------------------------------------------


def group(num, body):
    return varint(num << 3 | START_GROUP) + body + varint(num << 3 | END_GROUP)


def path(*elements):
    """Path { repeated group Element = 1 { type = 2; id = 3; name = 4 } }."""
    out = b""
    for kind, ident in elements:
        body = field_bytes(2, kind)
        body += field_varint(3, ident) if isinstance(ident, int) else field_bytes(4, ident)
        out += group(1, body)
    return out


def reference(*elements, ns=None):
    """Reference { app = 13; path = 14; name_space = 20 }, in field order."""
    out = field_bytes(13, APP) + field_bytes(14, path(*elements))
    if ns:
        out += field_bytes(20, ns)
    return out


def urlsafe(ref):
    return base64.urlsafe_b64encode(ref).rstrip(b"=").decode()


def value_of(v):
    """A PropertyValue for a Python value: (bytes, meaning or None)."""
    if isinstance(v, bool):
        return field_varint(2, int(v)), None
    if isinstance(v, int):
        return field_varint(1, v & (2**64 - 1)), None
    if isinstance(v, float):
        return varint(4 << 3 | FIXED64) + struct.pack("<d", v), None
    if isinstance(v, str):
        return field_bytes(3, v), None
    if isinstance(v, bytes):
        return field_bytes(3, v), MEANING_BLOB
    if isinstance(v, tuple) and v[0] == "text":
        return field_bytes(3, v[1]), MEANING_TEXT
    if isinstance(v, tuple) and v[0] == "key":
        # ReferenceValue group 12 { app = 13; group PathElement 14 { type 15; id 16 } }
        kind, ident = v[1]
        return group(12, field_bytes(13, APP) + group(14, field_bytes(15, kind)
                                                      + field_varint(16, ident))), None
    raise TypeError(v)


def prop(name, v, multiple=False):
    """Property { meaning = 1; name = 3; multiple = 4; value = 5 }."""
    value, meaning = value_of(v)
    out = b""
    if meaning:
        out += field_varint(1, meaning)
    return out + field_bytes(3, name) + field_varint(4, int(multiple)) + field_bytes(5, value)


def entity(elements, ns=None, **props):
    out = field_bytes(13, reference(*elements, ns=ns)) + field_bytes(16, b"")
    for name, v in props.items():
        if isinstance(v, list):
            for item in v:
                out += field_bytes(14, prop(name, item, multiple=True))
        elif isinstance(v, bytes):
            out += field_bytes(15, prop(name, v))  # blobs are never indexed
        else:
            out += field_bytes(14, prop(name, v))
    return out


def put(af, *entities):
    api = HttpClient(af.hostport("api")[1])
    body = b"".join(field_bytes(1, e) for e in entities)
    r = api.call("datastore_v3", "Put", body)
    assert r.ok, r


def memcache_set(af, *items, ns=None):
    # MemcacheSetRequest { repeated group Item = 1 { key = 2; value = 3 }; name_space = 7 }
    body = b"".join(b"\x0b" + field_bytes(2, k) + field_bytes(3, v) + b"\x0c" for k, v in items)
    if ns:
        body += field_bytes(7, ns)
    r = HttpClient(af.hostport("api")[1]).call("memcache", "Set", body)
    assert r.ok, r


def memcache_get(af, key):
    r = HttpClient(af.hostport("api")[1]).call("memcache", "Get", field_bytes(1, key))
    assert r.ok, r
    return r.response or b""


# --- the console --------------------------------------------------------------


def page(af, path, status=200):
    """GET a console page as a browser; returns the body as text."""
    st, headers, body = af.get(path, which="admin", headers=BROWSER)
    text = body.decode()
    assert st == status, (path, st, text[:2000])
    if st != 404 or "<html>" in text:
        assert headers["content-type"].startswith("text/html"), headers
    return text


def post(af, path, fields, status=200):
    body = urllib.parse.urlencode(fields)
    st, _, data = af.get(path, which="admin", method="POST", body=body,
                         headers=dict(BROWSER, **{"Content-Type":
                                                  "application/x-www-form-urlencoded"}))
    text = data.decode()
    assert st == status, (path, st, text[:2000])
    return text


def token_of(text):
    m = re.search(r'name="token" value="([0-9a-f]{32})"', text)
    assert m, text[:2000]
    return m.group(1)


def hrefs(text, prefix):
    """The links of a page that start with prefix, unescaped."""
    return [html.unescape(h) for h in re.findall(r'href="([^"]*)"', text) if
            html.unescape(h).startswith(prefix)]


def entity_keys(text):
    """The keys a kind page links, in page order (the first column)."""
    keys = []
    for row in re.findall(r"<tr><td>(.*?)</td>", text):
        m = re.match(r'<a href="([^"]*)"', row)
        if m:
            q = urllib.parse.urlsplit(html.unescape(m.group(1))).query
            keys.append(urllib.parse.parse_qs(q)["key"][0])
    return keys


def kind_url(kind, ns=""):
    return "/datastore/kind?" + urllib.parse.urlencode({"app": APP, "ns": ns, "kind": kind})


def assert_no_raw_script(text):
    assert "<script>" not in text, text[:3000]


# --- tests ----------------------------------------------------------------------


def test_status_is_json_for_programs_and_html_for_browsers(appfront):
    af = appfront()
    for headers in ({}, {"Accept": "application/json"}, {"Accept": "*/*"}):
        st, h, body = af.get("/", which="admin", headers=headers)
        assert st == 200 and h["content-type"] == "application/json", (headers, h)
        status = json.loads(body)
        assert status["application"] == "e2e-app"
    pid = status["module"]["instances"][0]["pid"]
    text = page(af, "/")
    assert "<!DOCTYPE html>" in text
    assert "e2e-app" in text and "default" in text
    assert f"port {status['port']}" in text
    assert f"<td>{pid}</td>" in text and "ready" in text
    assert 'href="/datastore"' in text and 'href="/memcache"' in text


def test_kinds_and_entities_with_their_types(appfront):
    af = appfront()
    put(af,
        entity([("Person", 2)], name="Bea", age=41, height=1.5, admin=True,
               photo=b"\x00\x01" * 50, tags=["a", "b"], boss=("key", ("Person", 1)),
               bio=("text", "x" * 300)),
        entity([("Person", 1)], name="Al", age=40),
        entity([("Person", 1), ("Pet", "rex")], name="Rex"),
        entity([("Note", 7)], body="hi", accents="é" * 50),
        entity([("Other", 1)], ns="ns1", v=1))
    text = page(af, "/datastore")
    assert [urllib.parse.parse_qs(urllib.parse.urlsplit(h).query)["kind"][0]
            for h in hrefs(text, "/datastore/kind")] == ["Note", "Person", "Pet", "Other"]
    assert "ns1" in text and "(default)" in text

    text = page(af, kind_url("Person"))
    keys = entity_keys(text)
    assert keys == [urlsafe(reference(("Person", 1))), urlsafe(reference(("Person", 2)))]
    assert "2 entities on this page" in text
    assert "<code>Bea</code>" in text and ">string<" in text
    assert "<code>41</code><span class=\"t\">int</span>" in text
    assert "<code>1.5</code><span class=\"t\">float</span>" in text
    assert "<code>true</code><span class=\"t\">bool</span>" in text
    assert "<code>100 bytes</code><span class=\"t\">blob</span>" in text
    assert "[<code>a</code><span class=\"t\">string</span>, <code>b</code>" in text
    # A key value links to its entity; long text is cut in the list.
    assert f'href="/datastore/entity?key={urlsafe(reference(("Person", 1)))}"' in text
    assert "x" * 80 + "</code>&hellip;" in text and "x" * 81 not in text
    assert "next page" not in text

    # The entity's own page has the whole text and a delete form.
    text = page(af, "/datastore/entity?key=" + keys[1])
    assert "x" * 300 in text and ">text<" in text
    assert 'action="/datastore/delete"' in text and token_of(text)

    # A child is listed under its own kind with its whole path.
    text = page(af, kind_url("Pet"))
    assert "Person:1 &gt; Pet:&quot;rex&quot;" in text

    text = page(af, kind_url("Other", ns="ns1"))
    assert len(entity_keys(text)) == 1

    # A cut never splits a character: 80 bytes are 40 of these.
    text = page(af, kind_url("Note"))
    assert "<code>" + "é" * 40 + "</code>&hellip;" in text


def test_columns_are_bounded(appfront):
    af = appfront()
    put(af, entity([("Wide", 1)], **{f"p{i:03}": i for i in range(70)}))
    text = page(af, kind_url("Wide"))
    assert "Only the first 64 property names have a column" in text
    assert "<th>p063</th>" in text and "<th>p064</th>" not in text
    text = page(af, "/datastore/entity?key=" + urlsafe(reference(("Wide", 1))))
    assert "<td>p069</td>" in text


def test_paging_across_120_entities(appfront):
    af = appfront()
    for start in range(1, 121, 40):
        put(af, *[entity([("Item", i)], n=i) for i in range(start, start + 40)])
    seen = []
    url = kind_url("Item")
    pages = 0
    while url:
        text = page(af, url)
        keys = entity_keys(text)
        seen += keys
        pages += 1
        nxt = [h for h in hrefs(text, "/datastore/kind") if "after=" in h]
        url = nxt[0] if nxt else None
        assert pages <= 3
        if pages > 1:
            assert "first page" in text
    assert pages == 3
    assert seen == [urlsafe(reference(("Item", i))) for i in range(1, 121)]


def test_delete_needs_the_token(appfront):
    af = appfront()
    put(af, entity([("Doc", 1)], v=1), entity([("Doc", 2)], v=2))
    key = urlsafe(reference(("Doc", 1)))
    text = page(af, "/datastore/entity?key=" + key)
    token = token_of(text)

    # No token, a wrong one, GET: refused, and the entity stays.
    assert "token" in post(af, "/datastore/delete", {"key": key}, status=403)
    post(af, "/datastore/delete", {"key": key, "token": "0" * 32}, status=403)
    post(af, "/datastore/delete", {"key": key, "token": token[:-1]}, status=403)
    st, h, _ = af.get("/datastore/delete?key=" + key + "&token=" + token, which="admin")
    assert st == 405 and h["allow"] == "POST"
    page(af, "/datastore/entity?key=" + key)

    assert "is deleted" in post(af, "/datastore/delete", {"key": key, "token": token})
    assert "no entity has the key" in page(af, "/datastore/entity?key=" + key, status=404)
    assert entity_keys(page(af, kind_url("Doc"))) == [urlsafe(reference(("Doc", 2)))]
    post(af, "/datastore/delete", {"key": key, "token": token}, status=404)
    # The app's own Get agrees: its one Entity group (1) holds the key of
    # what was not found (4) and no entity (2).
    r = HttpClient(af.hostport("api")[1]).call("datastore_v3", "Get",
                                                 field_bytes(1, reference(("Doc", 1))))
    assert r.ok and r.response.startswith(b"\x0b\x22"), r


def test_hostile_values_are_escaped(appfront):
    af = appfront()
    put(af, entity([("Evil", HOSTILE)], **{"v": HOSTILE}),
        entity([(HOSTILE, 1)], ok=1))
    for url in ("/datastore", kind_url("Evil"), kind_url(HOSTILE),
                "/datastore/entity?key=" + urlsafe(reference(("Evil", HOSTILE)))):
        text = page(af, url)
        assert_no_raw_script(text)
        assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;" in text, url
    # In the delete form the key is an attribute value: quotes escaped.
    text = page(af, "/datastore/entity?key=" + urlsafe(reference(("Evil", HOSTILE))))
    assert re.search(r'name="key" value="[A-Za-z0-9_-]+"', text)

    memcache_set(af, (HOSTILE.encode(), HOSTILE.encode()))
    text = page(af, "/memcache?" + urllib.parse.urlencode({"key": HOSTILE}))
    assert_no_raw_script(text)
    assert text.count("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;") >= 3
    assert 'value="&lt;script&gt;' in text  # the form keeps the key, escaped

    # A missing key echoed back is escaped too, and the error page as well.
    text = page(af, "/datastore/entity?key=" + urllib.parse.quote(HOSTILE), status=400)
    assert_no_raw_script(text)
    text = page(af, "/taskqueue/queue?name=" + urllib.parse.quote(HOSTILE), status=404)
    assert_no_raw_script(text)
    assert "&lt;script&gt;" in text


def test_bad_input_is_a_clear_error(appfront):
    af = appfront()
    put(af, entity([("A", 1)], v=1), entity([("B", 1)], v=1))
    cases = [
        ("/datastore/entity", 400, "the parameter key is missing"),
        ("/datastore/entity?key=!!!", 400, "not a URL-safe base64"),
        ("/datastore/entity?key=" + urlsafe(b"\xff\xff\xff"), 400, "does not decode"),
        ("/datastore/entity?key=" + urlsafe(reference(("A", 0))), 400, "not a valid key"),
        ("/datastore/entity?key=%zz", 400, "malformed %-escape"),
        ("/datastore/entity?key=" + urlsafe(reference(("A", 99))), 404, "no entity"),
        ("/datastore/kind?app=" + APP, 400, "the parameter kind is missing"),
        (kind_url("Nope"), 404, "no entities of kind"),
        (kind_url("A") + "&after=garbage!", 400, "page cursor is not"),
        (kind_url("A") + "&after=" + urlsafe(reference(("B", 1))), 400,
         "a key of another kind"),
        ("/taskqueue/queue?name=nope", 404, "there is no queue"),
        ("/taskqueue/queue", 400, "the parameter name is missing"),
    ]
    for url, status, words in cases:
        text = page(af, url, status=status)
        assert html.escape(words, quote=True) in text or words in text, (url, text[-600:])
    st, _, body = af.get("/nowhere", which="admin")
    assert st == 404
    # Still serving, and the JSON status too.
    assert len(entity_keys(page(af, kind_url("A")))) == 1
    st, _, body = af.get("/", which="admin")
    assert st == 200 and json.loads(body)["application"] == "e2e-app"
    # A person's typo is answered on the page, not logged as appfront's own
    # failure.
    errors = [line for line in af.lines if line.startswith("ERROR")]
    assert not errors, errors


def stats(text):
    return {k: int(v) for k, v in re.findall(r"<tr><th>([A-Za-z ]+)</th><td>(\d+)", text)}


def test_memcache_stats_lookup_and_flush(appfront):
    af = appfront()
    memcache_set(af, (b"greeting", b"hello <b>"), (b"bin", b"\x00\xff\x01"))
    memcache_set(af, (b"greeting", b"in a namespace"), ns="ns1")
    memcache_get(af, b"greeting")  # a hit
    memcache_get(af, b"absent")    # a miss
    text = page(af, "/memcache")
    s = stats(text)
    assert s["Hits"] == 1 and s["Misses"] == 1 and s["Items"] == 3 and s["Bytes"] > 0, s
    assert "Oldest item age" in text

    text = page(af, "/memcache?key=greeting")
    assert "hello &lt;b&gt;" in text and "9 bytes" in text
    text = page(af, "/memcache?key=greeting&ns=ns1")
    assert "in a namespace" in text
    text = page(af, "/memcache?key=bin")
    assert "binary value of 3 bytes" in text
    assert "No item has this key" in page(af, "/memcache?key=nothing", status=404)
    assert "longer than" in page(af, "/memcache?key=" + "k" * 300, status=400)
    # Looking is not using: the counters did not move.
    assert stats(page(af, "/memcache")) == s

    token = token_of(text)
    post(af, "/memcache/flush", {}, status=403)
    post(af, "/memcache/flush", {"token": token.upper()}, status=403)
    assert memcache_get(af, b"greeting")  # still there
    st, _, _ = af.get("/memcache/flush", which="admin")
    assert st == 405
    assert "Every item is gone" in post(af, "/memcache/flush", {"token": token})
    assert stats(page(af, "/memcache"))["Items"] == 0
    assert memcache_get(af, b"greeting") == b""


def add_task(af, **kw):
    r = HttpClient(af.hostport("api")[1]).call("taskqueue", "Add", add_request(**kw))
    assert r.ok, r


def test_queues_tasks_delete_and_purge(appfront):
    app = appfront.app()
    (app / "queue.yaml").write_text(QUEUE_YAML)
    af = appfront(app_dirs=[app])
    later = now_usec() + 3600 * 1_000_000
    for i in range(3):
        add_task(af, queue="work", name=f"t{i}", url=f"/work?i={i}&x={HOSTILE}",
                 method="PUT" if i == 2 else "POST", eta_usec=later + i * 1_000_000)
    add_task(af, queue="pullq", name="p1", pull=True, body=b"x")

    text = page(af, "/taskqueue")
    rows = re.findall(r'<tr><td><a href="/taskqueue/queue\?name=([^"]+)">[^<]*</a></td>'
                      r"<td>(\w+)</td><td>([^<]*)</td><td>(\d+)</td>", text)
    assert rows == [("default", "push", "5/s", "0"), ("work", "push", "1/s", "3"),
                    ("pullq", "pull", "", "1")], rows
    assert "in 3599 s" in text or "in 3600 s" in text

    text = page(af, "/taskqueue/queue?name=work")
    assert_no_raw_script(text)
    assert re.findall(r"<tr><td>(t\d)</td>", text) == ["t0", "t1", "t2"]
    assert "<td>PUT</td>" in text and "<td>POST</td>" in text
    assert "/work?i=0&amp;x=&lt;script&gt;" in text
    assert "<td>0</td>" in text  # retries
    assert "PULL" in page(af, "/taskqueue/queue?name=pullq")
    token = token_of(text)

    post(af, "/taskqueue/delete", {"queue": "work", "task": "t1"}, status=403)
    assert "is deleted" in post(af, "/taskqueue/delete",
                                {"queue": "work", "task": "t1", "token": token})
    assert re.findall(r"<tr><td>(t\d)</td>", page(af, "/taskqueue/queue?name=work")) == \
        ["t0", "t2"]
    assert "no task" in post(af, "/taskqueue/delete",
                             {"queue": "work", "task": "t1", "token": token}, status=404)
    post(af, "/taskqueue/delete", {"queue": "nope", "task": "t1", "token": token}, status=404)
    post(af, "/taskqueue/delete", {"queue": "work", "task": "bad name!", "token": token},
         status=400)
    post(af, "/taskqueue/delete", {"queue": "work", "token": token}, status=400)

    post(af, "/taskqueue/purge", {"queue": "work"}, status=403)
    assert "is gone" in post(af, "/taskqueue/purge", {"queue": "work", "token": token})
    assert "0 task(s)" in page(af, "/taskqueue/queue?name=work")
    # The service agrees: the name t0 was purged, not tombstoned, and the
    # pull queue kept its task.
    add_task(af, queue="work", name="t0", url="/again", eta_usec=later)
    assert "1 task(s)" in page(af, "/taskqueue/queue?name=pullq")


def test_token_is_per_process(appfront):
    a, b = appfront(), appfront()
    ta, tb = token_of(page(a, "/memcache")), token_of(page(b, "/memcache"))
    assert ta != tb
    post(a, "/memcache/flush", {"token": tb}, status=403)


def test_clients_that_vanish_while_a_page_waits(appfront):
    """Requests whose clients reset the connection before the service's
    reply comes are freed, not answered into freed memory (the sanitizer
    build checks that), and the console goes on serving."""
    import socket

    af = appfront()
    put(af, *[entity([("Item", i)], n=i) for i in range(1, 60)])
    host, port = af.hostport("admin")
    for _ in range(3):
        socks = []
        for path in ("/datastore", kind_url("Item"), "/memcache", "/taskqueue") * 10:
            s = socket.create_connection((host, port), timeout=5)
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            socks.append(s)
        for s in socks:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
    # Those that found the console full got 503; once the replies are in,
    # every place is free again.
    deadline = time.monotonic() + 3
    while True:
        st, _, body = af.get(kind_url("Item"), which="admin", headers=BROWSER)
        if st != 503 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert st == 200, body[-500:]
    assert len(entity_keys(body.decode())) == 50
    st, _, body = af.get("/", which="admin")
    assert st == 200 and json.loads(body)["application"] == "e2e-app"
