"""Request smuggling: every framing ambiguity of RFC 9112 sent on a raw
socket, each answered with its status, and no desynchronisation.

For each vector the test checks that
  - the answer is the documented status (docs/architecture.md, "Errors
    answered by appfront"), or, where the page says nothing, what RFC 9112
    requires (the section is cited next to the vector);
  - an error answer closes the connection;
  - nothing smuggled reached the app: appfront's request log never shows
    /smuggled, and probe requests on fresh connections (which reuse the
    pooled connections to the instance, where a smuggled prefix would wait
    for its victim) come back with their own X-Probe and without
    X-Smuggled;
  - what reached the app carries no framing field of the client's in any
    spelling (appfront frames the forwarded body itself);
  - the server still serves.

The other hostile tests import the helpers at the top of this file.
"""

import json
import re
import uuid

import pytest

from conftest import RawConn, still_serving

H = b"Host: e2e\r\n"
# A complete request, for vectors where one reading of the framing makes it
# the next request on the connection.
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: e2e\r\nX-Smuggled: yes\r\n\r\n"
# A prefix that poisons whatever request follows it on an upstream
# connection: its request line and X-Smuggled, then the victim's request line
# swallowed as the value of X-Ignore.
POISON = b"GET /smuggled HTTP/1.1\r\nX-Smuggled: yes\r\nX-Ignore: "

FRAMING = ("content-length", "transfer-encoding")


@pytest.fixture(scope="module")
def af(appfront_module):
    return appfront_module("threadsafe", flags=[
        "--request_head_timeout=2",
        "--request_deadline=3",
    ])


# --- helpers shared by the hostile tests --------------------------------------


def answers(af, raw, limit=20, timeout=5.0):
    """Sends RAW on a new connection and reads responses until appfront
    closes it or LIMIT are read: (responses, closed)."""
    out = []
    with RawConn(af, timeout=timeout) as c:
        c.send(raw)
        try:
            while len(out) < limit:
                out.append(c.read_response())
                # Later answers, or the close, come at once if at all.
                c.sock.settimeout(1.0)
        except (EOFError, ConnectionResetError):
            return out, True
        except TimeoutError:
            return out, False
        return out, c.closed_by_peer(0.5)


def assert_no_desync(af, probes=4):
    """Fresh connections still get their own answers, unpoisoned, and the
    app never saw a request for /smuggled."""
    for _ in range(probes):
        probe = uuid.uuid4().hex
        with RawConn(af) as c:
            c.send(b"GET /headers HTTP/1.1\r\nHost: e2e\r\nX-Probe: %s\r\n\r\n" % probe.encode())
            r = c.read_response()
        assert r.status == 200, f"probe answered {r!r}\n{af.stderr()}"
        seen = {k.lower(): v for k, v in json.loads(r.body).items()}
        assert seen.get("x-probe") == probe, f"a probe got another request's answer: {seen}"
        assert "x-smuggled" not in seen, f"a smuggled prefix reached the app: {seen}"
    forwarded = [l for l in af.stderr().splitlines()
                 if re.search(r"default(?: \(direct\))?: [A-Z]+ /smuggled", l)]
    assert not forwarded, f"a smuggled request was served: {forwarded}"
    still_serving(af)


def assert_refused(af, raw, statuses):
    """RAW is answered with one of STATUSES (all errors), the connection is
    closed after it, and nothing was desynchronised."""
    rs, closed = answers(af, raw)
    assert rs, f"no answer to {raw[:200]!r}\n{af.stderr()[-2000:]}"
    assert rs[0].status in statuses, f"wanted {statuses}, got {rs[0]!r} for {raw[:200]!r}"
    assert closed, f"connection left open after {rs[0].status}"
    assert len(rs) == 1, f"more answers after an error: {rs[1:]}"
    assert_no_desync(af)
    return rs[0]


def forwarded_headers(resp):
    """The request headers the app saw, from hello's /headers answer."""
    return json.loads(resp.body)


