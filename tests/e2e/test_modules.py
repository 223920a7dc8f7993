"""Several modules (docs/modules.md): every app.yaml on the command line is a
module with its own instances and its own port (and direct port), each
announced with dev_appserver's startup line; dispatch.yaml sends requests
on the default module's port to other modules by path and host; the modules
API answers for every module; a bad dispatch.yaml, two modules with one
name and overlapping port ranges stop appfront at startup with one line.

The app is tests/e2e/apps/modules: hello twice, as the modules "default"
and "worker". hello reports the module it runs as through
GET /env?name=GAE_SERVICE, which appfront sets per module.
"""

import http.client
import json
import re
import socket
import time

import pytest

from apiclient import HttpClient, field_bytes, parse_fields
from conftest import Appfront, make_app, run_appfront

MODULE_LINE = re.compile(r'^Starting module "([^"]+)" running at: http://([^:\s]+):(\d+)\s*$')
DIRECT_LINE = re.compile(
    r'^Starting direct port for module "([^"]+)" at: http://([^:\s]+):(\d+)\s*$')

# ModulesServiceError codes (proto/modules.proto).
INVALID_MODULE = 1
INVALID_VERSION = 2


def modules_app(appfront, dispatch=None, worker_yaml_extra=""):
    """A fresh copy of apps/modules: (default dir, worker dir). With
    DISPATCH, that text is written as default/dispatch.yaml."""
    base = appfront.app("modules")
    if dispatch is not None:
        (base / "default" / "dispatch.yaml").write_text(dispatch)
    if worker_yaml_extra:
        with open(base / "worker" / "app.yaml", "a") as f:
            f.write("\n" + worker_yaml_extra)
    return base / "default", base / "worker"


def startup_ports(af, line_rx):
    """{module: port} from the startup lines matching LINE_RX, in order."""
    found = {}
    for line in af.lines:
        m = line_rx.match(line)
        if m:
            found[m.group(1)] = int(m.group(3))
    return found


def get(port, path, headers=None):
    """(status, body) of one GET to localhost:PORT."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=dict({"Connection": "close"}, **(headers or {})))
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def service_at(port, path="/env?name=GAE_SERVICE", headers=None):
    """The module (GAE_SERVICE) of the instance that answered PATH."""
    status, body = get(port, path, headers)
    assert status == 200, (status, body)
    return json.loads(body)["GAE_SERVICE"]


def pid_at(port, headers=None):
    status, body = get(port, "/pid", headers)
    assert status == 200, (status, body)
    return int(body)


def wait_ready(af, port):
    """The module on PORT answers (its instance is up)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            if get(port, "/")[0] == 200:
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"port {port} never answered 200:\n{af.stderr()}"
        time.sleep(0.05)


# --- serving two modules ------------------------------------------------------


@pytest.fixture(scope="module")
def two(appfront_module):
    """default + worker, with direct ports and a dispatch.yaml next to the
    default module: /env (exactly) and any host under worker.test go to the
    worker."""
    dflt, worker = modules_app(appfront_module, dispatch=(
        "dispatch:\n"
        "  - url: \"*/env\"\n"
        "    service: worker\n"
        "  - url: \"*.worker.test/*\"\n"
        "    module: worker\n"
        "  - url: \"*/pid\"\n"
        "    service: default\n"))
    af = appfront_module(app_dirs=[dflt, worker], direct=True)
    af.ports = startup_ports(af, MODULE_LINE)
    af.direct_ports = startup_ports(af, DIRECT_LINE)
    wait_ready(af, af.ports["worker"])
    return af


def test_startup_lines_one_per_module_in_order(two):
    lines = [l for l in two.lines if MODULE_LINE.match(l) or DIRECT_LINE.match(l)]
    names = [(bool(MODULE_LINE.match(l)), (MODULE_LINE.match(l) or DIRECT_LINE.match(l)).group(1))
             for l in lines]
    assert names == [(True, "default"), (False, "default"), (True, "worker"), (False, "worker")], \
        two.stderr()
    ports = set(two.ports.values()) | set(two.direct_ports.values())
    assert len(ports) == 4, (two.ports, two.direct_ports)
    # The harness's own "main" URL is the default module's line.
    assert two.hostport("main")[1] == two.ports["default"]


