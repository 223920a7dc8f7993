"""Durability of the search service (docs/services.md, "search").

The real `appfront api` indexes documents through search.IndexDocument over
HTTP, the way the Go library does. A writer thread keeps indexing and
records each document only once appfront has answered; appfront is then
killed with SIGKILL in the middle of that stream. A new appfront on the same
--storage_path must find every acknowledged document (by ListDocuments and
by a Search for its words), and the SQLite file must pass PRAGMA
integrity_check. --clear_search_indexes must empty it.

The search messages are encoded by hand with the field numbers of
proto/search.proto (the official search.proto's).
"""

import os
import signal
import sqlite3
import threading
import time

from apiclient import ApiServer, field_bytes, field_varint, parse_fields

INDEX = "crash-index"


def index_spec(name=INDEX):
    return field_bytes(1, name)


def document(doc_id, word):
    value = field_varint(1, 0) + field_bytes(3, f"word{word} common")  # TEXT
    return field_bytes(1, doc_id) + field_bytes(3, field_bytes(1, "body") + field_bytes(2, value))


def index_docs(client, docs):
    params = b"".join(field_bytes(1, d) for d in docs) + field_bytes(3, index_spec())
    r = client.call("search", "IndexDocument", field_bytes(1, params))
    assert r.ok, r
    statuses = parse_fields(r.response).get(1, [])
    assert len(statuses) == len(docs)
    for s in statuses:
        assert parse_fields(s).get(1, [0])[0] == 0, parse_fields(s)


def list_ids(client):
    """Every document id of the index, through ListDocuments pages."""
    ids, start, inclusive = [], None, True
    while True:
        params = field_bytes(1, index_spec()) + field_varint(4, 1000) + field_varint(5, 1)
        if start is not None:
            params += field_bytes(2, start) + field_varint(3, 1 if inclusive else 0)
        r = client.call("search", "ListDocuments", field_bytes(1, params))
        assert r.ok, r
        f = parse_fields(r.response)
        assert parse_fields(f[1][0]).get(1, [0])[0] == 0  # status OK
        page = [parse_fields(d)[1][0].decode() for d in f.get(2, [])]
        ids += page
        if len(page) < 1000:
            return ids
        start, inclusive = page[-1], False


def search_count(client, query):
    params = field_bytes(1, index_spec()) + field_bytes(2, query) + field_varint(6, 1)
    r = client.call("search", "Search", field_bytes(1, params))
    assert r.ok, r
    f = parse_fields(r.response)
    status = parse_fields(f[3][0])
    assert status.get(1, [0])[0] == 0, status
    return f[2][0]


def integrity(db):
    con = sqlite3.connect(db)
    try:
        return con.execute("PRAGMA integrity_check").fetchall()
    finally:
        con.close()


def test_acknowledged_documents_survive_sigkill_and_clear(tmp_path):
    db = tmp_path / "storage" / "search.sqlite3"
    server = ApiServer(tmp_path).start()
    client = server.http()
    index_docs(client, [document("first", 0)])
    acked = []
    stop = threading.Event()

    def writer():
        c = server.http(timeout=5)
        i = 1
        try:
            while not stop.is_set():
                index_docs(c, [document(f"d{i:05d}", i)])
                acked.append(f"d{i:05d}")  # only once IndexDocument was answered
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
    assert len(acked) > 20, f"only {len(acked)} documents were acknowledged before the kill"
    assert integrity(db) == [("ok",)]

    server = ApiServer(tmp_path).start()
    try:
        client = server.http()
        stored = set(list_ids(client))
        lost = [d for d in ["first"] + acked if d not in stored]
        assert not lost, f"{len(lost)} acknowledged documents lost, e.g. {lost[:5]}"
        # The words were committed with the documents.
        assert search_count(client, f"word{len(acked)}") == 1
        assert search_count(client, "common") == len(stored)
        client.close()
    finally:
        assert server.stop() == 0

    # --clear_search_indexes empties the file at start...
    server = ApiServer(tmp_path, ["--clear_search_indexes"]).start()
    try:
        client = server.http()
        assert list_ids(client) == []
        assert search_count(client, "common") == 0
        index_docs(client, [document("after-clear", 1)])
        client.close()
    finally:
        assert server.stop() == 0
    assert any("--clear_search_indexes" in line for line in server.lines), server.lines
    # ...and a start without it keeps what was indexed since.
    server = ApiServer(tmp_path).start()
    try:
        client = server.http()
        assert list_ids(client) == ["after-clear"]
        client.close()
    finally:
        assert server.stop() == 0
    assert integrity(db) == [("ok",)]
