"""--logs_path: request logs and app log lines kept in an SQLite file are
read back through logservice.Read after appfront restarts on the same file,
with the same fields and page offsets; a file that is not appfront's logs
database stops the start with one line and is left as it was
(docs/services.md, "logservice", "On disk"). Real binary, real HTTP, a
real SQLite file."""

import json
import signal
import sqlite3

from conftest import run_appfront
from test_logservice_requests import (
    FINISHED, LINE, RESOURCE, STATUS, api_client, flush_line, read_logs, text, wait_logs)
from apiclient import field_bytes, field_varint, parse_fields


def ticket(af, path):
    status, _, body = af.get(path)
    assert status == 200, body[:300]
    return {k.lower(): v for k, v in json.loads(body).items()}["x-appengine-api-ticket"]


def read_page(af, rids, count, offset=None):
    """One page of Read over the given request ids: (logs, next offset)."""
    req = field_bytes(1, "e2e-app") + field_varint(10, 1) + field_varint(9, count)
    for rid in rids:
        req += field_bytes(6, rid)
    if offset is not None:
        req += field_bytes(5, field_bytes(1, offset))
    c = api_client(af)
    try:
        r = c.call("logservice", "Read", req)
    finally:
        c.close()
    assert r.ok, r
    f = parse_fields(r.response or b"")
    logs = [parse_fields(b) for b in f.get(1, [])]
    return logs, (parse_fields(f[2][0])[1][0] if 2 in f else None)


def stop_cleanly(af, how="quit"):
    if how == "sigterm":
        af.proc.send_signal(signal.SIGTERM)
        assert af.wait_exit(10) == 0, af.stderr()
    problems = af.stop()
    assert not problems, problems


def test_request_logs_survive_restarts(appfront, tmp_path):
    app = appfront.app()
    db = tmp_path / "logs.db"
    flags = [f"--logs_path={db}"]
    af = appfront(app_dirs=[app], flags=flags)
    rids = []
    for i in range(5):
        rids.append(ticket(af, f"/headers?n={i}"))
        flush_line(af, rids[-1], f"app line {i}", level=i % 5)
    before = wait_logs(af, lambda l: len(l) == 5, rids)
    assert [text(l, RESOURCE) for l in before] == [f"/headers?n={i}" for i in reversed(range(5))]
    first_page, offset = read_page(af, rids, 2)
    assert offset is not None and len(first_page) == 2
    # The last request goes just before /quit, without a Read to wait for
    # its record: a clean shutdown commits what the backend was handed.
    last = ticket(af, "/headers?last=1")
    stop_cleanly(af)

    # --clear_datastore empties the datastore, not the logs (as
    # dev_appserver's does).
    af2 = appfront(app_dirs=[app], flags=flags + ["--clear_datastore"])
    assert any("request records" in l and str(db) in l for l in af2.lines), af2.lines
    after = read_logs(af2, rids)
    # Every field, app lines and offsets included, as before the restart.
    assert after == before
    lines = [parse_fields(l) for l in after[0][LINE]]
    assert [l[3][0] for l in lines] == [b"app line 4"]
    # An offset made before the restart pages on after it.
    page, _ = read_page(af2, rids, 2, offset)
    assert [text(l, RESOURCE) for l in page] == ["/headers?n=2", "/headers?n=1"]
    assert page == before[2:4]
    logs = read_logs(af2, [last])
    assert len(logs) == 1 and logs[0][STATUS] == [200] and logs[0][FINISHED] == [1], logs

    # New requests on the restarted server join the old ones, newest first;
    # SIGTERM commits too.
    rid_new = ticket(af2, "/headers?after=1")
    wait_logs(af2, lambda l: len(l) == 1, [rid_new])
    stop_cleanly(af2, how="sigterm")
    af3 = appfront(app_dirs=[app], flags=flags)
    logs = read_logs(af3, rids + [last, rid_new])
    assert [text(l, RESOURCE) for l in logs] == \
        ["/headers?after=1", "/headers?last=1"] + [f"/headers?n={i}" for i in reversed(range(5))]

    # The rows are in the file, one per request and per app line.
    with sqlite3.connect(db) as c:
        ids = {r[0].decode() for r in c.execute("SELECT request_id FROM request")}
        assert set(rids + [last, rid_new]) <= ids
        assert c.execute("SELECT count(*) FROM app_line WHERE message LIKE 'app line %'"
                         ).fetchone()[0] == 5
    # The three runs share the app directory: each stops before the
    # fixture's teardown looks for instances left in it.
    stop_cleanly(af3)


def test_clear_empties_the_file(appfront, tmp_path):
    app = appfront.app()
    db = tmp_path / "logs.db"
    af = appfront(app_dirs=[app], flags=[f"--logs_path={db}"])
    rid = ticket(af, "/headers?before-clear=1")
    flush_line(af, rid, "before the clear")
    assert len(wait_logs(af, lambda l: len(l) == 1, [rid])) == 1
    status, _, body = af.get("/clear?stub=logservice", which="api", method="POST", body=b"")
    assert status == 200, body
    assert read_logs(af, [rid]) == []
    stop_cleanly(af)
    af2 = appfront(app_dirs=[app], flags=[f"--logs_path={db}"])
    assert read_logs(af2, [rid]) == []
    stop_cleanly(af2)


def test_bad_logs_path_is_a_one_line_error(tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    (app / "app.yaml").write_text("runtime: native\nentrypoint: exec false\n")
    not_db = tmp_path / "notes.txt"
    not_db.write_bytes(b"these are my notes, not a database\n" * 200)
    foreign = tmp_path / "other.sqlite"
    with sqlite3.connect(foreign) as c:
        c.execute("CREATE TABLE mine(x)")
        c.execute("INSERT INTO mine VALUES (42)")
    cases = [
        (not_db, "is not an SQLite logs database"),
        (foreign, "is an SQLite database but not an appfront logs database"),
        (tmp_path / "no" / "such" / "dir" / "logs.db", "cannot open or create"),
    ]
    for path, want in cases:
        kept = path.read_bytes() if path.exists() else None
        r = run_appfront(["--port=0", "--admin_port=0", "--api_port=0",
                          f"--logs_path={path}", app], cwd=tmp_path)
        assert r.returncode == 2 and not r.timed_out, r
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1, r.stderr
        assert lines[0].startswith("appfront: --logs_path: ") and str(path) in lines[0], lines
        assert want in lines[0], lines
        # Refused, never written over.
        assert (path.read_bytes() if path.exists() else None) == kept
        assert not path.with_name(path.name + "-wal").exists()
