"""Documents a node derives from its store: its own signed bundle, the record
JSON, events, equivocation reports with their evidence, lookups by any id.
Used by the CLI and the HTTP server alike, so both say the same thing."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from .core import MERGE_VERSION, KeyRing, build_bundle, mirror_hint_entry, parse_pith_ref, resolver_urls
from .core.ingest_plan import report_key
from .errors import InputError
from .identity import NodeIdentity
from .store import Report, Store, Subject

_ARXIV_RE = re.compile(r"(?:arxiv:)?((?:\d{4}\.\d{4,5}|[a-z\-]+(?:\.[A-Z]{2})?/\d{7})(?:v\d+)?)", re.I | re.ASCII)
_DOI_RE = re.compile(r"(?:https?://(?:dx\.)?doi\.org/|doi:)?10\.48550/arxiv\.(.+)", re.I)


class NotHeld(LookupError, InputError):
    """No single held record matches; the message says why plainly."""


def arxiv_id_of(text: str) -> str | None:
    """The arXiv id in an arXiv id or an arXiv DOI, else None."""
    s = text.strip()
    if m := _DOI_RE.fullmatch(s):
        s = m.group(1)
    m = _ARXIV_RE.fullmatch(s)
    return m.group(1) if m else None


def local_matches(store: Store, text: str) -> list[str]:
    """Pith numbers of held records matching any written id: full Pith number,
    code, short Pith number (a code prefix), arXiv id or arXiv DOI."""
    try:
        ref = parse_pith_ref(text)
    except ValueError:
        ref = None
    if ref is not None and ref.code:
        s = store.subject(ref.code)
        return [s.pith_number] if s and (ref.year is None or s.pith_number == ref.pith_number) else []
    if ref is not None and ref.prefix:
        return [s.pith_number for c in store.codes_with_prefix(ref.prefix) if (s := store.subject(c))]
    arxiv = arxiv_id_of(text)
    if arxiv is None:
        return []
    return store.resolve_alias("arxiv_version" if re.search(r"v\d+$", arxiv) else "arxiv", arxiv)


def find_subject(store: Store, text: str) -> Subject:
    found = local_matches(store, text)
    if len(found) > 1:
        raise NotHeld(f"{text!r} is ambiguous: {', '.join(found)}")
    subject = store.subject(found[0]) if found else None
    if subject is None:
        raise NotHeld(f"no record matching {text!r} is held in {store.path} (run `pithnode sync {text}` first)")
    return subject


def events_of(store: Store, subject: Subject) -> list[dict[str, Any]]:
    return [json.loads(b) for b in store.event_bodies(subject.id, merged_only=True)]


def state_of(store: Store, subject: Subject) -> dict[str, Any] | None:
    raw = store.state_bytes(subject.pith_number)
    return json.loads(raw) if raw else None


_BUNDLE_URL = re.compile(r"(https?://[^/]+(?:/.*?)?)/(?:\.well-known/)?pith/[A-Z2-7]{26}/bundle\.json$")


def _source_bases(store: Store, subject: str | None = None) -> list[str]:
    """Base URLs of the bundle sources that answered (for one record, or all)."""
    out = []
    for src in store.sources(subject):
        m = _BUNDLE_URL.match(src.url)
        if m and src.last_success:
            out.append(m.group(1))
    return list(dict.fromkeys(out))


def known_mirror_hints(store: Store, subject: Subject, own_base_url: str | None) -> list[dict[str, Any]]:
    """mirror_hints for our bundle: the sources we fetched it from, mirror_hint
    events in the state, and ourselves."""
    hints: dict[str, dict[str, Any]] = {}
    state = state_of(store, subject) or {"current": {"mirror_hints": []}}
    for ev in state["current"]["mirror_hints"]:
        p = ev["payload"]
        hints.setdefault(p["base_url"].rstrip("/"),
                         mirror_hint_entry(p.get("name") or p["base_url"], p["base_url"], subject.code))
    for base in _source_bases(store, subject.pith_number):
        hints.setdefault(base, mirror_hint_entry(base, base, subject.code))
    if own_base_url:
        hints[own_base_url.rstrip("/")] = mirror_hint_entry("pithnode", own_base_url, subject.code, status="self")
    return [hints[k] for k in sorted(hints)]


def own_bundle(store: Store, subject: Subject, identity: NodeIdentity, trusted: KeyRing, *,
               public_url: str | None, now: str, signed_at: str) -> dict[str, Any]:
    """Our bundle for `subject`: every admitted event, the keys to verify them,
    our merged state, mirror hints including ourselves, signed by our key."""
    state = state_of(store, subject)
    if state is None:
        raise NotHeld(f"{subject.pith_number} has no merged state yet")
    base = public_url or ""
    links = {"bundle": "", "state": "", "well_known_bundle": ""}
    if public_url:
        urls = resolver_urls(public_url, subject.code)
        links = {"resolver": f"{public_url.rstrip('/')}/pith/{subject.code}", "bundle": urls["bundle_url"],
                 "state": urls["state_url"], "well_known_bundle": urls["well_known_bundle_url"]}
    return build_bundle(
        pith_number=subject.pith_number, events=events_of(store, subject), state=state,
        keys=trusted.merged(store.key_ring()), mirror_hints=known_mirror_hints(store, subject, base or None),
        links=links, built_at=now, signed_at=signed_at, signing_key=identity.key, key_id=identity.key_id,
    )


def signed_evidence(store: Store, event_ids: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The stored events named (canonical order) and the public keys that verify them."""
    evidence = [json.loads(body) for _pn, body in store.events_by_id(event_ids)]
    evidence.sort(key=lambda e: (e["created_at"], e["event_id"]))
    held, keys = store.key_ring(), KeyRing()
    for e in evidence:
        fp = e["signer"]["public_key_fingerprint"]
        if fp in held:
            keys.add_raw(held[fp], held.key_id(fp))
    return evidence, keys.entries()


