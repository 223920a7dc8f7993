"""Scaling down: idle instances stop, and the next request starts one again.

basic_scaling stops an instance that held no request for `idle_timeout`
(here 1s); automatic scaling stops idle instances beyond min_instances (and
max_idle_instances) after its idle period, shortened for these tests with
APPFRONT_TEST_AUTOMATIC_IDLE_MS; manual scaling never stops one. Stopping
loses nothing: a bounded load that makes instances come and go sees no
failed request. Everything runs against the real binary and the real hello
app; an instance is seen as its pid (GET /pid), GAE_INSTANCE (GET /env) and
the admin server's list.
"""

import http.client
import json
import re
import threading
import time

import pytest

from conftest import make_app, pid_alive, run_appfront

BASIC_1S = "basic_scaling:\n  max_instances: 4\n  idle_timeout: 1s\n"


def instance_env(af, which="main"):
    status, _, body = af.get("/env", which=which)
    assert status == 200, (status, body[:300], af.stderr())
    return json.loads(body)


def listed(af):
    """The instances the admin server lists for the default module:
    [(name, pid, state)]."""
    status, _, body = af.get("/", which="admin")
    assert status == 200, (status, body[:300])
    mod = json.loads(body)["modules"][0]
    return [(i["name"], i["pid"], i["state"]) for i in mod["instances"]]


def wait_gone(pid, bound):
    """Seconds until process PID exits; None if it still runs after BOUND."""
    t0 = time.monotonic()
    while pid_alive(pid):
        if time.monotonic() - t0 > bound:
            return None
        time.sleep(0.02)
    return time.monotonic() - t0


def wait_listed(af, n, bound):
    """Waits until the admin server lists exactly N instances; returns them."""
    deadline = time.monotonic() + bound
    while True:
        now = listed(af)
        if len(now) == n:
            return now
        if time.monotonic() > deadline:
            pytest.fail(f"{len(now)} instances listed after {bound} s, expected {n}: "
                        f"{now}\n{af.stderr()}")
        time.sleep(0.05)


def test_basic_scaling_stops_an_idle_instance_and_the_next_request_starts_one(appfront):
    af = appfront("threadsafe", yaml_extra=BASIC_1S, direct=True)
    env = instance_env(af)
    first, pid = env["GAE_INSTANCE"], af.instance_pid()
    t0 = time.monotonic()
    # Not before its idle_timeout: a second's idle is measured from the
    # last request.
    time.sleep(0.5)
    assert pid_alive(pid), f"instance stopped after 0.5 s of a 1 s idle_timeout:\n{af.stderr()}"
    took = wait_gone(pid, 5.0)
    assert took is not None, f"instance {pid} still runs 5 s after idle_timeout 1s:\n{af.stderr()}"
    assert time.monotonic() - t0 >= 0.9
    assert af.wait_for_stderr(rf"Instance {first} held no request for \d+ ms: stopping it", 2)
    assert wait_listed(af, 0, 3.0) == []

    # The next request starts a new instance, which answers.
    env = instance_env(af)
    assert env["GAE_INSTANCE"] != first, env
    assert af.instance_pid() != pid

    # So does one on the direct port once that one has gone too.
    second = af.instance_pid()
    assert wait_gone(second, 5.0) is not None, af.stderr()
    status, _, body = af.get("/pid", which="direct")
    assert status == 200, (status, body[:300], af.stderr())
    assert int(body) not in (pid, second)
    af.known_pids.add(int(body))


def test_bad_idle_timeout_is_refused_with_its_position(tmp_path):
    # make_app appends a blank line: basic_scaling is line 14, idle_timeout
    # line 16, its value in column 17.
    app = make_app(tmp_path / "app", "threadsafe",
                   "basic_scaling:\n  max_instances: 1\n  idle_timeout: 10x\n")
    r = run_appfront(["--port=0", "--admin_port=0", "--api_port=0",
                      f"--storage_path={tmp_path / 'storage'}", app], cwd=tmp_path,
                     app_dirs=[app])
    assert not r.timed_out and r.returncode == 2, (r.returncode, r.stderr)
    assert re.search(r"app\.yaml:16:17: idle_timeout: expected a duration .*got '10x'",
                     r.stderr), r.stderr
    assert not r.leftovers


def test_bad_test_idle_variable_is_an_error(appfront):
    af = appfront("threadsafe", env={"APPFRONT_TEST_AUTOMATIC_IDLE_MS": "0"})
    assert af.wait_for_stderr(r"ERROR .*APPFRONT_TEST_AUTOMATIC_IDLE_MS=0: expected "
                              r"milliseconds from 1 to 86400000", 2), af.stderr()


def test_requests_keep_a_basic_instance_alive(appfront):
    af = appfront("threadsafe", yaml_extra=BASIC_1S)
    pid = af.instance_pid()
    # A request every 0.3 s for 2.5 s: never a whole second idle.
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        assert af.instance_pid() == pid, f"a busy instance was stopped:\n{af.stderr()}"
        time.sleep(0.3)
    assert "held no request" not in af.stderr()


def test_manual_scaling_never_stops_an_instance(appfront):
    af = appfront("serial", env={"APPFRONT_TEST_AUTOMATIC_IDLE_MS": "100"})
    pid = af.instance_pid()
    time.sleep(1.0)
    assert pid_alive(pid) and af.instance_pid() == pid, af.stderr()
    assert "held no request" not in af.stderr()


