"""Out of file descriptors, appfront sheds connections cleanly and does not
spin: the listener pauses instead of being woken on every loop turn by a
connection it cannot accept (docs/architecture.md, "Accept")."""

import os
import socket
import time


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of the whole line.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_descriptor_exhaustion_neither_spins_nor_wedges(appfront):
    # prlimit execs appfront with a small descriptor limit: about 25 are
    # in use once it runs (listeners, API threads, instance pipes), so a
    # few dozen client connections exhaust it.
    af = appfront("threadsafe", wrapper=["prlimit", "--nofile=40:40"])
    status, _, _ = af.get("/")
    assert status == 200
    pid = af.proc.pid
    in_use = len(os.listdir(f"/proc/{pid}/fd"))
    assert in_use < 36, f"{in_use} descriptors in use: the test needs a higher limit"

    host, port = af.hostport("main")
    socks = []
    try:
        for _ in range(40):
            s = socket.create_connection((host, port), timeout=2)
            socks.append(s)
        time.sleep(0.3)
        before = cpu_seconds(pid)
        time.sleep(1.0)
        used = cpu_seconds(pid) - before
        # A spinning loop burns the whole second; a paused listener a few ms.
        assert used < 0.3, f"appfront used {used:.2f} s of CPU in 1 s while out of descriptors"
        assert any("Out of file descriptors" in l for l in af.lines), "no warning logged"
    finally:
        for s in socks:
            s.close()
    # Descriptors are back: it serves again (the listener resumes by itself).
    deadline = time.monotonic() + 5
    while True:
        try:
            status, _, _ = af.get("/", timeout=2)
            if status == 200:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "appfront did not recover from EMFILE"
        time.sleep(0.1)
