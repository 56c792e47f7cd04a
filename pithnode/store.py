"""The store: one SQLite file (apsw, WAL). This module owns the schema, the
migrations and every SQL statement; nothing else in pithnode writes SQL.

Writes happen inside `transaction()`: a bundle or a gossip batch is committed
whole or not at all, together with the re-merged states of the subjects it
touched, so a crash never leaves a stored state that disagrees with the stored
events. Durability is `synchronous=FULL` by default (a commit survives power
loss once `transaction()` returns); `normal` survives a process crash only.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

import apsw
import zstandard

from .core.keys import KeyRing
from .errors import ResourceError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 10

# Each entry upgrades the schema from version i to i+1. Never edit a shipped
# entry: append a new one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE subjects(
        id INTEGER PRIMARY KEY,
        pith_number TEXT NOT NULL UNIQUE,
        code TEXT NOT NULL UNIQUE,
        title TEXT,
        followed INTEGER NOT NULL DEFAULT 0,
        state BLOB,                 -- canonical JSON bytes of our merged state
        state_sha256 TEXT,
        event_count INTEGER NOT NULL DEFAULT 0,
        equivocation_count INTEGER NOT NULL DEFAULT 0,
        invalid_event_count INTEGER NOT NULL DEFAULT 0,
        updated_at TEXT
    );
    CREATE TABLE events(
        event_id TEXT PRIMARY KEY,  -- sha256:<hex>: the content hash, so one row per event
        subject_id INTEGER NOT NULL REFERENCES subjects(id),
        created_at TEXT NOT NULL,
        event_type TEXT NOT NULL,
        signer_fp TEXT NOT NULL,
        body BLOB NOT NULL,         -- canonical JSON of the first admitted copy
        source TEXT,
        received_at TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX events_by_subject ON events(subject_id, created_at, event_id);
    CREATE INDEX events_by_order ON events(created_at, event_id);
    CREATE TABLE keys(
        fingerprint TEXT PRIMARY KEY,
        raw BLOB NOT NULL,
        key_id TEXT,
        first_seen TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE aliases(
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        subject_id INTEGER NOT NULL REFERENCES subjects(id),
        PRIMARY KEY(kind, value, subject_id)
    ) WITHOUT ROWID;
    CREATE TABLE rejections(
        id INTEGER PRIMARY KEY,
        subject TEXT,
        event_id TEXT,
        reason TEXT NOT NULL,
        detail TEXT,
        source TEXT,
        at TEXT NOT NULL
    );
    CREATE INDEX rejections_by_time ON rejections(at);
    CREATE TABLE reports(           -- equivocations, invalid events, disagreements, flags on sources
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        subject TEXT NOT NULL,
        dedupe TEXT NOT NULL UNIQUE,
        detail TEXT NOT NULL,       -- JSON
        source TEXT,
        first_seen TEXT NOT NULL,
        last_seen TEXT NOT NULL
    );
    CREATE INDEX reports_by_kind ON reports(kind, first_seen);
    CREATE TABLE sources(
        url TEXT PRIMARY KEY,
        subject TEXT,
        kind TEXT NOT NULL DEFAULT 'mirror',
        etag TEXT,
        last_modified TEXT,
        last_success TEXT,
        last_attempt TEXT,
        failures INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        built_at TEXT,
        event_ids_seen INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE TABLE bundle_checks(
        id INTEGER PRIMARY KEY,
        subject TEXT NOT NULL,
        source TEXT,
        bundle_sha256 TEXT,
        signature_ok INTEGER NOT NULL,
        signer TEXT,
        published_state_sha256 TEXT,
        source_state_matches INTEGER NOT NULL,
        events_total INTEGER NOT NULL,
        events_new INTEGER NOT NULL,
        events_rejected INTEGER NOT NULL,
        at TEXT NOT NULL
    );
    CREATE TABLE node_meta(key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;
    """,
    # 2: events in a rowid table. New events append at the end instead of
    # landing at random places of a WITHOUT ROWID b-tree whose large rows
    # (the bodies) made every insert move pages: 35 us -> a few us per event.
    # `seq` is also the arrival order, for incremental work on "what is new".
    """
    CREATE TABLE events_v2(
        seq INTEGER PRIMARY KEY,
        event_id TEXT NOT NULL UNIQUE,  -- sha256:<hex>: the content hash, so one row per event
        subject_id INTEGER NOT NULL REFERENCES subjects(id),
        created_at TEXT NOT NULL,
        event_type TEXT NOT NULL,
        signer_fp TEXT NOT NULL,
        body BLOB NOT NULL,             -- canonical JSON of the first admitted copy
        source TEXT,
        received_at TEXT NOT NULL
    );
    INSERT INTO events_v2(event_id, subject_id, created_at, event_type, signer_fp, body, source, received_at)
        SELECT event_id, subject_id, created_at, event_type, signer_fp, body, source, received_at
        FROM events ORDER BY created_at, event_id;
    DROP TABLE events;
    ALTER TABLE events_v2 RENAME TO events;
    CREATE INDEX events_by_subject ON events(subject_id, created_at, event_id);
    CREATE INDEX events_by_order ON events(created_at, event_id);
    """,
    # 3: per-signer lookups (quotas, the node's own chains) without a scan of the subject.
    """
    CREATE INDEX events_by_signer ON events(subject_id, signer_fp);
    """,
    # 4: discovery reads mirror_hint events without scanning every event (or state).
    """
    CREATE INDEX events_by_type ON events(event_type);
    """,
    # 5: a bulk sync stores events first and merges each touched subject once at
    # the end. `merged_seq` is the newest event (seq) the stored state merged;
    # readers see only the events up to it, so a bundle always matches its state.
    """
    ALTER TABLE subjects ADD COLUMN merged_seq INTEGER NOT NULL DEFAULT 0;
    UPDATE subjects SET merged_seq = (SELECT coalesce(max(seq), 0) FROM events WHERE subject_id = subjects.id)
        WHERE state IS NOT NULL;
    """,
    # 6: events found by a compact key, the id's first 8 bytes as an integer, not by
    # a UNIQUE index of 71-byte text: each new event lands at a random place of that
    # index, and at 1M events the text one (89 MB) missed the page cache on every
    # insert and had most of its pages rewritten by every commit. The key index is
    # ~5x smaller; two ids may share a key, so every lookup also compares the full
    # id on the row (`add_events`, `_where_ids`). Measured on copies of a 1M-event
    # store: 144 -> 59 us per stored event (docs/PERFORMANCE.md). Rewrites the
    # table once (~15 s per million events); `seq` is kept.
    """
    CREATE TABLE events_v6(
        seq INTEGER PRIMARY KEY,
        key INTEGER NOT NULL,           -- event_key(event_id)
        event_id TEXT NOT NULL,         -- sha256:<hex>: the content hash; one row per id (see add_events)
        subject_id INTEGER NOT NULL REFERENCES subjects(id),
        created_at TEXT NOT NULL,
        event_type TEXT NOT NULL,
        signer_fp TEXT NOT NULL,
        body BLOB NOT NULL,
        source TEXT,
        received_at TEXT NOT NULL
    );
    INSERT INTO events_v6
        SELECT seq, event_key(event_id), event_id, subject_id, created_at, event_type, signer_fp, body, source, received_at
        FROM events ORDER BY seq;
    DROP TABLE events;
    ALTER TABLE events_v6 RENAME TO events;
    CREATE INDEX events_by_key ON events(key);
    CREATE INDEX events_by_subject ON events(subject_id, created_at, event_id);
    CREATE INDEX events_by_order ON events(created_at, event_id);
    CREATE INDEX events_by_signer ON events(subject_id, signer_fp);
    CREATE INDEX events_by_type ON events(event_type);
    """,
    # 7: one per-subject index, not two. In a full sync events arrive in time order
    # over all subjects, so each insert landed at a random place of both
    # events_by_subject (with the 71-byte id) and events_by_signer; one compact
    # index serves both uses (signer counts and chain heads seek in it; a subject's
    # events are sorted on reading, ~50 rows). Store cost of a simulated 1M-event
    # sync, last 100k: 98 -> 71-79 us per event (docs/PERFORMANCE.md).
    """
    DROP INDEX events_by_subject;
    DROP INDEX events_by_signer;
    CREATE INDEX events_by_subject ON events(subject_id, signer_fp, created_at, key);
    """,
    # 8: documents are written zstd-compressed (see `pack`); zlib rows stay as they
    # are and remain readable. No table changes: the version is raised so that an
    # older pithnode, which cannot read zstd rows, refuses the store.
    "",
    # 9: the per-record index keyed by a small signer number, not the 32-character
    # fingerprint with the time and key: ~11 bytes per entry instead of ~70. A full
    # sync fetches in time order, so each commit inserts all over this index, and
    # the pages a commit dirties grow with its size: store cost of a simulated
    # 1M-event sync, last 100k, 71 -> 45 us per event (docs/PERFORMANCE.md). A
    # record's events are sorted on reading (~50 rows). The rows lose the
    # fingerprint too (-33 bytes each). Rewrites the table once; `seq` is kept.
    """
    CREATE TABLE signers(
        id INTEGER PRIMARY KEY,
        fingerprint TEXT NOT NULL UNIQUE
    );
    INSERT INTO signers(fingerprint) SELECT DISTINCT signer_fp FROM events ORDER BY signer_fp;
    CREATE TABLE events_v9(
        seq INTEGER PRIMARY KEY,
        key INTEGER NOT NULL,           -- event_key(event_id)
        event_id TEXT NOT NULL,         -- sha256:<hex>: the content hash; one row per id (see add_events)
        subject_id INTEGER NOT NULL REFERENCES subjects(id),
        created_at TEXT NOT NULL,
        event_type TEXT NOT NULL,
        signer_id INTEGER NOT NULL REFERENCES signers(id),
        body BLOB NOT NULL,
        source TEXT,
        received_at TEXT NOT NULL
    );
    INSERT INTO events_v9
        SELECT e.seq, e.key, e.event_id, e.subject_id, e.created_at, e.event_type, s.id, e.body, e.source, e.received_at
        FROM events e JOIN signers s ON s.fingerprint = e.signer_fp ORDER BY e.seq;
    DROP TABLE events;
    ALTER TABLE events_v9 RENAME TO events;
    CREATE INDEX events_by_key ON events(key);
    CREATE INDEX events_by_subject ON events(subject_id, signer_id);
    CREATE INDEX events_by_order ON events(created_at, event_id);
    CREATE INDEX events_by_type ON events(event_type);
    """,
    # 10: rejections counted per (source, reason), with a few sample rows each: one
    # row per rejected event let a hostile push grow the store by its size times
    # its event count. Both tables are capped (REJECTION_SAMPLES, REJECTION_TALLIES).
    """
    CREATE TABLE rejection_tally(
        source TEXT NOT NULL,
        reason TEXT NOT NULL,
        count INTEGER NOT NULL,
        first_at TEXT NOT NULL,
        last_at TEXT NOT NULL,
        touched INTEGER NOT NULL,   -- increases with every update: which tally was seen last
        PRIMARY KEY(source, reason)
    );
    CREATE INDEX rejection_tally_by_touch ON rejection_tally(touched);
    """,
]

