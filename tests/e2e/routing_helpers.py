"""Helpers of the routing tests (test_routing_*.py): the app directory of
tests/e2e/apps/routing with what git cannot hold well (symlinks, a FIFO,
dot-files, a sparse 100 MiB file), made before appfront starts so that a
file watcher never sees them appear."""

import os
from pathlib import Path

BIG_SIZE = 100 * 1024 * 1024
SECRET = b"TOP SECRET"


def make_routing_app(launcher, template="routing"):
    """Copies the template through the launcher and adds the runtime files.
    Returns (app_dir, outside_dir)."""
    app = Path(launcher.app(template))
    outside = app.parent / "outside"
    outside.mkdir()
    (outside / "passwd").write_bytes(SECRET + b": outside the app\n")
    if template != "routing":
        return app, outside
    pub = app / "public"
    (pub / ".hidden").write_bytes(b"a dot-file, skipped\n")
    os.symlink(outside / "passwd", pub / "out")          # a file outside
    os.symlink("../../outside", pub / "updir")           # a directory outside
    os.symlink("../secret.txt", pub / "in")              # inside: allowed
    os.symlink(".hidden", pub / "dotlink")               # to a skipped file
    os.mkfifo(pub / "fifo")
    (pub / "empty.txt").write_bytes(b"")
    with open(app / "big.bin", "wb") as f:
        f.truncate(BIG_SIZE)                             # sparse: no disk, no time
    return app, outside


def start_routing(launcher, flags=(), template="routing"):
    app, _ = make_routing_app(launcher, template)
    return launcher(app_dirs=[app], flags=flags)
