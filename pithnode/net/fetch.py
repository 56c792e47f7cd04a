"""Fetching documents over HTTP, behind one small interface.

`Fetcher` is all the rest of pithnode knows: `await get(url, ...)` returns
a `FetchResult` or raises `FetchError` with a plain reason. `HttpFetcher` is
the real one (httpx under trio); tests may swap in any object with the same
method (see tests/httpserver.py for a real loopback server).

Defences (ENGINEERING-NOTES.md, "Attacks a mirror client resists"): a total
deadline per attempt with trio (httpx's timeouts are per phase, so a server
trickling a byte a second never trips them), a byte cap counted while
streaming (a Content-Length may lie or be absent), retries only on timeouts,
connection errors and 5xx, with exponential back-off, full jitter and
Retry-After, never on 4xx; URLs must be http(s), and hosts that resolve to
private, loopback or link-local addresses are refused unless allowed.
"""

from __future__ import annotations

import email.utils
import ipaddress
import random
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC
from typing import Protocol
from urllib.parse import urlsplit

import httpx
import trio

from .. import __version__
from ..errors import ResourceError

USER_AGENT = f"pithnode/{__version__} (+https://pith.science)"
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
MAX_RETRY_AFTER = 300.0
MAX_REDIRECTS = 5


class FetchError(ResourceError):
    """A fetch that failed; the message names the URL and the cause."""

    def __init__(self, message: str, *, url: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.url = url
        self.status = status
        self.retry_after = retry_after


@dataclass
class FetchResult:
    url: str
    status: int
    body: bytes = b""
    etag: str | None = None
    last_modified: str | None = None
    not_modified: bool = False
    headers: dict[str, str] = field(default_factory=dict)


class Fetcher(Protocol):
    async def get(self, url: str, *, etag: str | None = None, last_modified: str | None = None,
                  max_bytes: int | None = None) -> FetchResult: ...


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential back-off with full jitter: uniform in [0, min(cap, base * 2^attempt)]."""
    return rng.uniform(0, min(cap, base * 2 ** attempt))


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date), capped; None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit() also accepts "²", which int() refuses
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    from datetime import datetime

    return max(0.0, min((when - datetime.now(UTC)).total_seconds(), MAX_RETRY_AFTER))


def _blocked(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_multicast \
        or ip.is_unspecified


def origin(url: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) of a URL, or None when it has no readable one."""
    try:
        parts = urlsplit(url)
        return parts.scheme, (parts.hostname or ""), parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return None


async def check_url(url: str, allow_private: bool,
                    trusted: frozenset[tuple[str, str, int | None]] = frozenset()) -> None:
    """Refuse URLs we must not fetch: not http(s), no host, or (unless
    `allow_private`, or its origin is in `trusted`: one the operator named) a
    host resolving to a private/loopback/link-local address. The guard is for
    URLs learned from the network (mirror hints, peers' manifests, redirects):
    it keeps a hostile record from turning us against the operator's LAN."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise FetchError(f"{url[:200]}: not a URL", url=url) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError(f"{url[:200]}: only http and https URLs with a host are fetched", url=url)
    if allow_private or origin(url) in trusted:
        return
    host = parts.hostname
    try:
        addrs = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            infos = await trio.socket.getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise FetchError(f"{url}: cannot resolve {host}: {exc}", url=url) from None
        addrs = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    for ip in addrs:
        if _blocked(ip):
            refusal = FetchError(f"{url}: refused: {host} is a private or local address ({ip}) learned from the "
                             "network; name it with --peer / --mirror (or peers / mirrors in the config) to "
                             "trust it, or set --allow-private (allow_private_addresses) for every learned URL",
                             url=url)
            refusal.refused = True  # type: ignore[attr-defined]  # callers log it as a warning
            raise _final(refusal)


def trusted_origins(urls: Iterable[str]) -> frozenset[tuple[str, str, int | None]]:
    return frozenset(o for o in map(origin, urls) if o is not None)


class HttpFetcher:
    """The real fetcher. Use as `async with HttpFetcher(...) as f:`."""

    def __init__(self, *, max_bytes: int = DEFAULT_MAX_BYTES, connect_timeout: float = 10.0,
                 total_timeout: float = 60.0, retries: int = 3, allow_private: bool = False,
                 trusted: Iterable[str] = (), backoff_base: float = 0.5, backoff_cap: float = 30.0,
                 rng: random.Random | None = None):
        self.max_bytes = max_bytes
        self.total_timeout = total_timeout
        self.retries = retries
        self.allow_private = allow_private
        self.trusted = trusted_origins(trusted)  # origins the operator named: not guarded
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self.rng = rng or random.Random()
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(total_timeout, connect=connect_timeout), follow_redirects=False,
            headers={"user-agent": USER_AGENT, "accept": "application/json"},
        )

    async def __aenter__(self) -> HttpFetcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()

    async def get(self, url: str, *, etag: str | None = None, last_modified: str | None = None,
                  max_bytes: int | None = None) -> FetchResult:
        cap = max_bytes or self.max_bytes
        attempt = 0
        while True:
            try:
                return await self._attempt(url, etag, last_modified, cap)
            except FetchError as exc:
                retriable = exc.status is None or exc.status >= 500 or exc.status == 429
                if not retriable or getattr(exc, "final", False) or attempt >= self.retries:
                    raise
                delay = backoff_delay(attempt, self.backoff_base, self.backoff_cap, self.rng)
                if exc.retry_after is not None:
                    delay = max(delay, exc.retry_after)
                attempt += 1
                await trio.sleep(delay)

    async def _attempt(self, url: str, etag: str | None, last_modified: str | None, cap: int) -> FetchResult:
        headers = {}
        if etag:
            headers["if-none-match"] = etag
        if last_modified:
            headers["if-modified-since"] = last_modified
        current = url
        try:
            with trio.fail_after(self.total_timeout):
                for _hop in range(MAX_REDIRECTS + 1):
                    await check_url(current, self.allow_private, self.trusted)
                    async with self.client.stream("GET", current, headers=headers) as resp:
                        if resp.is_redirect and "location" in resp.headers:
                            current = str(resp.url.join(resp.headers["location"]))
                            continue
                        return await self._read(url, resp, cap)
                raise _final(FetchError(f"{url}: more than {MAX_REDIRECTS} redirects", url=url))
        except trio.TooSlowError:
            raise FetchError(f"{url}: no complete answer within {self.total_timeout:g} s", url=url) from None
        except httpx.HTTPError as exc:
            raise FetchError(f"{url}: {type(exc).__name__}: {exc}", url=url) from None

    async def _read(self, url: str, resp: httpx.Response, cap: int) -> FetchResult:
        h = resp.headers
        meta = {"etag": h.get("etag"), "last_modified": h.get("last-modified")}
        if resp.status_code == 304:
            return FetchResult(url, 304, not_modified=True, headers=dict(h), **meta)
        if resp.status_code != 200:
            raise FetchError(f"{url}: HTTP {resp.status_code}", url=url, status=resp.status_code,
                             retry_after=parse_retry_after(h.get("retry-after")))
        declared = h.get("content-length")
        if declared and declared.isascii() and declared.isdigit() and int(declared) > cap:
            raise _final(FetchError(f"{url}: body of {declared} bytes is over the cap of {cap}", url=url))
        chunks, size = [], 0
        async for chunk in resp.aiter_bytes():
            size += len(chunk)
            if size > cap:
                raise _final(FetchError(f"{url}: body over the cap of {cap} bytes; aborted", url=url))
            chunks.append(chunk)
        return FetchResult(url, 200, b"".join(chunks), headers=dict(h), **meta)


def _final(exc: FetchError) -> FetchError:
    """Mark an error that retrying cannot cure (cap exceeded, redirect loop)."""
    exc.final = True  # type: ignore[attr-defined]
    return exc
