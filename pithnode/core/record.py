"""Canonical records and their receipts (PROTOCOL.md part 1)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .canonical import CanonicalError, canonical_hash
from .ids import code_from_digest_hex, is_hex64, split_pith_number
from .keys import KeyRing


def receipt_problem(
    record: object,
    digest: object,
    receipt: object,
    pith_number: str,
    keys: KeyRing,
    registry: Iterable[str],
) -> str | None:
    """Why (canonical_record, canonical_sha256, receipt) does not prove
    `pith_number`, or None. The receipt is an Ed25519 signature by a trusted
    registry key over the 32 raw bytes of canonical_sha256."""
    if type(record) is not dict or type(receipt) is not dict:
        return "canonical_record and receipt must be objects"
    if not is_hex64(digest):
        return "canonical_sha256 must be 64 lowercase hex"
    assert isinstance(digest, str)
    try:
        computed = canonical_hash(record)
    except CanonicalError:
        return "canonical_record has no canonical form"
    if not computed == digest == receipt.get("canonical_sha256"):
        return "canonical_record, canonical_sha256 and receipt.canonical_sha256 disagree"
    try:
        year, code = split_pith_number(pith_number)
    except ValueError:
        return f"not a full Pith number: {pith_number!r}"
    if code_from_digest_hex(digest) != code:
        return "canonical record does not derive the Pith number's code"
    meta = record.get("metadata")
    submitted = meta.get("submitted_at") if type(meta) is dict else None
    if type(submitted) is not str or submitted[:4] != year:
        return "Pith number's year differs from metadata.submitted_at"
    fp = receipt.get("public_key_fingerprint")
    if type(fp) is not str or fp not in frozenset(registry) or fp not in keys:
        return "receipt is not signed by a trusted registry key in the key ring"
    if not keys.verify(fp, bytes.fromhex(digest), receipt.get("signature_b64")):
        return "receipt signature does not verify"
    return None


def check_record_json(doc: dict[str, Any], keys: KeyRing, registry: Iterable[str]) -> str | None:
    """Problem with a record JSON (`/pith/<CODE>.json`), or None when its receipt proves it."""
    pn = doc.get("pith_number")
    if type(pn) is not str:
        return "record has no pith_number"
    return receipt_problem(doc.get("canonical_record"), doc.get("canonical_sha256"), doc.get("receipt"), pn, keys,
                           registry)
