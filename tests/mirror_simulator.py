"""An in-memory set of mirrors behind the `Fetcher` interface, so sync, resolve
and the poller run their real logic without sockets (as python-tuf's
tests/repository_simulator.py stands in for a repository under its updater).

Each mirror is a base URL with documents (path -> bytes) and, per path, a
behaviour a hostile or broken mirror shows: an error status, a hang (slow
retrieval), an endless body, a redirect. The simulator keeps the contract of
`HttpFetcher.get`: the byte cap is counted as the body is produced, redirects
are followed up to `MAX_REDIRECTS`, a matching ETag or Last-Modified gives 304,
and every failure is a `FetchError` with the URL. Every URL asked is logged in
`requests`, so a test can say what was (or was not) fetched.

Time-bound behaviours (`hang`, `trickle`) sleep in trio time: run such tests
with pytest-trio's `autojump_clock` and they take no real time.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import trio

from pithnode.net.fetch import DEFAULT_MAX_BYTES, MAX_REDIRECTS, FetchError, FetchResult


@dataclass
class Behaviour:
    """How a mirror answers one path instead of serving its document."""

    status: int | None = None  # answer this HTTP status (e.g. 404, 500)
    hang: bool = False  # never answer (slow retrieval: only a deadline ends it)
    trickle: float = 0.0  # seconds between bytes of the document (slow retrieval that does answer)
    endless: bool = False  # a body that never ends (endless data)
    redirect: str | None = None  # answer 302 to this URL (absolute or relative)
    retry_after: float | None = None


@dataclass
class SimMirror:
    base: str
    docs: dict[str, bytes] = field(default_factory=dict)
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    resolve: dict[str, str] = field(default_factory=dict)  # arXiv id -> Pith number

    def publish(self, path: str, doc: dict[str, Any] | bytes) -> None:
        self.docs[path] = doc if isinstance(doc, bytes) else json.dumps(doc).encode()


class MirrorSimulator:
    """A `Fetcher` answering from in-memory mirrors, keyed by scheme://host[:port]."""

    def __init__(self, *, total_timeout: float = 60.0, max_bytes: int = DEFAULT_MAX_BYTES):
        self.mirrors: dict[str, SimMirror] = {}
        self.total_timeout = total_timeout
        self.max_bytes = max_bytes
        self.requests: list[str] = []

    def add(self, base: str) -> SimMirror:
        self.mirrors[base] = SimMirror(base)
        return self.mirrors[base]

    async def get(self, url: str, *, etag: str | None = None, last_modified: str | None = None,
                  max_bytes: int | None = None) -> FetchResult:
        cap = max_bytes or self.max_bytes
        current = url
        try:
            with trio.fail_after(self.total_timeout):  # the real fetcher's total deadline per attempt
                for _hop in range(MAX_REDIRECTS + 1):
                    self.requests.append(current)
                    answer = await self._answer(url, current, etag, last_modified, cap)
                    if isinstance(answer, FetchResult):
                        return answer
                    current = answer
                raise FetchError(f"{url}: more than {MAX_REDIRECTS} redirects", url=url)
        except trio.TooSlowError:
            raise FetchError(f"{url}: no complete answer within {self.total_timeout:g} s", url=url) from None

    async def _answer(self, url: str, current: str, etag: str | None, last_modified: str | None,
                      cap: int) -> FetchResult | str:
        """A result, or the URL a redirect points to."""
        await trio.lowlevel.checkpoint()
        parts = urlsplit(current)
        mirror = self.mirrors.get(f"{parts.scheme}://{parts.netloc}")
        if mirror is None:
            raise FetchError(f"{url}: ConnectError: no such host", url=url)
        how = mirror.behaviours.get(parts.path, Behaviour())
        if how.hang:
            await trio.sleep_forever()
        if how.redirect is not None:
            return urljoin(current, how.redirect)
        if how.status is not None:
            raise FetchError(f"{url}: HTTP {how.status}", url=url, status=how.status, retry_after=how.retry_after)
        if how.endless:  # counted as produced, as the real fetcher counts a stream
            size = 0
            while size <= cap:
                await trio.lowlevel.checkpoint()
                size += 65536
            raise FetchError(f"{url}: body over the cap of {cap} bytes; aborted", url=url)
        body = self._document(mirror, parts.path, parts.query)
        if body is None:
            raise FetchError(f"{url}: HTTP 404", url=url, status=404)
        tag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        if etag == tag:
            return FetchResult(url, 304, etag=tag, not_modified=True)
        if len(body) > cap:
            raise FetchError(f"{url}: body of {len(body)} bytes is over the cap of {cap}", url=url)
        for _ in range(len(body) if how.trickle else 0):
            await trio.sleep(how.trickle)
        return FetchResult(url, 200, body, etag=tag)

    @staticmethod
    def _document(mirror: SimMirror, path: str, query: str) -> bytes | None:
        if path == "/api/pith-number/resolve":
            arxiv = parse_qs(query).get("arxiv", [""])[0]
            pn = mirror.resolve.get(arxiv)
            return None if pn is None else json.dumps({"pith_number": pn}).encode()
        return mirror.docs.get(path)
