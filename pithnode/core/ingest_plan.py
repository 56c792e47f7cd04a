"""What ingesting a batch of one subject's admitted events does to the store, decided in pure code.

ingest.py reads a `Snapshot` of all the decision depends on (inside its
transaction), `decide` turns the `Batch` and the snapshot into a `Plan`, and
ingest.py applies the plan in that same transaction: the shape of python-tuf's
Updater over its pure TrustedMetadataSet. No store and no clock here (`now` is
a value in), so every rule of ingest (flood quotas, which state to keep, when a
source rolled back or froze, which disagreeing bundle is kept as evidence) is
tested on plain values.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple

from .bundle import BundleReport
from .events import Admission

STALE_AFTER = timedelta(hours=48)  # a source whose bundle is this much older than another's is frozen
MAX_KEPT_BUNDLES = 4  # disagreeing bundles kept as evidence per (record, source)
EVIDENCE_BUNDLE = "disagreement_bundle"  # the report kind holding one, keyed by its disagreement's key + "|bundle"


@dataclass(frozen=True)
class Quotas:
    """Local limits against a flood of authentic events (fresh keys cost an
    attacker nothing). Registry-signed events are never refused. Events over a
    limit are not stored; the refusal is recorded and reported as a flood."""

    max_signers_per_subject: int = 1_000
    max_events_per_signer: int = 10_000

    def may_bind(self, held_events: int, signers: Sequence[str], registry: Collection[str]) -> bool:
        """Whether a limit can refuse any of these events: only events by other keys than the registry's
        can be refused, and none while the record would hold no more than the smaller limit. Only then
        are the counts per signer (a scan of the record's events) needed."""
        return not all(fp in registry for fp in signers) and (
            held_events + len(signers) > min(self.max_signers_per_subject, self.max_events_per_signer))

    def refused(self, counts: Mapping[str, int], signers: Sequence[str], registry: Collection[str]) -> list[bool]:
        """For each event (by its signer, in order), whether it is over a limit, given the record's
        events held per signer (`counts`); the events kept count against the later ones."""
        counts = dict(counts)
        held = sum(1 for fp in counts if fp not in registry)  # the registry takes no place under the cap
        out = []
        for fp in signers:
            if fp not in registry:
                if counts[fp] >= self.max_events_per_signer if fp in counts else held >= self.max_signers_per_subject:
                    out.append(True)
                    continue
                held += fp not in counts
            counts[fp] = counts.get(fp, 0) + 1
            out.append(False)
        return out


class Admitted(NamedTuple):
    """An admitted event, as much of it as storing it needs; `body` is its canonical bytes (maybe packed)."""

    event_id: str
    created_at: str
    event_type: str
    signer_fp: str
    body: bytes
    receipt_fp: str | None = None  # a record_created event's: the key that signed its receipt

    @classmethod
    def of(cls, ev: Mapping[str, Any], body: bytes) -> Admitted:
        """From an admitted event (whole, or as light as worker_jobs.light makes it)."""
        kind, fp = ev["event_type"], None
        if kind == "record_created" and isinstance(payload := ev.get("payload"), dict):
            receipt = payload.get("receipt")
            fp = receipt.get("public_key_fingerprint") if isinstance(receipt, dict) else None
        return cls(ev["event_id"], ev["created_at"], kind, ev["signer"]["public_key_fingerprint"], body,
                   fp if isinstance(fp, str) else None)


class Report(NamedTuple):
    """A report to record once per `dedupe` key."""

    kind: str
    dedupe: str
    detail: dict[str, Any]


@dataclass(frozen=True)
class BundleFacts:
    """What a checked bundle adds to a batch of its events: its check, and the bundle's own fields."""

    report: BundleReport
    built_at: str | None
    has_state: bool  # it publishes a state object

    @property
    def source_state_matches(self) -> bool:
        """Its published state is the merge of its own events, and consistent with its hash."""
        return self.report.state_matches and self.report.published_state_consistent


@dataclass
class Batch:
    """Admitted events of one subject from one source, with the admissions' rejections."""

    pith_number: str
    source: str | None
    now: str
    registry: frozenset[str]
    events: list[Admitted]
    rejected: list[dict[str, Any]] = field(default_factory=list)  # {index, event_id, reason, detail}, see `rejections`
    quotas: Quotas | None = None  # None: our own events, never refused
    merge: bool = True  # False: a bulk sync stores now and merges each subject once, later
    bundle: BundleFacts | None = None


@dataclass(frozen=True)
class Snapshot:
    """What the store holds that a batch's decision reads, read in the transaction that applies it."""

    subject_id: int | None = None  # the subject's row, if it has one
    event_count: int = 0  # as its stored state counts them
    state_sha256: str | None = None  # its stored state's
    known: frozenset[str] = frozenset()  # of the batch's event ids, those stored already (read where they
    # decide something: not for a bulk sync's subject without a stored state, whose merge waits anyway)
    signer_counts: Mapping[str, int] | None = None  # events held per signer; read only when a quota may bind
    from_source: frozenset[str] = frozenset()  # ids of the subject's events first received from the source
    other_sources: tuple[tuple[str, str], ...] = ()  # (url, built_at) of the subject's other sources
    evidence_kept: int = 0  # disagreement reports from this source on this record before this one


MergeStep = Literal["keep", "pending", "reuse", "merge"]


@dataclass
class Plan:
    """What to write, in order: the rejections; unless `store_subject` is False (nothing admitted for an
    unknown subject), the subject's row, the quota refusals and `flood`, the keys, the new events and
    the merge; then the bundle's check and `source_reports`, and its evidence if `evidence` is set."""

    rejections: list[tuple[str | None, str, str]]  # (event_id, reason, detail)
    store_subject: bool = False
    quota_refusals: list[tuple[str | None, str, str]] = field(default_factory=list)
    flood: Report | None = None
    keys: list[str] = field(default_factory=list)  # fingerprints of the keys the events need
    events: list[Admitted] = field(default_factory=list)  # to add: none the snapshot knows (the store skips held ones)
    known: int = 0  # admitted, within quota and held already
    merge: MergeStep = "keep"  # keep the stored state; leave it pending; store the source's merge; merge here
    state_sha256: str | None = None  # the stored state that stands (for keep and pending)
    flags: list[str] = field(default_factory=list)  # "flood", "rollback", "stale": what the source did wrong
    bundle_check: dict[str, Any] | None = None
    source_reports: list[Report] = field(default_factory=list)  # rollback, stale, disagreement
    evidence: str | None = None  # the dedupe key to keep the signed bundle under, as evidence


def rejections(admissions: Iterable[Admission], objs: Sequence[Any]) -> list[dict[str, Any]]:
    """The rejected inputs, each {index, event_id (claimed, if a str), reason, detail}."""
    out = []
    for i, (adm, obj) in enumerate(zip(admissions, objs, strict=False)):  # none past the event cap
        if not adm.admitted:
            claimed = obj.get("event_id") if isinstance(obj, dict) and isinstance(obj.get("event_id"), str) else None
            out.append({"index": i, "event_id": claimed, "reason": adm.reason, "detail": adm.detail})
    return out


def report_key(kind: str, pith_number: str, detail: Mapping[str, Any]) -> str:
    """What makes an equivocation or a disagreement one report (the store's dedupe key)."""
    if kind == "equivocation":
        return f"equivocation|{pith_number}|{detail['identity']}|{detail['target']}|{detail['prev_event']}"
    return f"disagreement|{pith_number}|{detail['source']}|{detail['published_state_sha256']}"


def disagreement_key(batch: Batch) -> str | None:
    """The key of the disagreement a bundle's batch reports, if it reports one: its published state
    is not the merge of its own events."""
    b = batch.bundle
    if b is None or b.source_state_matches or not b.has_state:
        return None
    return report_key("disagreement", batch.pith_number,
                      {"source": batch.source, "published_state_sha256": b.report.published_state_sha256})


def _instant(text: object) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None


def decide(batch: Batch, snap: Snapshot) -> Plan:
    """The plan of `batch` on a store holding `snap`."""
    plan = Plan([(r.get("event_id"), r["reason"], r["detail"]) for r in batch.rejected])
    if batch.events or snap.subject_id is not None:
        plan.store_subject = True
        _plan_events(plan, batch, snap)
    if batch.bundle is not None:
        _judge_bundle(plan, batch, batch.bundle, snap)
    return plan


def _plan_events(plan: Plan, batch: Batch, snap: Snapshot) -> None:
    events, registry = batch.events, batch.registry
    needed = {e.signer_fp for e in events} | {e.receipt_fp for e in events if e.receipt_fp in registry}
    plan.keys = sorted(fp for fp in needed if fp is not None)
    if batch.quotas is not None and snap.signer_counts is not None:
        over = batch.quotas.refused(snap.signer_counts, [e.signer_fp for e in events], registry)
        refused = [e for e, o in zip(events, over, strict=True) if o]
        events = [e for e, o in zip(events, over, strict=True) if not o]
        plan.quota_refusals = [(e.event_id, "quota", f"over the quota for signer {e.signer_fp}") for e in refused]
        if refused:
            plan.flags.append("flood")
            plan.flood = Report("flood", f"flood|{batch.pith_number}|{batch.now[:13]}", {
                "source": batch.source, "refused": len(refused),
                "signers": sorted({e.signer_fp for e in refused})[:50]})
    seen = set(snap.known)
    for e in events:
        if e.event_id not in seen:  # first copy wins
            seen.add(e.event_id)
            plan.events.append(e)
    plan.known = len(events) - len(plan.events)  # as far as the snapshot read them
    was_empty = snap.subject_id is None or (snap.event_count == 0 and snap.state_sha256 is None)
    if not plan.events and not was_empty and snap.state_sha256 is not None:
        plan.merge, plan.state_sha256 = "keep", snap.state_sha256  # nothing new: the stored state stands
    elif not batch.merge:
        plan.merge, plan.state_sha256 = "pending", snap.state_sha256
    elif (batch.bundle is not None and batch.bundle.report.state is not None and was_empty and plan.known == 0
          and "flood" not in plan.flags):
        # the store held nothing and takes every event: our merge of the source's events is the merge of
        # the stored set, not computed twice
        plan.merge = "reuse"
    else:
        plan.merge = "merge"


def _judge_bundle(plan: Plan, batch: Batch, b: BundleFacts, snap: Snapshot) -> None:
    """The bundle's check, and the attacks a mirror can make with authentic events (TUF's rollback and
    freeze): we keep the union either way; the source is flagged and the report kept."""
    pn, source, report = batch.pith_number, batch.source, b.report
    plan.bundle_check = {
        "bundle_sha256": report.bundle_sha256, "signature_ok": report.signature_ok,
        "signer": report.signer_fingerprint, "published_state_sha256": report.published_state_sha256,
        "source_state_matches": b.source_state_matches, "events_total": len(report.admission),
        "events_new": len(plan.events), "events_rejected": len(batch.rejected),
    }
    if source is not None and (snap.subject_id is not None or batch.events):
        served = {e["event_id"] for e in report.events}
        before = snap.from_source | {e.event_id for e in plan.events}  # as the store holds it once applied
        missing = sorted(before - served)
        if missing:  # it served these before and now withholds them
            plan.flags.append("rollback")
            plan.source_reports.append(Report("rollback", f"rollback|{pn}|{source}|{len(before)}|{len(served)}", {
                "source": source, "missing_count": len(missing), "missing": missing[:50],
                "bundle_sha256": report.bundle_sha256}))
        built = _instant(b.built_at)
        newest = max(((t, url) for url, at in snap.other_sources if (t := _instant(at)) is not None), default=None)
        if built is not None and newest is not None and newest[0] - built > STALE_AFTER:
            plan.flags.append("stale")  # frozen: its bundle stopped advancing while another moved on
            plan.source_reports.append(Report("stale", f"stale|{pn}|{source}|{b.built_at}", {
                "source": source, "built_at": b.built_at, "newer_source": newest[1],
                "newer_built_at": newest[0].strftime("%Y-%m-%dT%H:%M:%SZ")}))
    key = disagreement_key(batch)
    if key is not None:
        # the signed bundle is the evidence anyone can check offline, kept in a row of its own (report
        # listings do not parse it); a source lying anew on every poll gets only its first few kept
        kept = report.signature_ok and snap.evidence_kept < MAX_KEPT_BUNDLES
        plan.source_reports.append(Report("disagreement", key, {
            "source": source, "bundle_sha256": report.bundle_sha256,
            "published_state_sha256": report.published_state_sha256,
            "merge_of_its_events_sha256": report.state["state_sha256"] if report.state else None,
            "published_state_consistent": report.published_state_consistent, "bundle_kept": kept}))
        plan.evidence = f"{key}|bundle" if kept else None
