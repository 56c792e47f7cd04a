"""What the store hands out: its typed rows, and StoreError.

Rows are frozen: the journal's are dataclasses whose `to_json()` is the one
place a row becomes a dict (the CLI's `--json`, the status document). Rows
read or made by the thousand on a hot path are NamedTuples (made per stored
event, a NewEvent costs 0.33 us, a frozen dataclass 0.83 us), and so are the
small pairs and triples that were tuples before, so unpacking them still works."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, NamedTuple

from ..errors import ResourceError


class StoreError(ResourceError):
    """A store problem an operator can act on; the message says what to do."""


@dataclass(frozen=True)
class Subject:
    id: int
    pith_number: str
    code: str
    title: str | None
    followed: bool
    state_sha256: str | None
    event_count: int
    equivocation_count: int
    invalid_event_count: int
    updated_at: str | None


class NewEvent(NamedTuple):
    """An event to store: its body is canonical JSON, or already packed."""

    event_id: str
    created_at: str
    event_type: str
    signer_fp: str
    body: bytes


class HeldEvent(NamedTuple):
    pith_number: str
    body: bytes  # canonical JSON


class ChainEvent(NamedTuple):
    """One event of a signer's chains on a record."""

    event_type: str
    created_at: str
    event_id: str


class StoredKey(NamedTuple):
    raw: bytes
    key_id: str | None


@dataclass(frozen=True, slots=True)
class Row:
    def to_json(self) -> dict[str, Any]:
        """The row as a JSON object: its fields, in the order of the columns."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class Rejection(Row):
    """A sample of a refused event, each string cut short."""

    subject: str | None
    event_id: str | None
    reason: str
    detail: str | None
    source: str | None
    at: str


@dataclass(frozen=True, slots=True)
class RejectionTally(Row):
    """Refused events counted per (source, reason); `source` is "" when none was named."""

    source: str
    reason: str
    count: int
    first_at: str
    last_at: str


@dataclass(frozen=True, slots=True)
class Report(Row):
    """An equivocation, an invalid event, a disagreement, a flag on a source."""

    kind: str
    subject: str
    detail: dict[str, Any]
    source: str | None
    first_seen: str
    last_seen: str


@dataclass(frozen=True, slots=True)
class BundleCheck(Row):
    """The newest check of a bundle one source served."""

    source: str | None
    published_state_sha256: str | None
    source_state_matches: bool
    signature_ok: bool
    at: str


@dataclass(frozen=True, slots=True)
class Source(Row):
    """A URL fetched from, and how its fetches went."""

    url: str
    subject: str | None
    kind: str
    etag: str | None
    last_modified: str | None
    last_success: str | None
    last_attempt: str | None
    failures: int
    last_error: str | None
    built_at: str | None
