"""The system service end to end (docs/services.md, "system"): background
requests reach the instance that asked for them, with the right header and
no deadline; a client cannot forge one; automatic scaling is refused; stats
are real figures; bad calls get the service's errors.

The app is tests/e2e/apps/background (bgapp.py), which calls the API over
its framed socket and records every request it serves in requests.jsonl.
"""

import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from apiclient import CALL_NOT_FOUND, HttpClient

BACKEND_REQUIRED = 2
BAD_REQUEST = 8
MANUAL_2 = "manual_scaling:\n  instances: 2\n"


def records(af):
    path = os.path.join(os.path.dirname(af.app_dirs[0]), "requests.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def header(rec, name):
    vals = [v for k, v in rec["headers"] if k.lower() == name.lower()]
    return vals[0] if len(vals) == 1 else (None if not vals else vals)


def wait_background(af, bg_id, timeout=10.0):
    """The record of the ended /_ah/background request carrying bg_id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for rec in records(af):
            if (rec["path"] == "/_ah/background" and rec.get("ended")
                    and header(rec, "X-AppEngine-BackgroundRequest") == bg_id):
                return rec
        time.sleep(0.05)
    pytest.fail(f"no background request {bg_id} reached the app within {timeout} s:\n"
                f"{records(af)}\n{af.stderr()}")


def api_port(af):
    return int(af.urls["api"].rsplit(":", 1)[1].rstrip("/"))


def start(af, path="/start"):
    status, _, body = af.get(path)
    assert status == 200, (status, body)
    return json.loads(body)


def test_background_request_reaches_the_asking_instance(appfront):
    """Two instances that take one request each: two /start requests at once
    run on both, and each background request goes back to its asker."""
    af = appfront("background", yaml_extra=MANUAL_2 + "threadsafe: false\n")
    # Both instances ready first (on a loaded machine the second may still
    # be starting when the first answers): two slow requests at once run
    # on two processes.
    deadline = time.monotonic() + 15
    while True:
        with ThreadPoolExecutor(2) as pool:
            seen = set(pool.map(lambda _: af.get("/pidslow")[2], range(2)))
        if len(seen) == 2:
            break
        assert time.monotonic() < deadline, "the second instance never became ready"
    pids = set()
    for _ in range(3):
        with ThreadPoolExecutor(2) as pool:
            asked = list(pool.map(lambda _: start(af, "/start?sleep=300"), range(2)))
        assert asked[0]["pid"] != asked[1]["pid"], asked
        for a in asked:
            assert re.fullmatch(r"[0-9a-f]{16}", a["id"]), a
            rec = wait_background(af, a["id"])
            # The same process: the Go library matches the id inside it.
            assert rec["pid"] == a["pid"], (rec, a)
            assert rec["method"] == "GET"
            # appfront's trust field never reaches the app; the request
            # has ids of its own, as any request does.
            assert header(rec, "X-Appfront-Background") is None, rec
            ticket = header(rec, "X-AppEngine-API-Ticket")
            assert ticket and re.fullmatch(r"[0-9a-f]{32}", ticket), rec
            pids.add(rec["pid"])
    assert len(pids) == 2, pids


def test_background_request_has_no_deadline(appfront):
    """A background request outlives --request_deadline, as in dev_appserver
    (docs/services.md): the handler sleeps 2 s against a 1 s deadline and
    its answer reaches appfront."""
    af = appfront("background", flags=("--request_deadline=1",
                                       "--dev_appserver_log_level=debug"),
                  yaml_extra=MANUAL_2 + "env_variables:\n  BG_SLEEP_MS: '2000'\n")
    asked = start(af)
    rec = wait_background(af, asked["id"], timeout=15)
    assert rec["ended"]
    line = af.wait_for_stderr(rf"background request {asked['id']} answered 200", timeout=5)
    assert line, af.stderr()


def test_forged_background_header_is_stripped(appfront):
    af = appfront("background", yaml_extra=MANUAL_2)
    forged = {
        "X-AppEngine-BackgroundRequest": "feedfacefeedface",
        # The trust field with a made-up secret, and instance 0.
        "X-Appfront-Background": "0123456789abcdef0123456789abcdef 0",
    }
    status, _, body = af.get("/_ah/background", headers=forged)
    assert status == 200, (status, body)
    recs = [r for r in records(af) if r["path"] == "/_ah/background" and r.get("ended")]
    assert len(recs) == 1, recs
    assert header(recs[0], "X-AppEngine-BackgroundRequest") is None, recs[0]
    assert header(recs[0], "X-Appfront-Background") is None, recs[0]
    # Twice the field, one of them empty: also stripped.
    status, _, _ = af.get("/_ah/background?twice", headers={
        "X-Appfront-Background": "x", "X-AppEngine-BackgroundRequest": "feedfacefeedface"})
    assert status == 200
    for rec in records(af):
        assert header(rec, "X-AppEngine-BackgroundRequest") is None, rec


def test_automatic_scaling_is_refused(appfront):
    af = appfront("background")
    status, _, body = af.get("/start")
    assert status == 500, (status, body)
    err = json.loads(body)
    assert err["app_error"][0] == BACKEND_REQUIRED, err
    assert "manual_scaling or basic_scaling" in err["app_error"][1], err
    time.sleep(0.3)
    assert not [r for r in records(af) if r["path"] == "/_ah/background"]


def test_stats_are_the_instances_figures(appfront):
    af = appfront("background", yaml_extra="manual_scaling:\n  instances: 1\n")
    status, _, body = af.get("/stats")
    assert status == 200, (status, body)
    st = json.loads(body)
    cpu, mem = st["cpu"], st["memory"]
    # field numbers: current 1, total 2, average1m 3, average10m 4,
    # rate1m 5, rate10m 6
    # A Python instance: a few megabytes resident, some CPU used to start.
    assert 2 < mem["1"] < 4096, st
    assert mem["3"] > 0 and mem["4"] > 0, st
    assert cpu["2"] > 0 and cpu["5"] >= 0 and cpu["6"] >= 0, st
    # The instance's own figures: its RSS as /proc says (within a margin,
    # the process grows a little between the two reads).
    pid = af.instance_pid()
    with open(f"/proc/{pid}/statm") as f:
        rss_mb = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    assert abs(mem["1"] - rss_mb) < max(4, rss_mb / 4), (st, rss_mb)


def test_bad_calls_get_clear_errors(appfront):
    af = appfront("background", yaml_extra=MANUAL_2)
    api = HttpClient(api_port(af))
    try:
        # A truncated varint: not a GetSystemStatsRequest.
        r = api.call("system", "GetSystemStats", b"\x08")
        assert r.rpc_error and r.rpc_error[0] == BAD_REQUEST, r
        assert "GetSystemStatsRequest" in r.rpc_error[1], r
        r = api.call("system", "StartBackgroundRequest", b"\x08", request_id="0" * 32)
        assert r.rpc_error and r.rpc_error[0] == BAD_REQUEST, r
        r = api.call("system", "NoSuchMethod")
        assert r.rpc_error and r.rpc_error[0] == CALL_NOT_FOUND, r
        # The internal methods are not for clients.
        r = api.call("system", "BackgroundTake")
        assert r.rpc_error and r.rpc_error[0] == CALL_NOT_FOUND, r
        # No request id: no instance can be chosen.
        r = api.call("system", "StartBackgroundRequest")
        assert r.app_error and r.app_error[0] == BACKEND_REQUIRED, r
        assert "request id" in r.app_error[1], r
        # A request id the front end never gave out: answered (the front
        # end finds no instance for it and says so in its log).
        r = api.call("system", "StartBackgroundRequest", request_id="f" * 32)
        assert r.ok, r
        assert af.wait_for_stderr(r"background request [0-9a-f]{16} not sent", timeout=5), \
            af.stderr()
    finally:
        api.close()
    # Still serving.
    assert af.get("/")[0] == 200
