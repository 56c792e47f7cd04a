"""What the worker processes run: the CPU-heavy halves of ingest.

Each job is pure CPU on plain values (but for keys looked up in the store,
read-only) and picklable, so it runs in a worker process (workers.WorkerPool):
the checks of a bundle for `pithnode import`, the admission of loose events
(a gossip message), the merges of a bulk sync's subjects. Their results go
back to ingest.py, which decides and applies them on the store. This module
imports neither ingest.py nor the node: a worker loads only what its job needs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
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
from .store import Store, pack, unpack
from .workers import die_with_parent


def bundle_document(data: bytes, max_bytes: int) -> dict[str, Any] | str:
    """The bundle document `data` holds, or why it holds none (ingest.parse_bundle raises it)."""
    if len(data) > max_bytes:
        return f"bundle is {len(data)} bytes, over the cap of {max_bytes}"
    try:
        doc = parse_json(data)
    except ValueError as exc:
        return f"not JSON: {exc}"
    if not isinstance(doc, dict) or not isinstance(doc.get("pith_number"), str):
        return "not a Pith bundle (no pith_number)"
    return doc


# -- merges ------------------------------------------------------------------------


class MergedState(NamedTuple):
    """A subject's merge as the store keeps it: made inline or in a worker process."""

    state_sha256: str
    document: bytes  # CJ(state), packed for the store
    counts: tuple[int, int, int]  # event_count, equivocation_count, invalid_event_count
    title: str | None
    aliases: list[tuple[str, str]]
    equivocations: list[dict[str, Any]]
    invalid_events: list[dict[str, Any]]


def _title(state: Mapping[str, Any]) -> str | None:
    for snap in reversed(state["current"]["graph_snapshots"]):
        paper = snap["payload"].get("graph_snapshot", {}).get("paper")
        if isinstance(paper, dict) and isinstance(paper.get("title"), str):
            return str(paper["title"][:500])
    return None


def merged_state(state: dict[str, Any], state_bytes: bytes) -> MergedState:
    return MergedState(
        state["state_sha256"], pack(state_bytes),
        (state["event_count"], state["equivocation_count"], state["invalid_event_count"]),
        _title(state), [(a["alias_kind"], a["alias_value"]) for a in state["current"]["source_aliases"]],
        state["equivocations"], state["invalid_events"],
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


# -- admission of loose events -----------------------------------------------------


def light(ev: dict[str, Any]) -> dict[str, Any]:
    """The fields of an admitted event that storing it needs (its bytes are in the admission)."""
    out = {k: ev[k] for k in ("event_id", "created_at", "event_type")}
    out["signer"] = {"public_key_fingerprint": ev["signer"]["public_key_fingerprint"]}
    if ev["event_type"] == "record_created" and isinstance(ev.get("payload"), dict):
        receipt = ev["payload"].get("receipt")
        if isinstance(receipt, dict):
            out["payload"] = {"receipt": {"public_key_fingerprint": receipt.get("public_key_fingerprint")}}
    return out


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
    reader: Store | None = getattr(_READERS, "store", None)
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
    ring = _StoredKeys()
    ring.add_entries(key_entries)
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
        assert isinstance(ev, dict) and isinstance(subject, str)
        adm = admit(ev, subject, ring)
        claimed = ev.get("event_id") if isinstance(ev.get("event_id"), str) else None
        if adm.body is not None:
            adm = Admission(adm.event_id, body=pack(adm.body))  # compressed for the store here, off the main process
        out.append((subject, adm, light(ev) if adm.admitted else {"event_id": claimed}))
    return out


# -- the checks of `pithnode import` -------------------------------------------------


@dataclass
class CheckedBundle:
    """A bundle checked in a worker: what applying it needs and nothing more (a slim
    copy travels back cheaper than the parent could parse the bytes again)."""

    pith_number: str
    report: BundleReport  # its events light, its bodies packed, its admissions without bodies
    events: list[Any]  # the bundle's events list with the admitted ones as None (the rejected, for their ids)
    built_at: str | None
    public_keys: list[Any]
    has_state: bool  # the bundle publishes a state object
    state_bytes: bytes | None  # CJ of our merge of its events, packed


_IMPORT: tuple[KeyRing, frozenset[str], int] | None = None  # set in an import worker by `init_import_worker`


def init_import_worker(entries: list[dict[str, Any]], registry: frozenset[str], max_bytes: int) -> None:
    global _IMPORT
    die_with_parent()
    _IMPORT = (KeyRing.from_entries(entries), registry, max_bytes)


def check_bundle_bytes(data: bytes) -> CheckedBundle | str:
    """In an import worker: parse and check one bundle (the CPU-heavy part); a str says why it is none."""
    assert _IMPORT is not None, "init_import_worker runs first"
    ring, registry, max_bytes = _IMPORT
    bundle = bundle_document(data, max_bytes)
    if isinstance(bundle, str):
        return bundle
    report = check_bundle(bundle, ring, registry)
    report.admission = [replace(a, body=None) for a in report.admission]  # bodies travel once, in report.bodies
    report.bodies = [pack(b) for b in report.bodies]  # compressed here, on a worker's core
    report.events = [light(e) for e in report.events]  # storing needs these fields; the bytes are in bodies
    objs = bundle["events"] if isinstance(bundle.get("events"), list) else []
    built, keys = bundle.get("built_at"), bundle.get("public_keys")
    rejected = [None if a.admitted else o for a, o in zip(report.admission, objs, strict=False)]
    return CheckedBundle(
        bundle["pith_number"], report, rejected,
        built if isinstance(built, str) else None, keys if isinstance(keys, list) else [],
        isinstance(bundle.get("state"), dict),
        pack(canonical_bytes(report.state)) if report.state is not None else None)
