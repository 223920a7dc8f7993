"""Push tasks routed to modules (docs/taskqueue.md, "Which module runs a
task"): a queue's target: (MODULE or VERSION.MODULE) wins, then the
task's own Host field (MODULE.localhost, or what the modules API's
GetHostname answers for a module), then the default module. A target or
host naming no module being served fails the task with one log line, and
it is retried.

Two copies of the task app of tests/e2e/apps/taskqueue: the default module
in BASE/default, which records what it serves in BASE/requests.jsonl, and
the module "worker" in BASE/w/worker, which records in BASE/w/requests.jsonl.
"""

import json
import time
import uuid

import pytest

import taskqueue_api as tq
from apiclient import HttpClient
from conftest import make_app, run_appfront
from test_modules import MODULE_LINE, startup_ports

QUEUES = """
- name: to-worker
  rate: 50/s
  target: worker
- name: to-version
  rate: 50/s
  target: v9.worker
- name: to-default
  rate: 50/s
  target: default
- name: by-version
  rate: 50/s
  target: "1"
- name: to-ghost
  rate: 50/s
  target: ghost
  retry_parameters:
    task_retry_limit: 1
    min_backoff_seconds: 0.1
    max_backoff_seconds: 0.1
"""


def records(path):
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            r = json.loads(line)
            r["headers"] = {k.lower(): v for k, v in r["headers"]}
            out.append(r)
    return out


def wait_path(af, path, timeout=10.0):
    """(module, record) of the first request for PATH, in either module's
    log, waiting up to TIMEOUT."""
    deadline = time.monotonic() + timeout
    while True:
        for module, log in (("default", af.default_log), ("worker", af.worker_log)):
            for r in records(log):
                if r["path"] == path:
                    return module, r
        assert time.monotonic() < deadline, f"{path} never arrived:\n{af.stderr()}"
        time.sleep(0.05)


def add(af, queue, url, headers=(), retry=None):
    r = HttpClient(af.hostport("api")[1]).call(
        "taskqueue", "Add", tq.add_request(queue=queue, name="", url=url, headers=headers,
                                           retry=retry))
    assert r.ok, r
    return tq.decode(r.response)[1][0].decode()


def uniq():
    return uuid.uuid4().hex[:12]


@pytest.fixture(scope="module")
def tasks(appfront_module, tmp_path_factory):
    base = tmp_path_factory.mktemp("tqmod")
    dflt = make_app(base / "default", "taskqueue")
    with open(dflt / "queue.yaml", "a") as f:
        f.write(QUEUES)
    (dflt / "dispatch.yaml").write_text(
        "dispatch:\n  - url: \"*/disp/*\"\n    service: default\n")
    worker = make_app(base / "w" / "worker", "taskqueue", yaml_extra="service: worker\n")
    (worker / "queue.yaml").unlink()
    af = appfront_module(app_dirs=[dflt, worker])
    af.ports = startup_ports(af, MODULE_LINE)
    af.hosts = {m.group(1): f"{m.group(2)}:{m.group(3)}"
                for m in map(MODULE_LINE.match, af.lines) if m}
    af.default_log = base / "requests.jsonl"
    af.worker_log = base / "w" / "requests.jsonl"
    return af


def test_queue_target_names_the_module(tasks):
    port = tasks.ports["default"]
    path = f"/ok/{uniq()}"
    add(tasks, "to-worker", path)
    module, r = wait_path(tasks, path)
    assert module == "worker", tasks.stderr()
    # As production's WORKER.APP.appspot.com: the module's host name.
    assert r["headers"]["host"] == f"worker.localhost:{port}"
    assert r["headers"]["x-appengine-queuename"] == "to-worker"


def test_queue_target_with_a_version(tasks):
    # One version per module: another version's target runs on the module.
    path = f"/ok/{uniq()}"
    add(tasks, "to-version", path)
    assert wait_path(tasks, path)[0] == "worker"


def test_queue_target_naming_the_default_version(tasks):
    path = f"/ok/{uniq()}"
    add(tasks, "by-version", path)
    assert wait_path(tasks, path)[0] == "default"