def assert_clean_framing_fields(seen):
    """Only appfront's own framing field reaches the app, spelled right."""
    framing = [k for k in seen if k.strip().lower() in FRAMING]
    assert all(k == k.strip() for k in framing), \
        f"the app got a framing field with whitespace in its name: {framing}"
    assert len(framing) <= 1, f"the app got more than one framing field: {framing}"


# --- the vectors --------------------------------------------------------------

REFUSED = [
    # docs/architecture.md: CL+TE is 400, either order, whatever the values.
    ("cl_te", b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n" + SMUGGLED, {400}),
    ("te_cl", b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nContent-Length: 100\r\n\r\n"
     b"0\r\n\r\n" + SMUGGLED, {400}),
    ("cl_te_zero", b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"5\r\nhello\r\n0\r\n\r\n", {400}),
    # docs/architecture.md: two Content-Lengths are 400, equal or not.
    ("two_cl_differ", b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 60\r\n\r\n"
     b"hello" + SMUGGLED, {400}),
    ("two_cl_equal", b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", {400}),
    # RFC 9112 §6.3: an invalid Content-Length is unrecoverable: 400.
    ("cl_list", b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 5, 5\r\n\r\nhello", {400}),
    ("cl_negative", b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n" + SMUGGLED, {400}),
    ("cl_plus", b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: +5\r\n\r\nhello", {400}),
    ("cl_hex", b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 0x5\r\n\r\nhello", {400}),
    ("cl_overflow", b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 18446744073709551621\r\n\r\nhello"
     + SMUGGLED, {400}),
    # RFC 9112 §5.1: whitespace between a field name and the colon MUST be
    # answered 400; a lenient reader and a strict one frame it differently.
    ("te_space_before_colon", b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding : chunked\r\n\r\n"
     b"5\r\nhello\r\n0\r\n\r\n", {400}),
    ("cl_space_before_colon", b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length : 5\r\n\r\nhello", {400}),
    ("te_tab_before_colon", b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding\t: chunked\r\n\r\n"
     b"0\r\n\r\n", {400}),
    # docs/architecture.md: any coding but a single chunked is 501 (RFC 9112
    # §6.3 would say 400 when chunked is present but not final; either
    # refuses the message and closes).
    ("te_chunked_not_final", b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, identity\r\n\r\n"
     b"0\r\n\r\n" + SMUGGLED, {400, 501}),
    ("te_gzip_chunked", b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", {501}),
    ("te_identity", b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: identity\r\nContent-Length: 5\r\n\r\nhello",
     {400, 501}),
    ("te_twice", b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n", {400}),
    ("te_fold_other_coding", b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: identity\r\n chunked\r\n\r\n"
     b"0\r\n\r\n", {400, 501}),
    ("te_vertical_tab", b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n",
     {400, 501}),
    # RFC 9112 §7.1: chunk-size is 1*HEXDIG; anything else (a sign, 0x, more
    # than 64 bits) is a malformed message: 400.
    ("chunk_negative", b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
     {400}),
    ("chunk_overflow", b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     b"10000000000000005\r\nhello\r\n0\r\n\r\n", {400}),
    ("chunk_0x", b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", {400}),
    ("chunk_empty_size", b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n\r\nhello\r\n0\r\n\r\n",
     {400}),
    # RFC 9112 §7.1: chunk-data is followed by CRLF; two other bytes there
    # mean the sender and the reader disagree on where the chunk ended.
    ("chunk_data_without_crlf", b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     b"5\r\nhelloXX0\r\n\r\n", {400}),
    ("chunk_data_too_long", b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     b"3\r\nhello\r\n0\r\n\r\n", {400}),
    # RFC 9112 §7.1.1: chunk-ext is tokens and quoted strings; a bare LF in
    # it is no line end, so the size line never ends where the sender meant.
    ("chunk_ext_bare_lf", b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     b"5;a\nhello\r\n0\r\n\r\n", {400}),
    # RFC 9112 §2.2: a bare CR MUST be treated as invalid (or replaced by SP).
    ("bare_cr_request_line", b"GET / HTTP/1.1\rHost: e2e\r\n\r\n", {400}),
    ("bare_cr_in_value", b"GET /headers HTTP/1.1\r\n" + H + b"X-A: 1\rX-Smuggled: yes\r\n\r\n", {400}),
    ("bare_cr_eats_a_byte", b"GET /headers HTTP/1.1\r\n" + H + b"X-A: 1\rZTransfer-Encoding: chunked\r\n\r\n", {400}),
    ("bare_cr_end_of_head", b"GET / HTTP/1.1\r\n" + H + b"\r\r\n", {400}),
    # NUL anywhere in the head: RFC 9110 §5.5 field values exclude it.
    ("nul_in_value", b"GET /headers HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n", {400}),
    ("nul_in_name", b"GET /headers HTTP/1.1\r\n" + H + b"X-\x00A: b\r\n\r\n", {400}),
    ("nul_in_target", b"GET /hea\x00ders HTTP/1.1\r\n" + H + b"\r\n", {400}),
    ("nul_before_colon", b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding\x00: chunked\r\n\r\n0\r\n\r\n", {400}),
    # RFC 9112 §2.2: whitespace before the first field line: reject (or
    # ignore the line; then the Host check answers 400 all the same).
    ("space_before_first_field", b"GET /headers HTTP/1.1\r\n Transfer-Encoding: chunked\r\n" + H + b"\r\n",
     {400}),
]


@pytest.mark.parametrize("name,raw,statuses", REFUSED, ids=[v[0] for v in REFUSED])
def test_refused_without_desync(af, name, raw, statuses):
    assert_refused(af, raw, statuses)


def test_chunk_extensions_are_ignored(af):
    # RFC 9112 §7.1.1: a recipient ignores extensions it does not know; they
    # are not forwarded (appfront re-chunks) and the data is intact.
    raw = (b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
           b"5;name=value;quoted=\"a;b\"\r\nhello\r\n6 ; x\r\n world\r\n0\r\n\r\n")
    rs, _ = answers(af, raw, limit=1)
    assert rs and rs[0].status == 200, rs
    assert rs[0].body == b"hello world", rs[0]
    assert_no_desync(af)


def test_trailer_fields_do_not_frame(af):
    # A Content-Length in the trailer section must not change the framing
    # (RFC 9112 §7.1.2), and the next pipelined request is served in order.
    raw = (b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
           b"5\r\nhello\r\n0\r\nContent-Length: 40\r\nX-Smuggled: yes\r\n\r\n"
           b"GET /headers HTTP/1.1\r\n" + H + b"X-Probe: second\r\n\r\n")
    rs, _ = answers(af, raw, limit=2)
    assert [r.status for r in rs] == [200, 200], rs
    assert rs[0].body == b"hello"
    seen = {k.lower(): v for k, v in forwarded_headers(rs[1]).items()}
    assert seen.get("x-probe") == "second" and "x-smuggled" not in seen, seen
    assert_no_desync(af)


def test_obs_fold_transfer_encoding_is_refused_or_unfolded(af):
    # RFC 9112 §5.2: obs-fold is either refused (400) or replaced by SP
    # before the field is interpreted. Either way the framing must be the
    # one appfront forwards: chunked, body "hello".
    raw = (b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding:\r\n chunked\r\n\r\n"
           b"5\r\nhello\r\n0\r\n\r\n")
    rs, closed = answers(af, raw, limit=1)
    assert rs, "no answer"
    if rs[0].status == 400:
        assert closed
    else:
        assert rs[0].status == 200 and rs[0].body == b"hello", rs[0]
    assert_no_desync(af)


def test_obs_fold_into_another_field_hides_nothing(af):
    # "X-A: 1\r\n Transfer-Encoding: chunked" is X-A's value continued, not
    # a field: refused, or forwarded with X-A unfolded and the body framed
    # by the real Content-Length.
    raw = (b"POST /headers HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nX-A: 1\r\n Transfer-Encoding: chunked\r\n\r\n"
           b"hello")
    rs, closed = answers(af, raw, limit=1)
    assert rs, "no answer"
    if rs[0].status == 400:
        assert closed
    else:
        assert rs[0].status == 200, rs[0]
        seen = forwarded_headers(rs[0])
        assert_clean_framing_fields(seen)
        assert all("\r" not in v and "\n" not in v for v in seen.values()), seen
    assert_no_desync(af)


def test_bare_lf_line_ends_are_one_request(af):
    # RFC 9112 §2.2: a recipient MAY take a bare LF as a line end. If it
    # does, the request is one request with its own headers.
    raw = b"GET /headers HTTP/1.1\nHost: e2e\nX-Probe: lf\n\n"
    rs, closed = answers(af, raw, limit=1)
    assert rs and rs[0].status in (200, 400), rs
    if rs[0].status == 200:
        assert forwarded_headers(rs[0]).get("X-Probe") == "lf"
    assert_no_desync(af)


def test_http10_with_transfer_encoding_closes(af):
    # RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty
    # framing: process it (as chunked) and close, or refuse it.
    raw = (b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + SMUGGLED)
    rs, closed = answers(af, raw)
    assert rs and rs[0].status in (200, 400), rs
    assert closed and len(rs) == 1, f"the connection was reused after faulty framing: {rs}"
    assert_no_desync(af)


@pytest.mark.parametrize("spelling", [
    b"Transfer-Encoding: chunked",
    b"transfer-encoding: CHUNKED",
    b"Transfer-Encoding:chunked",
    b"Transfer-Encoding:  chunked  ",
])
def test_framing_fields_never_reach_the_app_as_sent(af, spelling):
    # Whatever the spelling the client used, the app sees only appfront's
    # own framing field (or the request is refused).
    raw = b"POST /headers HTTP/1.1\r\n" + H + spelling + b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    rs, closed = answers(af, raw, limit=1)
    assert rs, "no answer"
    if rs[0].status in (400, 501):
        assert closed
    else:
        assert rs[0].status == 200, rs[0]
        assert_clean_framing_fields(forwarded_headers(rs[0]))
    assert_no_desync(af)


def test_poisoned_body_never_prefixes_the_next_request(af):
    # A Content-Length body that looks like the start of a request: it is
    # body, delivered as such, and the next requests are not prefixed by it.
    body = POISON
    raw = (b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    rs, _ = answers(af, raw, limit=1)
    assert rs and rs[0].status == 200 and rs[0].body == body, rs
    assert_no_desync(af, probes=6)


def test_refused_request_leaves_pooled_connection_clean(af):
    # The head is forwarded before the body is read; a body that turns out
    # malformed half way must not leave its first half on a pooled
    # connection to the instance.
    raw = (b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
           + b"%x\r\n" % len(POISON) + POISON + b"\r\nzz\r\n")
    rs, closed = answers(af, raw)
    assert rs and rs[0].status == 400 and closed, rs
    assert_no_desync(af, probes=6)


@pytest.mark.parametrize("name", [b"Transfer-Encodingx", b"Transfer-Encoding-Hint", b"Content-Lengths"])
def test_field_named_like_a_framing_field_is_just_a_field(af, name):
    # A field whose name merely starts like a framing field is an ordinary
    # field (RFC 9110 §5.1: names are compared whole): forwarded as is,
    # framing nothing. http-parser 2.9 flags names starting with
    # "Transfer-Encoding" as that field, so they must not reach its check.
    raw = b"GET /headers HTTP/1.1\r\n" + H + name + b": 1\r\n\r\n"
    rs, _ = answers(af, raw, limit=1)
    assert rs and rs[0].status == 200, rs
    assert forwarded_headers(rs[0]).get(name.decode()) == "1", rs[0].body[:300]
    assert_no_desync(af)
