"""End-to-end tests of cron.yaml and the admin console's cron page
(docs/admin.md, "Cron jobs").

The real appfront with the task app of tests/e2e/apps/taskqueue (taskapp.py
records every request it serves), plus a cron.yaml written by each test.
Jobs are run with the console's "Run now" form, as a developer would, and
what the app received is read back from its log.
"""

import html
import json
import re
import time

from conftest import Appfront, make_app
from test_admin_console import page, post, token_of
from test_taskqueue import records

CRON_YAML = """cron:
- description: nightly <b>report</b>
  url: /admin/report?x=1&y=2
  schedule: every day 03:00
  timezone: Europe/Paris
- url: /fail/always
  schedule: every 5 minutes
- url: /ok/elsewhere
  schedule: every 1 hours
  target: nosuchmodule
"""


def start(appfront, tmp_path, cron_yaml=CRON_YAML, flags=()):
    app_dir = make_app(tmp_path / "base" / "app", "taskqueue")
    if cron_yaml is not None:
        (app_dir / "cron.yaml").write_text(cron_yaml)
    af = Appfront([app_dir], flags=flags, workdir=tmp_path)
    appfront.started.append(af)
    af.start()
    af.wait_startup()
    af.wait_ready()
    return af


def run_form(text, index):
    """The fields of the index-th "Run now" form of the cron page."""
    forms = re.findall(r'<form class="inline" method="post" action="/cron/run">(.*?)</form>',
                       text)
    fields = dict(re.findall(r'name="(\w+)" value="([^"]*)"', forms[index]))
    return {k: html.unescape(v) for k, v in fields.items()}


def test_cron_page_lists_jobs_escaped(appfront, tmp_path):
    af = start(appfront, tmp_path)
    text = page(af, "/cron")
    assert "/admin/report?x=1&amp;y=2" in text
    assert "nightly &lt;b&gt;report&lt;/b&gt;" in text and "<b>report</b>" not in text
    assert "every day 03:00" in text and "Europe/Paris" in text
    assert "nosuchmodule" in text
    assert text.count("Run now") == 3
    assert 'href="/cron"' in page(af, "/datastore")  # in every page's bar


def test_run_now_sends_a_cron_request_through_login_admin(appfront, tmp_path):
    af = start(appfront, tmp_path, flags=["--enable_task_running=false"])
    text = page(af, "/cron")
    result = post(af, "/cron/run", run_form(text, 0))
    assert re.search(r"answered <b>200</b> in \d+ ms", result), result
    got = [r for r in records(af) if r["path"] == "/admin/report?x=1&y=2"]
    assert len(got) == 1, records(af)
    headers = got[0]["headers"]
    assert got[0]["method"] == "GET"
    assert headers.get("x-appengine-cron") == "true", headers
    assert "x-appfront-task-secret" not in headers, headers

    # A failing job's status is shown as it is.
    result = post(af, "/cron/run", run_form(text, 1))
    assert 'answered <b class="err">500</b>' in result, result


def test_clients_cannot_pose_as_cron(appfront, tmp_path):
    af = start(appfront, tmp_path)
    status, _, body = af.get("/headers", headers={"X-AppEngine-Cron": "true",
                                                  "X-Appfront-Task-Secret": "0" * 32})
    assert status == 200
    names = {k.lower() for k, _ in json.loads(body)}
    assert "x-appengine-cron" not in names and "x-appfront-task-secret" not in names
    status, h, _ = af.get("/admin/report", headers={"X-AppEngine-Cron": "true"})
    assert status == 302 and "/_ah/login" in h["location"], (status, h)


def test_run_now_bad_input(appfront, tmp_path):
    af = start(appfront, tmp_path)
    text = page(af, "/cron")
    fields = run_form(text, 0)
    # No token, another token.
    post(af, "/cron/run", {"job": "0", "url": fields["url"]}, status=403)
    post(af, "/cron/run", dict(fields, token="0" * 32), status=403)
    # A job number that is not one, or a job the file no longer has.
    assert "is not a job" in post(af, "/cron/run", dict(fields, job="x"), status=400)
    assert "is not a job" in post(af, "/cron/run", dict(fields, job="-1"), status=400)
    assert "the parameter url is missing" in post(
        af, "/cron/run", {"token": fields["token"], "job": "0"}, status=400)
    assert "reload the cron page" in post(af, "/cron/run", dict(fields, job="7"), status=409)
    assert "reload the cron page" in post(af, "/cron/run", dict(fields, url="/other"),
                                          status=409)
    # The target names no module.
    out = post(af, "/cron/run", run_form(text, 2), status=500)
    assert "names no module" in out, out
    # GET of the form's action changes nothing.
    page(af, "/cron/run", status=405)
    assert not [r for r in records(af) if r["path"].startswith("/admin/report")]


def test_cron_yaml_is_read_again_and_errors_are_shown(appfront, tmp_path):
    af = start(appfront, tmp_path, cron_yaml=None)
    assert "The app has no cron.yaml" in page(af, "/cron")
    app_dir = af.app_dirs[0]
    (app_dir / "cron.yaml").write_text("cron:\n- url: /ok/a\n  schedule: every 2 weeks\n")
    deadline = time.monotonic() + 10
    while True:  # the watcher may restart the instance meanwhile; the page reads the file
        st, _, body = af.get("/cron", which="admin",
                             headers={"Accept": "text/html"})
        if st == 500 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    text = body.decode()
    assert st == 500, text
    assert "cron.yaml:3:13: schedule: &#39;every 2 weeks&#39;" in text, text


def test_bad_cron_yaml_is_a_warning_at_startup(appfront, tmp_path):
    af = start(appfront, tmp_path, cron_yaml="cron:\n- url: no-slash\n  schedule: every day 03:00\n")
    line = af.wait_for_stderr(r"cron\.yaml:2:8: url: 'no-slash' is not a path", timeout=5)
    assert line and "the app runs" in line, af.stderr()
    assert af.get("/ok/still")[0] == 200
