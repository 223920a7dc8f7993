"""Module host names (docs/modules.md, "Module host names"): on the default
module's main port, a Host field "MODULE.localhost[:PORT]" reaches that
module unless a dispatch.yaml rule matches first, and
"VERSION.MODULE.localhost" reaches it whatever the rules say, as
production's MODULE-dot-APP and VERSION-dot-MODULE-dot-APP host names do.

The app is tests/e2e/apps/modules (hello as "default" and "worker"), as in
test_modules.py, whose helpers this file uses.
"""

import pytest

from test_modules import DIRECT_LINE, MODULE_LINE, modules_app, pid_at, service_at, \
    startup_ports, wait_ready


def serving(af, host, path="/env?name=GAE_SERVICE", port=None):
    """The module that answers PATH with Host: HOST on the default module's
    main port (or PORT)."""
    return service_at(port or af.ports["default"], path, headers={"Host": host})


@pytest.fixture(scope="module")
def plain(appfront_module):
    """default + worker, no dispatch.yaml, direct ports on."""
    dflt, worker = modules_app(appfront_module)
    af = appfront_module(app_dirs=[dflt, worker], direct=True)
    af.ports = startup_ports(af, MODULE_LINE)
    af.direct_ports = startup_ports(af, DIRECT_LINE)
    wait_ready(af, af.ports["worker"])
    return af


def test_module_host_reaches_the_module(plain):
    port = plain.ports["default"]
    assert serving(plain, f"worker.localhost:{port}") == "worker"
    assert serving(plain, "worker.localhost") == "worker"
    assert serving(plain, f"WORKER.LocalHost:{port}") == "worker"
    assert serving(plain, f"default.localhost:{port}") == "default"


def test_version_and_instance_before_the_module(plain):
    port = plain.ports["default"]
    # The served version, another version (one version per module: the
    # module serves it anyway), an instance.
    assert serving(plain, f"1.worker.localhost:{port}") == "worker"
    assert serving(plain, f"v7.worker.localhost:{port}") == "worker"
    assert serving(plain, f"0.1.worker.localhost:{port}") == "worker"


def test_other_hosts_stay_on_the_default_module(plain):
    port = plain.ports["default"]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "ghost.localhost",
                 f"v1.ghost.localhost:{port}", "worker.example.com", "worker.localhost.example",
                 "worker-localhost"):
        assert serving(plain, host) == "default", host


def test_only_the_default_modules_main_port_routes(plain):
    # The worker's port serves the worker, the direct ports their module.
    assert serving(plain, "default.localhost", port=plain.ports["worker"]) == "worker"
    assert serving(plain, "worker.localhost", port=plain.direct_ports["default"]) == "default"
    assert serving(plain, "default.localhost", port=plain.direct_ports["worker"]) == "worker"


@pytest.fixture(scope="module")
def ruled(appfront_module):
    """default + worker with a dispatch.yaml whose one rule leads to the
    default module: it still wins over a MODULE.localhost host."""
    dflt, worker = modules_app(appfront_module, dispatch=(
        "dispatch:\n"
        "  - url: \"*/pid\"\n"
        "    service: default\n"))
    af = appfront_module(app_dirs=[dflt, worker])
    af.ports = startup_ports(af, MODULE_LINE)
    wait_ready(af, af.ports["worker"])
    return af


def test_dispatch_rules_come_before_a_module_host(ruled):
    port = ruled.ports["default"]
    default_pid = pid_at(port)
    worker_pid = pid_at(ruled.ports["worker"])
    assert default_pid != worker_pid
    # /pid matches the rule: the default module, whatever the host says.
    assert pid_at(port, {"Host": f"worker.localhost:{port}"}) == default_pid
    # A versioned host name is never dispatched.
    assert pid_at(port, {"Host": f"1.worker.localhost:{port}"}) == worker_pid
    # A path no rule matches: the host decides.
    assert serving(ruled, f"worker.localhost:{port}") == "worker"
    assert serving(ruled, f"localhost:{port}") == "default"
