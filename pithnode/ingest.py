"""Ingest: bundle bytes -> checks -> admission -> one store transaction -> re-merge.

The pure core decides (admission, merge); the store persists; this module
sequences the two so that a bundle is applied whole or not at all, together
with the re-merged state of its subject and the reports it gives rise to.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from .core import (
    Admission,
    BundleReport,
    KeyRing,
    admit,
    canonical_bytes,
    check_bundle,
    merge_document,
    parse_json,
    split_pith_number,
)
from .errors import InputError
from .store import NewEvent, Store, pack, unpack
from .workers import WorkerPool

DEFAULT_MAX_BUNDLE_BYTES = 64 * 1024 * 1024
GROUP_EVENTS = 5_000  # events per commit when importing many bundles


@dataclass(frozen=True)
class Quotas:
    """Local limits against a flood of authentic events (fresh keys cost an
    attacker nothing). Registry-signed events are never refused. Events over a
    limit are not stored; the refusal is recorded and reported as a flood."""

    max_signers_per_subject: int = 1_000
    max_events_per_signer: int = 10_000

    def split(self, store: Store, subject_id: int, events: list[dict[str, Any]], bodies: list[bytes],
              registry: frozenset[str]) -> tuple[list[dict[str, Any]], list[bytes], list[dict[str, Any]]]:
        # Only events by other keys than the registry's can be refused, and none
        # while the record would hold no more events than the smaller limit: the
        # counts per signer (a scan of the record's events) are read only then.
        if all(e["signer"]["public_key_fingerprint"] in registry for e in events) or (
                store.subject_event_count(subject_id) + len(events)
                <= min(self.max_signers_per_subject, self.max_events_per_signer)):
            return events, bodies, []
        counts = store.signer_counts(subject_id)
        signers = sum(1 for fp in counts if fp not in registry)  # the registry takes no place under the cap
        kept, kept_bodies, refused = [], [], []
        for e, b in zip(events, bodies, strict=True):
            fp = e["signer"]["public_key_fingerprint"]
            if fp not in registry:
                if (counts[fp] >= self.max_events_per_signer if fp in counts
                        else signers >= self.max_signers_per_subject):
                    refused.append(e)
                    continue
                signers += fp not in counts
            counts[fp] = counts.get(fp, 0) + 1
            kept.append(e)
            kept_bodies.append(b)
        return kept, kept_bodies, refused


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
    if len(data) > max_bytes:
        raise IngestError(f"bundle is {len(data)} bytes, over the cap of {max_bytes}")
    try:
        doc = parse_json(data)
    except ValueError as exc:
        raise IngestError(f"not JSON: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("pith_number"), str):
        raise IngestError("not a Pith bundle (no pith_number)")
    return doc


def node_ring(store: Store, trusted: KeyRing) -> KeyRing:
    """Keys for admission and merge: every key stored and the operator's trusted
    keys. The stored ring is copied, not re-hashed (`merged` hashes what it adds;
    every stored key was proven when stored): O(keys) dict copies, ~1 ms per 100k."""
    return store.key_ring().merged(trusted)


def ingest_ring(store: Store, trusted: KeyRing, key_entries: list[Any]) -> KeyRing:
    """The keys loose events are admitted with: ours and the ones they came with."""
    return node_ring(store, trusted).merged(KeyRing.from_entries(key_entries))


def _title(state: Mapping[str, Any]) -> str | None:
    for snap in reversed(state["current"]["graph_snapshots"]):
        paper = snap["payload"].get("graph_snapshot", {}).get("paper")
        if isinstance(paper, dict) and isinstance(paper.get("title"), str):
            return paper["title"][:500]
    return None


def _aliases(state: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(a["alias_kind"], a["alias_value"]) for a in state["current"]["source_aliases"]]


class MergedState(NamedTuple):
    """A subject's merge as the store keeps it: made inline or in a worker process."""

    state_sha256: str
    document: bytes  # CJ(state), packed for the store
    counts: tuple[int, int, int]  # event_count, equivocation_count, invalid_event_count
    title: str | None
    aliases: list[tuple[str, str]]
    equivocations: list[dict[str, Any]]
    invalid_events: list[dict[str, Any]]