# Rejections kept: sample rows (newest), their fields cut to these lengths, and
# (source, reason) tallies (the least recently seen dropped first).
REJECTION_SAMPLES = 10_000
SAMPLES_PER_BATCH = 5  # sample rows per (source, reason) per batch
REJECTION_TALLIES = 10_000
_CUT = {"subject": 100, "event_id": 80, "reason": 40, "detail": 300, "source": 300}
MAX_HINT_BASES = 10_000  # mirrors learned from mirror_hint events
MAX_KEY_ID = 200  # a key entry's key_id longer than this is not stored (the key is, named key-<fingerprint>)


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


class NewEvent(NamedTuple):  # made per stored event: 0.33 us, a frozen dataclass 0.83 us
    event_id: str
    created_at: str
    event_type: str
    signer_fp: str
    body: bytes


_SUBJECT_COLS = (
    "id, pith_number, code, title, followed, state_sha256, event_count, "
    "equivocation_count, invalid_event_count, updated_at"
)


_codecs = threading.local()  # zstandard's (de)compressors are not thread-safe; made once per thread
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # how every zstd frame starts


def _codec() -> tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor]:
    try:
        return _codecs.pair
    except AttributeError:
        _codecs.pair = (zstandard.ZstdCompressor(level=1), zstandard.ZstdDecompressor())
        return _codecs.pair


