"""End-to-end tests of the task queues (docs/taskqueue.md).

The real appfront with the task app of tests/e2e/apps/taskqueue (taskapp.py
records every request it serves; queue.yaml keeps backoffs short). Tasks are
added over the API server's HTTP transport with the official wire format,
and what the app received is read back from its log.
"""

import json
import os
import signal
import time
import uuid

import pytest

import taskqueue_api as tq
from apiclient import HttpClient
from conftest import Appfront, make_app, run_appfront


def api(af):
    return HttpClient(af.hostport("api")[1])


def records(af):
    """What the app served so far: a list of dicts (method, path, headers
    as a dict with lowercase names, body, time)."""
    path = af.app_dirs[0].parent / "requests.jsonl"
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            r = json.loads(line)
            r["headers"] = {k.lower(): v for k, v in r["headers"]}
            out.append(r)
    return out


def wait_records(af, pred, count=1, timeout=10.0):
    """Waits until at least COUNT records satisfy PRED; returns them."""
    deadline = time.monotonic() + timeout
    while True:
        got = [r for r in records(af) if pred(r)]
        if len(got) >= count or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def add(af, **kw):
    r = api(af).call("taskqueue", "Add", tq.add_request(**kw))
    return r


def uniq():
    return "t" + uuid.uuid4().hex[:12]


def stats(af, queue):
    r = api(af).call("taskqueue", "FetchQueueStats", tq.stats_request([queue]))
    assert r.ok, r
    s = tq.decode(r.response)[1][0]
    return s[2][0], tq.signed(s[3][0])


def query(af, queue):
    r = api(af).call("taskqueue", "QueryTasks", tq.query_tasks_request(queue))
    assert r.ok, r
    return [t[2][0].decode() for t in tq.decode(r.response or b"").get(1, [])]


@pytest.fixture(scope="module")
def server(appfront_module):
    return appfront_module("taskqueue")


def test_task_reaches_handler_with_headers_and_body(server):
    name = uniq()
    eta = tq.now_usec()
    r = add(server, queue="default", name=name, url=f"/ok/{name}?x=1", body=b"payload \x00\xff",
            headers=[("X-Custom", "yes"), ("Content-Type", "application/x-test"),
                     ("X-AppEngine-QueueName", "spoofed")], eta_usec=eta)
    assert r.ok, r
    got = wait_records(server, lambda r: r["path"] == f"/ok/{name}?x=1")
    assert len(got) == 1, server.stderr()
    h = got[0]["headers"]
    assert got[0]["method"] == "POST"
    assert got[0]["body"] == "payload \x00\xff"
    assert h["x-appengine-queuename"] == "default"
    assert h["x-appengine-taskname"] == name
    assert h["x-appengine-taskretrycount"] == "0"
    assert h["x-appengine-taskexecutioncount"] == "0"
    assert int(h["x-appengine-tasketa"]) == eta // 1000000
    assert h["x-custom"] == "yes"
    assert h["content-type"] == "application/x-test"
    assert "x-appfront-task-secret" not in h
    # One QueueName only: the task's own X-AppEngine-QueueName was dropped.
    path = server.app_dirs[0].parent / "requests.jsonl"
    raw = [json.loads(l) for l in path.read_text().splitlines()]
    mine = [x for x in raw if x["path"] == f"/ok/{name}?x=1"][0]
    assert [v for k, v in mine["headers"] if k.lower() == "x-appengine-queuename"] == ["default"]
    # 200: the task is gone, and its name is spent.
    deadline = time.monotonic() + 5
    while name in query(server, "default") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert name not in query(server, "default")
    again = add(server, queue="default", name=name, url="/ok/again")
    assert again.app_error and again.app_error[0] == tq.TOMBSTONED_TASK, again