def merged_state(state: dict[str, Any], state_bytes: bytes) -> MergedState:
    return MergedState(
        state["state_sha256"], pack(state_bytes),
        (state["event_count"], state["equivocation_count"], state["invalid_event_count"]),
        _title(state), _aliases(state), state["equivocations"], state["invalid_events"],
    )


def merge_bodies(pith_number: str, bodies: Iterable[bytes], ring: KeyRing, registry: frozenset[str]) -> MergedState:
    """Merge a subject from its stored bodies (packed or not). Pure CPU."""
    return merged_state(*merge_document(pith_number, [parse_json(unpack(b)) for b in bodies], ring, registry))


def merge_batch(jobs: list[tuple[str, list[bytes]]], key_entries: list[dict[str, Any]],
                registry: frozenset[str]) -> list[MergedState]:
    """`merge_bodies` for several subjects, in a worker process. The merge reads
    only registry keys (record receipts), so those are all `key_entries` need."""
    ring = KeyRing.from_entries(key_entries)
    return [merge_bodies(pn, bodies, ring, registry) for pn, bodies in jobs]


def report_key(kind: str, pith_number: str, detail: Mapping[str, Any]) -> str:
    """What makes an equivocation or a disagreement one report (the store's dedupe key)."""
    if kind == "equivocation":
        return f"equivocation|{pith_number}|{detail['identity']}|{detail['target']}|{detail['prev_event']}"
    return f"disagreement|{pith_number}|{detail['source']}|{detail['published_state_sha256']}"


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


def _store_admitted(
    store: Store, pn: str, events: list[dict[str, Any]], bodies: list[bytes], ring: KeyRing, registry: frozenset[str],
    result: IngestResult, now: str, source_state: dict[str, Any] | None = None, quotas: Quotas | None = None,
    source_state_bytes: bytes | None = None, merge: bool = True,
) -> None:
    """Inside a transaction: store keys, events and rejections, re-merge the subject
    (unless `merge` is False: a bulk sync merges each subject once, at its end;
    readers see the new events only then). Only the rejections are stored when
    nothing was admitted for an unknown subject."""
    store.add_rejections(pn, ((r.get("event_id"), r["reason"], r["detail"]) for r in result.rejected),
                         result.source, now)
    had = store.subject(pn)
    if not events and had is None:
        return
    subject_id = had.id if had is not None else store.ensure_subject(pn)
    was_empty = had is None or (had.event_count == 0 and had.state_sha256 is None)
    needed = {e["signer"]["public_key_fingerprint"] for e in events}
    for e in events:  # the registry key that signed a record's receipt
        if e["event_type"] == "record_created" and isinstance(e.get("payload"), dict):
            fp = (e["payload"].get("receipt") or {}).get("public_key_fingerprint") if isinstance(e["payload"].get("receipt"), dict) else None
            if isinstance(fp, str) and fp in registry:
                needed.add(fp)
    if quotas is not None:
        events, bodies, refused = quotas.split(store, subject_id, events, bodies, registry)
        store.add_rejections(pn, ((e["event_id"], "quota", f"over the quota for signer "
                                   f"{e['signer']['public_key_fingerprint']}") for e in refused), result.source, now)
        result.quota_refused = len(refused)
        if refused:
            result.flags.append("flood")
            store.add_report("flood", pn, f"flood|{pn}|{now[:13]}", {
                "source": result.source, "refused": len(refused),
                "signers": sorted({e["signer"]["public_key_fingerprint"] for e in refused})[:50]}, result.source, now)
    store.add_keys(ring, sorted(needed), now)
    rows = [
        NewEvent(e["event_id"], e["created_at"], e["event_type"], e["signer"]["public_key_fingerprint"], body)
        for e, body in zip(events, bodies, strict=True)
    ]
    result.new_event_ids = store.add_events(subject_id, rows, result.source, now)
    result.known = len(events) - len(result.new_event_ids)
    if not result.new_event_ids and not was_empty and had is not None and had.state_sha256 is not None:
        result.state_sha256 = had.state_sha256  # nothing new: the stored state stands
        return
    if not merge:
        result.state_sha256 = had.state_sha256 if had is not None else None
        result.merge_pending = True
        return
    # When the store held nothing and took every event, our merge of the source's
    # events is already the merge of the stored set: do not compute it twice.
    reuse = None
    if source_state is not None and was_empty and result.known == 0 and "flood" not in result.flags:
        reuse = merged_state(source_state, source_state_bytes or canonical_bytes(source_state))
    # `ring` holds every stored key already (and the batch's): merging it with the store's
    # ring again, per subject, was most of a push's cost when each event brought a new key
    merged, result.new_equivocations, result.new_invalid = remerge(
        store, subject_id, pn, ring, registry, now, result.source, reuse)
    result.state_sha256 = merged.state_sha256


