"""mail.Send delivered over SMTP end to end: the real `appfront api` with
--smtp_host pointing at a small SMTP server written here (docs/services.md,
"mail").

The server (SmtpServer) speaks RFC 5321 over real loopback sockets, one
thread per connection, and records every line both ways and every message
it accepted, so the tests can look at the conversation as well as at the
message, which they parse with Python's email package. Each test sets how
the server behaves: extensions offered, replies refused or delayed, a
login it requires, STARTTLS with a self-signed certificate made by
`openssl` in the test.

The concurrency test proves DESIGN.md's "slow external I/O must not stall
the serialized backend": while a Send waits on a slow server, memcache
calls are answered at once.
"""

import email
import email.policy
import socket
import ssl
import subprocess
import threading
import time
import base64

import pytest

from apiclient import APPFRONT_BIN, ApiServer, field_bytes, memcache_increment

# MailServiceError codes (proto/mail.proto).
INTERNAL_ERROR = 1
BAD_REQUEST = 2


# --- MailMessage (proto/mail.proto) ----------------------------------------------


def mail_message(sender="Romeo <romeo@montague.example>", to=("juliet@capulet.example",),
                 cc=(), bcc=(), subject="See you tonight", text="Don't forget our plans.",
                 html=None, reply_to=None, attachments=(), headers=()):
    out = field_bytes(1, sender)
    if reply_to:
        out += field_bytes(2, reply_to)
    for a in to:
        out += field_bytes(3, a)
    for a in cc:
        out += field_bytes(4, a)
    for a in bcc:
        out += field_bytes(5, a)
    out += field_bytes(6, subject)
    if text is not None:
        out += field_bytes(7, text)
    if html is not None:
        out += field_bytes(8, html)
    for name, data, cid in attachments:
        att = field_bytes(1, name) + field_bytes(2, data)
        if cid:
            att += field_bytes(3, cid)
        out += field_bytes(9, att)
    for name, value in headers:
        out += field_bytes(10, field_bytes(1, name) + field_bytes(2, value))
    return out


# --- the SMTP server -----------------------------------------------------------------


class Session:
    """What one connection saw: lines in both directions, its messages."""

    def __init__(self):
        self.lines = []  # ("C", line) from appfront, ("S", line) from the server
        self.tls = False
        self.auth = None  # (mechanism, user, password) once logged in


