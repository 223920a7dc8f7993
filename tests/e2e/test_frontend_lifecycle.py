"""Command line, startup, logging, instance environment and shutdown.

Issue 2, "Must show": /quit, SIGTERM and SIGKILL of appfront leave no
instance process behind. Also: the four startup lines with the real ports;
a bad flag or value is one line and exit status 2; a bad app.yaml names
app.yaml:LINE:COLUMN and exits 2; one log line per request; the instance
environment of shared/DESIGN.md; instance output logged.
"""

import json
import os
import re
import signal
import stat
import threading
import time
import urllib.parse

import pytest

from conftest import make_app, pid_alive, run_appfront


# --- startup ----------------------------------------------------------------


def test_startup_lines_show_real_ports(appfront):
    af = appfront("threadsafe", direct=True)
    ports = {}
    for name in ("main", "direct", "admin", "api"):
        u = urllib.parse.urlsplit(af.urls[name])
        assert u.scheme == "http" and u.port, af.urls
        ports[name] = u.port
    assert 0 not in ports.values()
    assert len(set(ports.values())) == 4, ports
    # The back door is off unless asked for.
    plain = appfront("threadsafe")
    assert "direct" not in plain.urls
    assert "Starting direct port" not in plain.stderr()


def test_threads_are_named(appfront):
    """Each thread says what it is in top -H, perf and gdb
    (docs/architecture.md, "Threads")."""
    af = appfront("threadsafe")
    names = sorted(
        open(f"/proc/{af.proc.pid}/task/{t}/comm").read().strip()
        for t in os.listdir(f"/proc/{af.proc.pid}/task")
    )
    assert names == ["af-api-io", "af-api-listen", "af-backend", "appfront"], names


# --- shutdown -----------------------------------------------------------------


def started_with_instances(appfront):
    """appfront with an instance known to be up, and that instance's pid."""
    af = appfront("threadsafe")
    pid = af.instance_pid()
    assert pid_alive(pid)
    assert af.instances(), "no instance process found by its working directory"
    return af, pid


def test_quit_stops_everything(appfront):
    af, pid = started_with_instances(appfront)
    status, _, _ = af.get("/quit", which="admin")
    assert status == 200
    assert af.wait_exit(10) == 0, af.stderr()
    assert not af.wait_no_instances(), af.instances()
    assert not pid_alive(pid)


def test_quit_answers_200_even_with_nothing_to_wait_for(appfront):
    # No request yet, so possibly no instance: the shutdown has nothing to
    # wait for, and the 200 must still reach the client before the close.
    af = appfront("threadsafe", ready=False)
    status, _, body = af.get("/quit", which="admin")
    assert status == 200, (status, body)
    assert af.wait_exit(10) == 0, af.stderr()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_finishes_in_flight_work_then_stops_everything(appfront, sig):
    af, pid = started_with_instances(appfront)
    result = []

    def in_flight():
        try:
            result.append(af.get("/sleep?ms=500", timeout=10))
        except Exception as e:  # shown by the assertion below
            result.append((repr(e), None, None))

    t = threading.Thread(target=in_flight)
    t.start()
    time.sleep(0.2)  # the request is at the instance
    af.proc.send_signal(sig)
    rc = af.wait_exit(10)
    t.join(10)
    assert rc == 0, f"exit status {rc} after {sig.name}:\n{af.stderr()}"
    assert result and result[0][0] == 200, f"in-flight request lost: {result}"
    assert not af.wait_no_instances(), af.instances()
    assert not pid_alive(pid)


def test_sigkill_leaves_no_instance_behind(appfront):
    af, pid = started_with_instances(appfront)
    af.proc.kill()
    af.proc.wait(5)
    left = af.wait_no_instances(3.0)
    assert not left, f"instances outlived a SIGKILLed appfront: {left}"
    assert not pid_alive(pid)


# --- command line and app.yaml errors ------------------------------------------


def run_expecting_2(tmp_path, args, app_dirs=()):
    r = run_appfront(args, cwd=tmp_path, app_dirs=app_dirs)
    assert not r.timed_out, f"appfront was still running after 5 s:\n{r.stderr}"
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert not r.leftovers, f"a refused start left processes behind: {r.leftovers}"
    return r