def _rejections(admissions: Iterable[Admission], objs: list[Any]) -> list[dict[str, Any]]:
    out = []
    for i, (adm, obj) in enumerate(zip(admissions, objs, strict=False)):  # none past the event cap
        if not adm.admitted:
            claimed = obj.get("event_id") if isinstance(obj, dict) and isinstance(obj.get("event_id"), str) else None
            out.append({"index": i, "event_id": claimed, "reason": adm.reason, "detail": adm.detail})
    return out


def ingest_bundle(
    store: Store, bundle: dict[str, Any], *, source: str | None, trusted: KeyRing,
    registry: frozenset[str], now: str, report: BundleReport | None = None, quotas: Quotas | None = None,
    state_bytes: bytes | None = None,
) -> IngestResult:
    """Check and apply one parsed bundle. Events are admitted one by one; the
    bundle's own signature and state are checked and the outcome recorded: a
    published state that differs from the merge of the bundle's own events is
    a disagreement report."""
    if report is None:
        report = check_bundle(bundle, node_ring(store, trusted), registry)
    pn = report.pith_number
    if pn is None:
        raise IngestError("; ".join(report.problems) or "not a bundle")
    objs = bundle.get("events") if isinstance(bundle.get("events"), list) else []
    built = bundle.get("built_at")
    result = IngestResult(
        pith_number=pn, source=source, events_total=len(report.admission),
        rejected=_rejections(report.admission, objs), bundle_sha256=report.bundle_sha256,
        signature_ok=report.signature_ok, signer_fingerprint=report.signer_fingerprint,
        signer_is_registry=report.signer_is_registry, built_at=built if isinstance(built, str) else None,
        published_state_sha256=report.published_state_sha256,
        source_state_matches=report.state_matches and report.published_state_consistent,
        source_merge_sha256=report.state["state_sha256"] if report.state else None,
        problems=list(report.problems),
    )
    ring = ingest_ring(store, trusted, bundle.get("public_keys") or [])
    with store.transaction():
        _store_admitted(store, pn, report.events, report.bodies, ring, registry, result, now, report.state, quotas,
                        state_bytes)
        store.add_bundle_check(pn, source, {
            "bundle_sha256": report.bundle_sha256, "signature_ok": report.signature_ok,
            "signer": report.signer_fingerprint, "published_state_sha256": report.published_state_sha256,
            "source_state_matches": result.source_state_matches, "events_total": result.events_total,
            "events_new": len(result.new_event_ids), "events_rejected": len(result.rejected),
        }, now)
        if source is not None:
            _flag_source(store, bundle, report, result, source, now)
        if not result.source_state_matches and isinstance(bundle.get("state"), dict):
            # the signed bundle is the evidence anyone can check offline, kept in a row of its own (report
            # listings do not parse it); a source lying anew on every poll gets only its first few kept
            key = report_key("disagreement", pn,
                             {"source": source, "published_state_sha256": report.published_state_sha256})
            kept = report.signature_ok and store.reports_before("disagreement", pn, source, key) < MAX_KEPT_BUNDLES
            store.add_report("disagreement", pn, key, {
                "source": source, "bundle_sha256": report.bundle_sha256,
                "published_state_sha256": report.published_state_sha256,
                "merge_of_its_events_sha256": result.source_merge_sha256,
                "published_state_consistent": report.published_state_consistent, "bundle_kept": kept,
            }, source, now)
            if kept:
                store.add_report(EVIDENCE_BUNDLE, pn, f"{key}|bundle", {"bundle": bundle}, source, now)
    return result


STALE_AFTER = timedelta(hours=48)
MAX_KEPT_BUNDLES = 4  # disagreeing bundles kept as evidence per (record, source)
EVIDENCE_BUNDLE = "disagreement_bundle"  # the report kind holding one, keyed by its disagreement's key + "|bundle"