def test_generated_name_and_default_url(server):
    r = add(server, queue="default", name="", url=None, method="GET")
    assert r.ok, r
    chosen = tq.decode(r.response)[1][0].decode()
    assert chosen.isdigit() and len(chosen) >= 10, chosen
    got = wait_records(server, lambda r: r["headers"].get("x-appengine-taskname") == chosen)
    assert got and got[0]["path"] == "/_ah/queue/default" and got[0]["method"] == "GET", got


def test_retry_after_500_with_backoff_then_success(server):
    name = uniq()
    assert add(server, queue="retry", name=name, url=f"/flaky?n=2&id={name}").ok
    got = wait_records(server, lambda r: r["headers"].get("x-appengine-taskname") == name,
                       count=3)
    assert len(got) == 3, (got, server.stderr())
    assert [g["headers"]["x-appengine-taskretrycount"] for g in got] == ["0", "1", "2"]
    assert [g["headers"].get("x-appengine-taskpreviousresponse") for g in got] == \
        [None, "500", "500"]
    # min_backoff 0.2 s, doubled: 0.2 then 0.4 (with room for scheduling).
    gaps = [got[1]["time"] - got[0]["time"], got[2]["time"] - got[1]["time"]]
    assert gaps[0] >= 0.18 and gaps[1] >= 0.36, gaps
    assert gaps[1] > gaps[0], gaps
    time.sleep(0.5)
    assert len([r for r in records(server)
                if r["headers"].get("x-appengine-taskname") == name]) == 3
    assert name not in query(server, "retry")


def test_retry_limit_drops_the_task(server):
    name = uniq()
    assert add(server, queue="fast", name=name, url="/fail/" + name).ok
    # task_retry_limit 2: the first run and two retries.
    got = wait_records(server, lambda r: r["path"] == "/fail/" + name, count=3)
    assert len(got) == 3, server.stderr()
    assert server.wait_for_stderr(f"task '{name}' of queue 'fast' failed 3 time", timeout=5)
    time.sleep(0.8)
    assert len([r for r in records(server) if r["path"] == "/fail/" + name]) == 3
    assert name not in query(server, "fast")


def test_admin_handler_accepts_tasks_but_not_clients(server):
    name = uniq()
    assert add(server, queue="default", name=name, url=f"/admin/{name}").ok
    got = wait_records(server, lambda r: r["path"] == f"/admin/{name}")
    assert got, server.stderr()
    deadline = time.monotonic() + 5
    while name in query(server, "default") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert name not in query(server, "default"), "the admin handler refused the task"
    # A client without login is sent to the login page, even when it claims
    # to be the task runner.
    status, h, _ = server.get(f"/admin/{name}",
                              headers={"X-Appfront-Task-Secret": "0" * 32,
                                       "X-AppEngine-QueueName": "default"})
    assert status == 302 and "/_ah/login" in h["location"], (status, h)


def test_client_cannot_spoof_task_headers(server):
    status, _, body = server.get("/headers", headers={
        "X-AppEngine-QueueName": "default",
        "X-AppEngine-TaskName": "evil",
        "X-Appfront-Task-Secret": "deadbeef" * 4,
    })
    assert status == 200
    names = {k.lower() for k, _ in json.loads(body)}
    assert "x-appengine-queuename" not in names
    assert "x-appengine-taskname" not in names
    assert "x-appfront-task-secret" not in names


def test_queue_rate_and_concurrency(server):
    # queue "slow": 4/s, bucket 1, one at a time.
    ids = [uniq() for _ in range(4)]
    eta = tq.now_usec()
    for i in ids:
        assert add(server, queue="slow", name=i, url=f"/slow?ms=50&id={i}", eta_usec=eta).ok
    got = wait_records(server, lambda r: r["headers"].get("x-appengine-queuename") == "slow"
                       and r["headers"]["x-appengine-taskname"] in ids, count=4)
    assert len(got) == 4, server.stderr()
    times = sorted(g["time"] for g in got)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) >= 0.2, gaps  # a token every 0.25 s