def pack(doc: bytes) -> bytes:
    """JSON documents are stored compressed (zstd: under half their size, and
    rows of ~1.5 KB otherwise leave a quarter of every page empty). A reused
    zstd compressor takes ~6 us for a 1.3 KB event where zlib took ~40 us, most
    of it zlib's stream set-up. The exact bytes come back out: canonical JSON
    starts with "{", a compressed document never does, so a document packed
    already (by an admission worker, off the main process) is kept as it is."""
    return _codec()[0].compress(doc) if doc[:1] == b"{" else doc



def unpack(stored: bytes) -> bytes:
    """A stored document: zstd (schema 8 on), zlib (rows written before schema 8
    are kept as they are) or plain canonical JSON (rows of the first versions)."""
    data = bytes(stored)
    if data[:1] == b"{":
        return data
    try:
        return _codec()[1].decompress(data) if data[:4] == _ZSTD_MAGIC else zlib.decompress(data)
    except (zstandard.ZstdError, zlib.error) as exc:
        raise StoreError(f"a stored document is corrupt ({exc}): the store file is damaged; "
                         "move it aside (with its -wal and -shm files) and re-sync; `pithnode doctor` checks a store") from None


def event_key(event_id: str) -> int | None:
    """The compact index key of an event id: its hash's first 8 bytes as a signed
    64-bit integer (SQLite's INTEGER). None for a string that is no event id: no
    stored event has it (admission checks every id is its event's hash)."""
    head = event_id[7:23]
    if len(event_id) != 71 or not event_id.startswith("sha256:") or not (head.isascii() and head.isalnum()):
        return None  # (int() alone would take "+", "_" and non-ASCII digits)
    try:
        return int(head, 16) - (1 << 63)
    except ValueError:
        return None


