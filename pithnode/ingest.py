"""Ingest: checked events -> one snapshot read -> a pure decision -> one transaction applying it.

The CPU-heavy checks (parsing, signatures, admission, merges) run first, in
worker processes (worker_jobs.py). Then, per subject, inside one transaction:
`read_snapshot` reads what the decision needs, core.ingest_plan.decide makes
the `Plan` (pure: plain values in and out), and `apply_plan` writes it, with
the re-merged state of the subject and the reports it gives rise to. So a
bundle is applied whole or not at all, and data flows down: ingest reads and
writes the store, the store never calls back.
"""

from __future__ import annotations

import functools
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from typing import Any

from .core import Admission, BundleReport, KeyRing, admit, canonical_bytes, check_bundle
from .core.ingest_plan import (
    EVIDENCE_BUNDLE,
    Admitted,
    Batch,
    BundleFacts,
    Plan,
    Quotas,
    Snapshot,
    decide,
    disagreement_key,
    rejections,
    report_key,
)
from .errors import InputError
from .store import NewEvent, Store
from .worker_jobs import (
    CheckedBundle,
    MergedState,
    bundle_document,
    check_bundle_bytes,
    init_import_worker,
    merge_bodies,
    merged_state,
)
from .workers import WorkerPool

DEFAULT_MAX_BUNDLE_BYTES = 64 * 1024 * 1024
GROUP_EVENTS = 5_000  # events per commit when importing many bundles


class IngestError(ValueError, InputError):
    """Input that cannot be ingested at all (not JSON, too large, not a bundle)."""


@dataclass
class IngestResult:
    """What one bundle (or gossip batch) did to the store."""

    pith_number: str
    source: str | None
    events_total: int = 0
    new_event_ids: list[str] = field(default_factory=list)
    known: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)  # {index, reason, detail}
    bundle_sha256: str | None = None
    signature_ok: bool | None = None
    signer_fingerprint: str | None = None
    signer_is_registry: bool | None = None
    built_at: str | None = None
    published_state_sha256: str | None = None
    source_state_matches: bool | None = None  # its state == our merge of its own events
    source_merge_sha256: str | None = None
    state_sha256: str | None = None  # ours, after ingest
    new_equivocations: list[dict[str, Any]] = field(default_factory=list)
    new_invalid: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)  # "rollback", "stale", "flood": what this source did wrong
    quota_refused: int = 0  # authentic events not stored: over a flood quota
    merge_pending: bool = False  # stored, not merged yet (see `Node.merge_pending`)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_bundle(data: bytes, max_bytes: int = DEFAULT_MAX_BUNDLE_BYTES) -> dict[str, Any]:
    doc = bundle_document(data, max_bytes)
    if isinstance(doc, str):
        raise IngestError(doc)
    return doc


def node_ring(store: Store, trusted: KeyRing) -> KeyRing:
    """Keys for admission and merge: every key stored and the operator's trusted
    keys. The stored ring is copied, not re-hashed (`merged` hashes what it adds;
    every stored key was proven when stored): O(keys) dict copies, ~1 ms per 100k."""
    return store.key_ring().merged(trusted)


def ingest_ring(store: Store, trusted: KeyRing, key_entries: list[Any]) -> KeyRing:
    """The keys loose events are admitted with: ours and the ones they came with."""
    return node_ring(store, trusted).merged(KeyRing.from_entries(key_entries))