def test_bad_inputs_get_their_error_codes(server):
    c = api(server)

    def code(payload, method="Add"):
        r = c.call("taskqueue", method, payload)
        assert r.app_error, r
        return r.app_error[0]

    far = tq.now_usec() + 3600 * 10**6
    assert code(tq.add_request(queue="nosuch", url="/x")) == tq.UNKNOWN_QUEUE
    assert code(tq.add_request(queue="bad name!", url="/x")) == tq.INVALID_QUEUE_NAME
    assert code(tq.add_request(queue="default", name="no spaces", url="/x")) == \
        tq.INVALID_TASK_NAME
    assert code(tq.add_request(queue="default", url="/x", eta_usec=-5)) == tq.INVALID_ETA
    assert code(tq.add_request(queue="default", url="/x",
                               eta_usec=tq.now_usec() + 40 * 86400 * 10**6)) == tq.INVALID_ETA
    assert code(tq.add_request(queue="default", url="/x", body=b"x" * 200_000)) == \
        tq.TASK_TOO_LARGE
    assert code(tq.add_request(queue="default", url="no-slash")) == tq.INVALID_URL
    assert code(tq.add_request(queue="default", pull=True, body=b"x")) == tq.INVALID_QUEUE_MODE
    assert code(tq.add_request(queue="pull", url="/x")) == tq.INVALID_QUEUE_MODE
    assert code(tq.add_request(queue="default", url="/x", method="GET", body=b"b")) == \
        tq.INVALID_REQUEST
    assert code(tq.add_request(queue="default", url="/x", headers=[("Bad Name", "v")])) == \
        tq.INVALID_REQUEST
    assert code(tq.add_request(queue="default", url="/x",
                               retry={"min_backoff_sec": 5.0, "max_backoff_sec": 1.0})) == \
        tq.INVALID_RETRY_PARAMETERS
    assert code(b"\xff\xff garbage") == tq.INVALID_REQUEST

    # Duplicates: a task that exists, then one that was deleted.
    name = uniq()
    assert c.call("taskqueue", "Add", tq.add_request(queue="default", name=name, url="/x",
                                                     eta_usec=far)).ok
    assert code(tq.add_request(queue="default", name=name, url="/x", eta_usec=far)) == \
        tq.TASK_ALREADY_EXISTS
    r = c.call("taskqueue", "Delete", tq.delete_request("default", [name, uniq()]))
    assert r.ok, r
    assert tq.decode(r.response)[3] == [tq.OK, tq.UNKNOWN_TASK]
    r = c.call("taskqueue", "Delete", tq.delete_request("default", [name]))
    assert tq.decode(r.response)[3] == [tq.TOMBSTONED_TASK]
    assert code(tq.add_request(queue="default", name=name, url="/x", eta_usec=far)) == \
        tq.TOMBSTONED_TASK

    # BulkAdd: one bad task, the others SKIPPED and nothing added.
    a, b = uniq(), uniq()
    r = c.call("taskqueue", "BulkAdd", tq.bulk_add_request([
        tq.add_request(queue="default", name=a, url="/x", eta_usec=far),
        tq.add_request(queue="nosuch", name=b, url="/x", eta_usec=far),
        tq.add_request(queue="default", name=a, url="/x", eta_usec=far),
    ]))
    assert r.ok, r
    results = [g[2][0] for g in tq.decode(r.response)[1]]
    assert results == [tq.SKIPPED, tq.UNKNOWN_QUEUE, tq.DUPLICATE_TASK_NAME], results
    assert a not in query(server, "default")
    too_many = tq.bulk_add_request([tq.add_request(queue="default", url="/x", eta_usec=far)] * 101)
    assert code(too_many, "BulkAdd") == tq.TOO_MANY_TASKS
    assert code(tq.purge_request("nosuch"), "PurgeQueue") == tq.UNKNOWN_QUEUE