def test_each_port_serves_its_module(two):
    # /env on the default module's main port is dispatched to the worker
    # (below): the default module answers it on its direct port.
    assert service_at(two.ports["worker"]) == "worker"
    assert service_at(two.direct_ports["default"]) == "default"
    assert service_at(two.direct_ports["worker"]) == "worker"
    # Different instances behind the two main ports.
    assert pid_at(two.ports["default"]) != pid_at(two.ports["worker"])
    assert pid_at(two.ports["default"]) == pid_at(two.direct_ports["default"])


def test_dispatch_by_path(two):
    # "*/env" is exact: /env goes to the worker, whatever the query.
    assert service_at(two.ports["default"]) == "worker"
    assert service_at(two.ports["default"], "/env?name=GAE_SERVICE&x=/pid") == "worker"
    # Unmatched paths stay with the default module.
    assert pid_at(two.ports["default"]) == pid_at(two.direct_ports["default"])
    status, _ = get(two.ports["default"], "/envx")
    assert status == 404  # hello's own 404, from the default module
    # The request log names the module that served each request (a turn's
    # lines are written at the end of the turn: wait for them).
    assert two.wait_for_stderr(r"\bdefault: GET /envx 404\b"), two.stderr()
    assert two.wait_for_stderr(r"\bworker: GET /env\?name=GAE_SERVICE 200\b"), two.stderr()


def test_dispatch_by_host(two):
    p = two.ports["default"]
    worker_pid = pid_at(two.ports["worker"])
    # "*.worker.test/*" comes before "*/pid": first match wins.
    assert pid_at(p, {"Host": f"api.worker.test:{p}"}) == worker_pid
    assert pid_at(p, {"Host": "API.Worker.Test"}) == worker_pid
    assert pid_at(p, {"Host": f"worker.test:{p}"}) != worker_pid
    assert pid_at(p, {"Host": f"localhost:{p}"}) != worker_pid


def test_dispatch_only_on_the_default_main_port(two):
    # The worker's port and the direct ports never dispatch.
    assert service_at(two.ports["worker"]) == "worker"
    assert service_at(two.direct_ports["default"]) == "default"
    assert pid_at(two.direct_ports["default"], {"Host": "a.worker.test"}) == \
        pid_at(two.ports["default"])


def test_admin_status_lists_every_module(two):
    status, body = get(two.hostport("admin")[1], "/")
    assert status == 200
    doc = json.loads(body)
    assert [m["name"] for m in doc["modules"]] == ["default", "worker"]
    assert doc["module"]["name"] == "default" and doc["port"] == two.ports["default"]
    for m in doc["modules"]:
        assert m["port"] == two.ports[m["name"]]
        assert m["direct_port"] == two.direct_ports[m["name"]]
        assert m["default"] == (m["name"] == "default")
        assert m["instances"] and m["instances"][0]["name"].startswith(m["name"] + ".")
    assert doc["dispatch"].endswith("dispatch.yaml")


# --- the modules API --------------------------------------------------------------


def modules_call(af, method, payload=b""):
    api = HttpClient(af.hostport("api")[1])
    try:
        return api.call("modules", method, payload)
    finally:
        api.close()


def test_get_modules_lists_both(two):
    r = modules_call(two, "GetModules")
    assert r.ok, r
    assert [m.decode() for m in parse_fields(r.response).get(1, [])] == ["default", "worker"]


@pytest.mark.parametrize("module", ["worker", "default", None])
def test_get_hostname_per_module(two, module):
    r = modules_call(two, "GetHostname", field_bytes(1, module) if module else b"")
    assert r.ok, r
    hostname = parse_fields(r.response)[1][0].decode()
    # An absent module is the default one.
    assert hostname == f"localhost:{two.ports[module or 'default']}"


def test_versions_and_unknown_module(two):
    r = modules_call(two, "GetDefaultVersion", field_bytes(1, "worker"))
    assert r.ok and parse_fields(r.response)[1][0] == b"1", r
    r = modules_call(two, "GetVersions", field_bytes(1, "worker"))
    assert r.ok and parse_fields(r.response)[1] == [b"1"], r
    r = modules_call(two, "GetHostname", field_bytes(1, "nope"))
    assert r.app_error and r.app_error[0] == INVALID_MODULE, r
    assert '"default", "worker"' in r.app_error[1]
    r = modules_call(two, "GetHostname", field_bytes(1, "worker") + field_bytes(2, "7"))
    assert r.app_error and r.app_error[0] == INVALID_VERSION, r


# --- other layouts ----------------------------------------------------------------