class SmtpServer:
    """A small SMTP server on 127.0.0.1. Behaviour, set per test:

    extensions  EHLO keywords offered (besides STARTTLS and AUTH below)
    auth        None, or (user, password, ["PLAIN", "LOGIN"]) to offer AUTH
    tls         None, or an ssl.SSLContext to offer STARTTLS
    refuse      {command prefix ("RCPT TO:<bad@", "DATA", "."): reply line}
    delay       {command prefix: seconds to wait before replying}
    greet       False: accept and never say anything
    """

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.messages = []  # {"from", "rcpt", "data", "session"}
        self.sessions = []
        self.reset()
        self._stop = False
        self._threads = []
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()

    def reset(self):
        self.extensions = ["SIZE 50000000", "8BITMIME", "ENHANCEDSTATUSCODES"]
        self.auth = None
        self.tls = None
        self.refuse = {}
        self.delay = {}
        self.greet = True
        self.messages.clear()
        self.sessions.clear()

    def close(self):
        self._stop = True
        self.sock.close()

    def _accept(self):
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()

    def _serve(self, conn):
        s = Session()
        self.sessions.append(s)
        conn.settimeout(20)
        try:
            self._conversation(conn, s)
        except (OSError, ssl.SSLError, ValueError):
            pass
        finally:
            conn.close()

    def _conversation(self, conn, s):
        rfile = conn.makefile("rb")

        def send(line):
            s.lines.append(("S", line))
            conn.sendall(line.encode() + b"\r\n")

        def recv():
            raw = rfile.readline(10000)
            if not raw:
                raise ValueError("closed")
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            s.lines.append(("C", line))
            return line

        def reply(cmd, default):
            for prefix, secs in self.delay.items():
                if cmd.upper().startswith(prefix):
                    time.sleep(secs)
            for prefix, answer in self.refuse.items():
                if cmd.upper().startswith(prefix.upper()):
                    send(answer)
                    return False
            send(default)
            return True

        if not self.greet:
            time.sleep(15)
            return
        if not reply("GREETING", "220 smtp.test ESMTP ready"):
            return
        mail_from, rcpt = None, []
        while True:
            cmd = recv()
            verb = cmd.split(" ", 1)[0].upper()
            if verb == "EHLO":
                ext = list(self.extensions)
                if self.tls and not s.tls:
                    ext.append("STARTTLS")
                if self.auth:
                    ext.append("AUTH " + " ".join(self.auth[2]))
                lines = ["smtp.test greets " + cmd[5:]] + ext
                if any(cmd.upper().startswith(p) for p in self.refuse):
                    reply(cmd, "")
                    continue
                # One write, as servers send a reply: appfront must still
                # read it whole however it arrives.
                out = [("250 " if i == len(lines) - 1 else "250-") + text
                       for i, text in enumerate(lines)]
                s.lines += [("S", line) for line in out]
                conn.sendall("".join(line + "\r\n" for line in out).encode())
            elif verb == "HELO":
                reply(cmd, "250 smtp.test")
            elif verb == "STARTTLS":
                if reply(cmd, "220 2.0.0 go ahead"):
                    conn = self.tls.wrap_socket(conn, server_side=True)
                    rfile = conn.makefile("rb")
                    s.tls = True
            elif verb == "AUTH":
                parts = cmd.split(" ")
                mech = parts[1].upper()
                if mech == "PLAIN":
                    blob = base64.b64decode(parts[2]).split(b"\0")
                    user, password = blob[1].decode(), blob[2].decode()
                else:
                    send("334 VXNlcm5hbWU6")
                    user = base64.b64decode(recv()).decode()
                    send("334 UGFzc3dvcmQ6")
                    password = base64.b64decode(recv()).decode()
                if (user, password) == tuple(self.auth[:2]):
                    s.auth = (mech, user, password)
                    send("235 2.7.0 Authentication successful")
                else:
                    send("535 5.7.8 Authentication credentials invalid")
            elif verb == "MAIL":
                if self.auth and not s.auth:
                    send("530 5.7.0 Authentication required")
                    continue
                if reply(cmd, "250 2.1.0 Ok"):
                    mail_from, rcpt = cmd, []
            elif verb == "RCPT":
                if reply(cmd, "250 2.1.5 Ok"):
                    rcpt.append(cmd[len("RCPT TO:"):])
            elif verb == "DATA":
                if not reply(cmd, "354 End data with <CR><LF>.<CR><LF>"):
                    continue
                data = bytearray()
                while True:
                    raw = rfile.readline(100000)
                    if not raw:
                        raise ValueError("closed in DATA")
                    if raw == b".\r\n":
                        break
                    if raw.startswith(b"."):
                        raw = raw[1:]  # dot-stuffing undone (RFC 5321 4.5.2)
                    data += raw
                s.lines.append(("C", f"<{len(data)} bytes of message>"))
                if reply(".", "250 2.0.0 Ok: queued as 4711"):
                    self.messages.append({"from": mail_from, "rcpt": rcpt, "data": bytes(data),
                                          "session": s})
            elif verb == "QUIT":
                reply(cmd, "221 2.0.0 Bye")
                return
            elif verb == "RSET":
                mail_from, rcpt = None, []
                send("250 Ok")
            else:
                send("502 5.5.2 Error: command not recognized")

    def commands(self, session=-1):
        """The verbs appfront sent in a session, in order."""
        return [line.split(" ", 1)[0].split(":")[0].upper()
                for d, line in self.sessions[session].lines
                if d == "C" and not line.startswith("<")]


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smtp():
    srv = SmtpServer()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def api(tmp_path_factory, smtp):
    srv = ApiServer(tmp_path_factory.mktemp("mail"),
                    flags=["--smtp_host=127.0.0.1", f"--smtp_port={smtp.port}",
                           "--show_mail_body"]).start()
    yield srv
    assert srv.stop() == 0, "\n".join(srv.lines[-30:])


@pytest.fixture
def client(api, smtp):
    smtp.reset()
    c = api.http()
    yield c
    c.close()


def send(client, payload, method="Send", deadline=None):
    return client.call("mail", method, payload, deadline=deadline)