def remerge(
    store: Store, subject_id: int, pith_number: str, ring: KeyRing, registry: frozenset[str],
    now: str, source: str | None, merged: MergedState | None = None, merged_seq: int | None = None,
) -> tuple[MergedState, list[dict[str, Any]], list[dict[str, Any]]]:
    """Inside a transaction: store a subject's merged state (merged here from its
    stored events unless `merged` is given, with the events up to `merged_seq`)
    and record its new equivocation / invalid-event reports."""
    if merged is None:
        merged = merge_bodies(pith_number, store.event_bodies(subject_id), ring, registry)
    store.put_state(subject_id, merged.state_sha256, merged.document, merged.counts, merged.title, now, merged_seq)
    store.put_aliases(subject_id, merged.aliases)
    new_eq, new_inv = [], []
    for eq in merged.equivocations:
        if store.add_report("equivocation", pith_number, report_key("equivocation", pith_number, eq), eq, source, now):
            new_eq.append(eq)
    for inv in merged.invalid_events:
        if store.add_report("invalid_event", pith_number, f"invalid|{inv['event_id']}", inv, source, now):
            new_inv.append(inv)
    return merged, new_eq, new_inv


def read_snapshot(store: Store, batch: Batch) -> Snapshot:
    """Inside the transaction that applies it: what `decide` reads of the store for `batch`. The
    counts per signer (a scan of the record's events) are read only when a quota may bind."""
    pn, source, events = batch.pith_number, batch.source, batch.events
    had = store.subject(pn)
    counts: dict[str, int] | None = None
    if batch.quotas is not None and events:
        held = store.subject_event_count(had.id) if had is not None else 0
        if batch.quotas.may_bind(held, [e.signer_fp for e in events], batch.registry):
            counts = store.signer_counts(had.id) if had is not None else {}
    # An event id hashes its subject: a subject not held holds none of the batch's events. A bulk sync's
    # batch (no merge) needs them only to keep a stored state: for a subject without one the insert tells
    # which are new (an extra read of every id cost the syncing node ~5% of its CPU per event).
    known: frozenset[str] = frozenset()
    if had is not None and events and (batch.merge or had.state_sha256 is not None):
        known = frozenset(store.known_event_ids(e.event_id for e in events))
    from_source: frozenset[str] = frozenset()
    others: tuple[tuple[str, str], ...] = ()
    if batch.bundle is not None and source is not None and (had is not None or events):
        if had is not None:
            from_source = frozenset(store.event_ids_from_source(had.id, source))
        others = tuple((s.url, s.built_at) for s in store.sources(pn) if s.url != source and s.built_at)
    key = disagreement_key(batch)  # a disagreeing bundle's: the evidence it may keep depends on its rank
    kept = store.reports_before("disagreement", pn, source, key) \
        if key is not None and batch.bundle is not None and batch.bundle.report.signature_ok else 0
    if had is None:
        return Snapshot(known=known, signer_counts=counts, other_sources=others, evidence_kept=kept)
    return Snapshot(had.id, had.event_count, had.state_sha256, known, counts, from_source, others, kept)


def apply_plan(store: Store, batch: Batch, plan: Plan, snap: Snapshot, ring: KeyRing, result: IngestResult, *,
               reuse: MergedState | None = None, document: Callable[[], dict[str, Any]] | None = None) -> None:
    """Inside the transaction `snap` was read in: write `plan` (see `Plan` for what, in which order)
    and fill in `result`. `ring` holds the keys to store; `reuse`, the state of a "reuse" plan;
    `document`, the signed bundle for evidence."""
    pn, source, now = batch.pith_number, batch.source, batch.now
    store.add_rejections(pn, plan.rejections, source, now)
    if plan.store_subject:
        subject_id = snap.subject_id if snap.subject_id is not None else store.ensure_subject(pn)
        store.add_rejections(pn, plan.quota_refusals, source, now)
        if plan.flood is not None:
            store.add_report(plan.flood.kind, pn, plan.flood.dedupe, plan.flood.detail, source, now)
        store.add_keys(ring, plan.keys, now)
        rows = [NewEvent(e.event_id, e.created_at, e.event_type, e.signer_fp, e.body) for e in plan.events]
        result.new_event_ids = store.add_events(subject_id, rows, source, now)
        result.known = plan.known + len(rows) - len(result.new_event_ids)  # the snapshot may not have read them
        result.quota_refused = len(plan.quota_refusals)
        if plan.merge in ("keep", "pending"):
            result.state_sha256, result.merge_pending = plan.state_sha256, plan.merge == "pending"
        else:
            # `ring` holds every stored key already (and the batch's): merging it with the store's
            # ring again, per subject, was most of a push's cost when each event brought a new key
            merged, result.new_equivocations, result.new_invalid = remerge(
                store, subject_id, pn, ring, batch.registry, now, source, reuse if plan.merge == "reuse" else None)
            result.state_sha256 = merged.state_sha256
    result.flags = plan.flags
    if plan.bundle_check is not None:
        store.add_bundle_check(pn, source, plan.bundle_check, now)
    for report in plan.source_reports:
        store.add_report(report.kind, pn, report.dedupe, report.detail, source, now)
    if plan.evidence is not None and document is not None:
        store.add_report(EVIDENCE_BUNDLE, pn, plan.evidence, {"bundle": document()}, source, now)


