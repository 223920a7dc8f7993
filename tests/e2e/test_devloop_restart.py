"""The developer loop, issue 6: a change to a watched file restarts the
instances within a second, and no request fails because of it; ignored
files restart nothing; app.yaml is reloaded, and a broken one is refused
with its position while the old configuration keeps serving.

Everything runs against the real binary and the real hello app. A restart is
seen from outside as a new pid behind GET /pid.
"""

import http.client
import threading
import time

import pytest

from conftest import RawConn

RESTART_BOUND = 1.0  # seconds, from the write to the first answer of the new instance


def wait_new_pid(af, old, bound, path="/pid"):
    """Polls until GET /pid answers a pid other than OLD; returns (pid,
    seconds waited). Fails after BOUND seconds."""
    t0 = time.monotonic()
    while True:
        status, _, body = af.get(path, timeout=5)
        assert status == 200, (status, body, af.stderr())
        pid = int(body)
        if pid != old:
            return pid, time.monotonic() - t0
        if time.monotonic() - t0 > bound:
            pytest.fail(f"no restart within {bound} s (pid still {old}):\n{af.stderr()}")
        time.sleep(0.01)


def settle(af, old):
    """After a setup step that restarts (a new directory is a change): waits
    for the new instance, then a little more so that nothing is pending;
    returns its pid."""
    pid, _ = wait_new_pid(af, old, 3.0)
    time.sleep(0.3)
    return af.instance_pid()


class SteadyClients:
    """Client loops on keep-alive connections, counting every answer that
    is not 200 and every connection error. A slow loop keeps requests of
    300 ms in flight so that a restart always finds some to finish."""

    def __init__(self, af, fast=2, slow=1):
        self.af = af
        self.stop = threading.Event()
        self.ok = 0
        self.failures = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._loop, args=("/pid", 0.005))
                        for _ in range(fast)]
        self.threads += [threading.Thread(target=self._loop, args=("/sleep?ms=300", 0))
                         for _ in range(slow)]

    def _loop(self, path, pause):
        host, port = self.af.hostport()
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(host, port, timeout=10)
                conn.request("GET", path)
                r = conn.getresponse()
                body = r.read()
                with self.lock:
                    if r.status == 200:
                        self.ok += 1
                    else:
                        self.failures.append((path, r.status, body[:300]))
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                with self.lock:
                    self.failures.append((path, "error", repr(e)))
                if conn:
                    conn.close()
                conn = None
            if pause:
                time.sleep(pause)
        if conn:
            conn.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(15)


def test_edit_restarts_within_a_second_and_no_request_fails(appfront):
    af = appfront("devloop", direct=True)
    app = af.app_dirs[0]
    first = af.instance_pid()
    (app / "src").mkdir()
    (app / "src" / "handler.c").write_text("one\n")
    old = settle(af, first)
    with SteadyClients(af) as clients:
        time.sleep(0.4)
        for round_ in range(3):
            (app / "src" / "handler.c").write_text(f"version {round_}\n")
            new, took = wait_new_pid(af, old, RESTART_BOUND)
            assert took < RESTART_BOUND
            old = new
            time.sleep(0.4)
    assert clients.failures == [], f"{clients.failures[:5]}\n{af.stderr()}"
    assert clients.ok > 50, clients.ok
    # The slow requests that were in flight on the old instances finished
    # (they count as ok above); the old instances are gone afterwards.
    assert af.wait_for_stderr(r"old instances finish their requests", 1)
    assert len(af.instances()) == 1, af.instances()


def test_waiting_requests_go_to_the_new_generation(appfront):
    """threadsafe: false, one instance: while it holds a slow request, the
    queued ones are handed to the new instance once it is ready, and the
    slow one still finishes on the old."""
    af = appfront("devloop_serial")
    app = af.app_dirs[0]
    old = af.instance_pid()
    results = {}

    def get(name, path):
        try:
            results[name] = af.get(path, timeout=10)
        except OSError as e:
            results[name] = ("error", repr(e), b"")

    slow = threading.Thread(target=get, args=("slow", "/sleep?ms=1200"))
    slow.start()
    time.sleep(0.2)
    queued = [threading.Thread(target=get, args=(f"q{i}", "/pid")) for i in range(3)]
    for t in queued:
        t.start()
    time.sleep(0.1)
    (app / "main.txt").write_text("changed\n")
    for t in queued:
        t.join(10)
    slow.join(10)
    assert results["slow"][0] == 200, (results["slow"], af.stderr())
    for i in range(3):
        status, _, body = results[f"q{i}"]
        assert status == 200, (results[f"q{i}"], af.stderr())
        assert int(body) != old, "a queued request went to the old instance"
    # Answered by the new instance before the slow one was done.
    assert af.wait_for_stderr(r"default: GET /sleep\?ms=1200 200", 2)


