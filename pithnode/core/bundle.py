"""Bundles: hash, signature, the checks of a fetched bundle, and building our own."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from nacl.signing import SigningKey

from .canonical import CanonicalError, canonical_bytes, canonical_bytes_spliced, canonical_hash, sha256_hex
from .events import Admission, admit
from .ids import code_from_digest_hex, short_pith_number, split_pith_number
from .keys import KeyRing, fingerprint_hex, sign_b64
from .merge import MERGE_VERSION, canonical_order_key, merge, state_hash

BUNDLE_TYPE: Final = "pith_open_graph_bundle"
BUNDLE_SIGNED_MESSAGE: Final = "bundle_sha256_bytes"
MAX_BUNDLE_EVENTS: Final = 100_000


def bundle_hash(bundle: Mapping[str, Any]) -> str:
    """bundle_sha256 = H(bundle without bundle_signature)."""
    return canonical_hash({k: v for k, v in bundle.items() if k != "bundle_signature"})


def resolver_urls(base_url: str, code: str) -> dict[str, str]:
    base = base_url.rstrip("/")
    return {
        "bundle_url": f"{base}/pith/{code}/bundle.json",
        "state_url": f"{base}/pith/{code}/state.json",
        "well_known_bundle_url": f"{base}/.well-known/pith/{code}/bundle.json",
    }


def mirror_hint_entry(name: str, base_url: str, code: str, status: str = "mirror") -> dict[str, Any]:
    return {"mirror_type": "https" if base_url.startswith("https:") else "http", "name": name,
            "base_url": base_url.rstrip("/"), **resolver_urls(base_url, code), "status": status}


@dataclass
class BundleReport:
    """Everything checked about one bundle, offline. `problems` is empty when all verifies."""

    pith_number: str | None
    bundle_sha256: str | None = None
    signature_ok: bool = False
    signer_fingerprint: str | None = None
    signer_is_registry: bool = False
    admission: list[Admission] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list, repr=False)  # admitted, first copy of each
    bodies: list[bytes] = field(default_factory=list, repr=False)  # CJ of each of `events`
    state: dict[str, Any] | None = None  # our merge of the bundle's admitted events
    published_state_sha256: str | None = None
    published_state_consistent: bool = False  # its state_sha256 is the hash of the rest
    keys_refused: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def state_matches(self) -> bool:
        return self.state is not None and self.published_state_sha256 == self.state["state_sha256"]



def check_bundle(bundle: object, trusted: KeyRing, registry: Iterable[str]) -> BundleReport:
    """Check a parsed bundle against our trusted key ring and registry fingerprints.

    Admission of each event uses the union of our ring and the bundle's own
    `public_keys` (keys travel with events; each proven by its fingerprint).
    The bundle signature may be by any key proven the same way; whether that
    key is a trusted registry key is reported separately.
    """
    registry = frozenset(registry)
    if not isinstance(bundle, dict):
        return BundleReport(None, problems=["bundle is not a JSON object"])
    pn = bundle.get("pith_number")
    if not isinstance(pn, str):
        return BundleReport(None, problems=["bundle has no pith_number"])
    report = BundleReport(pn)
    if bundle.get("bundle_type") != BUNDLE_TYPE:
        report.problems.append(f"bundle_type is not {BUNDLE_TYPE!r}")
    ring = KeyRing()
    refused = ring.add_entries(bundle.get("public_keys") or [])
    report.keys_refused = len(refused)
    if refused:
        report.problems.append(f"{len(refused)} public key(s) do not hash to their fingerprint")
    ring = trusted.merged(ring)

    events = bundle.get("events")
    if not isinstance(events, list):
        report.problems.append("bundle has no events list")
        events = []
    elif len(events) > MAX_BUNDLE_EVENTS:
        report.problems.append(f"bundle holds {len(events)} events, over the cap of {MAX_BUNDLE_EVENTS}")
        events = []
    seen: set[str] = set()
    for ev in events:
        adm = admit(ev, pn, ring)
        report.admission.append(adm)
        if adm.admitted and adm.event_id not in seen:
            seen.add(adm.event_id)  # type: ignore[arg-type]
            report.events.append(ev)
            report.bodies.append(adm.body)  # type: ignore[arg-type]
    try:
        # the admitted events' canonical bytes are already known: splice, not re-serialize
        if events and len(report.admission) == len(events):
            parts = [a.body if a.body is not None else canonical_bytes(ev)
                     for a, ev in zip(report.admission, events, strict=True)]
            unsigned = {k: v for k, v in bundle.items() if k != "bundle_signature"}
            report.bundle_sha256 = sha256_hex(canonical_bytes_spliced(unsigned, "events", parts))
        else:
            report.bundle_sha256 = bundle_hash(bundle)
    except CanonicalError as exc:
        report.problems.append(f"bundle has no canonical form: {exc}")
    sig = bundle.get("bundle_signature")
    if not isinstance(sig, dict):
        report.problems.append("bundle has no bundle_signature")
    elif report.bundle_sha256 is not None:
        fp = sig.get("public_key_fingerprint")
        report.signer_fingerprint = fp if isinstance(fp, str) else None
        report.signer_is_registry = report.signer_fingerprint in registry
        claimed = sig.get("bundle_sha256")
        if claimed is not None and claimed != report.bundle_sha256:
            report.problems.append("bundle_signature.bundle_sha256 does not match the bundle")
        elif report.signer_fingerprint is None or report.signer_fingerprint not in ring:
            report.problems.append("bundle signature key is unknown")
        elif not ring.verify(report.signer_fingerprint, bytes.fromhex(report.bundle_sha256), sig.get("signature_b64")):
            report.problems.append("bundle signature does not verify")
        else:
            report.signature_ok = True

    try:
        _, code = split_pith_number(pn)
        if bundle.get("canonical_sha256") is not None and code_from_digest_hex(str(bundle["canonical_sha256"])) != code:
            report.problems.append("canonical_sha256 does not derive the bundle's Pith number")
    except ValueError:
        report.problems.append(f"pith_number {pn!r} is not a full Pith number")

    rejected = sum(1 for a in report.admission if not a.admitted)
    if rejected:
        report.problems.append(f"{rejected} event(s) rejected at admission")
    report.state = merge(pn, report.events, ring, registry)

    published = bundle.get("state")
    if isinstance(published, dict):
        claimed = published.get("state_sha256")
        report.published_state_sha256 = claimed if isinstance(claimed, str) else None
        try:
            report.published_state_consistent = claimed == state_hash(published)
        except CanonicalError:
            report.published_state_consistent = False
        if not report.published_state_consistent:
            report.problems.append("published state's state_sha256 is not the hash of the state")
        if not report.state_matches:
            report.problems.append("published state differs from our merge of the bundle's events")
    else:
        report.problems.append("bundle has no state")
    return report


def build_bundle(
    *,
    pith_number: str,
    events: Iterable[Mapping[str, Any]],
    state: Mapping[str, Any],
    keys: KeyRing,
    mirror_hints: list[dict[str, Any]],
    links: dict[str, str],
    built_at: str,
    signed_at: str,
    signing_key: SigningKey,
    key_id: str,
) -> dict[str, Any]:
    """Our own bundle: every admitted event in canonical order, the keys to
    verify them, our merged state, signed with our key. Times come from the caller."""
    ordered = sorted(events, key=canonical_order_key)
    cur = state.get("current") or {}
    record = cur.get("canonical_record")
    rc = cur.get("record_created") or {}
    payload = rc.get("payload") or {}
    needed = {e["signer"]["public_key_fingerprint"] for e in ordered}
    receipt_fp = (payload.get("receipt") or {}).get("public_key_fingerprint")
    if isinstance(receipt_fp, str):
        needed.add(receipt_fp)
    own_raw = bytes(signing_key.verify_key)
    ring = keys.merged(KeyRing({fingerprint_hex(own_raw): own_raw}, {fingerprint_hex(own_raw): key_id}))
    needed.add(fingerprint_hex(own_raw))
    code = pith_number.rsplit(":", 1)[-1]
    bundle: dict[str, Any] = {
        "bundle_type": BUNDLE_TYPE,
        "bundle_version": "1.0",
        "pith_number": pith_number,
        "short_pith_number": short_pith_number(code),
        "canonical_record": record,
        "canonical_sha256": payload.get("canonical_sha256"),
        "source": record.get("source") if isinstance(record, dict) else None,
        "source_aliases": cur.get("source_aliases") or [],
        "events": ordered,
        "timestamp_proofs": [],
        "mirror_hints": mirror_hints,
        "public_keys": ring.entries(needed),
        "merge_version": MERGE_VERSION,
        "built_at": built_at,
        "links": links,
        "state": dict(state),
    }
    digest = bundle_hash(bundle)
    bundle["bundle_signature"] = {
        "signature_status": "signed_v1",
        "algorithm": "ed25519",
        "key_id": key_id,
        "public_key_fingerprint": fingerprint_hex(own_raw),
        "signature_b64": sign_b64(signing_key, bytes.fromhex(digest)),
        "signed_message": BUNDLE_SIGNED_MESSAGE,
        "signed_at": signed_at,
        "bundle_sha256": digest,
    }
    return bundle