def _ingest(store: Store, batch: Batch, ring: KeyRing, result: IngestResult, *, state_bytes: bytes | None = None,
            document: Callable[[], dict[str, Any]] | None = None) -> IngestResult:
    """One transaction: read the snapshot, decide, apply."""
    with store.transaction():
        snap = read_snapshot(store, batch)
        plan = decide(batch, snap)
        reuse = None
        if plan.merge == "reuse" and batch.bundle is not None and batch.bundle.report.state is not None:
            state = batch.bundle.report.state
            reuse = merged_state(state, state_bytes or canonical_bytes(state))
        apply_plan(store, batch, plan, snap, ring, result, reuse=reuse, document=document)
    return result


def _apply_checked(store: Store, checked: CheckedBundle, *, source: str | None, trusted: KeyRing,
                   registry: frozenset[str], now: str, quotas: Quotas | None,
                   document: Callable[[], dict[str, Any]]) -> IngestResult:
    report = checked.report
    facts = BundleFacts(report, checked.built_at, checked.has_state)
    batch = Batch(checked.pith_number, source, now, registry,
                  [Admitted.of(e, b) for e, b in zip(report.events, report.bodies, strict=True)],
                  rejections(report.admission, checked.events), quotas, bundle=facts)
    result = IngestResult(
        pith_number=checked.pith_number, source=source, events_total=len(report.admission),
        rejected=batch.rejected, bundle_sha256=report.bundle_sha256,
        signature_ok=report.signature_ok, signer_fingerprint=report.signer_fingerprint,
        signer_is_registry=report.signer_is_registry, built_at=checked.built_at,
        published_state_sha256=report.published_state_sha256, source_state_matches=facts.source_state_matches,
        source_merge_sha256=report.state["state_sha256"] if report.state else None, problems=list(report.problems),
    )
    ring = ingest_ring(store, trusted, checked.public_keys)
    return _ingest(store, batch, ring, result, state_bytes=checked.state_bytes, document=document)


def ingest_bundle(
    store: Store, bundle: dict[str, Any], *, source: str | None, trusted: KeyRing,
    registry: frozenset[str], now: str, report: BundleReport | None = None, quotas: Quotas | None = None,
) -> IngestResult:
    """Check and apply one parsed bundle. Events are admitted one by one; the
    bundle's own signature and state are checked and the outcome recorded: a
    published state that differs from the merge of the bundle's own events is
    a disagreement report."""
    if report is None:
        report = check_bundle(bundle, node_ring(store, trusted), registry)
    if report.pith_number is None:
        raise IngestError("; ".join(report.problems) or "not a bundle")
    built, keys = bundle.get("built_at"), bundle.get("public_keys")
    checked = CheckedBundle(report.pith_number, report,
                            bundle["events"] if isinstance(bundle.get("events"), list) else [],
                            built if isinstance(built, str) else None, keys if isinstance(keys, list) else [],
                            isinstance(bundle.get("state"), dict), None)
    return _apply_checked(store, checked, source=source, trusted=trusted, registry=registry, now=now,
                          quotas=quotas, document=lambda: bundle)


