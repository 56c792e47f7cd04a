"""Pith numbers: derivation from a canonical record, and parsing of every written form."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Any

from .canonical import canonical_hash

CODE_LEN = 26
_CODE_RE = re.compile(r"[A-Z2-7]{26}", re.ASCII)
_FULL_RE = re.compile(r"pith:([0-9]{4}):([A-Z2-7]{26})", re.ASCII)
_SHORT_RE = re.compile(r"pith:([A-Z2-7]{1,25})", re.ASCII)
_EVENT_ID_RE = re.compile(r"sha256:[0-9a-f]{64}", re.ASCII)
_HEX64_RE = re.compile(r"[0-9a-f]{64}", re.ASCII)


def is_event_id(value: object) -> bool:
    return type(value) is str and _EVENT_ID_RE.fullmatch(value) is not None


def is_hex64(value: object) -> bool:
    return type(value) is str and _HEX64_RE.fullmatch(value) is not None


def code_from_digest_hex(sha256_hex: str) -> str:
    """The 26-character code: RFC 4648 base32 of the 32 digest bytes, cut to 26."""
    return base64.b32encode(bytes.fromhex(sha256_hex)).decode("ascii")[:CODE_LEN]


def pith_number_for(canonical_record: dict[str, Any]) -> str:
    """Derive `pith:YYYY:CODE` from a canonical record.

    Raises ValueError when the record has no usable `metadata.submitted_at`.
    """
    metadata = canonical_record.get("metadata")
    submitted = metadata.get("submitted_at") if isinstance(metadata, dict) else None
    if not isinstance(submitted, str) or not re.fullmatch(r"[0-9]{4}", submitted[:4], re.ASCII):
        raise ValueError("canonical_record.metadata.submitted_at must start with a 4-digit year")
    return f"pith:{submitted[:4]}:{code_from_digest_hex(canonical_hash(canonical_record))}"


def short_pith_number(code: str) -> str:
    return "pith:" + code[:8]


@dataclass(frozen=True)
class PithRef:
    """A parsed reference to a record. Exactly one of `code` (all 26 characters
    known) or `prefix` (a short Pith number: the code must be looked up) is set;
    `year` only comes with a full Pith number."""

    code: str | None = None
    prefix: str | None = None
    year: str | None = None

    @property
    def pith_number(self) -> str | None:
        return f"pith:{self.year}:{self.code}" if self.year and self.code else None


def parse_pith_ref(text: str) -> PithRef:
    """Parse `pith:YYYY:CODE`, a short `pith:XXXXXXXX` (any prefix of 1-25
    characters) or a bare 26-character code. Case of the code is normalised.
    Raises ValueError with the accepted forms on anything else."""
    s = text.strip()
    head, sep, rest = s.partition(":")
    if sep and head.lower() == "pith":
        s = "pith:" + rest.upper()
    else:
        s = s.upper()
    if m := _FULL_RE.fullmatch(s):
        return PithRef(code=m.group(2), year=m.group(1))
    if _CODE_RE.fullmatch(s):
        return PithRef(code=s)
    if m := _SHORT_RE.fullmatch(s):
        return PithRef(prefix=m.group(1))
    raise ValueError(
        f"not a Pith number: {text!r} (expected pith:YYYY:CODE, pith:XXXXXXXX or a 26-character code)"
    )


def split_pith_number(pith_number: str) -> tuple[str, str]:
    """(year, code) of a full Pith number; ValueError otherwise."""
    m = _FULL_RE.fullmatch(pith_number) if isinstance(pith_number, str) else None
    if not m:
        raise ValueError(f"not a full Pith number: {pith_number!r}")
    return m.group(1), m.group(2)