def grow(af, n, ms=400):
    """N requests of MS ms at once, so that automatic scaling starts
    instances for them; returns the pids that answered."""
    pids, errors = set(), []

    def one():
        try:
            status, _, body = af.get(f"/sleep?ms={ms}", timeout=10)
            if status != 200:
                errors.append((status, body[:200]))
            p = af.get("/pid")
            pids.add(int(p[2]))
        except OSError as e:
            errors.append(repr(e))

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert not errors, (errors, af.stderr())
    return pids


def test_automatic_scaling_keeps_min_instances(appfront):
    yaml = ("automatic_scaling:\n  min_instances: 2\n  max_concurrent_requests: 1\n"
            "  max_instances: 5\n")
    af = appfront("threadsafe", yaml_extra=yaml,
                  env={"APPFRONT_TEST_AUTOMATIC_IDLE_MS": "500"})
    wait_listed(af, 2, 3.0)
    time.sleep(0.8)
    assert len(listed(af)) == 2, "an instance of min_instances was stopped"
    grow(af, 5)
    assert len(listed(af)) >= 3, f"the load started no instance: {listed(af)}"
    # Idle for the period: back to min_instances, and it stays there.
    kept = wait_listed(af, 2, 4.0)
    time.sleep(1.0)
    assert listed(af) == kept, f"{kept} then {listed(af)}:\n{af.stderr()}"
    assert all(pid_alive(p) for _, p, _ in kept)
    assert af.wait_for_stderr(r"held no request for \d+ ms: stopping it", 1)


def test_automatic_scaling_keeps_max_idle_instances(appfront):
    yaml = ("automatic_scaling:\n  max_concurrent_requests: 1\n  max_instances: 5\n"
            "  max_idle_instances: 2\n")
    af = appfront("threadsafe", yaml_extra=yaml,
                  env={"APPFRONT_TEST_AUTOMATIC_IDLE_MS": "500"})
    grow(af, 5)
    assert len(listed(af)) >= 3, f"the load started no instance: {listed(af)}"
    kept = wait_listed(af, 2, 4.0)
    time.sleep(1.0)
    assert listed(af) == kept, f"{kept} then {listed(af)}:\n{af.stderr()}"


class Load:
    """A bounded load on keep-alive connections that makes instances come
    and go. THREADS connections send bursts of requests together (so the
    module scales up); between bursts connection 0 keeps sending while
    connection i > 0 pauses PAUSE + i * STEP seconds and sends one request.
    With PAUSE a little under the idle period, those single requests arrive
    about when the idle instances are being stopped, and the next burst
    needs instances started again. Every answer that is not 200 and every
    connection error is a failure."""

    def __init__(self, af, threads, bursts, per_burst, pause, step):
        self.af = af
        self.n, self.bursts, self.per_burst = threads, bursts, per_burst
        self.pause, self.step = pause, step
        self.barrier = threading.Barrier(threads)
        self.lock = threading.Lock()
        self.ok = 0
        self.failures = []
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def _request(self, conn, path):
        try:
            if conn is None:
                conn = http.client.HTTPConnection(*self.af.hostport(), timeout=10)
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
                self.failures.append((path, repr(e)))
            if conn is not None:
                conn.close()
            conn = None
        return conn

    def _run(self, i):
        conn = None
        for b in range(self.bursts):
            self.barrier.wait(timeout=20)
            for k in range(self.per_burst):
                conn = self._request(conn, "/pid" if k % 2 else "/sleep?ms=20")
            if b == self.bursts - 1:
                break
            if i == 0:
                # An instance stays busy while the others go idle.
                end = time.monotonic() + self.pause + self.n * self.step
                while time.monotonic() < end:
                    conn = self._request(conn, "/sleep?ms=50")
            else:
                time.sleep(self.pause + i * self.step)
                conn = self._request(conn, "/pid")
        if conn is not None:
            conn.close()

    def run(self):
        for t in self.threads:
            t.start()
        for t in self.threads:
            t.join(30)
        assert not any(t.is_alive() for t in self.threads), "the load did not finish"


def test_no_request_fails_while_instances_scale_down_under_load(appfront):
    # One request at a time per instance, so 16 connections need several.
    af = appfront("threadsafe", yaml_extra=BASIC_1S, flags=["--threadsafe_override=false"])
    load = Load(af, threads=16, bursts=3, per_burst=4, pause=0.85, step=0.05)
    load.run()
    log = af.stderr().splitlines()
    stopped = [l for l in log if "held no request" in l]
    started = [l for l in log if re.search(r"Instance \S+ ready in", l)]
    total = load.ok + len(load.failures)
    assert not load.failures, f"{len(load.failures)} of {total} failed: " \
                              f"{load.failures[:5]}\n{af.stderr()}"
    # 16 x 3 x 4 in the bursts, 15 x 2 between them, and connection 0's.
    assert total >= 222, total
    # The test means something only if instances did stop during the load.
    assert stopped, f"no instance was scaled down during the load:\n{af.stderr()}"
    # At most 4 run at once: a fifth start came after a stop.
    assert len(started) > 4, f"no instance was started again:\n{af.stderr()}"
