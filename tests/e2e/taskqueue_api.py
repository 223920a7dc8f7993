"""The taskqueue messages for the end-to-end tests, encoded by hand.

Field numbers are those of proto/taskqueue.proto (the official
taskqueue_service.proto's). Like apiclient.py this writes the protobuf wire
format directly, proto2 groups included (wire types 3 and 4), because
python3-protobuf is not a dependency.
"""

import struct
import time

from apiclient import BYTES, END_GROUP, FIXED32, FIXED64, START_GROUP, VARINT, field_bytes, \
    field_varint, read_varint, varint

# TaskQueueServiceError codes.
OK = 0
UNKNOWN_QUEUE = 1
TASK_TOO_LARGE = 4
INVALID_TASK_NAME = 5
INVALID_QUEUE_NAME = 6
INVALID_URL = 7
TASK_ALREADY_EXISTS = 10
TOMBSTONED_TASK = 11
INVALID_ETA = 12
INVALID_REQUEST = 13
UNKNOWN_TASK = 14
DUPLICATE_TASK_NAME = 16
SKIPPED = 17
TOO_MANY_TASKS = 18
INVALID_RETRY_PARAMETERS = 20
INVALID_QUEUE_MODE = 21
TASK_LEASE_EXPIRED = 25

METHODS = {"GET": 1, "POST": 2, "HEAD": 3, "PUT": 4, "DELETE": 5}


def field_double(num, v):
    return varint(num << 3 | FIXED64) + struct.pack("<d", v)


def group(num, body):
    return varint(num << 3 | START_GROUP) + body + varint(num << 3 | END_GROUP)


def now_usec():
    return int(time.time() * 1e6)


def add_request(queue="default", name="", url=None, method="POST", body=None, headers=(),
                eta_usec=None, pull=False, tag=None, retry=None):
    """An encoded TaskQueueAddRequest. retry: dict of retry_limit,
    age_limit_sec, min_backoff_sec, max_backoff_sec, max_doublings."""
    out = field_bytes(1, queue) + field_bytes(2, name)
    out += field_varint(3, (eta_usec if eta_usec is not None else now_usec()) & (2**64 - 1))
    if not pull:
        if url is not None:
            out += field_bytes(4, url)
        out += field_varint(5, METHODS[method])
        for k, v in headers:
            out += group(6, field_bytes(7, k) + field_bytes(8, v))
    if body is not None:
        out += field_bytes(9, body)
    if retry:
        r = b""
        if "retry_limit" in retry:
            r += field_varint(1, retry["retry_limit"])
        if "age_limit_sec" in retry:
            r += field_varint(2, retry["age_limit_sec"])
        if "min_backoff_sec" in retry:
            r += field_double(3, retry["min_backoff_sec"])
        if "max_backoff_sec" in retry:
            r += field_double(4, retry["max_backoff_sec"])
        if "max_doublings" in retry:
            r += field_varint(5, retry["max_doublings"])
        out += field_bytes(17, r)
    if pull:
        out += field_varint(18, 1)
    if tag is not None:
        out += field_bytes(19, tag)
    return out


def bulk_add_request(adds):
    return b"".join(field_bytes(1, a) for a in adds)


def delete_request(queue, names):
    return field_bytes(1, queue) + b"".join(field_bytes(2, n) for n in names)


def purge_request(queue):
    return field_bytes(2, queue)


def query_tasks_request(queue, max_rows=100):
    return field_bytes(2, queue) + field_varint(5, max_rows)


def stats_request(queues):
    return b"".join(field_bytes(2, q) for q in queues)


def lease_request(queue, lease_seconds, max_tasks, group_by_tag=False, tag=None):
    out = field_bytes(1, queue) + field_double(2, lease_seconds) + field_varint(3, max_tasks)
    if group_by_tag:
        out += field_varint(4, 1)
    if tag is not None:
        out += field_bytes(5, tag)
    return out


def modify_lease_request(queue, name, eta_usec, lease_seconds):
    return (field_bytes(1, queue) + field_bytes(2, name) + field_varint(3, eta_usec & (2**64 - 1)) +
            field_double(4, lease_seconds))


def parse(buf, pos=0, end_group=None):
    """{field: [values]} with groups parsed into dicts; returns (dict, pos)."""
    out = {}
    while pos < len(buf):
        tag, pos = read_varint(buf, pos)
        num, wt = tag >> 3, tag & 7
        if wt == END_GROUP:
            if num != end_group:
                raise ValueError(f"unexpected end of group {num}")
            return out, pos
        if wt == VARINT:
            v, pos = read_varint(buf, pos)
        elif wt == BYTES:
            n, pos = read_varint(buf, pos)
            v, pos = bytes(buf[pos:pos + n]), pos + n
        elif wt == FIXED64:
            v, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wt == FIXED32:
            v, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        elif wt == START_GROUP:
            v, pos = parse(buf, pos, num)
        else:
            raise ValueError(f"wire type {wt}")
        out.setdefault(num, []).append(v)
    if end_group is not None:
        raise ValueError("group not closed")
    return out, pos


def decode(buf):
    return parse(buf)[0]


def signed(v):
    """A varint read as int64."""
    return v - (1 << 64) if v >= 1 << 63 else v