def test_pull_queue_lease_modify_delete(server):
    c = api(server)
    c.call("taskqueue", "PurgeQueue", tq.purge_request("pull"))
    names = [uniq() for _ in range(3)]
    for i, n in enumerate(names):
        r = c.call("taskqueue", "Add", tq.add_request(queue="pull", name=n, pull=True,
                                                      body=f"job{i}".encode(),
                                                      tag=b"red" if i < 2 else b"blue"))
        assert r.ok, r
    r = c.call("taskqueue", "QueryAndOwnTasks",
               tq.lease_request("pull", 30, 10, group_by_tag=True, tag=b"red"))
    assert r.ok, r
    leased = tq.decode(r.response).get(1, [])
    assert sorted(t[2][0].decode() for t in leased) == sorted(names[:2])
    assert all(t[4][0] == 1 for t in leased)  # retry_count counts leases
    # Leased tasks are not handed out again.
    r = c.call("taskqueue", "QueryAndOwnTasks", tq.lease_request("pull", 30, 10))
    again = [t[2][0].decode() for t in tq.decode(r.response).get(1, [])]
    assert again == [names[2]]
    t0 = leased[0]
    r = c.call("taskqueue", "ModifyTaskLease",
               tq.modify_lease_request("pull", t0[2][0].decode(), t0[3][0], 60))
    assert r.ok, r
    new_eta = tq.decode(r.response)[1][0]
    assert new_eta > t0[3][0]
    r = c.call("taskqueue", "ModifyTaskLease",
               tq.modify_lease_request("pull", t0[2][0].decode(), t0[3][0], 60))
    assert r.app_error and r.app_error[0] == tq.TASK_LEASE_EXPIRED, r
    r = c.call("taskqueue", "Delete", tq.delete_request("pull", names))
    assert tq.decode(r.response)[3] == [tq.OK] * 3
    assert stats(server, "pull") == (0, -1)


def start_on(launcher, app_dir, workdir, flags=(), track=True):
    """An appfront on a given app directory and storage (workdir/storage);
    track: stopped and checked by the fixture at teardown."""
    af = Appfront([app_dir], flags=flags, workdir=workdir)
    if track:
        launcher.started.append(af)
    af.start()
    af.wait_startup()
    af.wait_ready()
    return af


def test_task_survives_restart(appfront, tmp_path):
    app_dir = make_app(tmp_path / "base" / "app", "taskqueue")
    workdir = tmp_path / "work"
    workdir.mkdir()
    first = start_on(appfront, app_dir, workdir, flags=["--enable_task_running=false"],
                     track=False)
    name = uniq()
    assert add(first, queue="default", name=name, url=f"/ok/{name}", body=b"kept").ok
    time.sleep(0.5)
    assert not records(first), "a task ran with --enable_task_running=false"
    assert query(first, "default") == [name]
    first.proc.send_signal(signal.SIGTERM)
    assert first.wait_exit(10) == 0, first.stderr()
    first.exit_checked = True
    assert first.stop() == [], first.stderr()  # and no instance left behind

    second = start_on(appfront, app_dir, workdir)
    got = wait_records(second, lambda r: r["path"] == f"/ok/{name}")
    assert got and got[0]["body"] == "kept", second.stderr()
    assert second.wait_for_stderr(r"1 task\(s\) waiting in queue 'default'", timeout=1)


def test_bad_queue_yaml_refuses_to_start(tmp_path):
    app_dir = make_app(tmp_path / "app", "taskqueue")
    (app_dir / "queue.yaml").write_text("queue:\n- name: q1\n  rate: fast\n")
    r = run_appfront(["--port=0", "--admin_port=0", "--api_port=0",
                      f"--storage_path={tmp_path / 'storage'}", app_dir],
                     cwd=tmp_path, app_dirs=[app_dir])
    assert r.returncode == 2, r.stderr
    assert not r.leftovers, r.leftovers
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    err = r.stderr
    assert len(lines) == 1, err
    assert "queue.yaml:3:9:" in lines[0] and "rate" in lines[0], lines[0]
