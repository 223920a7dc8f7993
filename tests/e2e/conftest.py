"""End-to-end harness: the real appfront binary with the real hello app.

Nothing here is a stand-in. Each test starts build/appfront (or
$APPFRONT_BUILD/appfront, which is how `make e2e SANITIZE=1` points the tests
at the sanitizer build) on an app directory generated from a template in
tests/e2e/apps/, with every port 0, scrapes the startup lines of
shared/DESIGN.md from its stderr, and talks to it with real HTTP clients and
raw sockets.

Teardown is part of the test: appfront is asked to stop with GET /quit on
its admin server, must exit 0 within a bound, and must leave no instance
process behind. Instances are found by their working directory, which is the
app directory appfront starts them in (DESIGN.md): that catches the
/bin/sh of the entrypoint as well as the app, whatever process group or
session they ended up in, and even after appfront itself is gone.
"""

import http.client
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("APPFRONT_BUILD", REPO / "build")).resolve()
APPFRONT_BIN = BUILD / "appfront"
HELLO_BIN = BUILD / "examples" / "hello"
APPS = Path(__file__).resolve().parent / "apps"

# Bounds of the harness itself; the tests carry their own.
STARTUP_TIMEOUT = 10.0
READY_TIMEOUT = 10.0
QUIT_TIMEOUT = 10.0
ORPHAN_TIMEOUT = 3.0

STARTUP_LINES = {
    "api": re.compile(r'^Starting API server at: (http://\S+)\s*$'),
    "main": re.compile(r'^Starting module "default" running at: (http://\S+)\s*$'),
    "direct": re.compile(r'^Starting direct port for module "default" at: (http://\S+)\s*$'),
    "admin": re.compile(r'^Starting admin server at: (http://\S+)\s*$'),
}


# --- app directories --------------------------------------------------------


def make_app(dest, template="threadsafe", yaml_extra=""):
    """Copies tests/e2e/apps/TEMPLATE to DEST with @HELLO@ replaced by the
    shell-quoted absolute path of the built hello, so the same templates
    serve the plain and the sanitizer build. Returns DEST."""
    src = APPS / template
    dest = Path(dest)
    shutil.copytree(src, dest)
    hello = shlex.quote(str(HELLO_BIN))
    for f in dest.rglob("*.yaml"):
        text = f.read_text().replace("@HELLO@", hello)
        if f.name == "app.yaml" and yaml_extra:
            text += "\n" + yaml_extra
        f.write_text(text)
    return dest


# --- processes --------------------------------------------------------------


def _proc_state(pid):
    """The one-letter state of PID, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name is in parentheses and may itself hold spaces.
    return stat[stat.rindex(")") + 2]


def processes_in(dirs, exclude=()):
    """Live (non-zombie) processes whose working directory is one of DIRS or
    below it: {pid: cmdline}."""
    roots = [os.path.realpath(d) for d in dirs]
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if pid in exclude or pid == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue  # gone, a zombie, or not ours
        if not any(cwd == r or cwd.startswith(r + os.sep) for r in roots):
            continue
        if _proc_state(pid) in (None, "Z", "X"):
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        found[pid] = cmd
    return found


def pid_alive(pid):
    return _proc_state(pid) not in (None, "Z", "X")


def rss_kib(pid):
    """VmRSS of PID in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


# --- appfront ---------------------------------------------------------------


def asan_options(extra):
    """ASAN_OPTIONS with EXTRA appended to whatever the caller set. Tests
    that measure RSS pass "quarantine_size_mb=0": under ASan, freed memory
    otherwise sits in a 256 MiB quarantine and reads as growth."""
    base = os.environ.get("ASAN_OPTIONS", "")
    return f"{base}:{extra}" if base else extra


