"""The event log: what the store holds of the graph. Keys, records (subjects)
with their merged states and aliases, and events with their signers, found by
the compact key of their id (`event_key`). Events are never deleted."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from typing import Any

from ..core.keys import KeyRing
from .codecs import event_key, pack, unpack
from .connection import StoreConnection
from .rows import ChainEvent, HeldEvent, NewEvent, StoredKey, StoreError, Subject

MAX_HINT_BASES = 10_000  # mirrors learned from mirror_hint events
MAX_KEY_ID = 200  # a key entry's key_id longer than this is not stored (the key is, named key-<fingerprint>)

_SUBJECT_COLS = (
    "id, pith_number, code, title, followed, state_sha256, event_count, "
    "equivocation_count, invalid_event_count, updated_at"
)


def _subject(row: tuple[Any, ...]) -> Subject:
    return Subject(row[0], row[1], row[2], row[3], bool(row[4]), *row[5:])


class EventLog(StoreConnection):
    """Keys, records, states, aliases and events, over the shared connection."""

    def __init__(self, path: str | os.PathLike[str], *, durability: str = "full", readonly: bool = False):
        super().__init__(path, durability=durability, readonly=readonly)
        self._ring: KeyRing | None = None
        self._signer_ids: dict[str, int] = {}  # made or read here; cleared on a rollback (its rows are gone)
        self._hints: tuple[int, dict[str, str]] = (0, {})  # mirror_hint events read up to this seq: base -> name

    def _rolled_back(self) -> None:
        super()._rolled_back()
        self._ring = None
        self._signer_ids.clear()

    # -- keys ----------------------------------------------------------------------

    def key_ring(self) -> KeyRing:
        """Every key we hold (each proven by its fingerprint when it was added)."""
        if self._ring is None:
            ring = KeyRing()
            for raw, key_id in self.db.execute("SELECT raw, key_id FROM keys"):
                ring.add_raw(bytes(raw), key_id)
            self._ring = ring
        return self._ring

    def add_keys(self, ring: KeyRing, fingerprints: Iterable[str], at: str) -> int:
        """Store the keys of `ring` named by `fingerprints`; returns how many were new."""
        self._write()
        new = 0
        held = self.key_ring()
        for fp in fingerprints:
            if fp in ring and fp not in held:
                key_id = ring.key_id(fp)
                key_id = key_id if key_id is not None and len(key_id) <= MAX_KEY_ID else None  # a peer's label
                self.db.execute(
                    "INSERT OR IGNORE INTO keys(fingerprint, raw, key_id, first_seen) VALUES (?,?,?,?)",
                    (fp, ring[fp], key_id, at),
                )
                if self.db.changes():
                    new += 1
                    # grown in place, not dropped: re-reading (and re-hashing) every stored key
                    # after each new one made a push of n fresh keys cost O(n * keys held)
                    held.add_raw(ring[fp], key_id)
        return new

    def key(self, fingerprint: str) -> StoredKey | None:
        """One stored key."""
        row = self.db.execute("SELECT raw, key_id FROM keys WHERE fingerprint=?", (fingerprint,)).fetchone()
        return StoredKey(bytes(row[0]), row[1]) if row else None

    # -- subjects ------------------------------------------------------------------

    def ensure_subject(self, pith_number: str) -> int:
        self._write()
        code = pith_number.rsplit(":", 1)[-1]
        self.db.execute("INSERT OR IGNORE INTO subjects(pith_number, code) VALUES (?,?)", (pith_number, code))
        return int(self._scalar("SELECT id FROM subjects WHERE pith_number=?", (pith_number,)))

    def subject(self, pith_number_or_code: str) -> Subject | None:
        row = self.db.execute(
            f"SELECT {_SUBJECT_COLS} FROM subjects WHERE pith_number=?1 OR code=?1", (pith_number_or_code,)
        ).fetchone()
        return _subject(row) if row else None

    def subjects(self, *, followed_only: bool = False, limit: int = -1) -> list[Subject]:
        where = "WHERE followed" if followed_only else ""
        return [_subject(r) for r in self.db.execute(
            f"SELECT {_SUBJECT_COLS} FROM subjects {where} ORDER BY code LIMIT ?", (limit,))]

    def codes_with_prefix(self, prefix: str, limit: int = 10) -> list[str]:
        return [
            r[0]
            for r in self.db.execute(
                "SELECT code FROM subjects WHERE code >= ?1 AND code < ?1 || '~' ORDER BY code LIMIT ?2",
                (prefix, limit),
            )
        ]

    def set_followed(self, pith_number: str, followed: bool = True) -> None:
        self._write()
        self.db.execute("UPDATE subjects SET followed=? WHERE pith_number=?", (int(followed), pith_number))

    def put_state(self, subject_id: int, state_sha256: str, document: bytes, counts: tuple[int, int, int],
                  title: str | None, at: str, merged_seq: int | None = None) -> None:
        """A subject's merged state: its hash, its bytes, (event, equivocation, invalid event)
        counts, merged from its events up to `merged_seq` (None: every event it holds)."""
        self._write()
        self.db.execute(
            "UPDATE subjects SET state=?1, state_sha256=?2, event_count=?3, equivocation_count=?4, "
            "invalid_event_count=?5, title=coalesce(?6, title), updated_at=?7, "
            "merged_seq=coalesce(?9, (SELECT coalesce(max(seq), 0) FROM events WHERE subject_id=?8)) WHERE id=?8",
            (pack(document), state_sha256, *counts, title, at, subject_id, merged_seq),
        )

    def merge_input(self, subject_id: int) -> tuple[int, list[bytes]]:
        """What merging a subject elsewhere (a worker process) needs: the seq of its
        newest event and its stored bodies, still packed (`unpack` them there)."""
        seq = self.newest_seq(subject_id)
        return seq, [r[0] for r in self.db.execute(
            "SELECT body FROM events WHERE subject_id=? AND seq <= ?", (subject_id, seq))]

    def newest_seq(self, subject_id: int) -> int:
        return int(self._scalar("SELECT coalesce(max(seq), 0) FROM events WHERE subject_id=?", (subject_id,)))

    def unmerged_subjects(self) -> list[str]:
        """Subjects holding events their stored state has not merged yet (a bulk
        sync stopped before its merge pass: a crash, a shutdown)."""
        return [r[0] for r in self.db.execute(
            "SELECT pith_number FROM subjects s WHERE EXISTS "
            "(SELECT 1 FROM events e WHERE e.subject_id = s.id AND e.seq > s.merged_seq)")]

    def state_bytes(self, pith_number_or_code: str) -> bytes | None:
        row = self.db.execute(
            "SELECT state FROM subjects WHERE pith_number=?1 OR code=?1", (pith_number_or_code,)
        ).fetchone()
        return unpack(row[0]) if row and row[0] is not None else None

    def put_aliases(self, subject_id: int, aliases: Iterable[tuple[str, str]]) -> None:
        self._write()
        self.db.executemany(
            "INSERT OR IGNORE INTO aliases(kind, value, subject_id) VALUES (?,?,?)",
            [(k, v.lower(), subject_id) for k, v in aliases],
        )

    def resolve_alias(self, kind: str, value: str) -> list[str]:
        return [
            r[0]
            for r in self.db.execute(
                "SELECT s.pith_number FROM aliases a JOIN subjects s ON s.id=a.subject_id "
                "WHERE a.kind=? AND a.value=? ORDER BY s.pith_number",
                (kind, value.lower()),
            )
        ]

    # -- events --------------------------------------------------------------------

    def _where_ids(self, select: str, event_ids: Iterable[str]) -> Iterator[tuple[Any, ...]]:
        """Rows of `select ... WHERE e.event_id IN (...)` for many ids, 500 at a time
        (SQLite caps the number of parameters of one statement), found by key."""
        pairs = [(k, i) for i in dict.fromkeys(event_ids) if (k := event_key(i)) is not None]
        for n in range(0, len(pairs), 500):
            keys, ids = zip(*pairs[n : n + 500], strict=True)
            marks = ",".join("?" * len(ids))
            yield from self.db.execute(f"{select} WHERE e.key IN ({marks}) AND e.event_id IN ({marks})", keys + ids)

    def known_event_ids(self, event_ids: Iterable[str]) -> set[str]:
        return {r[0] for r in self._where_ids("SELECT e.event_id FROM events e", event_ids)}

    def add_events(self, subject_id: int, events: Iterable[NewEvent], source: str | None, at: str) -> list[str]:
        """Insert events not yet held; return the ids that were new. First copy wins."""
        self._write()
        new = []
        for ev in events:
            key = event_key(ev.event_id)
            if key is None:
                raise ValueError(f"not an event id: {ev.event_id[:80]!r}")
            if any(r[0] == ev.event_id for r in self.db.execute("SELECT event_id FROM events WHERE key=?", (key,))):
                continue
            self.db.execute(
                "INSERT INTO events(key, event_id, subject_id, created_at, event_type, signer_id, body, source, "
                "received_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (key, ev.event_id, subject_id, ev.created_at, ev.event_type, self._signer_id(ev.signer_fp),
                 pack(ev.body), source, at),
            )
            new.append(ev.event_id)
        return new

    def _signer_id(self, fingerprint: str) -> int:
        """The signer number of a fingerprint (schema 9), made on first use."""
        sid = self._signer_ids.get(fingerprint)
        if sid is None:
            self.db.execute("INSERT OR IGNORE INTO signers(fingerprint) VALUES (?)", (fingerprint,))
            sid = int(self._scalar("SELECT id FROM signers WHERE fingerprint=?", (fingerprint,)))
            self._signer_ids[fingerprint] = sid
        return sid

    def mirror_hint_bases(self) -> dict[str, str]:
        """Base URL -> name of every http(s) mirror named by a held mirror_hint
        event, first named first, at most MAX_HINT_BASES. Each hint is read and
        parsed once per connection: a call reads only those stored since the last
        (re-parsing 2,000 max-size hints at every rebuild of /pith-mirrors.json
        cost 0.6 s and 450 MB on the event loop)."""
        last, bases = self._hints
        for seq, body in self.db.execute(
                "SELECT seq, body FROM events WHERE event_type='mirror_hint' AND seq > ? ORDER BY seq", (last,)):
            last = seq
            try:
                payload = json.loads(unpack(body)).get("payload")
            except (ValueError, StoreError):
                continue
            base = payload.get("base_url") if isinstance(payload, dict) else None
            if len(bases) < MAX_HINT_BASES and isinstance(base, str) and len(base) <= 300 \
                    and base.startswith(("http://", "https://")):
                bases.setdefault(base.rstrip("/"), str(payload.get("name") or base)[:200])
        self._hints = (last, bases)
        return bases

    def event_bodies(self, subject_id: int, merged_only: bool = False) -> list[bytes]:
        """Stored event bodies of a subject, in canonical order; `merged_only`: just
        those its stored state merged (what readers see beside that state)."""
        upto = " AND seq <= (SELECT merged_seq FROM subjects WHERE id=?1)" if merged_only else ""
        return [
            unpack(r[0])
            for r in self.db.execute(
                f"SELECT body FROM events WHERE subject_id=?1{upto} ORDER BY created_at, event_id", (subject_id,)
            )
        ]

    def events_by_id(self, event_ids: Iterable[str]) -> list[HeldEvent]:
        """Each held event among `event_ids`, with the record it is about."""
        rows = self._where_ids("SELECT s.pith_number, e.body FROM events e JOIN subjects s ON s.id=e.subject_id",
                               event_ids)
        return [HeldEvent(pn, unpack(body)) for pn, body in rows]

    def bodies_and_signers(self, event_ids: Iterable[str]) -> tuple[list[bytes], set[str]]:
        """The bodies of the held events among `event_ids`, and the fingerprints of
        the keys that signed them: one lookup per id (at 1M events each lookup is a
        page read or two)."""
        bodies, signers, _ = self.bodies_within(list(event_ids), max_bytes=1 << 62, chunk=500)
        return bodies, signers

    def bodies_within(self, event_ids: list[str], max_bytes: int, chunk: int = 32
                      ) -> tuple[list[bytes], set[str], int]:
        """The bodies of held events among `event_ids`, in their order, while their
        sizes add up to at most `max_bytes` (at least one is taken), the signers'
        fingerprints, and how many of `event_ids` were looked at: the caller asks
        again from there. Read `chunk` ids at a time, so memory stays near `max_bytes`."""
        bodies: list[bytes] = []
        signers: set[str] = set()
        size = 0
        for start in range(0, len(event_ids), chunk):
            part = event_ids[start : start + chunk]
            found = {i: (b, fp) for i, b, fp in self._where_ids(
                "SELECT e.event_id, e.body, s.fingerprint FROM events e JOIN signers s ON s.id=e.signer_id", part)}
            for n, event_id in enumerate(part):
                if event_id not in found:
                    continue
                packed, fp = found.pop(event_id)  # popped: an id repeated in a chunk is sent once
                body = unpack(packed)
                if bodies and size + len(body) > max_bytes:
                    return bodies, signers, start + n
                size += len(body)
                bodies.append(body)
                signers.add(fp)
        return bodies, signers, len(event_ids)

    def subject_event_count(self, subject_id: int) -> int:
        """How many events a subject holds now (its stored state may count fewer)."""
        return int(self._scalar("SELECT count(*) FROM events WHERE subject_id=?", (subject_id,)))

    def signer_counts(self, subject_id: int) -> dict[str, int]:
        """Events held per signer fingerprint for a subject."""
        return dict(self.db.execute(
            "SELECT s.fingerprint, n FROM (SELECT signer_id, count(*) AS n FROM events WHERE subject_id=? "
            "GROUP BY signer_id) JOIN signers s ON s.id=signer_id", (subject_id,)))

    def event_sources(self, event_ids: Iterable[str]) -> dict[str, str | None]:
        """Where each held event among `event_ids` was first received from."""
        return dict(self._where_ids("SELECT e.event_id, e.source FROM events e", event_ids))

    def event_ids_from_source(self, subject_id: int, source: str) -> set[str]:
        """Ids of a subject's events first received from `source`."""
        return {r[0] for r in self.db.execute(
            "SELECT event_id FROM events WHERE subject_id=? AND source=?", (subject_id, source))}

    def event_keys(self) -> Iterator[tuple[str, str]]:
        """(created_at, event_id) of every held event, in canonical order (for
        reconciliation), streamed from the index rather than held in a list."""
        return self.db.execute("SELECT created_at, event_id FROM events ORDER BY created_at, event_id")

    def event_keys_since(self, seq: int, chunk: int = 50_000) -> Iterator[list[tuple[int, str, str]]]:
        """(seq, created_at, event_id) of the events stored after `seq`, in seq
        order, `chunk` at a time (bounded memory however many there are)."""
        while rows := list(self.db.execute(
                "SELECT seq, created_at, event_id FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (seq, chunk))):
            yield rows
            seq = rows[-1][0]

    def subject_count(self) -> int:
        return int(self._scalar("SELECT coalesce(max(id), 0) FROM subjects"))  # never deleted

    def event_count(self) -> int:
        # Events are never deleted and `seq` counts from 1, so this is the count
        # in O(log n), where count(*) would read the whole table at every start.
        return int(self._scalar("SELECT coalesce(max(seq), 0) FROM events"))

    def signer_chain_heads(self, signer_fp: str, subject_id: int) -> list[ChainEvent]:
        """Every event `signer_fp` signed about a subject, in canonical order."""
        rows = self.db.execute(
            "SELECT event_type, created_at, event_id FROM events WHERE subject_id=? "
            "AND signer_id=(SELECT id FROM signers WHERE fingerprint=?) ORDER BY created_at, event_id",
            (subject_id, signer_fp))
        return [ChainEvent(*r) for r in rows]
