"""examples/hello's /counter: a native app calling memcache Increment through
the C client library over APPFRONT_API_SOCKET, while requests run
concurrently on several instances. Every increment must count once."""

import concurrent.futures


def test_counter_counts_every_concurrent_request(appfront):
    af = appfront("threadsafe")
    status, _, body = af.get("/counter")
    assert status == 200, body
    first = int(body)

    n = 40
    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda _: af.get("/counter"), range(n)))
    values = sorted(int(b) for s, _, b in results if s == 200)
    assert len(values) == n, [r[:2] for r in results if r[0] != 200]
    # Each answer is a distinct step of the same counter: nothing lost,
    # nothing counted twice.
    assert values == list(range(first + 1, first + n + 1))


def test_counter_state_lives_in_the_api_server_not_the_instance(appfront):
    af = appfront("threadsafe")
    _, _, before = af.get("/counter")
    status, _, _ = af.get("/crash")
    assert status == 502
    # The instance is replaced; the counter, kept by the API server, is not.
    for _ in range(40):
        status, _, after = af.get("/counter")
        if status == 200:
            break
    assert status == 200
    assert int(after) == int(before) + 1