def ingest_events(
    store: Store, pith_number: str, objs: list[Any], key_entries: list[Any], *, source: str | None,
    trusted: KeyRing, registry: frozenset[str], now: str, admissions: list[Admission] | None = None,
    quotas: Quotas | None = None, merge: bool = True, ring: KeyRing | None = None,
) -> IngestResult:
    """Admit loose events for one subject (gossip, an events list) and apply them.
    `admissions` may be computed beforehand (off the event loop) with the same keys;
    `ring`, the store's keys with `key_entries`, too (once for a batch of subjects)."""
    if ring is None:
        ring = ingest_ring(store, trusted, key_entries)
    if admissions is None:
        admissions = [admit(o, pith_number, ring) for o in objs]
    seen: set[str] = set()
    events = []
    for adm, obj in zip(admissions, objs, strict=False):  # none past the event cap
        if adm.event_id is not None and adm.body is not None and adm.admitted and adm.event_id not in seen:
            seen.add(adm.event_id)  # the first copy is the one quotas count
            events.append(Admitted.of(obj, adm.body))
    batch = Batch(pith_number, source, now, registry, events, rejections(admissions, objs), quotas, merge)
    result = IngestResult(pith_number=pith_number, source=source, events_total=len(objs), rejected=batch.rejected)
    return _ingest(store, batch, ring, result)


def import_bundles(
    store: Store, items: Iterable[tuple[str, Callable[[], bytes]]], *, trusted: KeyRing, registry: frozenset[str],
    now: Callable[[], str], max_bytes: int = DEFAULT_MAX_BUNDLE_BYTES, workers: int | None = None,
) -> Iterator[tuple[str, IngestResult | Exception]]:
    """Import many bundles in order. Worker processes parse and check the next
    bundles (signatures, hashes, admission: pure CPU, so processes, not
    threads, use every core) while this process commits, several bundles per
    transaction. Each bundle is still applied whole or not at all, and a
    result is yielded only once committed. A StoreError stops the import."""
    workers = workers or max(1, os.cpu_count() or 1)
    ring = node_ring(store, trusted)
    with WorkerPool(workers, initializer=init_import_worker, initargs=(ring.entries(), registry, max_bytes)) as pool:
        queue: deque[tuple[str, bytes | Exception, Future[CheckedBundle | str] | None]] = deque()
        it = iter(items)

        def refill() -> None:
            while len(queue) < 4 * workers and (nxt := next(it, None)) is not None:
                try:
                    data = nxt[1]()
                except OSError as exc:
                    queue.append((nxt[0], exc, None))
                    continue
                queue.append((nxt[0], data, pool.submit(check_bundle_bytes, data)))

        refill()
        while queue:
            done: list[tuple[str, IngestResult | Exception]] = []
            events = 0
            with store.transaction():
                while queue and events < GROUP_EVENTS:
                    source, data, fut = queue.popleft()
                    try:
                        if isinstance(data, Exception) or fut is None:
                            raise data if isinstance(data, Exception) else IngestError("unreadable")
                        checked = fut.result()
                        if isinstance(checked, str):
                            raise IngestError(checked)
                        if any(a.reason == "unknown_key" for a in checked.report.admission):
                            # keys stored since the workers started: check again here
                            bundle = parse_bundle(data, max_bytes)
                            result = ingest_bundle(store, bundle, source=source, trusted=trusted, registry=registry,
                                                   now=now(), report=check_bundle(bundle, node_ring(store, trusted),
                                                                                  registry))
                        else:  # the worker sent a slim copy: the bundle is parsed again only to keep it as evidence
                            result = _apply_checked(store, checked, source=source, trusted=trusted,
                                                    registry=registry, now=now(), quotas=None,
                                                    document=functools.partial(parse_bundle, data, max_bytes))
                        done.append((source, result))
                        events += len(checked.report.admission)
                    except (OSError, IngestError) as exc:
                        done.append((source, exc))
                    refill()
            yield from done