def equivocation_reports(store: Store, *, since: str | None = None, subject: str | None = None,
                         limit: int = 1000, offset: int = 0) -> list[dict[str, Any]]:
    """Equivocation reports, newest first, each with the conflicting signed
    events as evidence (anyone can verify them offline)."""
    out = []
    for rep in store.reports("equivocation", since=since, subject=subject, limit=limit, offset=offset):
        eq = rep.detail
        evidence, keys = signed_evidence(store, eq["event_ids"])
        out.append({"pith_number": rep.subject, "first_seen": rep.first_seen, "last_seen": rep.last_seen,
                    "source": rep.source, **eq, "events": evidence, "public_keys": keys})
    return out


EVIDENCE_KINDS = ("equivocation", "disagreement")


def evidence_id(report: Report) -> str:
    """A report's id in page URLs and the feed: a hash of what makes it one report (the store's
    dedupe key), so it is the same across restarts and on every node that saw the same conflict."""
    key = report_key(report.kind, report.subject, report.detail)
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def evidence_reports(store: Store, *, subject: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Equivocation and disagreement reports, newest first, each with its `id` (and for an
    equivocation the `signer` of its events)."""
    reports = [r for kind in EVIDENCE_KINDS for r in store.reports(kind, subject=subject, limit=limit)]
    reports.sort(key=lambda r: r.first_seen, reverse=True)
    return [_with_signer(store, r, evidence_id(r)) for r in reports[:limit]]


def find_evidence(store: Store, subject: str, eid: str) -> dict[str, Any] | None:
    """The report of `subject` whose evidence id is `eid` (as `evidence_reports` lists it), or None.
    Only the match is looked up further: a page asked with a made-up id costs one read of the
    record's reports, not one event lookup per report."""
    for kind in EVIDENCE_KINDS:
        for r in store.reports(kind, subject=subject, limit=10_000):
            if evidence_id(r) == eid:
                return _with_signer(store, r, eid)
    return None


def _with_signer(store: Store, r: Report, eid: str) -> dict[str, Any]:
    """A report as the pages show it: with its evidence `id` and, for an equivocation, the
    `signer` of its events (None for a disagreement)."""
    first = store.events_by_id(r.detail["event_ids"][:1]) if r.kind == "equivocation" else []
    return {**r.to_json(), "id": eid, "signer": json.loads(first[0].body)["signer"] if first else None}


def evidence_doc(store: Store, report: dict[str, Any]) -> dict[str, Any] | None:
    """The self-contained download `pithnode verify` checks offline: for an equivocation the
    conflicting signed events with their keys (an events list), for a disagreement the source's
    signed bundle as it was received (None when it was not kept)."""
    d = report["detail"]
    if report["kind"] == "disagreement":
        kept = store.report_detail(report_key("disagreement", report["subject"], d) + "|bundle")
        return kept["bundle"] if kept else None
    events, keys = signed_evidence(store, d["event_ids"])
    return {"evidence_type": "pith_equivocation", "pith_number": report["subject"], "identity": d["identity"],
            "target": d["target"], "prev_event": d["prev_event"], "event_ids": d["event_ids"],
            "first_seen": report["first_seen"], "events": events, "public_keys": keys}


def record_json(store: Store, subject: Subject, public_url: str) -> dict[str, Any] | None:
    """`/pith/<CODE>.json`: the record as the registry serves it, from our merged
    state (receipt included, so a client verifies it without trusting us)."""
    state = state_of(store, subject)
    cur = (state or {}).get("current") or {}
    rc = cur.get("record_created")
    if not rc:
        return None
    p = rc["payload"]
    record = p.get("canonical_record") or {}
    snaps = cur.get("graph_snapshots") or []
    base = public_url.rstrip("/")
    return {
        "record_type": "pith_number_record", "schema_version": "1.0",
        "pith_number": subject.pith_number, "short_pith_number": "pith:" + subject.code[:8],
        "canonical_sha256": p.get("canonical_sha256"), "source": record.get("source"),
        "canonical_record": record, "receipt": p.get("receipt"),
        "graph_snapshot": snaps[-1]["payload"].get("graph_snapshot") if snaps else None,
        "aliases": cur.get("source_aliases") or [],
        "state_sha256": state["state_sha256"] if state else None,
        "links": {"json": f"{base}/pith/{subject.code}.json",
                  "graph_json": f"{base}/api/pith-number/{subject.code}/graph.json",
                  "events_json": f"{base}/api/pith-number/{subject.code}/events.json",
                  **resolver_urls(base, subject.code)},
    }


def events_doc(store: Store, subject: Subject, keys: KeyRing) -> dict[str, Any]:
    """`/api/pith-number/<CODE>/events.json`: every admitted event (canonical
    order) with the keys that verify them."""
    events = events_of(store, subject)
    fps = {e["signer"]["public_key_fingerprint"] for e in events}
    ring = keys.merged(store.key_ring())
    return {"pith_number": subject.pith_number, "event_count": len(events), "events": events,
            "public_keys": ring.entries(fps & set(ring))}


def graph_doc(store: Store, subject: Subject) -> dict[str, Any] | None:
    """`/api/pith-number/<CODE>/graph.json`: the current graph of the merged state."""
    state = state_of(store, subject)
    if state is None:
        return None
    cur = state["current"]
    snaps = cur["graph_snapshots"]
    return {"pith_number": subject.pith_number, "state_sha256": state["state_sha256"],
            "graph_snapshot": snaps[-1] if snaps else None, "graph_snapshots": snaps,
            "citation_signatures": cur["citation_signatures"], "corrections": cur["corrections"]}


def mirror_manifest(store: Store, identity: NodeIdentity, public_url: str, generated_at: str) -> dict[str, Any]:
    """`/pith-mirrors.json`, shaped like the registry's: ourselves, then every
    mirror we learned of (bundle sources that answered, mirror_hint events)."""
    def entry(name: str, base: str, status: str, key: dict[str, Any] | None = None) -> dict[str, Any]:
        e: dict[str, Any] = {
            "name": name, "mirror_type": "https" if base.startswith("https:") else "http", "base_url": base,
            "bundle_pattern": f"{base}/pith/{{suffix}}/bundle.json",
            "state_pattern": f"{base}/pith/{{suffix}}/state.json",
            "well_known_pattern": f"{base}/.well-known/pith/{{suffix}}/bundle.json", "status": status}
        if key is not None:
            e["public_key"] = key
        return e

    own = identity.ring().entries()[0]
    own_key = {**own, "url": f"{public_url.rstrip('/')}/pith-signing-key.json"}
    mirrors = [entry("pithnode", public_url.rstrip("/"), "self", own_key)]
    seen = {public_url.rstrip("/")}
    # from what we hold, read through indexes (no record's state is parsed):
    # sources that answered, then mirror_hint events
    learned = [(base, base, "mirror") for base in _source_bases(store)]
    learned += [(base, name, "mirror") for base, name in store.mirror_hint_bases().items()]
    for base, name, status in learned:
        if base not in seen:
            seen.add(base)
            mirrors.append(entry(name, base, status))
    return {"manifest_type": "pith_mirror_manifest", "manifest_version": "1.0", "generated_at": generated_at,
            "merge_version": MERGE_VERSION, "mirrors": mirrors,
            "notes": "Current state is computed by deterministic merge, not by trusting this manifest."}
