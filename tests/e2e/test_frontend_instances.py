"""Instances as shared/DESIGN.md, "App instances", starts them: the
transport a runtime gets, a bounded startup whose failure is logged with the
instance's last stderr lines, and app.yaml warnings."""

import json
import time

from conftest import still_serving


def test_stock_runtime_gets_port_not_a_socket(appfront):
    af = appfront("stock_port")
    status, _, body = af.get("/env")
    assert status == 200, body
    env = json.loads(body)
    assert env.get("PORT", "").isdigit(), env
    assert "APPFRONT_HTTP_SOCKET" not in env, env
    assert env.get("GAE_RUNTIME") == "go121", env
    assert af.wait_for_stderr(r"hello: listening on http://127\.0\.0\.1:" + env["PORT"], 3)


def test_instance_that_dies_at_start_is_reported_with_its_stderr(appfront):
    af = appfront("broken", flags=["--instance_startup_timeout=2"], ready=False)
    t0 = time.monotonic()
    status, _, body = af.get("/", timeout=15)
    elapsed = time.monotonic() - t0
    assert 500 <= status <= 504, (status, body[:300])
    assert elapsed < 6, f"a failing instance held the request {elapsed:.1f} s:\n{af.stderr()}"
    line = af.wait_for_stderr(r"e2e: cannot start, missing config", 3)
    assert line, f"the instance's stderr is not in appfront's log:\n{af.stderr()}"


def test_instance_that_never_listens_is_bounded(appfront):
    af = appfront("never_listens", flags=["--instance_startup_timeout=1"], ready=False)
    t0 = time.monotonic()
    status, _, body = af.get("/", timeout=15)
    elapsed = time.monotonic() - t0
    assert 500 <= status <= 504, (status, body[:300])
    assert elapsed < 4, f"an instance that never listened held the request {elapsed:.1f} s"
    # The teardown checks that the `sleep 60` it started is gone too.


def test_unknown_app_yaml_key_is_a_warning(appfront):
    # make_app appends a blank line and then this one: line 14.
    af = appfront("threadsafe", yaml_extra="no_such_key: 1\n")
    line = af.wait_for_stderr(r"app\.yaml:14:\d+.*no_such_key|no_such_key.*app\.yaml:14:\d+", 3)
    assert line, f"no warning naming app.yaml:14 and the key:\n{af.stderr()}"
    still_serving(af)
