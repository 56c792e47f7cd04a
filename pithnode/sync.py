"""One-off replication of one record: `pithnode sync <id>`.

Resolve the id, fetch the bundle from every mirror we are given and every
mirror the record names (bundle `mirror_hints`, `mirror_hint` events), ingest
each (events admitted one by one), and say per source what it gave and whether
it serves the state we computed from the union.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import trio

from .core import KeyRing, parse_pith_ref, resolver_urls
from .errors import InputError
from .ingest import IngestError, ingest_bundle, parse_bundle
from .net.fetch import Fetcher, FetchError
from .store import Store
from .views import arxiv_id_of, local_matches

log = logging.getLogger(__name__)

MAX_SOURCES = 32


class ResolveError(InputError):
    """The id names no record we can find; the message says why plainly."""


class BadId(ResolveError):
    """The id cannot be read as any id form: found before any network work."""


@dataclass
class Target:
    """What an id resolved to: a code (when known) and where to fetch bundles."""

    code: str | None
    pith_number: str | None
    bundle_urls: list[str]
    how: str


@dataclass
class SourceOutcome:
    url: str
    reachable: bool = False
    error: str | None = None
    bundle_signature_ok: bool | None = None
    signer: str | None = None
    signer_is_registry: bool | None = None
    events_total: int = 0
    events_new: int = 0
    events_known: int = 0
    events_rejected: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    built_at: str | None = None
    published_state_sha256: str | None = None
    source_state_matches: bool | None = None  # its state == our merge of its own events
    agrees: bool | None = None  # its state == our final state
    flags: list[str] = field(default_factory=list)  # "rollback": withholds events it served; "stale": frozen


@dataclass
class SyncReport:
    id: str
    pith_number: str | None = None
    title: str | None = None
    resolved_by: str | None = None
    sources: list[SourceOutcome] = field(default_factory=list)
    events_applied: int = 0
    event_count: int = 0
    invalid_events: list[dict[str, Any]] = field(default_factory=list)
    equivocations: list[dict[str, Any]] = field(default_factory=list)
    disagreements: list[str] = field(default_factory=list)
    state_sha256: str | None = None
    all_agree: bool = False
    error: str | None = None

    @property
    def replicated(self) -> bool:
        return self.state_sha256 is not None

    @property
    def conflicts(self) -> bool:
        return bool(self.equivocations or self.disagreements or not self.all_agree)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(replicated=self.replicated, conflicts=self.conflicts)
        return out


def _bundle_urls(mirrors: list[str], code: str) -> list[str]:
    return [resolver_urls(m, code)["bundle_url"] for m in mirrors]


async def resolve(text: str, *, mirrors: list[str], store: Store, fetcher: Fetcher, max_bytes: int) -> Target:
    """Turn any accepted id into a Target. Raises ResolveError with a plain reason."""
    s = text.strip()
    if s.lower().startswith(("http://", "https://")):
        m = re.search(r"/pith/([A-Z2-7]{26})/bundle\.json", s)
        return Target(m.group(1) if m else None, None, [s], "bundle URL")
    try:
        ref = parse_pith_ref(s)
    except ValueError:
        ref = None
    if ref is not None and ref.code:
        return Target(ref.code, ref.pith_number, _bundle_urls(mirrors, ref.code), "Pith number")
    if ref is not None and ref.prefix:
        codes = [pn.rsplit(":", 1)[-1] for pn in local_matches(store, s)]
        if len(codes) == 1:
            return Target(codes[0], None, _bundle_urls(mirrors, codes[0]), "short Pith number (local store)")
        if not codes:
            raise ResolveError(
                f"no record with a code starting {ref.prefix} is held locally, and no resolver takes a short "
                "Pith number: pass the full Pith number (pith:YYYY:CODE) or the 26-character code"
            )
        raise ResolveError(f"short Pith number pith:{ref.prefix} is ambiguous: {', '.join(codes)}")
    arxiv = arxiv_id_of(s)
    if arxiv is None:
        raise BadId(
            f"cannot read {text!r} as a Pith number, code, short Pith number, arXiv id, arXiv DOI or bundle URL"
        )
    answers: dict[str, Any] = {}  # mirror -> its Pith reference, or why not

    async def ask(mirror: str, done: trio.CancelScope) -> None:
        url = f"{mirror.rstrip('/')}/api/pith-number/resolve?arxiv={quote(arxiv, safe='')}&json=true"
        try:
            res = await fetcher.get(url, max_bytes=max_bytes)
            # any object with a pith_number will do
            answers[mirror] = ref = parse_pith_ref(parse_bundle(res.body, max_bytes)["pith_number"])
        except FetchError as exc:
            answers[mirror] = str(exc)
        except (IngestError, ValueError, KeyError, TypeError) as exc:
            answers[mirror] = f"{url}: bad answer: {exc!r}"
        else:
            if ref.code:
                done.cancel()  # the first that knows it answers for all: a stalled one holds nothing up

    async with trio.open_nursery() as nursery:  # every mirror at once
        for mirror in mirrors:
            nursery.start_soon(ask, mirror, nursery.cancel_scope)
    errors = []
    for mirror in mirrors:  # the one that knew it (the first given, if several answered at once)
        ref = answers.get(mirror, f"{mirror}: no answer")
        if isinstance(ref, str) or not ref.code:
            errors.append(str(ref))
            continue
        return Target(ref.code, ref.pith_number, _bundle_urls(mirrors, ref.code), f"arXiv {arxiv} via {mirror}")
    known = local_matches(store, arxiv)
    if len(known) == 1:
        code = known[0].rsplit(":", 1)[-1]
        return Target(code, known[0], _bundle_urls(mirrors, code), f"arXiv {arxiv} (local store)")
    raise ResolveError(f"arXiv {arxiv} did not resolve: " + ("; ".join(errors) or "no resolver configured"))


def _hint_urls(bundle: dict[str, Any], state: dict[str, Any] | None, code: str) -> list[str]:
    """Bundle URLs named by a bundle's mirror_hints and by mirror_hint events."""
    urls = []
    hints = bundle.get("mirror_hints")
    if not isinstance(hints, list):
        hints = []
    events: list[Any] = (state or {}).get("current", {}).get("mirror_hints", [])
    for h in [*hints, *(e.get("payload") for e in events)]:
        if not isinstance(h, dict):
            continue
        url = h.get("bundle_url")
        if not url and isinstance(h.get("base_url"), str):
            url = resolver_urls(h["base_url"], code)["bundle_url"]
        if isinstance(url, str) and urlsplit(url).scheme in ("http", "https"):
            urls.append(url)
    return urls