def _instant(text: object) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None


def _flag_source(store: Store, bundle: dict[str, Any], report: BundleReport, result: IngestResult,
                 source: str, now: str) -> None:
    """Inside the transaction: the attacks a mirror can make with authentic
    events (TUF's rollback and freeze). We keep the union either way; the
    source is flagged and the report kept."""
    pn = result.pith_number
    subject = store.subject(pn)
    if subject is None:
        return
    served = {e["event_id"] for e in report.events}
    before = store.event_ids_from_source(subject.id, source)
    missing = sorted(before - served)
    if missing:  # it served these before and now withholds them
        result.flags.append("rollback")
        store.add_report("rollback", pn, f"rollback|{pn}|{source}|{len(before)}|{len(served)}", {
            "source": source, "missing_count": len(missing), "missing": missing[:50],
            "bundle_sha256": report.bundle_sha256}, source, now)
    built = _instant(result.built_at)
    newest = max(((_instant(s.built_at), s.url) for s in store.sources(pn)
                  if s.url != source and s.built_at and _instant(s.built_at)), default=None)
    if built is not None and newest is not None and newest[0] - built > STALE_AFTER:
        result.flags.append("stale")  # frozen: its bundle stopped advancing while another moved on
        store.add_report("stale", pn, f"stale|{pn}|{source}|{result.built_at}", {
            "source": source, "built_at": result.built_at, "newer_source": newest[1],
            "newer_built_at": newest[0].strftime("%Y-%m-%dT%H:%M:%SZ")}, source, now)


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
    events, bodies = [], []
    for adm, obj in zip(admissions, objs, strict=False):  # none past the event cap
        if adm.admitted and adm.event_id not in seen:
            seen.add(adm.event_id)  # type: ignore[arg-type]
            events.append(obj)
            bodies.append(adm.body)
    result = IngestResult(pith_number=pith_number, source=source, events_total=len(objs),
                          rejected=_rejections(admissions, objs))
    with store.transaction():
        _store_admitted(store, pith_number, events, bodies, ring, registry, result, now, quotas=quotas, merge=merge)
    return result


_WORKER: tuple[KeyRing, frozenset[str], int] | None = None


def _light(ev: dict[str, Any]) -> dict[str, Any]:
    """The fields of an admitted event that storing it needs (its bytes are in the admission)."""
    light = {k: ev[k] for k in ("event_id", "created_at", "event_type")}
    light["signer"] = {"public_key_fingerprint": ev["signer"]["public_key_fingerprint"]}
    if ev["event_type"] == "record_created" and isinstance(ev.get("payload"), dict):
        receipt = ev["payload"].get("receipt")
        if isinstance(receipt, dict):
            light["payload"] = {"receipt": {"public_key_fingerprint": receipt.get("public_key_fingerprint")}}
    return light


class _StoredKeys(KeyRing):
    """A key ring that looks up a fingerprint it lacks in the store (read-only, in
    a worker): a worker is sent the message's keys and the trusted ones, not every
    key held (with many keys held, listing them all per message cost more than
    admitting it)."""

    store: Store | None = None

    def __getitem__(self, fp: str) -> bytes:
        try:
            return super().__getitem__(fp)
        except KeyError:
            found = self.store.key(fp) if self.store is not None and isinstance(fp, str) else None
            if found is None:
                raise
            self.add_raw(*found)
            return found[0]


_READERS = threading.local()  # a read-only store connection per worker thread or process


def _reader(db_path: str) -> Store:
    """The store at `db_path`, read-only, kept open (one at a time: a node has one)."""
    reader = getattr(_READERS, "store", None)
    if reader is None or reader.path != db_path:
        if reader is not None:
            reader.close()
        reader = _READERS.store = Store(db_path, readonly=True)
    return reader