def _subject(row: tuple[Any, ...]) -> Subject:
    return Subject(row[0], row[1], row[2], row[3], bool(row[4]), *row[5:])


def _translate(exc: apsw.Error, path: str) -> StoreError:
    if isinstance(exc, apsw.FullError):
        return StoreError(f"disk full writing {path}: nothing from this batch was stored; free space and retry")
    if isinstance(exc, (apsw.CorruptError, apsw.NotADBError)):
        return StoreError(
            f"{path} is not a valid pithnode database ({exc}). Nothing was changed. "
            "Move it aside (with its -wal and -shm files) and re-sync; `pithnode doctor` checks a store"
        )
    if isinstance(exc, apsw.BusyError):
        return StoreError(f"{path} is locked by another process")
    if isinstance(exc, (apsw.CantOpenError, apsw.PermissionsError, apsw.ReadOnlyError)):
        return StoreError(f"cannot open {path} for writing: {exc}")
    return StoreError(f"store error on {path}: {exc}")


def _open_readonly(path: str) -> apsw.Connection:
    """A read-only connection, also where we may not create the WAL's -shm file
    (a store in a directory we cannot write): then, if no writer has it open
    (a writer's -wal file would be there), the file is read as it is."""
    db = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        db.execute("PRAGMA user_version").fetchone()
        return db
    except (apsw.ReadOnlyError, apsw.CantOpenError):
        db.close()
        if os.path.exists(path + "-wal") or not os.path.exists(path):
            raise
    return apsw.Connection("file:" + quote(os.path.abspath(path)) + "?immutable=1",
                           flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)