class Appfront:
    """One running appfront. Its stderr is drained into self.lines by a
    thread for the whole run, so the pipe never fills and tests can look at
    what it logged."""

    def __init__(self, app_dirs, flags=(), direct=False, workdir=None, env=None, wrapper=()):
        self.env = env  # extra environment variables for appfront
        self.wrapper = list(wrapper)  # a command that execs appfront, e.g. prlimit
        self.app_dirs = [Path(d) for d in app_dirs]
        self.flags = list(flags)
        self.direct = direct
        self.workdir = Path(workdir)
        self.urls = {}
        self.lines = []
        self.stdout = []
        self.known_pids = set()  # instance pids seen through GET /pid
        self._cond = threading.Condition()
        self._threads = []
        self.proc = None
        self.exit_checked = False

    # -- starting

    def command(self):
        cmd = self.wrapper + [str(APPFRONT_BIN), "--port=0", "--admin_port=0", "--api_port=0"]
        if self.direct:
            cmd.append("--direct_port=0")
        cmd.append(f"--storage_path={self.workdir / 'storage'}")
        cmd += self.flags
        cmd += [str(d) for d in self.app_dirs]
        return cmd

    def start(self):
        if not APPFRONT_BIN.exists():
            pytest.fail(f"{APPFRONT_BIN} does not exist: run `make` first")
        if not HELLO_BIN.exists():
            pytest.fail(f"{HELLO_BIN} does not exist: run `make` first")
        self.proc = subprocess.Popen(
            self.command(),
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # Its own session: a leftover can be found and killed by group
            # at the very end, whatever the test did.
            start_new_session=True,
            env=dict(os.environ, **(self.env or {})),
        )
        for stream, sink in ((self.proc.stderr, self.lines), (self.proc.stdout, self.stdout)):
            t = threading.Thread(target=self._drain, args=(stream, sink), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _drain(self, stream, sink):
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip("\r\n")
            with self._cond:
                sink.append(line)
                if sink is self.lines:
                    for name, rx in STARTUP_LINES.items():
                        m = rx.match(line)
                        if m and name not in self.urls:
                            self.urls[name] = m.group(1)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_startup(self, timeout=STARTUP_TIMEOUT):
        want = {"main", "admin", "api"} | ({"direct"} if self.direct else set())
        deadline = time.monotonic() + timeout
        with self._cond:
            while not want <= set(self.urls):
                left = deadline - time.monotonic()
                if self.proc.poll() is not None:
                    pytest.fail(
                        f"appfront exited with {self.proc.returncode} before printing "
                        f"the startup lines {sorted(want - set(self.urls))}:\n{self.stderr()}"
                    )
                if left <= 0:
                    pytest.fail(
                        f"no startup lines {sorted(want - set(self.urls))} within "
                        f"{timeout} s:\n{self.stderr()}"
                    )
                self._cond.wait(min(left, 0.1))
        return self

    def wait_ready(self, timeout=READY_TIMEOUT):
        """The first GET / through the main port answers 200: an instance is
        up and forwarding works."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"appfront exited with {self.proc.returncode}:\n{self.stderr()}")
            try:
                status, _, body = self.get("/", timeout=2)
                if status == 200:
                    return self
                last = f"status {status}: {body[:300]!r}"
            except OSError as e:
                last = repr(e)
            time.sleep(0.05)
        pytest.fail(f"GET / did not answer 200 within {timeout} s (last: {last}):\n{self.stderr()}")

    # -- addresses

    def hostport(self, which="main"):
        u = urllib.parse.urlsplit(self.urls[which])
        return u.hostname, u.port

    def url(self, path="/", which="main"):
        return self.urls[which].rstrip("/") + path

    def connect(self, which="main", timeout=5.0):
        """A raw socket to one of the listeners."""
        return socket.create_connection(self.hostport(which), timeout=timeout)

    # -- requests

    def get(self, path, which="main", headers=None, timeout=10.0, method="GET", body=None):
        """One request on a fresh connection: (status, headers dict with
        lowercase names, body bytes)."""
        host, port = self.hostport(which)
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            h = {"Connection": "close"}
            h.update(headers or {})
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            conn.close()

    def instance_pid(self, which="main"):
        status, _, body = self.get("/pid", which=which)
        assert status == 200, (status, body)
        pid = int(body)
        self.known_pids.add(pid)
        return pid

    # -- stderr

    def stderr(self):
        with self._cond:
            return "\n".join(self.lines)

    def wait_for_stderr(self, pattern, timeout=5.0):
        """The first stderr line matching the regular expression PATTERN,
        waiting up to TIMEOUT seconds for it; None if it never came."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if rx.search(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 0.1))

    # -- stopping

    def instances(self):
        exclude = {self.proc.pid} if self.proc else set()
        found = processes_in(self.app_dirs, exclude=exclude)
        for pid in self.known_pids:
            if pid_alive(pid) and pid not in found and pid not in exclude:
                found[pid] = "(an instance pid seen through GET /pid)"
        return found

    def wait_no_instances(self, timeout=ORPHAN_TIMEOUT):
        """Waits until no instance process is left; returns the leftovers
        (empty when none)."""
        deadline = time.monotonic() + timeout
        while True:
            left = self.instances()
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(0.05)

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self):
        """Stops appfront with GET /quit (unless it already exited) and
        returns a list of problems: a late or unclean exit, leftovers."""
        problems = []
        if self.proc is None:
            return problems
        if self.proc.poll() is None:
            try:
                status, _, body = self.get("/quit", which="admin", timeout=QUIT_TIMEOUT)
                if status != 200:
                    problems.append(f"GET /quit answered {status}: {body[:200]!r}")
            except (OSError, KeyError, http.client.HTTPException) as e:
                problems.append(f"GET /quit failed: {e!r}")
            rc = self.wait_exit(QUIT_TIMEOUT)
            if rc is None:
                problems.append(f"appfront did not exit within {QUIT_TIMEOUT} s of GET /quit")
                self.proc.kill()
                self.proc.wait()
            elif rc != 0 and not self.exit_checked:
                problems.append(f"appfront exited with {rc} after GET /quit")
        left = self.wait_no_instances()
        if left:
            problems.append(f"instance processes outlived appfront: {left}")
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        # Whatever is left in appfront's own session goes too: a test must
        # not leak into the next one even when it failed.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        for t in self._threads:
            t.join(5)
        if problems:
            problems.append("appfront stderr:\n" + self.stderr())
        return problems


