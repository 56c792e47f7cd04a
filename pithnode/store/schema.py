"""The schema: the migrations that build it, and `migrate`, which brings a store
file up to SCHEMA_VERSION (once, inside one transaction) or refuses it."""

from __future__ import annotations

import logging

import apsw

from .rows import StoreError

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
        SELECT seq, event_key(event_id), event_id, subject_id, created_at, event_type, signer_fp, body, source,
            received_at
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


def _pragma(db: apsw.Connection, name: str) -> int:
    row = db.execute(f"PRAGMA {name}").fetchone()
    return int(row[0]) if row else 0


def migrate(db: apsw.Connection, path: str, readonly: bool) -> None:
    """Bring the file to SCHEMA_VERSION: every missing migration in one transaction, then
    the pages a rewritten table left free given back. A newer schema is refused, and so is
    an older one when `readonly` (the upgrade needs a writer)."""
    version = _pragma(db, "user_version")
    if version > SCHEMA_VERSION:
        raise StoreError(f"{path} has schema {version}, newer than this pithnode ({SCHEMA_VERSION}): upgrade pithnode")
    if version == SCHEMA_VERSION:
        return
    if readonly:
        raise StoreError(f"{path} needs a schema upgrade; open it once read-write")
    if version:
        log.warning("upgrading %s from schema %d to %d: once, up to ~30 s per million events held",
                    path, version, SCHEMA_VERSION)
    db.execute("BEGIN IMMEDIATE")
    try:
        for v in range(version, SCHEMA_VERSION):
            db.execute(MIGRATIONS[v])
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    # a migration that rewrote a table gives the old pages back (1M events: ~10 s)
    if version and _pragma(db, "freelist_count") > _pragma(db, "page_count") // 4:
        try:
            db.execute("VACUUM")
        except apsw.FullError:
            log.warning("%s: not enough disk space to compact after the upgrade; the free pages will be "
                        "reused by new events", path)