class Store:
    """One connection to the store file. Not shared between threads at once."""

    def __init__(self, path: str | os.PathLike[str], *, durability: str = "full", readonly: bool = False):
        self.path = str(path)
        flags = apsw.SQLITE_OPEN_READONLY if readonly else apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
        try:
            if not readonly:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self.db = _open_readonly(self.path) if readonly else apsw.Connection(self.path, flags=flags)
            self.db.set_busy_timeout(10_000)
            if not readonly:
                self.db.execute("PRAGMA page_size=16384")  # takes effect on a new file only
                self.db.execute("PRAGMA journal_mode=WAL")
            sync = {"full": "FULL", "normal": "NORMAL"}[durability]
            self.db.execute(f"PRAGMA synchronous={sync}")
            self.db.execute("PRAGMA foreign_keys=ON")
            # page cache per connection: 16 MiB for the node, 8 MiB for a read-only one (a front
            # answers most requests from its document cache); the OS caches the file anyway.
            # Measured at 200k events: 32 -> 16 MiB took 14 MB off a syncing node, sync time +5%.
            self.db.execute(f"PRAGMA cache_size={-8192 if readonly else -16384}")
            self.db.create_scalar_function("event_key", event_key, 1, deterministic=True)  # for migration 6
            self._migrate(readonly)
        except apsw.Error as exc:
            raise _translate(exc, self.path) from exc
        self._in_tx = False
        self._ring: KeyRing | None = None
        self._signer_ids: dict[str, int] = {}  # made or read here; cleared on a rollback (its rows are gone)
        self._hints: tuple[int, dict[str, str]] = (0, {})  # mirror_hint events read up to this seq: base -> name

    # -- lifecycle ---------------------------------------------------------------

    def _migrate(self, readonly: bool) -> None:
        (version,) = self.db.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path} has schema {version}, newer than this pithnode ({SCHEMA_VERSION}): upgrade pithnode")
        if version == SCHEMA_VERSION:
            return
        if readonly:
            raise StoreError(f"{self.path} needs a schema upgrade; open it once read-write")
        if version:
            log.warning("upgrading %s from schema %d to %d: once, up to ~30 s per million events held",
                        self.path, version, SCHEMA_VERSION)
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for v in range(version, SCHEMA_VERSION):
                self.db.execute(MIGRATIONS[v])
            self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        (free,) = self.db.execute("PRAGMA freelist_count").fetchone()
        (pages,) = self.db.execute("PRAGMA page_count").fetchone()
        if version and free > pages // 4:  # a migration rewrote a table: give the old pages back (1M events: ~10 s)
            try:
                self.db.execute("VACUUM")
            except apsw.FullError:
                log.warning("%s: not enough disk space to compact after the upgrade; the free pages will be "
                            "reused by new events", self.path)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic write: everything inside commits together or not at all.
        Nested, it is a savepoint: an inner failure undoes only the inner part."""
        if self._in_tx:
            self.db.execute("SAVEPOINT inner")
            try:
                yield
            except BaseException:
                try:
                    self.db.execute("ROLLBACK TO inner")
                    self.db.execute("RELEASE inner")
                except apsw.Error:
                    pass  # SQLite already rolled the whole transaction back (e.g. SQLITE_FULL)
                self._ring = None
                self._signer_ids.clear()
                raise
            self.db.execute("RELEASE inner")
            return
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except apsw.Error as exc:
            raise _translate(exc, self.path) from exc
        self._in_tx = True
        try:
            yield
            self.db.execute("COMMIT")
        except BaseException as exc:
            try:
                self.db.execute("ROLLBACK")
            except apsw.Error:
                pass  # SQLite may already have rolled back (e.g. on SQLITE_FULL)
            self._ring = None
            self._signer_ids.clear()
            if isinstance(exc, apsw.Error):
                raise _translate(exc, self.path) from exc
            raise
        finally:
            self._in_tx = False

    def _write(self) -> None:
        if not self._in_tx:
            raise RuntimeError("store writes must happen inside transaction()")

    def integrity_check(self) -> list[str]:
        return [r[0] for r in self.db.execute("PRAGMA integrity_check")]

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

    def key(self, fingerprint: str) -> tuple[bytes, str | None] | None:
        """(raw, key_id) of one stored key."""
        row = self.db.execute("SELECT raw, key_id FROM keys WHERE fingerprint=?", (fingerprint,)).fetchone()
        return (bytes(row[0]), row[1]) if row else None

    # -- subjects ------------------------------------------------------------------

    def ensure_subject(self, pith_number: str) -> int:
        self._write()
        code = pith_number.rsplit(":", 1)[-1]
        self.db.execute("INSERT OR IGNORE INTO subjects(pith_number, code) VALUES (?,?)", (pith_number, code))
        return self.db.execute("SELECT id FROM subjects WHERE pith_number=?", (pith_number,)).fetchone()[0]

    def data_version(self) -> int:
        """Changes when another connection (another process) commits; not on our own commits."""
        return int(self.db.execute("PRAGMA data_version").fetchone()[0])

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
                "SELECT code FROM subjects WHERE code >= ?1 AND code < ?1 || '~' ORDER BY code LIMIT ?2", (prefix, limit)
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
        (seq,) = self.db.execute("SELECT coalesce(max(seq), 0) FROM events WHERE subject_id=?", (subject_id,)).fetchone()
        return seq

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
            (sid,) = self.db.execute("SELECT id FROM signers WHERE fingerprint=?", (fingerprint,)).fetchone()
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

    def events_by_id(self, event_ids: Iterable[str]) -> list[tuple[str, bytes]]:
        """(pith_number, body) of each held event among `event_ids`."""
        rows = self._where_ids("SELECT s.pith_number, e.body FROM events e JOIN subjects s ON s.id=e.subject_id",
                               event_ids)
        return [(pn, unpack(body)) for pn, body in rows]

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
        (n,) = self.db.execute("SELECT count(*) FROM events WHERE subject_id=?", (subject_id,)).fetchone()
        return n

    def signer_counts(self, subject_id: int) -> dict[str, int]:
        """Events held per signer fingerprint for a subject."""
        return dict(self.db.execute(
            "SELECT s.fingerprint, n FROM (SELECT signer_id, count(*) AS n FROM events WHERE subject_id=? "
            "GROUP BY signer_id) JOIN signers s ON s.id=signer_id", (subject_id,)))

    def size_bytes(self) -> int:
        (pages,) = self.db.execute("PRAGMA page_count").fetchone()
        (size,) = self.db.execute("PRAGMA page_size").fetchone()
        return pages * size

    def event_sources(self, event_ids: Iterable[str]) -> dict[str, str | None]:
        """Where each held event among `event_ids` was first received from."""
        return dict(self._where_ids("SELECT e.event_id, e.source FROM events e", event_ids))  # type: ignore[arg-type]

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
        return self.db.execute("SELECT coalesce(max(id), 0) FROM subjects").fetchone()[0]  # never deleted

    def event_count(self) -> int:
        # Events are never deleted and `seq` counts from 1, so this is the count
        # in O(log n), where count(*) would read the whole table at every start.
        return self.db.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]

    def signer_chain_heads(self, signer_fp: str, subject_id: int) -> list[tuple[str, str, str]]:
        """(event_type, created_at, event_id) of every event `signer_fp` signed about a subject."""
        return list(
            self.db.execute(
                "SELECT event_type, created_at, event_id FROM events WHERE subject_id=? "
                "AND signer_id=(SELECT id FROM signers WHERE fingerprint=?) ORDER BY created_at, event_id",
                (subject_id, signer_fp),
            )
        )

    # -- monitoring ----------------------------------------------------------------

    def add_rejections(self, subject: str | None, rejected: Iterable[tuple[str | None, str, str]],
                       source: str | None, at: str) -> None:
        """Record refused events, each (event_id, reason, detail): counted per
        (source, reason), a few kept as samples with every string cut short.
        Bounded whatever a peer sends: at most REJECTION_SAMPLES sample rows and
        REJECTION_TALLIES tallies are kept, the oldest dropped first."""
        self._write()
        cut = {k: (lambda v, n=n: v if v is None else str(v)[:n]) for k, n in _CUT.items()}
        src, subj = cut["source"](source), cut["subject"](subject)
        groups: dict[str, list[tuple[str | None, str]]] = {}
        for event_id, reason, detail in rejected:
            groups.setdefault(cut["reason"](reason), []).append((event_id, detail))
        for reason, items in groups.items():
            self.db.execute(
                "INSERT INTO rejection_tally(source, reason, count, first_at, last_at, touched) "
                "VALUES (?,?,?,?,?, (SELECT coalesce(max(touched), 0) + 1 FROM rejection_tally)) "
                "ON CONFLICT(source, reason) DO UPDATE SET count = count + excluded.count, "
                "last_at = excluded.last_at, touched = excluded.touched",
                (src or "", reason, len(items), at, at))
            for event_id, detail in items[:SAMPLES_PER_BATCH]:
                self.db.execute(
                    "INSERT INTO rejections(subject, event_id, reason, detail, source, at) VALUES (?,?,?,?,?,?)",
                    (subj, cut["event_id"](event_id), reason, cut["detail"](detail), src, at))
        if groups:
            self.db.execute("DELETE FROM rejections WHERE id <= (SELECT max(id) FROM rejections) - ?",
                            (REJECTION_SAMPLES,))
            self.db.execute("DELETE FROM rejection_tally WHERE touched <= (SELECT touched FROM rejection_tally "
                            "ORDER BY touched DESC LIMIT 1 OFFSET ?)", (REJECTION_TALLIES,))

    def rejection_tally(self, limit: int = 1000) -> list[dict[str, Any]]:
        """Rejections per (source, reason), most recently seen first."""
        keys = ("source", "reason", "count", "first_at", "last_at")
        return [dict(zip(keys, r, strict=True)) for r in self.db.execute(
            "SELECT source, reason, count, first_at, last_at FROM rejection_tally ORDER BY touched DESC LIMIT ?",
            (limit,))]

    def rejections(self, *, since: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT subject, event_id, reason, detail, source, at FROM rejections WHERE at >= ? ORDER BY id DESC LIMIT ?",
            (since or "", limit),
        )
        keys = ("subject", "event_id", "reason", "detail", "source", "at")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def add_report(self, kind: str, subject: str, dedupe: str, detail: dict[str, Any], source: str | None, at: str) -> bool:
        """Record a report once per `dedupe` key (its detail is refreshed); True if it is new."""
        self._write()
        text = json.dumps(detail, sort_keys=True)
        self.db.execute(
            "INSERT INTO reports(kind, subject, dedupe, detail, source, first_seen, last_seen) VALUES (?,?,?,?,?,?,?) "
            "ON CONFLICT(dedupe) DO NOTHING",
            (kind, subject, dedupe, text, source, at, at),
        )
        if self.db.changes():
            return True
        self.db.execute("UPDATE reports SET detail=?, last_seen=? WHERE dedupe=?", (text, at, dedupe))
        return False

    def reports(
        self, kind: str | None = None, *, subject: str | None = None, since: str | None = None,
        limit: int = 1000, offset: int = 0,
    ) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT kind, subject, detail, source, first_seen, last_seen FROM reports "
            "WHERE (?1 IS NULL OR kind=?1) AND (?2 IS NULL OR subject=?2) AND first_seen >= ?3 "
            "ORDER BY first_seen DESC, id DESC LIMIT ?4 OFFSET ?5",
            (kind, subject, since or "", limit, offset),
        )
        return [
            {"kind": k, "subject": s, "detail": json.loads(d), "source": src, "first_seen": f, "last_seen": last}
            for k, s, d, src, f, last in rows
        ]

    def reports_before(self, kind: str, subject: str, source: str | None, dedupe: str) -> int:
        """How many reports of `kind` on `subject` from `source` came before the one keyed `dedupe`
        (all of them when it is new): its rank, which stays the same when it is seen again."""
        return self.db.execute(
            "SELECT count(*) FROM reports WHERE kind=? AND subject=? AND source IS ? "
            "AND id < coalesce((SELECT id FROM reports WHERE dedupe=?), 9e18)", (kind, subject, source, dedupe)
        ).fetchone()[0]

    def report_detail(self, dedupe: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT detail FROM reports WHERE dedupe=?", (dedupe,)).fetchone()
        return json.loads(row[0]) if row else None

    def latest_bundle_checks(self, subject: str, limit: int = 1000) -> list[dict[str, Any]]:
        """The newest bundle check of each source of `subject` (among its last `limit`)."""
        rows = self.db.execute(
            "SELECT source, published_state_sha256, source_state_matches, signature_ok, at FROM bundle_checks "
            "WHERE subject=? ORDER BY id DESC LIMIT ?", (subject, limit))
        out: dict[str | None, dict[str, Any]] = {}
        for source, published, matches, sig_ok, at in rows:
            out.setdefault(source, {"source": source, "published_state_sha256": published,
                                    "source_state_matches": bool(matches), "signature_ok": bool(sig_ok), "at": at})
        return list(out.values())

    def add_bundle_check(self, subject: str, source: str | None, check: dict[str, Any], at: str) -> None:
        self._write()
        self.db.execute(
            "INSERT INTO bundle_checks(subject, source, bundle_sha256, signature_ok, signer, published_state_sha256, "
            "source_state_matches, events_total, events_new, events_rejected, at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                subject, source, check.get("bundle_sha256"), int(bool(check.get("signature_ok"))), check.get("signer"),
                check.get("published_state_sha256"), int(bool(check.get("source_state_matches"))),
                check.get("events_total", 0), check.get("events_new", 0), check.get("events_rejected", 0), at,
            ),
        )

    # -- sources -------------------------------------------------------------------

    def source(self, url: str) -> dict[str, Any] | None:
        cur = self.db.execute(
            "SELECT url, subject, kind, etag, last_modified, last_success, last_attempt, failures, last_error, built_at "
            "FROM sources WHERE url=?",
            (url,),
        )
        row = cur.fetchone()
        if row is None:
            return None
        keys = ("url", "subject", "kind", "etag", "last_modified", "last_success", "last_attempt", "failures", "last_error", "built_at")
        return dict(zip(keys, row, strict=True))

    def sources(self, subject: str | None = None) -> list[dict[str, Any]]:
        urls = [r[0] for r in self.db.execute("SELECT url FROM sources WHERE ?1 IS NULL OR subject=?1 ORDER BY url", (subject,))]
        return [s for s in map(self.source, urls) if s]

    def recent_sources(self, limit: int) -> list[dict[str, Any]]:
        """The sources tried most recently, newest first."""
        urls = [r[0] for r in self.db.execute(
            "SELECT url FROM sources ORDER BY last_attempt DESC NULLS LAST, url LIMIT ?", (limit,))]
        return [s for s in map(self.source, urls) if s]

    def note_source(
        self, url: str, *, subject: str | None, kind: str = "mirror", ok: bool, at: str, error: str | None = None,
        etag: str | None = None, last_modified: str | None = None, built_at: str | None = None,
    ) -> None:
        """Record the outcome of one fetch from `url`."""
        self._write()
        self.db.execute(
            "INSERT INTO sources(url, subject, kind) VALUES (?,?,?) ON CONFLICT(url) DO NOTHING", (url, subject, kind)
        )
        if ok:
            self.db.execute(
                "UPDATE sources SET last_attempt=?1, last_success=?1, failures=0, last_error=NULL, "
                "etag=coalesce(?2, etag), last_modified=coalesce(?3, last_modified), built_at=coalesce(?4, built_at) "
                "WHERE url=?5",
                (at, etag, last_modified, built_at, url),
            )
        else:
            self.db.execute(
                "UPDATE sources SET last_attempt=?, failures=failures+1, last_error=? WHERE url=?", (at, error, url)
            )

    # -- node metadata -------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM node_meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self._write()
        self.db.execute("INSERT INTO node_meta(key, value) VALUES (?,?) ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, value))
