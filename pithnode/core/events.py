"""Events: admission (PROTOCOL.md 2.1) and the making of our own signed events.

Admission decides whether an object may enter the store at all. It checks, in
the spec's order, and stops at the first failure:

    malformed, too_large, hash_mismatch, wrong_subject,
    bad_signature (key ids differ), unknown_key, bad_signature (no verify)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from nacl.signing import SigningKey

from .canonical import CanonicalError, admissible_bytes, canonical_bytes, check_signable, sha256_hex
from .ids import is_event_id
from .keys import KeyRing, fingerprint_hex, sign_b64

EVENT_FIELDS: Final = frozenset(
    {
        "event_type", "subject_pith_number", "target", "payload", "signer", "created_at",
        "supersedes", "prev_event", "schema_version", "signature", "content_sha256", "event_id",
    }
)
UNHASHED_FIELDS: Final = ("content_sha256", "event_id", "signature")
SIGNER_FIELDS: Final = frozenset({"signer_id", "signer_type", "key_id", "public_key_fingerprint"})
MAX_EVENT_BYTES: Final = 262_144
SIGNED_MESSAGE: Final = "open_graph_event_sha256_bytes"

# Rejection reasons, in the order they are checked.
MALFORMED: Final = "malformed"
TOO_LARGE: Final = "too_large"
HASH_MISMATCH: Final = "hash_mismatch"
WRONG_SUBJECT: Final = "wrong_subject"
BAD_SIGNATURE: Final = "bad_signature"
UNKNOWN_KEY: Final = "unknown_key"
REJECTION_REASONS: Final = (MALFORMED, TOO_LARGE, HASH_MISMATCH, WRONG_SUBJECT, BAD_SIGNATURE, UNKNOWN_KEY)

_CREATED_AT_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z", re.ASCII)


def valid_timestamp(value: object) -> bool:
    """`YYYY-MM-DDTHH:MM:SSZ` exactly, and a real calendar instant."""
    if type(value) is not str or not _CREATED_AT_RE.fullmatch(value):
        return False
    try:  # the datetime constructor checks the calendar; much cheaper than strptime
        datetime(int(value[0:4]), int(value[5:7]), int(value[8:10]), int(value[11:13]), int(value[14:16]),
                 int(value[17:19]))
    except ValueError:
        return False
    return True


def malformed_reason(obj: object) -> str | None:
    """Why `obj` is not a well-formed event (a message naming the field), or None."""
    if type(obj) is not dict:
        return "event is not an object"
    keys = obj.keys()
    if keys != EVENT_FIELDS:
        missing = sorted(EVENT_FIELDS - keys)
        extra = sorted(k for k in keys if k not in EVENT_FIELDS)
        return f"event fields wrong (missing {missing}, unexpected {extra})"
    for name in ("event_type", "subject_pith_number", "target", "schema_version", "content_sha256", "event_id"):
        if type(obj[name]) is not str:
            return f"{name} must be a string"
    signer = obj["signer"]
    if type(signer) is not dict or signer.keys() != SIGNER_FIELDS:
        return f"signer must be an object with exactly {sorted(SIGNER_FIELDS)}"
    for name in SIGNER_FIELDS:
        if type(signer[name]) is not str:
            return f"signer.{name} must be a string"
    if not valid_timestamp(obj["created_at"]):
        return "created_at must be YYYY-MM-DDTHH:MM:SSZ"
    sup = obj["supersedes"]
    if type(sup) is not list or not all(is_event_id(s) for s in sup):
        return "supersedes must be a list of sha256:<64 hex> event ids"
    prev = obj["prev_event"]
    if prev is not None and not is_event_id(prev):
        return "prev_event must be null or a sha256:<64 hex> event id"
    sig = obj["signature"]
    if type(sig) is not dict:
        return "signature must be an object"
    if sig.get("algorithm") != "ed25519":
        return "signature.algorithm must be ed25519"
    for name in ("key_id", "public_key_fingerprint", "signature_b64"):
        if type(sig.get(name)) is not str:
            return f"signature.{name} must be a string"
    try:
        check_signable(obj)
    except CanonicalError as exc:
        return str(exc)
    return None


def content_of(event: Mapping[str, Any]) -> dict[str, Any]:
    """The hashed part of an event: everything but signature, content_sha256, event_id."""
    return {k: v for k, v in event.items() if k not in UNHASHED_FIELDS}


@dataclass(frozen=True, slots=True)
class Admission:
    """The outcome for one object: admitted (reason None) or rejected."""

    event_id: str | None
    reason: str | None = None
    detail: str = ""
    # CJ(event) of an admitted event: what a store keeps, computed once here.
    body: bytes | None = field(default=None, compare=False, repr=False)

    @property
    def admitted(self) -> bool:
        return self.reason is None

    def __reduce__(self) -> tuple[Any, ...]:
        # Admissions come back from worker processes by the thousand: a slots
        # dataclass unpickles through a generic __setstate__ that reads fields()
        # on every object; this is direct (3.0 -> 0.9 us per admission).
        return (Admission, (self.event_id, self.reason, self.detail, self.body))


def admit(obj: object, subject: str, keys: KeyRing) -> Admission:
    """Admission of one object for `subject` with key ring `keys` (2.1)."""
    why = malformed_reason(obj)
    if why is not None:
        return Admission(None, MALFORMED, why)
    assert isinstance(obj, dict)
    try:  # malformed_reason ran check_signable: the event is in the fast path's domain
        content_bytes = admissible_bytes(content_of(obj))
        body = admissible_bytes(obj)
    except CanonicalError as exc:
        return Admission(None, MALFORMED, str(exc))
    size = len(body)  # CJ(event), as the spec counts it
    if size > MAX_EVENT_BYTES:
        return Admission(None, TOO_LARGE, f"canonical event is {size} bytes, over {MAX_EVENT_BYTES}")
    digest = sha256_hex(content_bytes)
    if obj["content_sha256"] != digest or obj["event_id"] != "sha256:" + digest:
        return Admission(None, HASH_MISMATCH, f"content hashes to {digest}")
    if obj["subject_pith_number"] != subject:
        return Admission(None, WRONG_SUBJECT, f"event is about {obj['subject_pith_number']}, not {subject}")
    signer, sig = obj["signer"], obj["signature"]
    fp = signer["public_key_fingerprint"]
    if sig["key_id"] != signer["key_id"] or sig["public_key_fingerprint"] != fp:
        return Admission(None, BAD_SIGNATURE, "signature key differs from the signer's")
    if fp not in keys:
        return Admission(None, UNKNOWN_KEY, f"no key for fingerprint {fp}")
    if not keys.verify(fp, bytes.fromhex(digest), sig["signature_b64"]):
        return Admission(None, BAD_SIGNATURE, "Ed25519 signature does not verify")
    return Admission(obj["event_id"], body=body)


def identity_of(event: Mapping[str, Any], registry: frozenset[str]) -> str:
    """"registry" for a trusted registry fingerprint, else the fingerprint."""
    fp = event["signer"]["public_key_fingerprint"]
    return "registry" if fp in registry else fp


def make_event(
    key: SigningKey,
    *,
    event_type: str,
    subject: str,
    target: str,
    payload: dict[str, Any],
    signer_id: str,
    signer_type: str,
    key_id: str,
    created_at: str,
    signed_at: str,
    prev_event: str | None = None,
    supersedes: list[str] | None = None,
) -> dict[str, Any]:
    """Build and sign an event. The caller supplies the times: the core has no clock."""
    fp = fingerprint_hex(bytes(key.verify_key))
    body: dict[str, Any] = {
        "event_type": event_type,
        "subject_pith_number": subject,
        "target": target,
        "payload": payload,
        "signer": {"signer_id": signer_id, "signer_type": signer_type, "key_id": key_id, "public_key_fingerprint": fp},
        "created_at": created_at,
        "supersedes": list(supersedes or []),
        "prev_event": prev_event,
        "schema_version": "1.0",
    }
    digest = sha256_hex(canonical_bytes(body))
    body["signature"] = {
        "signature_status": "signed_v1",
        "algorithm": "ed25519",
        "key_id": key_id,
        "public_key_fingerprint": fp,
        "signature_b64": sign_b64(key, bytes.fromhex(digest)),
        "signed_message": SIGNED_MESSAGE,
        "signed_at": signed_at,
    }
    body["content_sha256"] = digest
    body["event_id"] = "sha256:" + digest
    return body