def test_dispatch_yaml_given_on_the_command_line(appfront, tmp_path):
    dflt, worker = modules_app(appfront)
    d = tmp_path / "dispatch.yaml"
    d.write_text('dispatch:\n- url: "*/env"\n  service: worker\n')
    af = appfront(app_dirs=[worker, dflt, d])
    ports = startup_ports(af, MODULE_LINE)
    # Ports in command-line order; the dispatch rules on the default's port.
    assert list(ports) == ["worker", "default"]
    wait_ready(af, ports["worker"])
    assert service_at(ports["default"]) == "worker"
    assert service_at(ports["worker"]) == "worker"


def test_no_module_called_default(appfront):
    _, worker = modules_app(appfront)
    other, _ = modules_app(appfront)
    with open(other / "app.yaml", "a") as f:
        f.write("\nservice: api\n")
    # The harness waits for a module called "default": start it by hand.
    af = Appfront([worker, other], workdir=appfront._tmp.mktemp("appfront"))
    appfront.started.append(af)
    af.start()
    assert af.wait_for_stderr(r"^Starting admin server at: ", timeout=10), af.stderr()
    af.urls["api"] = af.urls.get("api") or re.search(
        r"Starting API server at: (http://\S+)", af.stderr()).group(1)
    af.urls["admin"] = re.search(r"Starting admin server at: (http://\S+)", af.stderr()).group(1)
    ports = startup_ports(af, MODULE_LINE)
    assert list(ports) == ["worker", "api"]
    assert af.wait_for_stderr(r'No module is called "default": module "worker", the first one '
                              r'given, serves as the default module')
    wait_ready(af, ports["api"])
    wait_ready(af, ports["worker"])
    assert service_at(ports["api"]) == "api"
    r = modules_call(af, "GetHostname")
    assert r.ok and parse_fields(r.response)[1][0].decode() == f"localhost:{ports['worker']}"


def test_each_module_routes_by_its_own_handlers(appfront):
    # Each module's app.yaml handlers apply to its requests: the worker's
    # static_dir and login: admin on its own port; the default module has
    # neither, so there the same paths reach its instance.
    dflt, worker = modules_app(appfront, dispatch=(
        "dispatch:\n  - url: \"*/s/*\"\n    service: worker\n"), worker_yaml_extra=(
        "handlers:\n- url: /s\n  static_dir: s\n- url: /admin.*\n  login: admin\n"
        "  script: auto\n- url: /.*\n  script: auto\n"))
    (worker / "s").mkdir()
    (worker / "s" / "file.txt").write_text("worker's static file\n")
    af = appfront(app_dirs=[dflt, worker])
    ports = startup_ports(af, MODULE_LINE)
    wait_ready(af, ports["worker"])
    assert get(ports["worker"], "/s/file.txt") == (200, b"worker's static file\n")
    status, _ = get(ports["worker"], "/admin/x")
    assert status == 302, status  # to the login page
    # The default module's port: /admin reaches the app (no login there),
    # and dispatch.yaml sends /s/ to the worker, whose handler serves it.
    assert get(ports["default"], "/admin/x")[0] == 404  # hello's own answer
    assert get(ports["default"], "/s/file.txt") == (200, b"worker's static file\n")
    assert not af.wait_for_stderr(r"routes every port", timeout=0.2)


def test_found_dispatch_naming_an_absent_module_is_dropped(appfront):
    dflt, _ = modules_app(appfront, dispatch=(
        'dispatch:\n- url: "*/env"\n  service: reports\n- url: "*/pid"\n  service: default\n'))
    af = appfront(app_dirs=[dflt])
    line = af.wait_for_stderr(r"dispatch\.yaml:2:3: service \"reports\" is not one of the "
                              r"modules given \(\"default\"\); the rule for '\*/env' is ignored")
    assert line, af.stderr()
    assert service_at(af.hostport("main")[1]) == "default"


