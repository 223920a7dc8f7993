"""End-to-end tests of the admin console's inbound mail page
(docs/admin.md, "Inbound mail"): a message written in the console reaches
the app as App Engine delivers mail, through a `login: admin` handler.

The real appfront with the task app of tests/e2e/apps/taskqueue (taskapp.py
records every request it serves, with its body).
"""

import base64
import re

from conftest import Appfront, make_app
from test_admin_console import page, post, token_of
from test_taskqueue import records

MAIL_HANDLER = "handlers:\n- url: /_ah/mail/.+\n  script: auto\n  login: admin\n"


def start(appfront, tmp_path, inbound=True):
    app_dir = make_app(tmp_path / "base" / "app", "taskqueue")
    text = (app_dir / "app.yaml").read_text().replace("handlers:\n", MAIL_HANDLER, 1)
    if inbound:
        text += "\ninbound_services:\n- mail\n- warmup\n"
    (app_dir / "app.yaml").write_text(text)
    af = Appfront([app_dir], workdir=tmp_path)
    appfront.started.append(af)
    af.start()
    af.wait_startup()
    af.wait_ready()
    return af


def form(af, **fields):
    base = {"from": "sender@example.com", "to": "inbox@e2e-tasks.appspotmail.com",
            "cc": "", "subject": "hello", "body": "line one\r\nline two",
            "token": token_of(page(af, "/mail"))}
    base.update(fields)
    return base


def test_message_reaches_a_login_admin_handler(appfront, tmp_path):
    af = start(appfront, tmp_path)
    text = page(af, "/mail")
    assert "does not list" not in text
    assert "@e2e-tasks.appspotmail.com" in text
    subject = "h\u00e9llo w\u00f6rld"
    out = post(af, "/mail/send", form(af, cc="copy@example.com", subject=subject))
    assert re.search(r"POST /_ah/mail/inbox@e2e-tasks\.appspotmail\.com</code> answered "
                     r"<b>200</b>", out), out
    got = [r for r in records(af) if r["path"].startswith("/_ah/mail/")]
    assert len(got) == 1, records(af)
    r = got[0]
    assert r["method"] == "POST" and r["path"] == "/_ah/mail/inbox@e2e-tasks.appspotmail.com"
    assert r["headers"]["content-type"] == "message/rfc822"
    assert "x-appfront-task-secret" not in r["headers"]
    msg = r["body"]
    head, _, body = msg.partition("\r\n\r\n")
    fields = dict(line.split(": ", 1) for line in head.split("\r\n") if ": " in line)
    assert fields["From"] == "sender@example.com"
    assert fields["To"] == "inbox@e2e-tasks.appspotmail.com"
    assert fields["Cc"] == "copy@example.com"
    assert fields["Content-Type"] == "text/plain; charset=utf-8"
    assert "Date" in fields and "Message-ID" in fields
    m = re.fullmatch(r"=\?utf-8\?b\?([A-Za-z0-9+/=]+)\?=", fields["Subject"])
    assert m and base64.b64decode(m.group(1)).decode() == subject, fields["Subject"]
    assert body == "line one\r\nline two\r\n", repr(body)


def test_page_says_when_the_app_does_not_receive_mail(appfront, tmp_path):
    af = start(appfront, tmp_path, inbound=False)
    assert "does not list <code>mail</code>" in page(af, "/mail")


def test_bad_input(appfront, tmp_path):
    af = start(appfront, tmp_path)
    assert "one address" in post(af, "/mail/send", form(af, to="a@b.c, d@e.f"), status=400)
    assert "one address" in post(af, "/mail/send", form(af, to="nobody"), status=400)
    assert "printable ASCII" in post(af, "/mail/send",
                                     form(af, **{"from": "a@b.c\r\nBcc: x@y.z"}), status=400)
    assert "line break" in post(af, "/mail/send", form(af, subject="a\r\nBcc: x@y.z"),
                                status=400)
    assert "at most 4096" in post(af, "/mail/send", form(af, body="x" * 5000), status=413)
    fields = form(af)
    del fields["token"]
    post(af, "/mail/send", fields, status=403)
    page(af, "/mail/send", status=405)
    assert not [r for r in records(af) if r["path"].startswith("/_ah/mail/")]
    # The handler stays login: admin for everyone else.
    status, h, _ = af.get("/_ah/mail/inbox@e2e-tasks.appspotmail.com", method="POST",
                          body="x", headers={"Content-Type": "message/rfc822"})
    assert status == 302 and "/_ah/login" in h["location"], (status, h)
