"""Polling: every followed record, from every source it knows, on a schedule
with jitter; conditional requests; back-off per host (Retry-After honoured);
bounded concurrency. Gossip carries most news between nodes; polling keeps
the node honest against the registry and plain mirrors that do not gossip.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import trio

from ..core import resolver_urls
from ..ingest import IngestError, parse_bundle
from ..net.fetch import Fetcher, FetchError
from ..store import StoreError, Subject
from ..sync import ResolveError, resolve
from ..views import known_mirror_hints
from .service import Node

log = logging.getLogger("pithnode.poll")

MAX_BACKOFF = 3600.0


@dataclass
class HostBackoff:
    """Per host: when we may ask again. Exponential with jitter; Retry-After wins when longer."""

    until: dict[str, float] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random)

    def ready(self, host: str, now: float) -> bool:
        return self.until.get(host, 0.0) <= now

    def failed(self, host: str, now: float, retry_after: float | None) -> float:
        n = self.failures[host] = self.failures.get(host, 0) + 1
        delay = min(MAX_BACKOFF, 5.0 * 2.0 ** min(n, 12)) * (0.5 + self.rng.random())
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_BACKOFF))
        self.until[host] = now + delay
        return delay

    def ok(self, host: str) -> None:
        self.failures.pop(host, None)
        self.until.pop(host, None)


class Poller:
    def __init__(self, node: Node, fetcher: Fetcher):
        self.node = node
        self.fetcher = fetcher
        self.backoff = HostBackoff()
        self.limit = trio.CapacityLimiter(node.cfg.max_concurrent_fetches)
        self.pending_follows: list[str] = list(node.cfg.follow)
        self.follow_codes: dict[str, list[str]] = {}  # code -> bundle URLs, for records not yet held

    def sources_of(self, subject: Subject) -> list[str]:
        """Bundle URLs for a held record: the configured resolvers, then every mirror it names."""
        urls = [resolver_urls(m, subject.code)["bundle_url"] for m in self.node.cfg.mirrors]
        for hint in known_mirror_hints(self.node.store, subject, None):
            urls.append(hint["bundle_url"])
        own = self.node.public_url
        return [u for u in dict.fromkeys(urls) if not u.startswith(own + "/")]

    async def follow(self, text: str) -> None:
        """Start following an id of any written form (resolved like `pithnode sync`)."""
        try:
            target = await resolve(text, mirrors=list(self.node.cfg.mirrors), store=self.node.store,
                                   fetcher=self.fetcher, max_bytes=self.node.cfg.max_bundle_bytes)
        except (ResolveError, FetchError) as exc:
            log.warning("cannot follow %s yet: %s", text, exc)
            return
        self.pending_follows.remove(text)
        self.follow_codes[target.code or ""] = target.bundle_urls
        log.info("following %s (%s)", text, target.how)

    async def poll_url(self, url: str, code: str) -> None:
        host = urlsplit(url).netloc
        if not self.backoff.ready(host, trio.current_time()):
            return
        store, node = self.node.store, self.node
        prev = store.source(url)
        etag, last_modified = (prev.etag, prev.last_modified) if prev else (None, None)
        async with self.limit:
            try:
                res = await self.fetcher.get(url, etag=etag, last_modified=last_modified,
                                             max_bytes=node.cfg.max_bundle_bytes)
                if res.not_modified:
                    self._note(url, None, True, None)
                    node.metrics.fetches.labels(outcome="not_modified").inc()
                    return
                bundle = parse_bundle(res.body, node.cfg.max_bundle_bytes)
                if code and not str(bundle.get("pith_number")).endswith(":" + code):
                    raise IngestError(f"bundle is for {bundle.get('pith_number')}, not {code}")
                result = await node.ingest_bundle(bundle, source=url)
            except StoreError as exc:
                node.metrics.store_errors.inc()
                log.error("store: %s (poll of %s not applied; retried next round)", exc, url)
                return
            except (FetchError, IngestError) as exc:
                retry_after = getattr(exc, "retry_after", None)
                delay = self.backoff.failed(host, trio.current_time(), retry_after)
                node.metrics.fetches.labels(outcome="failed").inc()
                self._note(url, None, False, str(exc))
                log.log(logging.WARNING if getattr(exc, "refused", False) else logging.INFO,
                        "poll %s failed (next try in %.0fs): %s", url, delay, exc)
                return
        self.backoff.ok(host)
        node.metrics.fetches.labels(outcome="ok").inc()
        try:
            with store.transaction():
                store.note_source(url, subject=result.pith_number, ok=True, at=node.now(), etag=res.etag,
                                  last_modified=res.last_modified, built_at=result.built_at)
                store.set_followed(result.pith_number)
        except StoreError as exc:
            log.error("store: %s", exc)
        self.follow_codes.pop(code, None)

    def _note(self, url: str, subject: str | None, ok: bool, error: str | None) -> None:
        try:
            with self.node.store.transaction():
                self.node.store.note_source(url, subject=subject, ok=ok, at=self.node.now(), error=error)
        except StoreError as exc:
            log.error("store: %s", exc)

    async def poll_once(self) -> None:
        for text in list(self.pending_follows):
            await self.follow(text)
        jobs: list[tuple[str, str]] = []
        for subject in self.node.store.subjects(followed_only=True):
            jobs += [(u, subject.code) for u in self.sources_of(subject)]
        for code, urls in self.follow_codes.items():
            jobs += [(u, code) for u in urls]
        async with trio.open_nursery() as nursery:
            for url, code in dict.fromkeys(jobs):
                nursery.start_soon(self.poll_url, url, code)

    async def run(self, interval: float) -> None:
        rng = random.Random()
        while True:
            await self.poll_once()
            await trio.sleep(interval * (0.8 + 0.4 * rng.random()))


def mirror_base_urls(node: Node) -> list[str]:
    """Base URLs named by the mirror_hint events we hold (for discovery): read
    through an index, each hint parsed once (see `Store.mirror_hint_bases`)."""
    return list(node.store.mirror_hint_bases())