def fixed_ports(n):
    """A port p such that p .. p+n-1 are free on 127.0.0.1 now."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p + n > 65535:
            continue
        socks = []
        try:
            for i in range(n):
                t = socket.socket()
                socks.append(t)
                t.bind(("127.0.0.1", p + i))
            return p
        except OSError:
            continue
        finally:
            for t in socks:
                t.close()
    pytest.skip("no run of free ports found")


def test_fixed_ports_are_consecutive(appfront):
    dflt, worker = modules_app(appfront)
    p = fixed_ports(4)
    af = appfront(app_dirs=[dflt, worker], flags=[f"--port={p}", f"--direct_port={p + 2}"])
    assert startup_ports(af, MODULE_LINE) == {"default": p, "worker": p + 1}
    assert startup_ports(af, DIRECT_LINE) == {"default": p + 2, "worker": p + 3}
    wait_ready(af, p + 1)
    assert service_at(p + 1) == "worker"
    assert service_at(p + 3) == "worker"


# --- refused at startup -------------------------------------------------------------


def ports_off(tmp_path):
    return ["--port=0", "--admin_port=0", "--api_port=0",
            f"--storage_path={tmp_path / 'storage'}"]


def refused(tmp_path, args, app_dirs):
    r = run_appfront(ports_off(tmp_path) + args, cwd=tmp_path, app_dirs=app_dirs)
    assert not r.timed_out, r.stderr
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert not r.leftovers, r.leftovers
    assert "Starting module" not in r.stderr
    lines = [l for l in r.stderr.splitlines() if l.startswith("appfront: ")]
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_bad_dispatch_yaml_names_file_line_and_problem(tmp_path):
    base = make_app(tmp_path / "app", "modules")
    dflt, worker = base / "default", base / "worker"
    (dflt / "dispatch.yaml").write_text(
        'dispatch:\n- url: "*/env"\n  service: worker\n- url: "*/a*b"\n  service: worker\n')
    line = refused(tmp_path, [dflt, worker], [dflt, worker])
    assert line == (f"appfront: {dflt}/dispatch.yaml:4:8: url: path '/a*b': '*' may only end "
                    "the path")

    (dflt / "dispatch.yaml").write_text('dispatch:\n- url: "*/env"\n  service: Worker\n')
    line = refused(tmp_path, [dflt, worker], [dflt, worker])
    assert line.startswith(f"appfront: {dflt}/dispatch.yaml:3:12: service: 'Worker' is not a "
                           "service name"), line

    (dflt / "dispatch.yaml").write_text('dispatch:\n- url: "*/env\n')
    line = refused(tmp_path, [dflt, worker], [dflt, worker])
    assert line.startswith(f"appfront: {dflt}/dispatch.yaml:3:1: "), line


def test_given_dispatch_naming_an_absent_module_is_refused(tmp_path):
    base = make_app(tmp_path / "app", "modules")
    dflt = base / "default"
    d = tmp_path / "dispatch.yaml"
    d.write_text('dispatch:\n- url: "*/env"\n  service: worker\n')
    line = refused(tmp_path, [dflt, d], [dflt])
    assert line == (f'appfront: {d}:2:3: service "worker" is not one of the modules given '
                    '("default")')


def test_given_dispatch_needs_a_default_module(tmp_path):
    base = make_app(tmp_path / "app", "modules")
    worker = base / "worker"
    d = tmp_path / "dispatch.yaml"
    d.write_text('dispatch:\n- url: "*/env"\n  service: worker\n')
    line = refused(tmp_path, [worker, d], [worker])
    assert line == (f'appfront: {d}: dispatch.yaml needs a module called "default" among the '
                    'modules given: it serves every request no rule matches')


def test_two_modules_with_one_name(tmp_path):
    base = make_app(tmp_path / "app", "modules")
    other = make_app(tmp_path / "other", "modules")
    w1, w2 = base / "worker", other / "worker"
    line = refused(tmp_path, [base / "default", w1, w2], [base, other])
    assert line == (f'appfront: two modules are called "worker": {w1}/app.yaml and '
                    f'{w2}/app.yaml; give each app.yaml its own service: name')


def test_two_applications(tmp_path):
    base = make_app(tmp_path / "app", "modules")
    other = make_app(tmp_path / "other", "threadsafe")
    with open(other / "app.yaml", "a") as f:
        f.write("\nservice: api\n")
    line = refused(tmp_path, [base / "default", other], [base, other])
    assert line == (f'appfront: the modules belong to different applications: "e2e-modules" '
                    f'({base}/default/app.yaml) and "e2e-app" ({other}/app.yaml); one appfront '
                    'serves one application')


def test_overlapping_port_ranges(tmp_path):
    base = make_app(tmp_path / "app", "modules")
    dirs = [base / "default", base / "worker"]
    r = run_appfront(["--port=9000", "--direct_port=9001", "--admin_port=0", "--api_port=0",
                      f"--storage_path={tmp_path / 'storage'}"] + dirs,
                     cwd=tmp_path, app_dirs=dirs)
    assert r.returncode == 2, r.stderr
    assert ("appfront: --direct_port=9001: the 2 modules take ports 9000-9001 from --port and "
            "9001-9002 from --direct_port, which overlap; choose ports 2 apart") in r.stderr