def wait_for(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def parse(data):
    """The message as Python reads it (its lines end in LF there)."""
    return email.message_from_bytes(data.replace(b"\r\n", b"\n"), policy=email.policy.default)


# --- delivery -----------------------------------------------------------------------------


def test_plain_delivery(api, client, smtp):
    r = send(client, mail_message(to=["Juliet <juliet@capulet.example>", "nurse@capulet.example"],
                                  cc=["tybalt@capulet.example"], bcc=["friar@verona.example"],
                                  reply_to="balcony@montague.example",
                                  text="Hark!\n.a line that starts with a dot\nbye"))
    assert r.ok, r
    assert r.response in (None, b"")
    assert len(smtp.messages) == 1, smtp.sessions and smtp.sessions[-1].lines
    m = smtp.messages[0]
    assert m["from"] == f"MAIL FROM:<romeo@montague.example> SIZE={len(m['data'])}"
    # To, Cc and Bcc are envelope recipients; only Bcc is absent from the headers.
    assert m["rcpt"] == ["<juliet@capulet.example>", "<nurse@capulet.example>",
                         "<tybalt@capulet.example>", "<friar@verona.example>"]
    assert smtp.commands() == ["EHLO", "MAIL", "RCPT", "RCPT", "RCPT", "RCPT", "DATA", "QUIT"]
    assert all(line.endswith(b"\r\n") for line in m["data"].splitlines(keepends=True))
    assert all(len(line) <= 78 for line in m["data"].split(b"\r\n"))
    msg = parse(m["data"])
    assert msg["From"] == "Romeo <romeo@montague.example>"
    assert msg["To"] == "Juliet <juliet@capulet.example>, nurse@capulet.example"
    assert msg["Cc"] == "tybalt@capulet.example"
    assert msg["Reply-To"] == "balcony@montague.example"
    assert msg["Bcc"] is None and b"friar" not in m["data"]
    assert msg["Subject"] == "See you tonight"
    assert msg["Message-ID"].endswith("@montague.example>")
    assert msg["Date"].datetime.timestamp() == pytest.approx(time.time(), abs=60)
    assert msg["MIME-Version"] == "1.0"
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content() == "Hark!\n.a line that starts with a dot\nbye\n"
    # One summary line, the body (--show_mail_body), the delivery.
    assert wait_for(lambda: any("delivered through the SMTP server 127.0.0.1:%d" % smtp.port in l
                                and "250 2.0.0 Ok: queued as 4711" in l for l in api.lines))
    assert any("delivering through the SMTP server" in l for l in api.lines)
    assert any(l.strip() == ".a line that starts with a dot" for l in api.lines)


def test_html_attachments_headers(client, smtp):
    png = bytes(range(256)) * 40
    r = send(client, mail_message(
        subject="Café — ünïcode subject that is long enough to need more than one encoded word",
        text="plain version ünïcode " + "x" * 200,
        html='<p>html version <img src="cid:logo1"></p>',
        attachments=[("logo.png", png, "<logo1>"), ("notes.txt", b"a note\n", None),
                     ("résumé.pdf", b"%PDF-1.4 not really", None)],
        headers=[("List-Id", "<list.example.com>"), ("In-Reply-To", "<prev@montague.example>")]))
    assert r.ok, r
    msg = parse(smtp.messages[0]["data"])
    assert max(smtp.messages[0]["data"]) < 0x80, "the message is 7-bit"
    assert msg["Subject"] == ("Café — ünïcode subject that is long enough to need more than "
                              "one encoded word")
    assert msg["List-Id"] == "<list.example.com>"
    assert msg["In-Reply-To"] == "<prev@montague.example>"
    assert msg.get_content_type() == "multipart/mixed"
    outer = list(msg.iter_parts())
    assert [p.get_content_type() for p in outer] == ["multipart/related", "text/plain",
                                                     "application/pdf"]
    related = list(outer[0].iter_parts())
    assert [p.get_content_type() for p in related] == ["multipart/alternative", "image/png"]
    alt = list(related[0].iter_parts())
    assert [p.get_content_type() for p in alt] == ["text/plain", "text/html"]
    assert alt[0].get_content() == "plain version ünïcode " + "x" * 200 + "\n"
    assert alt[1].get_content() == '<p>html version <img src="cid:logo1"></p>\n'
    logo = related[1]
    assert logo["Content-ID"] == "<logo1>"
    assert logo.get_content_disposition() == "inline"
    assert logo.get_filename() == "logo.png"
    assert logo.get_content() == png
    assert outer[1].get_content_disposition() == "attachment"
    assert outer[1].get_filename() == "notes.txt"
    assert outer[1].get_content() == "a note\n"
    assert outer[2].get_filename() == "résumé.pdf"
    assert outer[2].get_content() == b"%PDF-1.4 not really"


def test_html_only_and_non_ascii_names(client, smtp):
    r = send(client, mail_message(sender='"Montague, Roméo" <romeo@montague.example>',
                                  to=["Jülïet <juliet@capulet.example>"], text=None,
                                  html="<b>bold</b>"))
    assert r.ok, r
    msg = parse(smtp.messages[0]["data"])
    assert msg.get_content_type() == "text/html"
    assert msg.get_content() == "<b>bold</b>\n"
    assert msg["From"].addresses[0].display_name == "Montague, Roméo"
    assert msg["From"].addresses[0].addr_spec == "romeo@montague.example"
    assert msg["To"].addresses[0].display_name == "Jülïet"


def test_send_to_admins_not_delivered(api, client, smtp):
    r = send(client, mail_message(to=()), method="SendToAdmins")
    assert r.ok, r
    time.sleep(0.2)
    assert smtp.sessions == []
    assert any("to admins" in l and "there are no admins locally" in l for l in api.lines)


def test_duplicate_recipients_one_rcpt(client, smtp):
    r = send(client, mail_message(to=["a@x.example", "A <A@x.example>"], cc=["a@x.example"]))
    assert r.ok, r
    assert smtp.messages[0]["rcpt"] == ["<a@x.example>"]


def test_garbled_quit_answer_keeps_success(client, smtp):
    """Once the server said 250 to the message, how QUIT goes changes
    nothing: the app is told the message was sent."""
    smtp.refuse = {"QUIT": "this is not an SMTP reply"}
    r = send(client, mail_message())
    assert r.ok, r
    assert len(smtp.messages) == 1
    assert smtp.commands()[-1] == "QUIT"


def test_helo_fallback(client, smtp):
    smtp.refuse = {"EHLO": "502 5.5.1 EHLO not implemented"}
    r = send(client, mail_message())
    assert r.ok, r
    assert smtp.commands()[:3] == ["EHLO", "HELO", "MAIL"]


# --- failures -------------------------------------------------------------------------------


def test_recipient_refused(client, smtp):
    smtp.refuse = {"RCPT TO:<nobody@": "550 5.1.1 <nobody@capulet.example>: mailbox unavailable"}
    r = send(client, mail_message(to=["juliet@capulet.example", "nobody@capulet.example"]))
    assert r.app_error is not None, r
    code, detail = r.app_error
    assert code == INTERNAL_ERROR
    assert f"127.0.0.1:{smtp.port}" in detail
    assert "<nobody@capulet.example>" in detail and "550 5.1.1" in detail
    assert "went to nobody" in detail
    assert smtp.messages == []
    assert "DATA" not in smtp.commands()


def test_message_refused(client, smtp):
    smtp.refuse = {".": "554 5.7.1 Message rejected as spam"}
    r = send(client, mail_message())
    assert r.app_error is not None, r
    assert r.app_error[0] == INTERNAL_ERROR
    assert "554 5.7.1 Message rejected as spam" in r.app_error[1]
    assert "end of the message" in r.app_error[1]


def test_greeting_refused(client, smtp):
    smtp.refuse = {"GREETING": "554 no SMTP service here"}
    r = send(client, mail_message())
    assert r.app_error and r.app_error[0] == INTERNAL_ERROR
    assert "refused the session: 554 no SMTP service here" in r.app_error[1]


def test_too_large_for_server(client, smtp):
    smtp.extensions = ["SIZE 1000"]
    r = send(client, mail_message(text="x" * 5000))
    assert r.app_error and r.app_error[0] == INTERNAL_ERROR
    assert "takes at most 1000" in r.app_error[1]
    assert "MAIL" not in smtp.commands()


def test_bad_request_still_checked(client, smtp):
    r = send(client, mail_message(to=["not an address"]))
    assert r.app_error and r.app_error[0] == BAD_REQUEST
    time.sleep(0.1)
    assert smtp.sessions == []


def test_server_down(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    srv = ApiServer(tmp_path, flags=["--smtp_host=127.0.0.1", f"--smtp_port={port}"]).start()
    try:
        c = srv.http()
        t0 = time.monotonic()
        r = c.call("mail", "Send", mail_message())
        took = time.monotonic() - t0
        assert r.app_error and r.app_error[0] == INTERNAL_ERROR, r
        assert f"127.0.0.1:{port}" in r.app_error[1]
        assert "cannot connect" in r.app_error[1] and "Connection refused" in r.app_error[1]
        assert took < 2.0, took
        c.close()
    finally:
        assert srv.stop() == 0


def test_silent_server_deadline(client, smtp):
    smtp.greet = False
    t0 = time.monotonic()
    r = send(client, mail_message(), deadline=1.0)
    took = time.monotonic() - t0
    assert r.app_error and r.app_error[0] == INTERNAL_ERROR, r
    assert "no answer within 1 s (waiting for its greeting)" in r.app_error[1]
    assert 0.9 < took < 4.0, took


def test_slow_server_does_not_stall_other_calls(api, smtp):
    """A Send waits 3 s for the server's 250 while memcache answers; the
    margin is wide: each memcache call must take under 0.5 s."""
    smtp.reset()
    smtp.delay = {".": 3.0}
    result = {}

    def sender():
        c = api.http(timeout=20)
        t0 = time.monotonic()
        result["r"] = c.call("mail", "Send", mail_message())
        result["took"] = time.monotonic() - t0
        c.close()

    t = threading.Thread(target=sender)
    t.start()
    # The Send is under way: its message is on the wire.
    assert wait_for(lambda: smtp.sessions and any(
        line.startswith("<") for _, line in smtp.sessions[-1].lines), 5)
    c = api.http()
    times = []
    for i in range(5):
        t0 = time.monotonic()
        r = c.call("memcache", "Increment", memcache_increment(b"k", 1, initial=0))
        times.append(time.monotonic() - t0)
        assert r.ok, r
        time.sleep(0.1)
    c.close()
    assert "r" not in result, "the Send finished before the memcache calls: no overlap"
    t.join(10)
    assert result["r"].ok, result["r"]
    assert result["took"] >= 2.5, result
    assert max(times) < 0.5, times


# --- AUTH and STARTTLS ------------------------------------------------------------------------


@pytest.fixture
def auth_api(tmp_path, smtp):
    smtp.reset()
    srv = ApiServer(tmp_path, flags=["--smtp_host=localhost", f"--smtp_port={smtp.port}",
                                     "--smtp_user=romeo", "--smtp_password=wherefore art"]).start()
    yield srv
    assert srv.stop() == 0, "\n".join(srv.lines[-30:])


@pytest.mark.parametrize("mechs,want", [(["LOGIN", "PLAIN"], "PLAIN"), (["LOGIN"], "LOGIN")])
def test_auth(auth_api, smtp, mechs, want):
    smtp.auth = ("romeo", "wherefore art", mechs)
    c = auth_api.http()
    r = c.call("mail", "Send", mail_message())
    assert r.ok, r
    assert smtp.messages[0]["session"].auth == (want, "romeo", "wherefore art")
    # The password is in no log line.
    assert not any("wherefore" in l for l in auth_api.lines)
    c.close()


def test_auth_refused(auth_api, smtp):
    smtp.auth = ("romeo", "another password", ["PLAIN"])
    c = auth_api.http()
    r = c.call("mail", "Send", mail_message())
    assert r.app_error and r.app_error[0] == INTERNAL_ERROR, r
    assert 'refused the login as "romeo"' in r.app_error[1] and "535 5.7.8" in r.app_error[1]
    assert "wherefore" not in r.app_error[1]
    assert smtp.messages == []
    c.close()


def test_auth_not_offered(auth_api, smtp):
    c = auth_api.http()
    r = c.call("mail", "Send", mail_message())
    assert r.app_error and "does not offer AUTH" in r.app_error[1], r
    c.close()


@pytest.fixture(scope="module")
def tls_context(tmp_path_factory):
    d = tmp_path_factory.mktemp("smtp-cert")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(d / "key.pem"),
                    "-out", str(d / "cert.pem"), "-days", "1", "-subj", "/CN=smtp.test"],
                   check=True, capture_output=True, timeout=20)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "cert.pem", d / "key.pem")
    return ctx


