"""The HTTP client against a real loopback server: caps, deadlines, retries,
conditional requests, User-Agent, and the SSRF guard."""

from __future__ import annotations

import random

import pytest
import trio

from httpserver import Route, running_server
from pithnode import __version__
from pithnode.net.fetch import FetchError, HttpFetcher, backoff_delay, check_url, parse_retry_after


def fetcher(**kw):  # type: ignore[no-untyped-def]
    args = dict(max_bytes=1024 * 1024, connect_timeout=1.0, total_timeout=1.5, retries=2, allow_private=True,
                backoff_base=0.01, backoff_cap=0.05)
    args.update(kw)
    return HttpFetcher(**args)


async def test_get_conditional_and_user_agent():
    async with running_server() as srv, fetcher() as f:
        srv.static("/doc.json", b'{"a":1}')
        res = await f.get(srv.url + "/doc.json")
        assert res.body == b'{"a":1}' and res.etag and res.last_modified
        again = await f.get(srv.url + "/doc.json", etag=res.etag, last_modified=res.last_modified)
        assert again.not_modified and again.body == b""
        assert srv.requests[-1]["if-none-match"] == res.etag
        assert srv.requests[-1]["if-modified-since"] == res.last_modified
        assert srv.requests[0]["user-agent"].startswith(f"pithnode/{__version__}")


async def test_retries_5xx_then_succeeds_and_never_retries_4xx():
    async with running_server() as srv, fetcher() as f:
        srv.static("/flaky", b"ok", fail_first=2)
        assert (await f.get(srv.url + "/flaky")).body == b"ok"
        assert srv.hits["/flaky"] == 3
        with pytest.raises(FetchError) as err:
            await f.get(srv.url + "/missing")
        assert err.value.status == 404 and srv.hits["/missing"] == 1
        srv.static("/down", b"", fail_first=100)
        with pytest.raises(FetchError, match="HTTP 500"):
            await f.get(srv.url + "/down")
        assert srv.hits["/down"] == 3  # one try and two retries


async def test_retry_after_is_honoured():
    async with running_server() as srv, fetcher(retries=1) as f:
        srv.static("/busy", b"ok", fail_first=1, fail_status=503, retry_after="1")
        t0 = trio.current_time()
        assert (await f.get(srv.url + "/busy")).body == b"ok"
        assert trio.current_time() - t0 >= 0.95


async def test_endless_body_is_cut_at_the_cap():
    async with running_server() as srv, fetcher(max_bytes=200_000, total_timeout=10) as f:
        srv.routes["/endless"] = Route(mode="endless")
        with pytest.raises(FetchError, match="over the cap"):
            await f.get(srv.url + "/endless")
        assert srv.hits["/endless"] == 1  # a cap is not retried
        srv.static("/big", b"x" * 300_000)
        with pytest.raises(FetchError, match="over the cap"):
            await f.get(srv.url + "/big")


async def test_hang_and_trickle_trip_the_total_deadline():
    async with running_server() as srv, fetcher(retries=0, total_timeout=0.8) as f:
        srv.routes["/hang"] = Route(mode="hang")
        srv.routes["/trickle"] = Route(mode="trickle", body=b"x" * 100)
        for path in ("/hang", "/trickle"):
            t0 = trio.current_time()
            with pytest.raises(FetchError, match="no complete answer"):
                await f.get(srv.url + path)
            assert trio.current_time() - t0 < 2.0


async def test_private_addresses_and_other_schemes_are_refused():
    async with running_server() as srv, fetcher(allow_private=False) as f:
        srv.static("/doc.json", b"{}")
        with pytest.raises(FetchError, match="private or local"):
            await f.get(srv.url + "/doc.json")
        assert srv.hits["/doc.json"] == 0
    for url in ("file:///etc/passwd", "ftp://example.org/x", "http:///nohost", "gopher://x"):
        with pytest.raises(FetchError, match="only http and https"):
            await check_url(url, allow_private=True)
    for url in ("http://10.1.2.3/", "http://169.254.169.254/latest", "http://[::1]/", "http://localhost/"):
        with pytest.raises(FetchError):
            await check_url(url, allow_private=False)


def test_backoff_and_retry_after_parsing():
    rng = random.Random(3)
    delays = [backoff_delay(a, 0.5, 8.0, rng) for a in range(10)]
    assert all(0 <= d <= min(8.0, 0.5 * 2 ** a) for a, d in enumerate(delays))
    assert parse_retry_after("7") == 7.0 and parse_retry_after("99999") == 300.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