@pytest.mark.parametrize("args,mention", [
    (["--no_such_flag=1"], "no_such_flag"),
    (["--port=abc"], "--port"),
    (["--port=70000"], "--port"),
    (["--automatic_restart=perhaps"], "--automatic_restart"),
    (["--port"], "--port"),
])
def test_bad_flag_is_one_line_and_exit_2(tmp_path, args, mention):
    app = make_app(tmp_path / "app")
    r = run_expecting_2(tmp_path, ["--admin_port=0", "--api_port=0"] + args + [app], [app])
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"wanted one line, got {lines}"
    assert mention in lines[0], lines[0]


def test_no_app_path_is_exit_2(tmp_path):
    r = run_expecting_2(tmp_path, ["--port=0"])
    assert r.stderr.strip()


def test_help_is_exit_0(tmp_path):
    r = run_appfront(["--help"], cwd=tmp_path)
    assert r.returncode == 0, (r.returncode, r.stderr)
    assert "--port" in r.stdout + r.stderr


def ports_off(tmp_path):
    return ["--port=0", "--admin_port=0", "--api_port=0", f"--storage_path={tmp_path / 'storage'}"]


def test_bad_app_yaml_value_names_line_and_column(tmp_path):
    app = make_app(tmp_path / "app", "bad_value")
    r = run_expecting_2(tmp_path, ports_off(tmp_path) + [app], [app])
    # "threadsafe: maybe" is line 3; the value starts in column 13.
    assert re.search(r"app\.yaml:3:13\b", r.stderr), r.stderr
    assert "threadsafe" in r.stderr


def test_bad_app_yaml_syntax_names_line_and_column(tmp_path):
    app = make_app(tmp_path / "app", "bad_syntax")
    r = run_expecting_2(tmp_path, ports_off(tmp_path) + [app], [app])
    assert re.search(r"app\.yaml:[45]:\d+", r.stderr), r.stderr


def test_missing_app_yaml_is_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    r = run_expecting_2(tmp_path, ports_off(tmp_path) + [tmp_path / "empty"])
    assert r.stderr.strip()


# --- logging and environment ----------------------------------------------------


@pytest.fixture(scope="module")
def af(appfront_module):
    return appfront_module("threadsafe", flags=["--env_var=HELLO_FROM_FLAG=flag value"])


def test_one_log_line_per_request(af):
    marker = f"/no-such-page-{os.getpid()}-{time.monotonic_ns()}"
    status, _, _ = af.get(marker)
    assert status == 404
    af.get("/pid")
    line = af.wait_for_stderr(re.escape(marker), timeout=3)
    assert line, f"no log line for GET {marker}:\n{af.stderr()[-2000:]}"
    assert "GET" in line and re.search(r"\b404\b", line), line
    assert sum(marker in x for x in af.stderr().splitlines()) == 1, af.stderr()[-2000:]

    post = marker + "-post"
    status, _, _ = af.get(post, method="POST", body=b"x")
    line = af.wait_for_stderr(re.escape(post), timeout=3)
    assert line and "POST" in line and re.search(r"\b404\b", line), line


def test_instance_output_is_logged(af):
    line = af.wait_for_stderr(r"hello: listening on", timeout=3)
    assert line, af.stderr()[-2000:]


def test_instance_environment(af):
    status, _, body = af.get("/env")
    assert status == 200, body
    env = json.loads(body)
    sock = env.get("APPFRONT_HTTP_SOCKET")
    assert sock and len(sock.encode()) < 108, env
    mode = stat.S_IMODE(os.stat(os.path.dirname(sock)).st_mode)
    assert mode == 0o700, f"socket directory mode {oct(mode)}"
    assert "PORT" not in env, "a native runtime gets a socket, not PORT"
    assert env.get("APPFRONT_API_SOCKET"), env
    assert env.get("API_HOST") and env.get("API_PORT", "").isdigit(), env
    assert env.get("RUN_WITH_DEVAPPSERVER") == "1"
    assert env.get("GAE_ENV") == "localdev"
    assert env.get("SERVER_SOFTWARE") == "Development/2.0"
    assert "e2e-app" in env.get("GAE_APPLICATION", ""), env
    assert env.get("GAE_SERVICE") == "default"
    for name in ("GAE_VERSION", "GAE_INSTANCE", "GAE_RUNTIME", "GOOGLE_CLOUD_PROJECT"):
        assert env.get(name), f"{name} missing: {env}"
    assert env.get("HELLO_FROM_APP_YAML") == "yes"
    assert env.get("HELLO_FROM_FLAG") == "flag value"