class _Launcher:
    """What the fixtures hand out: start(...) returns a ready Appfront;
    every one is stopped and checked at teardown."""

    def __init__(self, tmp_path_factory):
        self._tmp = tmp_path_factory
        self.started = []

    def app(self, template="threadsafe", yaml_extra=""):
        base = self._tmp.mktemp(template)
        return make_app(base / "app", template, yaml_extra)

    def __call__(self, template="threadsafe", flags=(), direct=False, ready=True,
                 yaml_extra="", app_dirs=None, env=None, wrapper=()):
        if app_dirs is None:
            app_dirs = [self.app(template, yaml_extra)]
        workdir = self._tmp.mktemp("appfront")
        af = Appfront(app_dirs, flags=flags, direct=direct, workdir=workdir, env=env,
                      wrapper=wrapper)
        self.started.append(af)
        af.start()
        af.wait_startup()
        if ready:
            af.wait_ready()
        return af

    def teardown(self):
        problems = []
        for af in self.started:
            problems += af.stop()
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def appfront(tmp_path_factory):
    """Function-scoped: start(template, flags, direct, ...) -> Appfront."""
    launcher = _Launcher(tmp_path_factory)
    yield launcher
    launcher.teardown()


@pytest.fixture(scope="module")
def appfront_module(tmp_path_factory):
    """The same, shared by the tests of one module: a server that many
    tests can use without each paying for a start."""
    launcher = _Launcher(tmp_path_factory)
    yield launcher
    launcher.teardown()