async def sync(
    text: str, *, store: Store, fetcher: Fetcher, mirrors: list[str], trusted: KeyRing, registry: frozenset[str],
    max_bytes: int, now: Callable[[], str], concurrency: int = 8, timeout: float = 60.0,  # noqa: ASYNC109 (late sources are named)
    on_progress: Callable[[str], None] = lambda _msg: None,
) -> SyncReport:
    """Sources are asked concurrently; what has not answered within `timeout`
    seconds of the start is given up (and said so per source). An id that cannot
    be read raises BadId before any network work."""
    report = SyncReport(id=text)
    deadline = trio.current_time() + timeout
    late = f"no answer within the sync's deadline of {timeout:g} s (--timeout)"
    with trio.move_on_at(deadline) as scope:
        try:
            target = await resolve(text, mirrors=mirrors, store=store, fetcher=fetcher, max_bytes=max_bytes)
        except BadId:
            raise
        except ResolveError as exc:
            report.error = str(exc)
            return report
    if scope.cancelled_caught:
        report.error = f"{text}: {late}"
        return report
    report.resolved_by = target.how
    outcomes: dict[str, SourceOutcome] = {}
    pending = list(dict.fromkeys(target.bundle_urls))
    code = target.code
    limit = trio.CapacityLimiter(concurrency)

    async def fetch_one(url: str, results: dict[str, Any]) -> None:
        async with limit:
            on_progress(f"fetching {url}")
            results[url] = FetchError(late, url=url)
            with trio.move_on_at(deadline):
                try:
                    res = await fetcher.get(url, max_bytes=max_bytes)
                    results[url] = parse_bundle(res.body, max_bytes)
                except (FetchError, IngestError) as exc:
                    results[url] = exc

    while pending and len(outcomes) < MAX_SOURCES:
        batch, pending = pending[: MAX_SOURCES - len(outcomes)], []
        results: dict[str, Any] = {}
        async with trio.open_nursery() as nursery:
            for url in batch:
                outcomes[url] = SourceOutcome(url)
                nursery.start_soon(fetch_one, url, results)
        for url in batch:  # ingest in a stable order: the given mirrors first
            got, out = results.get(url), outcomes[url]
            if isinstance(got, Exception) or got is None:
                out.error = str(got)
                store_note(store, url, report.pith_number, False, now(), out.error)
                continue
            out.reachable = True
            pn = got.get("pith_number")
            if (target.pith_number and pn != target.pith_number) or (code and not str(pn).endswith(":" + code)):
                out.error = f"bundle is for {pn}, not the requested record"
                store_note(store, url, report.pith_number, False, now(), out.error)
                continue
            try:
                res = ingest_bundle(store, got, source=url, trusted=trusted, registry=registry, now=now())
            except IngestError as exc:
                out.error = str(exc)
                continue
            store_note(store, url, res.pith_number, True, now(), None, built_at=res.built_at)
            report.pith_number = res.pith_number
            code = res.pith_number.rsplit(":", 1)[-1]
            out.bundle_signature_ok, out.signer = res.signature_ok, res.signer_fingerprint
            out.signer_is_registry = res.signer_is_registry
            out.events_total, out.events_new, out.events_known = res.events_total, len(res.new_event_ids), res.known
            out.events_rejected, out.rejected = len(res.rejected), res.rejected
            out.built_at, out.published_state_sha256 = res.built_at, res.published_state_sha256
            out.source_state_matches = res.source_state_matches
            out.flags = res.flags
            report.events_applied += len(res.new_event_ids)
            if not res.source_state_matches:
                report.disagreements.append(url)
            state_doc = store.state_bytes(res.pith_number)
            state = json.loads(state_doc) if state_doc else None
            for hint in _hint_urls(got, state, code):
                if hint not in outcomes and hint not in pending:
                    pending.append(hint)
    report.sources = list(outcomes.values())
    if report.pith_number:
        subject = store.subject(report.pith_number)
        state_doc = store.state_bytes(report.pith_number)
        if subject and state_doc:
            state = json.loads(state_doc)
            report.title, report.state_sha256 = subject.title, state["state_sha256"]
            report.event_count = state["event_count"]
            report.invalid_events, report.equivocations = state["invalid_events"], state["equivocations"]
            for out in report.sources:
                if out.reachable and out.published_state_sha256 is not None:
                    out.agrees = out.published_state_sha256 == report.state_sha256
            reachable = [o for o in report.sources if o.reachable and o.error is None]
            report.all_agree = bool(reachable) and all(o.agrees for o in reachable)
    if not report.replicated and report.error is None:
        report.error = "no source gave a usable bundle: " + "; ".join(
            f"{o.url}: {o.error}" for o in report.sources if o.error
        )
    return report


def store_note(store: Store, url: str, subject: str | None, ok: bool, at: str, error: str | None, **kw: Any) -> None:
    with store.transaction():
        store.note_source(url, subject=subject, ok=ok, at=at, error=error, **kw)
