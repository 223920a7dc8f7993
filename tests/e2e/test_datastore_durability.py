"""Crash durability of the datastore (docs/datastore.md, "Durability").

The real `appfront api` stores entities through datastore_v3 over HTTP, the
way the Go library does. A writer thread keeps putting entities and records
each Put only once appfront has answered it; appfront is then killed with
SIGKILL in the middle of that stream. A new appfront on the same
--datastore_path must return every acknowledged entity, hand out no id that
was handed out before the crash (Put or AllocateIds), and the SQLite file
must pass PRAGMA integrity_check. --clear_datastore must empty it.

The datastore_v3 messages are encoded by hand (apiclient.py's helpers plus
proto2 groups, which the Path and GetResponse messages use), with the field
numbers of proto/datastore_v3.proto.
"""

import os
import signal
import sqlite3
import threading
import time

import pytest

from apiclient import ApiServer, field_bytes, field_varint, read_varint, varint

APP = "dev~crashapp"
START_GROUP, END_GROUP = 3, 4


def group(num, body):
    return varint(num << 3 | START_GROUP) + body + varint(num << 3 | END_GROUP)


def path(*elements):
    """Path { repeated group Element = 1 { type = 2; id = 3; name = 4 } }."""
    out = b""
    for kind, ident in elements:
        body = field_bytes(2, kind)
        if ident is None:
            pass
        elif isinstance(ident, int):
            body += field_varint(3, ident)
        else:
            body += field_bytes(4, ident)
        out += group(1, body)
    return out


def reference(*elements):
    return field_bytes(13, APP) + field_bytes(14, path(*elements))


def entity(elements, value):
    prop = field_bytes(3, "v") + field_bytes(5, field_varint(1, value)) + field_varint(4, 0)
    return (field_bytes(13, reference(*elements)) + field_bytes(16, b"")
            + field_bytes(14, prop))


def fields(buf):
    """[(number, wire type, value)] of one message level; a group's value is
    its raw body."""
    out, pos = [], 0
    while pos < len(buf):
        tag, pos = read_varint(buf, pos)
        num, wt = tag >> 3, tag & 7
        if wt == 0:
            v, pos = read_varint(buf, pos)
        elif wt == 2:
            n, pos = read_varint(buf, pos)
            v, pos = buf[pos:pos + n], pos + n
        elif wt == START_GROUP:
            start, depth = pos, 1
            while depth:
                t, pos = read_varint(buf, pos)
                w = t & 7
                if w == START_GROUP:
                    depth += 1
                elif w == END_GROUP:
                    depth -= 1
                elif w == 0:
                    _, pos = read_varint(buf, pos)
                elif w == 2:
                    n, pos = read_varint(buf, pos)
                    pos += n
                elif w == 1:
                    pos += 8
                elif w == 5:
                    pos += 4
            v = buf[start:pos - len(varint(num << 3 | END_GROUP))]
        elif wt == 1:
            v, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wt == 5:
            v, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        else:
            raise ValueError(f"wire type {wt}")
        out.append((num, wt, v))
    return out


def first(buf, num):
    for n, _, v in fields(buf):
        if n == num:
            return v
    return None


def put(client, elements, value):
    """Puts one entity; returns the key's last id (or None for a name)."""
    r = client.call("datastore_v3", "Put", field_bytes(1, entity(elements, value)))
    assert r.ok, r
    key = first(r.response, 1)
    last = [v for n, _, v in fields(first(key, 14)) if n == 1][-1]
    return first(last, 3)


def get_value(client, elements):
    """The int64 value of property v of the entity, or None if missing."""
    r = client.call("datastore_v3", "Get", field_bytes(1, reference(*elements)))
    assert r.ok, r
    ent_group = first(r.response, 1)
    ent = first(ent_group, 2)
    if ent is None:
        return None
    prop = first(ent, 14)
    return first(first(prop, 5), 1)


