"""The merge (PROTOCOL.md part 2): validity, equivocation and the state.

`merge` is a pure function of (subject, admitted events, key ring, trusted
registry fingerprints). Arrival order and duplicates make no difference: the
events are deduplicated by id and taken in canonical order
`(created_at, event_id)`. Cost: one sort, then O(1) dictionary work per event
and per `supersedes` entry, so O(n log n) overall.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from operator import itemgetter
from typing import Any, Final

from .canonical import canonical_bytes, canonical_hash, sha256_hex
from .events import identity_of
from .ids import is_hex64
from .keys import KeyRing
from .record import receipt_problem

MERGE_VERSION: Final = "pith-open-graph-merge-v1"

TARGETS: Final[dict[str, str]] = {
    "record_created": "record",
    "graph_snapshot": "graph",
    "author_attestation": "author",
    "timestamp_anchor": "timestamp",
    "storage_attestation": "storage",
    "citation_signature": "citation",
    "replication_record": "replication",
    "correction": "correction",
    "mirror_hint": "mirror",
}
# `current` list for each event type (record_created is projected on its own).
CURRENT_LISTS: Final[dict[str, str]] = {
    "graph_snapshot": "graph_snapshots",
    "author_attestation": "author_attestations",
    "timestamp_anchor": "timestamp_anchors",
    "storage_attestation": "storage_attestations",
    "citation_signature": "citation_signatures",
    "replication_record": "replication_records",
    "correction": "corrections",
    "mirror_hint": "mirror_hints",
}
REGISTRY_ONLY: Final = frozenset({"record_created", "graph_snapshot", "correction"})

# Invalidity reasons, in the order they are checked.
INVALID_REASONS: Final = (
    "unsupported_schema", "unknown_event_type", "target_mismatch", "unauthorized_signer",
    "bad_record", "bad_payload", "bad_prev", "bad_supersedes",
)

Event = Mapping[str, Any]


# (created_at, event_id): the canonical order of events.
canonical_order_key: Final[Callable[[Event], tuple[str, str]]] = itemgetter("created_at", "event_id")


# The spec's HTTP URL rule (2.2), verbatim, matched against the whole string
# with ASCII classes. Not urllib.parse: its answers changed between patch
# releases of one Python (leading whitespace stripping), and every node must
# judge a URL alike.
_HTTP_URL_RE: Final = re.compile(
    r"https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~-]+)(:[0-9]{1,5})?([/?#][^\x00-\x20\x7f]*)?", re.ASCII)


def _is_http_url(value: object) -> bool:
    return type(value) is str and _HTTP_URL_RE.fullmatch(value) is not None


def _is_digest_ref(value: object) -> bool:
    """`{kind: string, sha256: 64 hex}`."""
    return type(value) is dict and type(value.get("kind")) is str and is_hex64(value.get("sha256"))


def _payload_ok(event_type: str, payload: object) -> bool:
    if type(payload) is not dict:
        return False
    if event_type == "graph_snapshot":
        return type(payload.get("graph_snapshot")) is dict
    if event_type == "timestamp_anchor":
        return (
            type(payload.get("anchor_type")) is str
            and _is_digest_ref(payload.get("anchored"))
            and "proof_b64" in payload
            and (payload["proof_b64"] is None or type(payload["proof_b64"]) is str)
        )
    if event_type == "storage_attestation":
        return _is_digest_ref(payload.get("stored")) and _is_http_url(payload.get("location"))
    if event_type == "mirror_hint":
        return type(payload.get("mirror_type")) is str and _is_http_url(payload.get("base_url"))
    return True


def record_problem(event: Event, subject: str, keys: KeyRing, registry: frozenset[str]) -> str | None:
    """Why a record_created event is `bad_record`, or None when it is sound."""
    if event["prev_event"] is not None or event["supersedes"]:
        return "record_created must have no prev_event and no supersedes"
    p = event["payload"]
    if type(p) is not dict:
        return "payload is not an object"
    for name in ("source_kind", "source_id"):
        if type(p.get(name)) is not str:
            return f"payload.{name} must be a string"
    if type(p.get("source_version")) is not int:
        return "payload.source_version must be an integer"
    record = p.get("canonical_record")
    problem = receipt_problem(record, p.get("canonical_sha256"), p.get("receipt"), subject, keys, registry)
    if problem is not None:
        return problem
    assert type(record) is dict  # receipt_problem checked it
    src = record.get("source")
    if type(src) is not dict or type(src.get("version")) is not int or (
        src.get("kind"), src.get("id"), src.get("version")
    ) != (p["source_kind"], p["source_id"], p["source_version"]):
        return "canonical_record.source differs from the payload's source"
    return None


def invalid_reason(
    event: Event, subject: str, by_id: Mapping[str, Event], keys: KeyRing, registry: frozenset[str]
) -> str | None:
    """The first validity rule (2.2) that `event` breaks, or None."""
    if event["schema_version"] != "1.0":
        return "unsupported_schema"
    etype = event["event_type"]
    target = TARGETS.get(etype)
    if target is None:
        return "unknown_event_type"
    if event["target"] != target:
        return "target_mismatch"
    ident = identity_of(event, registry)
    if etype in REGISTRY_ONLY and ident != "registry":
        return "unauthorized_signer"
    if etype == "record_created":
        if record_problem(event, subject, keys, registry) is not None:
            return "bad_record"
    elif not _payload_ok(etype, event["payload"]):
        return "bad_payload"
    prev = event["prev_event"]
    if prev is not None:
        if prev == event["event_id"]:
            return "bad_prev"
        before = by_id.get(prev)
        if before is not None and (identity_of(before, registry) != ident or before["target"] != target):
            return "bad_prev"
    for sid in event["supersedes"]:
        old = by_id.get(sid)
        if old is not None and (old["event_type"] == "record_created" or identity_of(old, registry) != ident):
            return "bad_supersedes"
    return None


def projection(event: Event) -> dict[str, Any]:
    return {
        "event_id": event["event_id"],
        "target": event["target"],
        "created_at": event["created_at"],
        "signer": event["signer"],
        "payload": event["payload"],
    }


def source_aliases(record_event: Event) -> list[dict[str, Any]]:
    p = record_event["payload"]
    kind, sid, version = p["source_kind"], p["source_id"], p["source_version"]
    code = record_event["subject_pith_number"].rsplit(":", 1)[-1]
    if kind == "arxiv":
        pairs = [("arxiv", sid), ("arxiv_version", f"{sid}v{version}"), ("doi", f"10.48550/arxiv.{sid}")]
    else:
        pairs = [(kind, sid)]
    pairs += [("pith_short_12", code[:12]), ("pith_short_16", code[:16]), ("pith_short_8", code[:8])]
    at = record_event["created_at"]
    return [{"alias_kind": k, "alias_value": v, "created_at": at} for k, v in pairs]


_first_two = itemgetter(0, 1)


def merge(
    subject: str,
    events: Iterable[Event],
    keys: KeyRing,
    registry: frozenset[str] | set[str] | Iterable[str],
) -> dict[str, Any]:
    """The merged state of `subject` from its admitted events."""
    state = _unhashed_state(subject, events, keys, registry)
    state["state_sha256"] = canonical_hash(state)
    return state


def _unhashed_state(
    subject: str,
    events: Iterable[Event],
    keys: KeyRing,
    registry: frozenset[str] | set[str] | Iterable[str],
) -> dict[str, Any]:
    registry = frozenset(registry)
    # One pass to deduplicate and key, one sort, one pass for validity and
    # slots, one to build `current`: each event is touched as few times as
    # possible (on a large subject, memory traffic is most of the cost).
    by_id: dict[str, Event] = {}
    keyed: list[tuple[str, str, Event]] = []
    for ev in events:
        eid = ev["event_id"]
        if eid not in by_id:
            by_id[eid] = ev
            keyed.append((ev["created_at"], eid, ev))
    keyed.sort(key=_first_two)
    event_count = len(keyed)

    invalid: list[dict[str, str]] = []
    valid: list[Event] = []
    # slot (identity, target, prev_event) as one string key: no tuple or list per event
    first_of_slot: dict[str, Event] = {}
    groups: dict[str, list[Event]] = {}
    for _, eid, ev in keyed:
        reason = invalid_reason(ev, subject, by_id, keys, registry)
        if reason is not None:
            invalid.append({"event_id": eid, "reason": reason})
            continue
        valid.append(ev)
        slot = f"{identity_of(ev, registry)} {ev['target']} {ev['prev_event']}"  # target, prev: no spaces
        first = first_of_slot.setdefault(slot, ev)
        if first is not ev:
            group = groups.get(slot)
            if group is None:
                groups[slot] = [first, ev]
            else:
                group.append(ev)

    equivocations = []
    equivocating: set[str] = set()
    for group in sorted(groups.values(), key=lambda g: canonical_order_key(g[0])):  # by first event
        ids = [e["event_id"] for e in group]
        equivocating.update(ids)
        first = group[0]
        equivocations.append({"identity": identity_of(first, registry), "target": first["target"],
                              "prev_event": first["prev_event"], "event_ids": ids})

    applied = [e for e in valid if e["event_id"] not in equivocating] if equivocating else valid
    superseded: set[str] = set()
    for e in applied:
        if e["supersedes"]:
            superseded.update(e["supersedes"])

    current: dict[str, Any] = {name: [] for name in CURRENT_LISTS.values()}
    current.update(record_created=None, canonical_record=None, source_aliases=[])
    applied_ids: list[str] = []
    for e in applied:
        eid = e["event_id"]
        applied_ids.append(eid)
        etype = e["event_type"]
        if etype == "record_created":
            current["record_created"] = projection(e)
            current["canonical_record"] = e["payload"]["canonical_record"]
            current["source_aliases"] = source_aliases(e)
        elif eid not in superseded:
            current[CURRENT_LISTS[etype]].append(projection(e))

    state: dict[str, Any] = {
        "state_type": "pith_open_graph_state",
        "state_version": "1.0",
        "pith_number": subject,
        "merge_version": MERGE_VERSION,
        "event_count": event_count,
        "valid_event_count": event_count - len(invalid),
        "invalid_event_count": len(invalid),
        "equivocation_count": len(equivocations),
        "current": current,
        "equivocations": equivocations,
        "invalid_events": invalid,
        "applied_event_ids": applied_ids,
    }
    return state


_STATE_TAIL: Final = b',"state_type":"pith_open_graph_state","state_version":"1.0","valid_event_count":'


def merge_document(
    subject: str,
    events: Iterable[Event],
    keys: KeyRing,
    registry: frozenset[str] | set[str] | Iterable[str],
) -> tuple[dict[str, Any], bytes]:
    """`merge`, and CJ of the state it returns, serializing the state once
    (not once to hash it and again to store it). In key order state_sha256
    comes right before state_type; the top-level state_type member is the
    last match of its bytes, since all that follows it is two fixed strings
    and an integer."""
    state = _unhashed_state(subject, events, keys, registry)
    unhashed = canonical_bytes(state)
    state["state_sha256"] = digest = sha256_hex(unhashed)
    j = unhashed.rfind(_STATE_TAIL)
    assert j > 0, "a state this module built has its fixed tail"
    return state, b"".join((unhashed[:j], b',"state_sha256":"', digest.encode("ascii"), b'"', unhashed[j:]))


def state_hash(state: Mapping[str, Any]) -> str:
    """H(state without state_sha256)."""
    return canonical_hash({k: v for k, v in state.items() if k != "state_sha256"})
