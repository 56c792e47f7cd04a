"""The node's own events (spec part 3): per record, once, a witness
`timestamp_anchor`, a `storage_attestation` renewed after a configurable
interval, and a `mirror_hint` naming itself. Each (subject, target) of ours is
one chain: a renewal names the previous event as `prev_event` and supersedes
it. The chain heads are read back from the store before every decision and an
event is committed before it is served or pushed, so a restart or a crash
never makes the node equivocate.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from ..core import mirror_hint_entry
from ..views import state_of
from .service import Node

log = logging.getLogger("pithnode.attest")

Plan = tuple[str, str, dict[str, Any], str | None]  # event_type, target, payload, prev_event


def _parse(ts: str) -> datetime:
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ")


def chain_heads(own: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Our events per target that no other of ours names as prev_event."""
    named = {e["prev_event"] for e in own if e["prev_event"]}
    heads: dict[str, list[dict[str, Any]]] = {}
    for e in own:
        if e["event_id"] not in named:
            heads.setdefault(e["target"], []).append(e)
    return heads


def due(own: list[dict[str, Any]], *, canonical_sha256: str, base_url: str, code: str, now: str,
        renewal: timedelta) -> list[Plan]:
    """What we must sign now for one record, given our own events about it. Pure."""
    heads = chain_heads(own)
    if any(len(h) > 1 for h in heads.values()):
        return []  # our chain already forked (e.g. a restored old key file): never make it worse
    digest_ref = {"kind": "canonical_record", "sha256": canonical_sha256}
    plans: list[Plan] = []
    if "timestamp" not in heads:
        plans.append(("timestamp_anchor", "timestamp",
                      {"anchor_type": "witness", "anchored": digest_ref, "proof_b64": None}, None))
    location = mirror_hint_entry("pithnode", base_url, code)["bundle_url"]
    store_head = heads.get("storage", [None])[0]
    if store_head is None or store_head["payload"].get("location") != location or \
            _parse(store_head["created_at"]) + renewal <= _parse(now):
        plans.append(("storage_attestation", "storage", {"stored": digest_ref, "location": location},
                      store_head["event_id"] if store_head else None))
    hint = mirror_hint_entry("pithnode", base_url, code)
    mirror_head = heads.get("mirror", [None])[0]
    if mirror_head is None or mirror_head["payload"] != hint:
        plans.append(("mirror_hint", "mirror", hint, mirror_head["event_id"] if mirror_head else None))
    return plans


async def attest_all(node: Node) -> int:
    """Sign what is due for every record we hold; returns how many events were made."""
    made = 0
    renewal = timedelta(days=node.cfg.storage_renewal_days)
    for subject in node.store.subjects():
        state = state_of(node.store, subject)
        rc = ((state or {}).get("current") or {}).get("record_created")
        if not rc or not isinstance(rc["payload"].get("canonical_sha256"), str):
            continue
        own = [e for e in node.own_events(subject) if e["event_type"] != "record_created"]
        for event_type, target, payload, prev in due(
            own, canonical_sha256=rc["payload"]["canonical_sha256"], base_url=node.public_url,
            code=subject.code, now=node.now(), renewal=renewal,
        ):
            await node.emit_own(subject.pith_number, event_type, target, payload, prev)
            made += 1
    return made