def allocate(client, size):
    """AllocateIds with a model key of kind K: (start, end)."""
    r = client.call("datastore_v3", "AllocateIds",
                    field_bytes(1, reference(("K", None))) + field_varint(2, size))
    assert r.ok, r
    return first(r.response, 1), first(r.response, 2)


def integrity(db):
    con = sqlite3.connect(db)
    try:
        return con.execute("PRAGMA integrity_check").fetchall()
    finally:
        con.close()


def test_acknowledged_puts_survive_sigkill(tmp_path):
    db = tmp_path / "ds.sqlite3"
    server = ApiServer(tmp_path, [f"--datastore_path={db}"]).start()
    client = server.http()
    # Ids handed out before the crash, by Put and by AllocateIds.
    handed = set()
    for i in range(5):
        handed.add(put(client, [("K", None)], i))
    lo, hi = allocate(client, 50)
    handed.update(range(lo, hi + 1))

    acked = {}
    stop = threading.Event()

    def writer():
        c = server.http(timeout=5)
        i = 0
        try:
            while not stop.is_set():
                name = f"e{i}"
                put(c, [("Crash", name)], i * 7)
                acked[name] = i * 7  # only once the Put was answered
                i += 1
        except Exception:
            pass  # the server died under us: expected

    t = threading.Thread(target=writer)
    t.start()
    time.sleep(1.0)
    os.killpg(server.proc.pid, signal.SIGKILL)
    server.proc.wait(10)
    stop.set()
    t.join(10)
    client.close()
    assert len(acked) > 20, f"only {len(acked)} puts were acknowledged before the kill"

    assert integrity(db) == [("ok",)]

    server = ApiServer(tmp_path, [f"--datastore_path={db}"]).start()
    try:
        client = server.http()
        lost = [n for n, v in acked.items() if get_value(client, [("Crash", n)]) != v]
        assert not lost, f"{len(lost)} acknowledged puts lost, e.g. {lost[:5]}"
        # No id comes back after the restart.
        for i in range(20):
            new = put(client, [("K", None)], i)
            assert new not in handed, f"id {new} handed out twice"
            handed.add(new)
        lo2, hi2 = allocate(client, 10)
        assert not handed & set(range(lo2, hi2 + 1))
        client.close()
    finally:
        assert server.stop() == 0
    assert integrity(db) == [("ok",)]


def test_clear_datastore_empties_it(tmp_path):
    db = tmp_path / "ds.sqlite3"
    server = ApiServer(tmp_path, [f"--datastore_path={db}"]).start()
    try:
        client = server.http()
        put(client, [("Keep", "one")], 1)
        assert get_value(client, [("Keep", "one")]) == 1
        client.close()
    finally:
        assert server.stop() == 0

    server = ApiServer(tmp_path, [f"--datastore_path={db}"]).start()
    try:
        client = server.http()
        assert get_value(client, [("Keep", "one")]) == 1, "lost across a clean restart"
        client.close()
    finally:
        assert server.stop() == 0

    server = ApiServer(tmp_path, [f"--datastore_path={db}", "--clear_datastore"]).start()
    try:
        client = server.http()
        assert get_value(client, [("Keep", "one")]) is None, "--clear_datastore kept data"
        client.close()
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("bad", [
    [("", "x")],            # empty kind
    [("K", 0)],             # id 0
    [("P", None), ("K", "x")],  # incomplete parent
])
def test_bad_keys_are_bad_request(tmp_path, bad):
    server = ApiServer(tmp_path, [f"--datastore_path={tmp_path / 'ds'}"]).start()
    try:
        client = server.http()
        r = client.call("datastore_v3", "Put", field_bytes(1, entity(bad, 1)))
        assert r.app_error is not None and r.app_error[0] == 1, r  # BAD_REQUEST
        r = client.call("datastore_v3", "Get", field_bytes(1, reference(*bad)))
        assert r.app_error is not None and r.app_error[0] == 1, r
        client.close()
    finally:
        assert server.stop() == 0