IGNORED = [
    ".hidden",         # dot-file (editor noise)
    "sub/.#lock",      # Emacs lock, in a subdirectory
    "notes.txt~",      # backup
    "#draft#",         # Emacs autosave
    "main.c.swp",      # vim swap
    "4913",            # vim's probe file
    "skipped/a.txt",   # skip_files ^skipped/.*$
    "sub/debug.log",   # skip_files ^(.*/)?.*\.log$
    "scratch/tmp.dat", # --watcher_ignore_re
]


def test_ignored_files_restart_nothing(appfront):
    af = appfront("devloop", flags=["--watcher_ignore_re=^scratch/"])
    app = af.app_dirs[0]
    first = af.instance_pid()
    for d in ("sub", "skipped", "scratch"):
        (app / d).mkdir()
    # Creating sub/ restarts (a new directory is a change); skipped/ and
    # scratch/ do not.
    before = settle(af, first)
    n_changed = af.stderr().count("changed:")
    for rel in IGNORED:
        (app / rel).write_text("x\n")
    (app / "sub" / ".#lock").unlink()
    time.sleep(0.6)
    assert af.instance_pid() == before, af.stderr()
    assert af.stderr().count("changed:") == n_changed, af.stderr()
    # The watcher is alive: a file that is not ignored does restart.
    (app / "sub" / "real.c").write_text("x\n")
    wait_new_pid(af, before, RESTART_BOUND)


def test_new_directories_are_followed(appfront):
    af = appfront("devloop")
    app = af.app_dirs[0]
    first = af.instance_pid()
    (app / "a" / "b" / "c").mkdir(parents=True)
    before = settle(af, first)
    (app / "a" / "b" / "c" / "deep.c").write_text("x\n")
    wait_new_pid(af, before, RESTART_BOUND)


def test_app_yaml_reload_and_refusal(appfront):
    af = appfront("devloop")
    app = af.app_dirs[0]
    yaml = app / "app.yaml"
    status, _, body = af.get("/env?name=HELLO_FROM_APP_YAML")
    assert b'"first"' in body, body
    before = af.instance_pid()

    # A broken app.yaml: refused with its position, the old config serves.
    good = yaml.read_text()
    yaml.write_text(good.replace('threadsafe: true', 'threadsafe: [oops'))
    line = af.wait_for_stderr(r"app\.yaml:\d+:\d+: .*keeping the previous configuration", 2)
    assert line, af.stderr()
    assert str(yaml) in line
    assert af.instance_pid() == before

    # A good one: reloaded, and the new instances see the new settings.
    yaml.write_text(good.replace('"first"', '"second"'))
    wait_new_pid(af, before, RESTART_BOUND)
    assert af.wait_for_stderr(r"Reloaded .*app\.yaml", 1)
    status, _, body = af.get("/env?name=HELLO_FROM_APP_YAML")
    assert b'"second"' in body, body


def test_automatic_restart_false_turns_it_off(appfront):
    af = appfront("devloop", flags=["--automatic_restart=false"])
    app = af.app_dirs[0]
    before = af.instance_pid()
    (app / "main.c").write_text("x\n")
    (app / "app.yaml").write_text((app / "app.yaml").read_text().replace("first", "third"))
    time.sleep(0.6)
    assert af.instance_pid() == before
    assert "Watching" not in af.stderr()


def test_mtime_fallback_sees_changes(appfront):
    af = appfront("devloop", flags=["--use_mtime_file_watcher"])
    app = af.app_dirs[0]
    assert af.wait_for_stderr(r"Watching .* polling", 1), af.stderr()
    before = af.instance_pid()
    (app / "main.c").write_text("x\n")
    # One poll period (1 s) plus the restart.
    pid, took = wait_new_pid(af, before, 2.0)
    (app / ".hidden").write_text("x\n")
    (app / "skipped").mkdir()
    (app / "skipped" / "x").write_text("x\n")
    time.sleep(1.3)
    assert af.instance_pid() == pid, af.stderr()
