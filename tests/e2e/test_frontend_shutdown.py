"""Shutdown with connections still open: idle keep-alive ones are closed
and appfront exits 0 (docs/architecture.md, "Shutdown")."""

import signal
import socket

import pytest


def idle_keepalive_conns(af, n):
    host, port = af.hostport("main")
    socks = []
    for _ in range(n):
        s = socket.create_connection((host, port), timeout=5)
        s.sendall(b"GET / HTTP/1.1\r\nHost: e2e\r\n\r\n")
        data = b""
        while b"Hello" not in data:
            chunk = s.recv(4096)
            assert chunk, "closed before answering"
            data += chunk
        socks.append(s)  # left open and idle: keep-alive
    return socks


@pytest.mark.parametrize("how", ["quit", "sigterm"])
@pytest.mark.parametrize("n", [1, 50])
def test_shutdown_with_idle_keepalive_connections(appfront, how, n):
    af = appfront("threadsafe")
    socks = idle_keepalive_conns(af, n)
    if how == "quit":
        status, _, _ = af.get("/quit", which="admin")
        assert status == 200
    else:
        af.proc.send_signal(signal.SIGTERM)
    rc = af.wait_exit(10)
    assert rc == 0, f"exit status {rc}:\n{af.stderr()}"
    af.exit_checked = True
    # The idle connections were closed by appfront, not left hanging.
    for s in socks:
        s.settimeout(2)
        assert s.recv(1) == b""
        s.close()