def admit_raw(raw: list[bytes], key_entries: list[dict[str, Any]], max_bytes: int, db_path: str | None = None,
              ) -> list[tuple[str | None, Admission, dict[str, Any]]]:
    """Parse and admit loose events, each for the subject it names. Pure CPU (but
    for keys looked up in the store at `db_path`, read-only) and picklable, so it
    runs in worker processes. Per input: (subject, or None when it names none; the
    admission; a light copy of the event, enough to store it)."""
    ring = _StoredKeys.from_entries(key_entries)
    ring.store = _reader(db_path) if db_path else None
    out: list[tuple[str | None, Admission, dict[str, Any]]] = []
    for data in raw:
        try:
            if len(data) > max_bytes:
                raise ValueError(f"{len(data)} bytes")
            ev = parse_json(data)
        except ValueError as exc:
            out.append((None, Admission(None, "malformed", f"unreadable event: {exc}"), {}))
            continue
        subject = ev.get("subject_pith_number") if isinstance(ev, dict) else None
        try:
            split_pith_number(subject)  # type: ignore[arg-type]
        except (ValueError, TypeError, AttributeError):
            out.append((None, Admission(None, "malformed", "subject_pith_number is not a Pith number"), {}))
            continue
        adm = admit(ev, subject, ring)  # type: ignore[arg-type]
        claimed = ev.get("event_id") if isinstance(ev.get("event_id"), str) else None
        if adm.body is not None:
            adm = Admission(adm.event_id, body=pack(adm.body))  # compressed for the store here, off the main process
        out.append((subject, adm, _light(ev) if adm.admitted else {"event_id": claimed}))
    return out


def die_with_parent() -> None:
    """In a worker process: exit when the parent dies, even by `kill -9`
    (Linux PR_SET_PDEATHSIG; elsewhere the worker exits at its next read)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def background_worker(nice: int) -> None:
    """Initializer of the node's admission workers. It lives here, not in the node's
    modules, so a worker imports only what admission needs (~8 MB less each)."""
    die_with_parent()
    os.nice(nice)


def _worker_init(entries: list[dict[str, Any]], registry: frozenset[str], max_bytes: int) -> None:
    global _WORKER
    die_with_parent()
    _WORKER = (KeyRing.from_entries(entries), registry, max_bytes)


def _worker_check(data: bytes) -> tuple[dict[str, Any], BundleReport] | str:
    """In a worker process: parse and check one bundle (the CPU-heavy part).
    Returns what the parent needs to apply it and nothing more: a slim bundle
    travels back cheaper than the parent could parse the bytes again."""
    assert _WORKER is not None
    ring, registry, max_bytes = _WORKER
    try:
        bundle = parse_bundle(data, max_bytes)
    except IngestError as exc:
        return str(exc)
    report = check_bundle(bundle, ring, registry)
    report.admission = [replace(a, body=None) for a in report.admission]  # bodies travel once, in report.bodies
    report.bodies = [pack(b) for b in report.bodies]  # compressed here, on a worker's core
    report.events = [_light(e) for e in report.events]  # storing needs these fields; the bytes are in bodies
    objs = bundle.get("events") if isinstance(bundle.get("events"), list) else []
    slim = {k: bundle.get(k) for k in ("pith_number", "built_at", "public_keys")}
    slim["state"] = {} if isinstance(bundle.get("state"), dict) else None
    slim["events"] = [None if a.admitted else o for a, o in zip(report.admission, objs, strict=False)]  # rejected ones, for reports
    slim["_state_bytes"] = pack(canonical_bytes(report.state)) if report.state is not None else None
    return slim, report


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
    with WorkerPool(workers, initializer=_worker_init, initargs=(ring.entries(), registry, max_bytes)) as pool:
        queue: deque[tuple[str, bytes | Exception, Future[BundleReport | str] | None]] = deque()
        it = iter(items)

        def refill() -> None:
            while len(queue) < 4 * workers and (nxt := next(it, None)) is not None:
                try:
                    data = nxt[1]()
                except OSError as exc:
                    queue.append((nxt[0], exc, None))
                    continue
                queue.append((nxt[0], data, pool.submit(_worker_check, data)))

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
                        bundle, report = checked
                        if any(a.reason == "unknown_key" for a in report.admission):
                            # keys stored since the workers started: check again here
                            bundle = parse_bundle(data, max_bytes)
                            report = check_bundle(bundle, node_ring(store, trusted), registry)
                        done.append((source, ingest_bundle(store, bundle, source=source, trusted=trusted,
                                                           registry=registry, now=now(), report=report,
                                                           state_bytes=bundle.pop("_state_bytes", None))))
                        events += len(report.admission)
                    except (OSError, IngestError) as exc:
                        done.append((source, exc))
                    refill()
            yield from done