def run_appfront(args, cwd, app_dirs=(), timeout=5.0, env=None):
    """Runs appfront to completion, for the tests of its exit status.
    Returns a CompletedProcess (text stdout and stderr) with two more
    attributes: timed_out (it had to be killed after TIMEOUT seconds) and
    leftovers (processes still running in one of APP_DIRS afterwards, which
    are then killed so they do not outlive the test). ENV adds to the
    environment."""
    proc = subprocess.Popen(
        [str(APPFRONT_BIN)] + [str(a) for a in args],
        cwd=cwd,
        env=dict(os.environ, **(env or {})),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    left = processes_in(app_dirs, exclude={proc.pid}) if app_dirs else {}
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    r = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    r.timed_out = timed_out
    r.leftovers = left
    return r


# --- a small HTTP/1.1 client on a raw socket ---------------------------------


class Response:
    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (name, value) as sent
        self.body = body

    def header(self, name, default=None):
        """The value of NAME (any case); several are joined with ", "."""
        vals = [v for k, v in self.headers if k.lower() == name.lower()]
        return ", ".join(vals) if vals else default

    def __repr__(self):
        return f"<Response {self.status} {self.reason} {self.headers} {self.body[:200]!r}>"


class RawConn:
    """A client connection that writes exactly the bytes a test gives it and
    parses what comes back, keeping unread bytes for the next response (so
    pipelined answers are read in order)."""

    def __init__(self, af_or_sock, which="main", timeout=5.0):
        if isinstance(af_or_sock, socket.socket):
            self.sock = af_or_sock
        else:
            self.sock = af_or_sock.connect(which, timeout)
        self.sock.settimeout(timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed by appfront")
        self.buf += chunk

    def _read_until(self, sep, limit=1 << 20):
        while sep not in self.buf:
            if len(self.buf) > limit:
                raise AssertionError(f"no {sep!r} within {limit} bytes: {self.buf[:300]!r}")
            self._fill()
        i = self.buf.index(sep)
        out, self.buf = self.buf[:i], self.buf[i + len(sep):]
        return out

    def _read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_head(self):
        """Status line and headers of the next response, interim ones
        included: (status, reason, headers)."""
        head = self._read_until(b"\r\n\r\n").decode("latin-1")
        lines = head.split("\r\n")
        m = re.match(r"^HTTP/1\.[01] (\d{3})(?: (.*))?$", lines[0])
        assert m, f"bad status line {lines[0]!r}"
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            assert sep, f"bad header line {line!r}"
            headers.append((name.strip(), value.strip()))
        return int(m.group(1)), m.group(2) or "", headers

    def read_response(self, method="GET", body_sink=None):
        """The next final response. With BODY_SINK (a callable), the body is
        passed to it piece by piece instead of being kept."""
        while True:
            status, reason, headers = self.read_head()
            if not 100 <= status < 200 or status == 101:
                break
        resp = Response(status, reason, headers, b"")
        keep = []
        sink = body_sink or keep.append
        te = (resp.header("Transfer-Encoding") or "").lower()
        cl = resp.header("Content-Length")
        if method == "HEAD" or status in (204, 304):
            pass
        elif "chunked" in te:
            while True:
                size_line = self._read_until(b"\r\n").split(b";")[0].strip()
                size = int(size_line, 16)
                if size == 0:
                    # Trailers, up to the empty line.
                    while self._read_until(b"\r\n") != b"":
                        pass
                    break
                while size:
                    if not self.buf:
                        self._fill()
                    piece = self.buf[:size]
                    self.buf = self.buf[len(piece):]
                    size -= len(piece)
                    sink(piece)
                assert self._read_exact(2) == b"\r\n", "chunk not followed by CRLF"
        elif cl is not None:
            assert "," not in cl, f"several Content-Length values: {cl!r}"
            left = int(cl)
            while left:
                if not self.buf:
                    self._fill()
                piece = self.buf[:left]
                self.buf = self.buf[len(piece):]
                left -= len(piece)
                sink(piece)
        else:
            # Delimited by close.
            while True:
                try:
                    self._fill()
                except EOFError:
                    break
                sink(self.buf)
                self.buf = b""
            if self.buf:
                sink(self.buf)
                self.buf = b""
        resp.body = b"".join(keep)
        return resp

    def closed_by_peer(self, timeout=3.0):
        """True when appfront closes the connection (EOF or reset) within
        TIMEOUT seconds, reading and discarding anything before that."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False
        return False


def still_serving(af, which="main"):
    """Asserts that a new connection to AF gets 200 for GET /."""
    status, _, body = af.get("/", which=which)
    assert status == 200, f"appfront stopped serving: {status} {body[:200]!r}\n{af.stderr()}"
    assert b"Hello" in body