def test_starttls_with_auth(auth_api, smtp, tls_context):
    smtp.tls = tls_context
    smtp.auth = ("romeo", "wherefore art", ["PLAIN"])
    c = auth_api.http()
    r = c.call("mail", "Send", mail_message(text="over TLS"))
    assert r.ok, r
    s = smtp.messages[0]["session"]
    assert s.tls and s.auth[0] == "PLAIN"
    # EHLO again after TLS (RFC 3207 4.2); nothing secret before it.
    assert smtp.commands()[:4] == ["EHLO", "STARTTLS", "EHLO", "AUTH"]
    assert parse(smtp.messages[0]["data"]).get_content() == "over TLS\n"
    c.close()


def test_starttls_not_allowed(tmp_path, smtp, tls_context):
    smtp.reset()
    smtp.tls = tls_context
    srv = ApiServer(tmp_path, flags=["--smtp_host=127.0.0.1", f"--smtp_port={smtp.port}",
                                     "--smtp_allow_tls=false"]).start()
    try:
        c = srv.http()
        r = c.call("mail", "Send", mail_message())
        assert r.ok, r
        assert not smtp.messages[0]["session"].tls
        assert "STARTTLS" not in smtp.commands()
        c.close()
    finally:
        assert srv.stop() == 0


def test_starttls_handshake_fails(client, smtp, tls_context):
    """A server that offers STARTTLS but speaks no TLS after its 220."""
    smtp.tls = tls_context
    smtp.delay = {}

    class Broken:
        def wrap_socket(self, conn, server_side):
            conn.sendall(b"this is not TLS\r\n" * 4)
            time.sleep(0.3)
            raise ValueError("stop")

    smtp.tls = Broken()
    r = send(client, mail_message())
    assert r.app_error and r.app_error[0] == INTERNAL_ERROR, r
    assert "TLS with the server" in r.app_error[1]
    assert "failed in the handshake after STARTTLS" in r.app_error[1]
    assert smtp.messages == []


