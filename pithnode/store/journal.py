"""The journal: what the node noted about its work, beside the graph. Refused
events (tallies and samples, both capped), reports (equivocations, invalid
events, disagreements, flags on sources), bundle checks, the sources fetched
from, and the node's metadata."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from .connection import StoreConnection
from .rows import BundleCheck, Rejection, RejectionTally, Report, Source

# Rejections kept: sample rows (newest), their fields cut to these lengths, and
# (source, reason) tallies (the least recently seen dropped first).
REJECTION_SAMPLES = 10_000
SAMPLES_PER_BATCH = 5  # sample rows per (source, reason) per batch
REJECTION_TALLIES = 10_000
_CUT = {"subject": 100, "event_id": 80, "reason": 40, "detail": 300, "source": 300}

_SOURCE_COLS = "url, subject, kind, etag, last_modified, last_success, last_attempt, failures, last_error, built_at"


def _cut(value: str | None, field: str) -> str | None:
    return value if value is None else str(value)[: _CUT[field]]


class Journal(StoreConnection):
    """Rejections, reports, bundle checks, sources and metadata, over the shared connection."""

    # -- rejections ------------------------------------------------------------------

    def add_rejections(self, subject: str | None, rejected: Iterable[tuple[str | None, str, str]],
                       source: str | None, at: str) -> None:
        """Record refused events, each (event_id, reason, detail): counted per
        (source, reason), a few kept as samples with every string cut short.
        Bounded whatever a peer sends: at most REJECTION_SAMPLES sample rows and
        REJECTION_TALLIES tallies are kept, the oldest dropped first."""
        self._write()
        src, subj = _cut(source, "source"), _cut(subject, "subject")
        groups: dict[str | None, list[tuple[str | None, str]]] = {}
        for event_id, why, detail in rejected:
            groups.setdefault(_cut(why, "reason"), []).append((event_id, detail))
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
                    (subj, _cut(event_id, "event_id"), reason, _cut(detail, "detail"), src, at))
        if groups:
            self.db.execute("DELETE FROM rejections WHERE id <= (SELECT max(id) FROM rejections) - ?",
                            (REJECTION_SAMPLES,))
            self.db.execute("DELETE FROM rejection_tally WHERE touched <= (SELECT touched FROM rejection_tally "
                            "ORDER BY touched DESC LIMIT 1 OFFSET ?)", (REJECTION_TALLIES,))

    def rejection_tally(self, limit: int = 1000) -> list[RejectionTally]:
        """Rejections per (source, reason), most recently seen first."""
        return [RejectionTally(*r) for r in self.db.execute(
            "SELECT source, reason, count, first_at, last_at FROM rejection_tally ORDER BY touched DESC LIMIT ?",
            (limit,))]

    def rejections(self, *, since: str | None = None, limit: int = 1000) -> list[Rejection]:
        """Sample rejections, newest first."""
        return [Rejection(*r) for r in self.db.execute(
            "SELECT subject, event_id, reason, detail, source, at FROM rejections WHERE at >= ? "
            "ORDER BY id DESC LIMIT ?", (since or "", limit))]

    # -- reports ---------------------------------------------------------------------

    def add_report(self, kind: str, subject: str, dedupe: str, detail: dict[str, Any], source: str | None,
                   at: str) -> bool:
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
    ) -> list[Report]:
        """Reports, newest first."""
        rows = self.db.execute(
            "SELECT kind, subject, detail, source, first_seen, last_seen FROM reports "
            "WHERE (?1 IS NULL OR kind=?1) AND (?2 IS NULL OR subject=?2) AND first_seen >= ?3 "
            "ORDER BY first_seen DESC, id DESC LIMIT ?4 OFFSET ?5",
            (kind, subject, since or "", limit, offset),
        )
        return [Report(k, s, json.loads(d), src, first, last) for k, s, d, src, first, last in rows]

    def reports_before(self, kind: str, subject: str, source: str | None, dedupe: str) -> int:
        """How many reports of `kind` on `subject` from `source` came before the one keyed `dedupe`
        (all of them when it is new): its rank, which stays the same when it is seen again."""
        return int(self._scalar(
            "SELECT count(*) FROM reports WHERE kind=? AND subject=? AND source IS ? "
            "AND id < coalesce((SELECT id FROM reports WHERE dedupe=?), 9e18)", (kind, subject, source, dedupe)))

    def report_detail(self, dedupe: str) -> dict[str, Any] | None:
        """The detail (a JSON document) of the report keyed `dedupe`."""
        row = self.db.execute("SELECT detail FROM reports WHERE dedupe=?", (dedupe,)).fetchone()
        detail: dict[str, Any] | None = json.loads(row[0]) if row else None
        return detail

    # -- bundle checks ---------------------------------------------------------------

    def latest_bundle_checks(self, subject: str, limit: int = 1000) -> list[BundleCheck]:
        """The newest bundle check of each source of `subject` (among its last `limit`)."""
        rows = self.db.execute(
            "SELECT source, published_state_sha256, source_state_matches, signature_ok, at FROM bundle_checks "
            "WHERE subject=? ORDER BY id DESC LIMIT ?", (subject, limit))
        out: dict[str | None, BundleCheck] = {}
        for source, published, matches, sig_ok, at in rows:
            out.setdefault(source, BundleCheck(source, published, bool(matches), bool(sig_ok), at))
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

    # -- sources ---------------------------------------------------------------------

    def source(self, url: str) -> Source | None:
        row = self.db.execute(f"SELECT {_SOURCE_COLS} FROM sources WHERE url=?", (url,)).fetchone()
        return Source(*row) if row else None

    def sources(self, subject: str | None = None) -> list[Source]:
        """The sources of `subject` (of every record when None), by URL."""
        return [Source(*r) for r in self.db.execute(
            f"SELECT {_SOURCE_COLS} FROM sources WHERE ?1 IS NULL OR subject=?1 ORDER BY url", (subject,))]

    def recent_sources(self, limit: int) -> list[Source]:
        """The sources tried most recently, newest first."""
        return [Source(*r) for r in self.db.execute(
            f"SELECT {_SOURCE_COLS} FROM sources ORDER BY last_attempt DESC NULLS LAST, url LIMIT ?", (limit,))]

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

    # -- node metadata ---------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM node_meta WHERE key=?", (key,)).fetchone()
        value: str | None = row[0] if row else None
        return value

    def set_meta(self, key: str, value: str) -> None:
        self._write()
        self.db.execute("INSERT INTO node_meta(key, value) VALUES (?,?) "
                        "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, value))
