"""How long 200 sequential small urlfetch.Fetch calls take against a local
keep-alive server, over http and https (docs/services.md, "urlfetch",
"Connection reuse"). Not a test: it prints figures.

    APPFRONT_BUILD=build /usr/bin/python3 tests/e2e/measure_urlfetch_reuse.py [N] [ROUNDS]

Each line is the median of ROUNDS (default 5) runs of N (default 200)
fetches of a 2-byte body from one framed API connection, and the number of
connections the server accepted in that run. "/close" answers with
Connection: close, so every fetch needs a new connection (what every fetch
cost before connections were reused); "/ok" lets them be kept. Point
APPFRONT_BUILD at an older build to measure that one.
"""

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from apiclient import BUILD, ApiServer  # noqa: E402
from test_urlfetch import fetch_ok  # noqa: E402
from test_urlfetch_pool import CountingServer  # noqa: E402


def run(client, server, path, n, validate):
    before = server.accepted
    t0 = time.perf_counter()
    for _ in range(n):
        fetch_ok(client, server.url(path), validate=validate)
    return time.perf_counter() - t0, server.accepted - before


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    print(f"appfront: {BUILD / 'appfront'}; {n} sequential fetches, median of {rounds} runs")
    with tempfile.TemporaryDirectory() as tmp:
        api = ApiServer(Path(tmp)).start()
        try:
            client = api.framed()
            for tls in (False, True):
                server = CountingServer(tls=tls)
                for path in ("/close", "/ok"):
                    run(client, server, path, 10, False)  # warm up
                    runs = [run(client, server, path, n, False) for _ in range(rounds)]
                    total = statistics.median(t for t, _ in runs)
                    conns = statistics.median(c for _, c in runs)
                    print(f"{'https' if tls else 'http '} {path:7} {total * 1000:8.1f} ms "
                          f"{total / n * 1e6:7.0f} us/fetch  {conns:5.0f} connections")
                server.close()
            client.close()
        finally:
            api.stop()


if __name__ == "__main__":
    main()