# --- the command line ------------------------------------------------------------------------


@pytest.mark.parametrize("flag,want", [
    ("--smtp_port=0", "--smtp_port: '0' is not an integer from 1 to 65535"),
    ("--smtp_host=a b", "--smtp_host: 'a b' is not a host name or address"),
    ("--smtp_user=me", "--smtp_user: has no effect without --smtp_host"),
    ("--enable_sendmail=perhaps", "--enable_sendmail: 'perhaps' is not a boolean"),
])
def test_bad_flags(tmp_path, flag, want):
    p = subprocess.run([str(APPFRONT_BIN), "api", flag], cwd=tmp_path, capture_output=True,
                       timeout=10)
    assert p.returncode == 2
    err = p.stderr.decode().strip()
    assert want in err and "\n" not in err, err


def test_stop_with_delivery_in_flight(tmp_path, smtp):
    """Stopping while a session waits cancels it: the server exits 0 at once
    (and, under ASan, frees everything the session held)."""
    smtp.reset()
    smtp.delay = {".": 5.0}
    srv = ApiServer(tmp_path, flags=["--smtp_host=127.0.0.1", f"--smtp_port={smtp.port}",
                                     "--smtp_allow_tls=no"]).start()
    result = {}

    def sender():
        c = srv.http(timeout=10)
        try:
            result["r"] = c.call("mail", "Send", mail_message())
        except (OSError, AssertionError) as e:  # the server went away mid-call
            result["e"] = e
        c.close()

    t = threading.Thread(target=sender)
    t.start()
    assert wait_for(lambda: smtp.sessions and any(
        line.startswith("<") for _, line in smtp.sessions[-1].lines), 5)
    t0 = time.monotonic()
    assert srv.stop() == 0, "\n".join(srv.lines[-30:])
    assert time.monotonic() - t0 < 3.0
    t.join(10)
    assert "r" not in result or not result["r"].ok, "no success for an unfinished delivery"


def test_enable_sendmail_warns(tmp_path):
    """--enable_sendmail is accepted, as dev_appserver's other flags for
    features appfront lacks, with one warning that says what to use."""
    srv = ApiServer(tmp_path, flags=["--enable_sendmail", "--enable_sendmail=true"]).start()
    try:
        warnings = [l for l in srv.lines if "--enable_sendmail has no effect" in l]
        assert len(warnings) == 1, srv.lines
        assert "WARNING" in warnings[0] and "--smtp_host=localhost" in warnings[0]
    finally:
        assert srv.stop() == 0
    quiet = ApiServer(tmp_path / "quiet", flags=["--enable_sendmail=false"])
    (tmp_path / "quiet").mkdir()
    quiet.start()
    try:
        assert not any("sendmail" in l for l in quiet.lines), quiet.lines
    finally:
        assert quiet.stop() == 0