def test_dispatch_applies_to_a_module_target_not_a_versioned_one(tasks):
    path = f"/disp/{uniq()}"
    add(tasks, "to-worker", path)
    assert wait_path(tasks, path)[0] == "default"
    path = f"/disp/{uniq()}"
    add(tasks, "to-version", path)
    assert wait_path(tasks, path)[0] == "worker"


def test_task_host_names_the_module(tasks):
    port = tasks.ports["default"]
    for host in (f"worker.localhost:{port}", "worker.localhost", "v2.worker.localhost"):
        path = f"/ok/{uniq()}"
        add(tasks, "default", path, headers=[("Host", host)])
        module, r = wait_path(tasks, path)
        assert module == "worker", (host, tasks.stderr())
        assert r["headers"]["host"] == host


def test_task_host_from_get_hostname(tasks):
    # GetHostname("worker") answers the worker's own HOST:PORT: the task is
    # sent there, with that Host.
    path = f"/ok/{uniq()}"
    add(tasks, "default", path, headers=[("Host", tasks.hosts["worker"])])
    module, r = wait_path(tasks, path)
    assert module == "worker"
    assert r["headers"]["host"] == tasks.hosts["worker"]
    path = f"/ok/{uniq()}"
    add(tasks, "default", path, headers=[("Host", tasks.hosts["default"])])
    assert wait_path(tasks, path)[0] == "default"


def test_other_task_hosts_go_to_the_default_module(tasks):
    path = f"/ok/{uniq()}"
    add(tasks, "default", path, headers=[("Host", "www.example.com")])
    module, r = wait_path(tasks, path)
    assert module == "default"
    assert r["headers"]["host"] == "www.example.com"


def test_queue_target_wins_over_the_task_host(tasks):
    path = f"/ok/{uniq()}"
    add(tasks, "to-default", path, headers=[("Host", "worker.localhost")])
    module, r = wait_path(tasks, path)
    assert module == "default"
    assert r["headers"]["host"] == f"default.localhost:{tasks.ports['default']}"
    path = f"/ok/{uniq()}"
    add(tasks, "to-worker", path, headers=[("Host", tasks.hosts["default"])])
    assert wait_path(tasks, path)[0] == "worker"


def wait_line(af, text, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not any(text in l for l in af.lines):
        assert time.monotonic() < deadline, f"no line with {text!r}:\n{af.stderr()}"
        time.sleep(0.05)
    return [l for l in af.lines if text in l]


def test_target_naming_no_module_fails_and_retries(tasks):
    path = f"/ok/{uniq()}"
    name = add(tasks, "to-ghost", path)
    lines = wait_line(tasks, f"to-ghost/{name} not run")
    assert 'the queue\'s target "ghost" names no module being served (default, worker)' \
        in lines[0], lines
    # Retried once (task_retry_limit: 1), then dropped; never served.
    wait_line(tasks, f"task '{name}' of queue 'to-ghost' failed 2 time(s)", timeout=5)
    assert len([l for l in tasks.lines if f"to-ghost/{name} not run" in l]) == 2, tasks.stderr()
    assert not any(r["path"] == path for r in records(tasks.default_log) +
                   records(tasks.worker_log))
    assert tasks.proc.poll() is None


def test_task_host_naming_no_module_fails(tasks):
    path = f"/ok/{uniq()}"
    name = add(tasks, "default", path, headers=[("Host", "ghost.localhost:1")],
               retry={"retry_limit": 0})
    lines = wait_line(tasks, f"default/{name} not run")
    assert 'its Host "ghost.localhost:1" names no module being served' in lines[0], lines
    time.sleep(0.3)
    assert not any(r["path"] == path for r in records(tasks.default_log) +
                   records(tasks.worker_log))


def test_bad_target_stops_startup(tmp_path):
    app = make_app(tmp_path / "app", "taskqueue")
    (app / "queue.yaml").write_text("queue:\n- name: q\n  rate: 1/s\n  target: Worker.x.y\n")
    r = run_appfront(["--port=0", "--admin_port=0", "--api_port=0", str(app)], cwd=tmp_path,
                     app_dirs=[app])
    assert r.returncode == 2, r.stderr
    errors = [l for l in r.stderr.splitlines() if "queue.yaml" in l]
    assert len(errors) == 1, r.stderr
    assert "queue.yaml:4:11: target: 'Worker.x.y' is not MODULE or VERSION.MODULE" in errors[0]
