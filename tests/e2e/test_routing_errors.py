"""error_handlers (issue 3): the app's pages for errors appfront answers
itself, with the status of the error — timeout for the request deadline
(504), over_quota when no instance is free in time (503), the default page
for the rest (404 here). router.h lists which statuses use which page."""

import threading
import time

import pytest
import requests

from routing_helpers import start_routing


@pytest.fixture(scope="module")
def af(appfront_module):
    return start_routing(appfront_module, template="routing_errors",
                         flags=["--request_deadline=0.6", "--max_pending_latency=0.3"])


def test_timeout_page_on_504(af):
    r = requests.get(af.url("/sleep?ms=3000"), timeout=10)
    assert r.status_code == 504
    assert r.content == b"appfront-e2e-timeout\n"
    assert r.headers["Content-Type"] == "text/plain"


def test_over_quota_page_on_503(af):
    # One instance, one request at a time: the second waits, then gets 503.
    busy = threading.Thread(
        target=lambda: requests.get(af.url("/sleep?ms=500"), timeout=10))
    busy.start()
    time.sleep(0.1)
    r = requests.get(af.url("/"), timeout=10)
    busy.join(10)
    assert r.status_code == 503
    assert r.content == b"<p>appfront-e2e-over-quota</p>\n"
    assert r.headers["Content-Type"] == "text/html"


def test_default_page_on_404(af):
    time.sleep(0.2)  # the instance is free again
    r = requests.get(af.url("/nothing"), timeout=10)
    assert r.status_code == 404
    assert r.content == b"<p>appfront-e2e-default-error</p>\n"
    assert requests.get(af.url("/"), timeout=10).status_code == 200

