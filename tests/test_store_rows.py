"""The store's typed rows serialize as the rows always did: the CLI's `rejections --json`
and the node's /status.json say, byte for byte, what the tables hold, and every
journal row's `to_json()` is its table's columns by name. The expected documents
are computed from the store file read with SQL of the test's own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import apsw
import httpx
import trio

from helpers import config, run_cli, write_config
from nodes import nodes
from pithnode.store import Store

AT = ["2026-11-30T10:00:00Z", "2026-12-01T10:00:00Z", "2026-12-02T10:00:00Z"]


def table(db_path: Path, sql: str) -> list[dict[str, Any]]:
    """The rows of a query as dicts by column name, from a connection of the test's own."""
    db = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        cur = db.execute(sql)
        names = [d[0] for d in cur.getdescription()]  # (the tests' queries all find rows)
        return [dict(zip(names, r, strict=True)) for r in cur]
    finally:
        db.close()


def fill_journal(store: Store) -> None:
    """Rows of every shape: absent values, strings past the cuts, non-ASCII, failed and good sources."""
    with store.transaction():
        store.add_rejections(None, [(None, "malformed", "no event id: \u00e9\u2713")], None, AT[0])
        rejected = [("sha256:" + "ab" * 60, "r" * 60, "d" * 400), ("sha256:" + "0" * 64, "bad_signature", None)]
        store.add_rejections("pith:2026:" + "A" * 200, rejected, "peer http://h.test/" + "p" * 400, AT[1])
        store.add_report("disagreement", "pith:2026:X", "k1", {"source": "http://m.test", "n": [1, 2]}, None, AT[0])
        store.add_report("stale", "pith:2026:X", "k2", {"\u00fc": None}, "http://m.test", AT[2])
        store.add_bundle_check("pith:2026:X", "http://m.test", {"signature_ok": True, "published_state_sha256": "s1",
                                                                "source_state_matches": False}, AT[0])
        store.add_bundle_check("pith:2026:X", None, {}, AT[1])
        store.note_source("http://a.test/b.json", subject="pith:2026:X", ok=True, at=AT[0], etag='"e1"',
                          built_at=AT[0])
        store.note_source("http://b.test/b.json", subject=None, kind="registry", ok=False, at=AT[1], error="HTTP 503")
        store.note_source("http://c.test/b.json", subject="pith:2026:Y", ok=False, at=AT[2], error="timed out")
        store.note_source("http://c.test/b.json", subject="pith:2026:Y", ok=False, at=AT[2], error="t\u00e9")


def test_rejections_json_is_the_rejections_table(tmp_path: Path) -> None:
    cfg_path = write_config(tmp_path)
    with Store(config(tmp_path).db_path) as store:
        fill_journal(store)
    db_path = config(tmp_path).db_path
    rows = table(db_path, "SELECT * FROM rejections ORDER BY id DESC")
    assert len(rows) == 3
    expected = {"rejections": [{k: v for k, v in r.items() if k != "id"} for r in rows]}
    r = run_cli("rejections", "--json", config_path=cfg_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == json.dumps(expected, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    text = run_cli("rejections", config_path=cfg_path)  # the text form reads the same rows
    assert text.returncode == 0 and text.stdout.splitlines()[-1].startswith(AT[0] + "  malformed      -  -  from None")


def test_journal_rows_are_their_tables_columns(tmp_path: Path) -> None:
    db_path = config(tmp_path).db_path
    with Store(db_path) as store:
        fill_journal(store)
        samples = table(db_path, "SELECT * FROM rejections ORDER BY id DESC")
        assert [r.to_json() for r in store.rejections()] == [{k: r[k] for k in r if k != "id"} for r in samples]
        tallies = table(db_path, "SELECT * FROM rejection_tally ORDER BY touched DESC")
        assert [r.to_json() for r in store.rejection_tally()] == [
            {k: t[k] for k in ("source", "reason", "count", "first_at", "last_at")} for t in tallies]
        reports = table(db_path, "SELECT * FROM reports ORDER BY first_seen DESC, id DESC")
        assert [r.to_json() for r in store.reports()] == [
            {"kind": r["kind"], "subject": r["subject"], "detail": json.loads(r["detail"]), "source": r["source"],
             "first_seen": r["first_seen"], "last_seen": r["last_seen"]} for r in reports]
        checks = table(db_path, "SELECT * FROM bundle_checks ORDER BY id DESC")
        assert [c.to_json() for c in store.latest_bundle_checks("pith:2026:X")] == [
            {"source": c["source"], "published_state_sha256": c["published_state_sha256"],
             "source_state_matches": bool(c["source_state_matches"]), "signature_ok": bool(c["signature_ok"]),
             "at": c["at"]} for c in checks]
        sources = table(db_path, "SELECT * FROM sources ORDER BY url")
        assert [s.to_json() for s in store.sources()] == [
            {k: v for k, v in s.items() if k != "event_ids_seen"} for s in sources]
        assert [store.source(s["url"]) for s in sources] == store.sources()


async def test_status_json_sources_are_the_sources_table(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with nodes(tmp_path, 1, attest=False) as (a,):
            fill_journal(a.node.store)
            rows = table(a.node.store.path, "SELECT * FROM sources")
            rows.sort(key=lambda s: s["url"])  # newest attempt first, never tried last, then by URL
            rows.sort(key=lambda s: s["last_attempt"] or "", reverse=True)
            async with httpx.AsyncClient() as client:
                r = await client.get(f"{a.url}/status.json")
            assert r.status_code == 200
            assert r.json()["sources"] == [
                {"url": s["url"], "record": s["subject"], "last_attempt": s["last_attempt"],
                 "last_success": s["last_success"], "failures": s["failures"], "error": s["last_error"]}
                for s in rows]
