"""The node's HTTP server: every resolver URL of the spec from the store, the
peer protocol, the mirror manifest, equivocation reports, metrics, health and
the pages of `pages.py` (status, records, evidence, the Atom feed), served by
`http.py`.

Read-only except for the peer protocol, whose messages only ever offer events
to admission: there is no admin action over HTTP.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from typing import Any
from urllib.parse import parse_qs

import trio

from ..core import canonical_bytes
from ..errors import PithnodeError, http_status
from ..store import StoreError, Subject
from ..views import (
    arxiv_id_of,
    equivocation_reports,
    events_doc,
    graph_doc,
    local_matches,
    mirror_manifest,
    record_json,
)
from . import pages, peer
from .cache import Cached
from .http import Handler, HttpError, Limits, Request, Response, serve
from .service import Node

log = logging.getLogger("pithnode.http")

CODE = r"(?P<code>[A-Z2-7]{26})"
ROUTES: list[tuple[str, re.Pattern[str]]] = [
    (name, re.compile(pattern))
    for name, pattern in [
        ("bundle", rf"/pith/{CODE}/bundle\.json"),
        ("bundle", rf"/\.well-known/pith/{CODE}/bundle\.json"),
        ("state", rf"/pith/{CODE}/state\.json"),
        ("record", rf"/pith/{CODE}\.json"),
        ("events", rf"/api/pith-number/{CODE}/events\.json"),
        ("graph", rf"/api/pith-number/{CODE}/graph\.json"),
        ("resolve", r"/api/pith-number/resolve"),
        ("signing_key", r"/pith-signing-key\.json"),
        ("mirrors", r"/pith-mirrors\.json"),
        ("equivocations", r"/equivocations\.json"),
        ("metrics", r"/metrics"),
        ("healthz", r"/healthz"),
        ("status_json", r"/status\.json"),
        ("peer", r"/peer/v1/(?P<kind>reconcile|events|push)"),
        *pages.ROUTES,
    ]
]
HOT_ROUTES = frozenset({"bundle", "state", "record", "events", "graph"})  # found again by path (cache.py)
MAX_HEADER_BYTES = 16 * 1024
PAGE_SIZE = 50

def _json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


class RateLimiter:
    """Token buckets per client address: `rate` per second, bursts of `4 * rate`."""

    MAX_CLIENTS = 10_000

    def __init__(self, rate: float):
        self.rate, self.burst = rate, 4 * rate
        self.buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, at)

    def allow(self, client: str, now: float) -> bool:
        if self.rate <= 0:
            return True
        tokens, at = self.buckets.get(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if len(self.buckets) >= self.MAX_CLIENTS and client not in self.buckets:
            self.buckets = {c: b for c, b in self.buckets.items() if b[0] < self.burst}  # forget the idle
        if tokens < 1:
            self.buckets[client] = (tokens, now)
            return False
        self.buckets[client] = (tokens - 1, now)
        return True


_ENTITY_TAG = re.compile(r'\s*(?:W/)?("[^"]*")\s*(?:,|$)')
_CODING = re.compile(r"\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*(?:;\s*q\s*=\s*(0(?:\.\d{0,3})?|1(?:\.0{0,3})?)\s*)?$",
                     re.IGNORECASE)


def none_match(field: str, etag: str) -> bool:
    """If-None-Match (RFC 9110 13.1.2): `*`, or a list of tags compared weakly (W/ ignored)."""
    if field.strip() == "*":
        return True
    return any(m.group(1) == etag for m in _ENTITY_TAG.finditer(field))


@functools.lru_cache(maxsize=256)
def accepts_gzip(field: str) -> bool:
    """Accept-Encoding (RFC 9110 12.5.3) with q-values: gzip (or `*` when gzip is not named)
    with q > 0. An item that does not parse is ignored."""
    gzip = star = None
    for item in field.split(","):
        if m := _CODING.match(item):
            q = float(m.group(2) or 1)
            coding = m.group(1).lower()
            if coding in ("gzip", "x-gzip"):
                gzip = q
            elif coding == "*":
                star = q
    return (gzip if gzip is not None else star or 0) > 0


def _respond(doc: Cached, req: Request) -> Response:
    """A document, or the gzip variant (its own ETag) to a client that takes it, or 304."""
    gz = len(doc.body) > 1024 and accepts_gzip(req.headers.get("accept-encoding", ""))
    etag = doc.gzip_etag if gz else doc.etag
    headers = [(b"content-type", doc.content_type.encode()), (b"etag", etag.encode()),
               (b"vary", b"accept-encoding"), (b"cache-control", b"public, max-age=60")]
    if (tags := req.headers.get("if-none-match")) and none_match(tags, etag):
        return 304, headers, b""
    if gz:
        return 200, headers + [(b"content-encoding", b"gzip")], doc.gzipped()
    return 200, headers, doc.body


def _unavailable(error: str) -> Response:
    return 503, [(b"content-type", b"application/json"), (b"retry-after", b"30")], _json({"error": error})


def _json_or_404(doc: Any, why: str) -> bytes:
    if doc is None:
        raise HttpError(404, why)
    return _json(doc)


class App:
    """The request handler over one Node."""

    def __init__(self, node: Node, peer_service: peer.PeerService):
        self.node = node
        self.peer = peer_service
        self.pages = pages.Pages(node, peer_service)
        self.limiter = RateLimiter(node.cfg.peer_rate_limit)
        self._counters: dict[tuple[str, int], Any] = {}

    async def handle(self, req: Request) -> Response:
        route = "unknown"
        try:
            hot = self.node.documents.at_path(req.path, self.node.current_generation()) \
                if req.method in ("GET", "HEAD") else None
            if hot is not None:
                route = hot[0]
                status, headers, body = _respond(hot[1], req)  # nothing changed: no routing, no query
            else:
                route, match = self._route(req.path)
                status, headers, body = await self._dispatch(route, match, req)
        except PithnodeError as exc:
            status, headers, body = self._error_response(exc)
        except BrokenProcessPool as exc:  # our workers killed mid-push (the OOM killer?): the same
            log.error("worker processes died: %s", exc)
            status, headers, body = _unavailable("worker processes died; new ones take the next request")
        counter = self._counters.get((route, status))
        if counter is None:
            counter = self._counters[(route, status)] = self.node.metrics.http.labels(route=route, status=str(status))
        counter.inc()
        return status, headers, body

    def _error_response(self, exc: PithnodeError) -> Response:
        """The status errors.OUTCOMES gives `exc`. A 5xx of ours (e.g. a full disk: nothing was stored
        or acknowledged) is logged, and a 503 asks the client to retry later."""
        status = http_status(exc)
        headers = [(b"content-type", b"application/json"), *getattr(exc, "headers", ())]
        if status >= 500 and not isinstance(exc, HttpError):  # the HTTP layer's own answers are not faults
            if isinstance(exc, StoreError):
                self.node.metrics.store_errors.inc()
            log.error("%s: %s", type(exc).__name__, exc)
            if status == 503:
                headers.append((b"retry-after", b"30"))
        return status, headers, _json({"error": str(exc)})

    def _route(self, path: str) -> tuple[str, re.Match[str]]:
        for name, pattern in ROUTES:
            if m := pattern.fullmatch(path):
                return name, m
        raise HttpError(404, f"no such resource: {path[:200]}")

    async def _dispatch(self, route: str, m: re.Match[str], req: Request) -> Response:
        method = req.method
        if route == "peer":
            if method != "POST":
                raise HttpError(405, "peer messages are POSTed")
            if not self.limiter.allow(req.client[0], trio.current_time()):
                self.node.metrics.gossip.labels(kind=m.group("kind"), direction="in", outcome="rate_limited").inc()
                return 429, [(b"retry-after", b"1"), (b"content-type", b"application/json")], \
                    _json({"error": "too many peer requests from this address"})
            if len(req.body) > self.peer.max_message_bytes:
                raise HttpError(413, f"body over the cap of {self.peer.max_message_bytes} bytes")
            out = await self.peer.handle(m.group("kind"), req.body, f"{req.client[0]}:{req.client[1]}")
            return 200, [(b"content-type", peer.CONTENT_TYPE)], out
        if method not in ("GET", "HEAD"):
            raise HttpError(405, "read-only resource: use GET")
        generation = self.node.current_generation()
        doc = self._document(route, m, req)
        if isinstance(doc, tuple):
            return doc
        if route in HOT_ROUTES:
            self.node.documents.served_at(req.path, generation, route, doc)
        return _respond(doc, req)

    def _document(self, route: str, m: re.Match[str], req: Request) -> Cached | Response:
        node, store = self.node, self.node.store
        if route in pages.NAMES:
            return self.pages.respond(route, m)
        if route in HOT_ROUTES:  # a record's documents
            subject = store.subject(m.group("code"))
            if subject is None or subject.state_sha256 is None:
                raise HttpError(404, f"record {m.group('code')} is not held by this node")
            held, pn, version = subject, subject.pith_number, _version(subject)  # held: not None in the lambdas
            if route == "bundle":
                return node.cached(pn, "bundle", lambda: node.bundle_bytes(pn), version=version)
            if route == "state":
                return node.cached(pn, "state", lambda: store.state_bytes(pn) or b"", version=version)
            if route == "events":
                return node.cached(pn, "events", lambda: canonical_bytes(events_doc(store, held, node.ring())),
                                   version=version)
            build: Callable[[], dict[str, Any] | None] = (lambda: record_json(store, held, node.public_url)) \
                if route == "record" else (lambda: graph_doc(store, held))
            return node.cached(pn, route, lambda: _json_or_404(build(), f"{pn} has no record_created event yet"),
                               version=version)
        if route == "resolve":
            query = parse_qs(req.query.decode("latin-1"))
            arxiv = arxiv_id_of((query.get("arxiv") or [""])[0])
            if arxiv is None:
                raise HttpError(400, "resolve takes ?arxiv=<arXiv id>")
            found = local_matches(store, arxiv)
            if len(found) != 1:
                raise HttpError(404, f"arXiv {arxiv} is not held by this node" if not found else "ambiguous")
            subject = store.subject(found[0])
            return node.cached(found[0], "record", lambda: _json_or_404(
                record_json(store, subject, node.public_url) if subject else None, f"arXiv {arxiv} is not held"),
                version=_version(subject) if subject else None)
        if route == "signing_key":
            return node.cached("*", "key", lambda: _json({**node.identity.ring().entries()[0],
                                                          "signer": node.identity.signer}))
        if route == "mirrors":
            return node.cached("*", "mirrors",
                               lambda: _json(mirror_manifest(store, node.identity, node.public_url, node.now())))
        if route == "equivocations":
            query = parse_qs(req.query.decode("latin-1"))
            try:
                page = max(1, int((query.get("page") or ["1"])[0]))
            except ValueError:
                raise HttpError(400, "page must be a positive integer") from None

            def page_doc() -> bytes:
                reports = equivocation_reports(store, limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE)
                more = len(reports) > PAGE_SIZE
                return _json({"node": node.public_url, "page": page, "per_page": PAGE_SIZE,
                              "next": f"{node.public_url}/equivocations.json?page={page + 1}" if more else None,
                              "equivocations": reports[:PAGE_SIZE]})

            if page > 1:  # only the first page is cached: a client cannot grow the cache by paging
                body = page_doc()
                return Cached(body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
            return node.cached("*", "equivocations", page_doc)
        if route == "metrics":
            node.metrics.peers_up.set(sum(1 for p in self.peer.peers.values() if p.healthy))
            return 200, [(b"content-type", b"text/plain; version=0.0.4")], node.metrics.exposition()
        if route == "healthz":
            return 200, [(b"content-type", b"application/json")], _json(
                {"ok": True, "events": store.event_count(), "unmerged_subjects": len(node.unmerged)})
        if route == "status_json":  # peers' health changes without a store change: not cached
            doc = {**self.pages.status_doc(), "pid": os.getpid(), "public_url": node.public_url}
            return 200, [(b"content-type", b"application/json"), (b"cache-control", b"no-store")], _json(doc)
        raise HttpError(404, f"no such resource: {req.path[:200]}")


def _version(subject: Subject) -> tuple[str | None, int, str | None]:
    """What a record's documents are built from, as far as the subjects row tells."""
    return subject.state_sha256, subject.event_count, subject.updated_at


async def serve_http(app: App, listen: str | list[trio.SocketListener], shutdown: trio.Event, *,
                     wrap: Callable[[Handler], Handler] | None = None,
                     task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve until `shutdown` is set; reports the bound URLs once listening."""
    limits = Limits(max_head_bytes=MAX_HEADER_BYTES, max_body_bytes=app.peer.max_message_bytes,
                    max_connections_per_address=app.node.cfg.max_connections_per_address)
    await serve(wrap(app.handle) if wrap else app.handle, listen, shutdown, limits, task_status=task_status)
