"""Store and ingest on real SQLite files with real signatures."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from pithnode.core import canonical_bytes, merge
from pithnode.ingest import IngestError, ingest_bundle, ingest_events, parse_bundle
from pithnode.store import SCHEMA_VERSION, Store, StoreError
from pithnode.testing.synth import synthetic_subject
from pithnode.views import equivocation_reports, events_of, find_subject, own_bundle, state_of
from pithnode.identity import NodeIdentity
from pithnode.testing.synth import named_key

from helpers import MIRRORS, REAL_BUNDLE, REAL_STATE_SHA, REG, config

NOW = "2026-11-23T00:00:00Z"


@pytest.fixture
def env(tmp_path: Path):
    cfg = config(tmp_path)
    store = Store(cfg.db_path)
    yield store, cfg
    store.close()


def ingest(store, cfg, bundle, source="test"):
    return ingest_bundle(store, bundle, source=source, trusted=cfg.trusted_ring(), registry=cfg.registry, now=NOW)


def table_dump(store: Store) -> dict:
    q = {
        "events": "SELECT event_id, body FROM events ORDER BY event_id",
        "signers": "SELECT e.event_id, s.fingerprint FROM events e JOIN signers s ON s.id=e.signer_id ORDER BY 1",
        "subjects": "SELECT pith_number, state, state_sha256, event_count FROM subjects ORDER BY pith_number",
        "keys": "SELECT fingerprint, raw FROM keys ORDER BY fingerprint",
        "reports": "SELECT kind, dedupe, detail FROM reports ORDER BY dedupe",
        "aliases": "SELECT kind, value FROM aliases ORDER BY kind, value",
    }
    return {k: list(store.db.execute(v)) for k, v in q.items()}


def assert_states_are_fresh_merges(store: Store, cfg) -> None:
    ring = cfg.trusted_ring().merged(store.key_ring())
    for s in store.subjects():
        events = events_of(store, s)
        fresh = merge(s.pith_number, events, ring, cfg.registry)
        assert store.state_bytes(s.pith_number) == canonical_bytes(fresh)


def test_real_bundle_reproduces_and_reingest_changes_nothing(env):
    store, cfg = env
    bundle = parse_bundle(REAL_BUNDLE.read_bytes())
    res = ingest(store, cfg, bundle)
    assert res.state_sha256 == REAL_STATE_SHA and res.source_state_matches and res.signature_ok
    assert len(res.new_event_ids) == 2 and not res.rejected
    before = table_dump(store)
    res2 = ingest(store, cfg, copy.deepcopy(bundle))
    assert res2.new_event_ids == [] and res2.known == 2
    assert table_dump(store) == before
    assert store.integrity_check() == ["ok"]
    assert find_subject(store, "2606.26666").pith_number == bundle["pith_number"]
    assert find_subject(store, "pith:EL6A4QOT").code == "EL6A4QOTPLYS3LFEIZGOL5QVTM"
    assert find_subject(store, "10.48550/arXiv.2606.26666").code == "EL6A4QOTPLYS3LFEIZGOL5QVTM"


def test_tampered_bundle_rejected_event_by_event(env):
    store, cfg = env
    pn, events = synthetic_subject(REG, 1, 12, MIRRORS)
    bundle = REG.bundle(pn, events, keys=MIRRORS)
    bundle["events"][3]["payload"]["tampered"] = True  # breaks its hash and the bundle signature
    bundle["events"][5]["signature"]["signature_b64"] = bundle["events"][6]["signature"]["signature_b64"]
    res = ingest(store, cfg, bundle)
    assert res.signature_ok is False
    assert [(r["index"], r["reason"]) for r in res.rejected] == [(3, "hash_mismatch"), (5, "bad_signature")]
    assert len(res.new_event_ids) == 10
    rows = store.rejections()
    assert {r.reason for r in rows} == {"hash_mismatch", "bad_signature"} and all(r.source == "test" for r in rows)
    # its published state (over all 12 events) is not our merge of the 10 admitted: a disagreement
    assert res.source_state_matches is False
    assert [r.kind for r in store.reports("disagreement")] == ["disagreement"]
    assert_states_are_fresh_merges(store, cfg)


def test_conflicting_event_from_second_source_is_an_equivocation_with_evidence(env):
    store, cfg = env
    pn, events = synthetic_subject(REG, 2, 8, MIRRORS)
    ingest(store, cfg, REG.bundle(pn, events, keys=MIRRORS), source="https://a.test")
    graph = [e for e in events if e["event_type"] == "graph_snapshot"]
    fork = REG.graph_snapshot(pn, "2026-05-05T00:00:00Z", prev=graph[0], title="a conflicting snapshot")
    res = ingest(store, cfg, REG.bundle(pn, [*events, fork], keys=MIRRORS), source="https://b.test")
    assert res.new_event_ids == [fork["event_id"]]
    assert len(res.new_equivocations) == 1
    reports = equivocation_reports(store)
    assert len(reports) == 1
    rep = reports[0]
    assert rep["identity"] == "registry" and rep["target"] == "graph" and rep["prev_event"] == graph[0]["event_id"]
    assert fork["event_id"] in rep["event_ids"] and {e["event_id"] for e in rep["events"]} == set(rep["event_ids"])
    assert rep["public_keys"] and rep["source"] == "https://b.test"
    # re-ingesting reports nothing new
    assert ingest(store, cfg, REG.bundle(pn, [*events, fork], keys=MIRRORS)).new_equivocations == []
    assert_states_are_fresh_merges(store, cfg)


def test_lying_state_is_a_disagreement(env):
    store, cfg = env
    pn, events = synthetic_subject(REG, 3, 6, MIRRORS)
    honest = merge(pn, events, REG.ring().merged(KeyRingOf(MIRRORS)), {REG.fingerprint})
    lie = json.loads(json.dumps(honest))
    lie["current"]["graph_snapshots"] = []
    from pithnode.core import state_hash
    lie["state_sha256"] = state_hash(lie)
    res = ingest(store, cfg, REG.bundle(pn, events, keys=MIRRORS, state=lie))
    assert res.signature_ok and res.source_state_matches is False
    assert res.state_sha256 == honest["state_sha256"]  # we keep our own merge
    (rep,) = store.reports("disagreement")
    assert rep.detail["published_state_sha256"] == lie["state_sha256"]


def KeyRingOf(signers):
    from pithnode.core import KeyRing
    ring = KeyRing()
    for s in signers:
        ring.add_raw(s.raw, s.key_id)
    return ring


def test_loose_events_and_unknown_subject(env):
    store, cfg = env
    pn, events = synthetic_subject(REG, 4, 5, MIRRORS)
    keys = [m.entry() for m in MIRRORS]
    res = ingest_events(store, pn, [*events, {"junk": 1}], keys, source="peer", trusted=cfg.trusted_ring(),
                        registry=cfg.registry, now=NOW)
    assert len(res.new_event_ids) == 5 and res.rejected[0]["reason"] == "malformed"
    # nothing admissible for an unknown subject creates no subject, but the rejection is recorded
    res = ingest_events(store, "pith:2026:" + "B" * 26, [{"junk": 1}], [], source="peer",
                        trusted=cfg.trusted_ring(), registry=cfg.registry, now=NOW)
    assert store.subject("B" * 26) is None and len(store.rejections()) == 2


def test_own_bundle_verifies_and_holds_everything(env):
    store, cfg = env
    pn, events = synthetic_subject(REG, 5, 9, MIRRORS)
    ingest(store, cfg, REG.bundle(pn, events, keys=MIRRORS))
    subject = find_subject(store, pn)
    ident = NodeIdentity(named_key("node-x"), "http://127.0.0.1:9")
    b = own_bundle(store, subject, ident, cfg.trusted_ring(), public_url="http://127.0.0.1:9", now=NOW, signed_at=NOW)
    from pithnode.core import check_bundle
    rep = check_bundle(json.loads(canonical_bytes(b)), cfg.trusted_ring(), cfg.registry)
    assert rep.problems == [] and rep.signature_ok and not rep.signer_is_registry
    assert rep.state["state_sha256"] == state_of(store, subject)["state_sha256"]
    assert any(h["base_url"] == "http://127.0.0.1:9" for h in b["mirror_hints"])


def test_parse_bundle_refuses_unusable_input():
    with pytest.raises(IngestError, match="over the cap"):
        parse_bundle(b"{}" + b" " * 100, max_bytes=50)
    with pytest.raises(IngestError, match="not JSON"):
        parse_bundle(b"[" * 100_000)
    with pytest.raises(IngestError, match="no pith_number"):
        parse_bundle(b'{"events": []}')


def test_corrupt_database_is_refused_not_wiped(tmp_path: Path):
    db = tmp_path / "pithnode.sqlite3"
    junk = b"this is not a database" * 500
    db.write_bytes(junk)
    with pytest.raises(StoreError, match="not a valid pithnode database"):
        Store(db)
    assert db.read_bytes() == junk


def test_newer_schema_is_refused(tmp_path: Path):
    db = tmp_path / "s.sqlite3"
    Store(db).close()
    import apsw
    c = apsw.Connection(str(db))
    c.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    c.close()
    with pytest.raises(StoreError, match="newer than this pithnode"):
        Store(db)


def test_failed_transaction_leaves_nothing(env):
    store, cfg = env
    pn, events = synthetic_subject(REG, 6, 5, MIRRORS)
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.ensure_subject(pn)
            raise RuntimeError("crash mid-batch")
    assert store.subject(pn) is None
    with pytest.raises(RuntimeError, match="inside transaction"):
        store.ensure_subject(pn)


def test_events_stored_without_merge_stay_hidden_until_their_subject_is_merged(env):
    """A bulk sync stores first and merges once at its end: meanwhile readers see
    the merged events only, so a served bundle always matches its state."""
    from pithnode.core import check_bundle
    from pithnode.ingest import node_ring, remerge

    store, cfg = env
    pn, events = synthetic_subject(REG, 8, 12, MIRRORS)
    keys = [m.entry() for m in MIRRORS]
    first = ingest_events(store, pn, events[:5], keys, source="a", trusted=cfg.trusted_ring(),
                          registry=cfg.registry, now=NOW)
    later = ingest_events(store, pn, events[5:], keys, source="a", trusted=cfg.trusted_ring(),
                          registry=cfg.registry, now=NOW, merge=False)
    assert later.merge_pending and len(later.new_event_ids) == 7 and later.state_sha256 == first.state_sha256
    assert store.unmerged_subjects() == [pn]
    subject = store.subject(pn)
    assert len(events_of(store, subject)) == 5 and store.event_count() == 12
    ident = NodeIdentity(named_key("node-x"), "http://127.0.0.1:9")
    bundle = own_bundle(store, subject, ident, cfg.trusted_ring(), public_url="http://n", now=NOW, signed_at=NOW)
    report = check_bundle(json.loads(canonical_bytes(bundle)), cfg.trusted_ring(), cfg.registry)
    assert report.problems == [] and report.signature_ok and len(bundle["events"]) == 5
    assert report.state["state_sha256"] == first.state_sha256
    assert_states_are_fresh_merges(store, cfg)  # the state is the merge of what readers see

    with store.transaction():
        merged, _eqs, _invalid = remerge(store, subject.id, pn, node_ring(store, cfg.trusted_ring()), cfg.registry,
                                         NOW, "a")
    assert merged.state_sha256 != first.state_sha256 and store.unmerged_subjects() == []
    assert len(events_of(store, store.subject(pn))) == 12
    assert merged.state_sha256 == merge(pn, events, cfg.trusted_ring().merged(store.key_ring()), cfg.registry)["state_sha256"]
    assert_states_are_fresh_merges(store, cfg)


def back_to_schema_8(db: Path) -> None:
    """Rewrite a store's events table as schema 8 had it: the signer's fingerprint on
    every row (no signers table), the per-record index on it."""
    import apsw

    c = apsw.Connection(str(db))
    c.execute("""
        CREATE TABLE events_v8(seq INTEGER PRIMARY KEY, key INTEGER NOT NULL, event_id TEXT NOT NULL,
            subject_id INTEGER NOT NULL REFERENCES subjects(id), created_at TEXT NOT NULL, event_type TEXT NOT NULL,
            signer_fp TEXT NOT NULL, body BLOB NOT NULL, source TEXT, received_at TEXT NOT NULL);
        INSERT INTO events_v8 SELECT e.seq, e.key, e.event_id, e.subject_id, e.created_at, e.event_type,
            s.fingerprint, e.body, e.source, e.received_at FROM events e JOIN signers s ON s.id = e.signer_id;
        DROP TABLE events;
        DROP TABLE signers;
        DROP TABLE rejection_tally;
        ALTER TABLE events_v8 RENAME TO events;
        CREATE INDEX events_by_key ON events(key);
        CREATE INDEX events_by_subject ON events(subject_id, signer_fp, created_at, key);
        CREATE INDEX events_by_order ON events(created_at, event_id);
        CREATE INDEX events_by_type ON events(event_type);
        PRAGMA user_version=8""")
    c.close()


def back_to_schema_5(db: Path) -> None:
    """Rewrite a store's events table as schema 5 had it: found by a UNIQUE text id, no key."""
    import apsw

    back_to_schema_8(db)
    c = apsw.Connection(str(db))
    c.execute("""
        CREATE TABLE events_v5(seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL UNIQUE,
            subject_id INTEGER NOT NULL REFERENCES subjects(id), created_at TEXT NOT NULL, event_type TEXT NOT NULL,
            signer_fp TEXT NOT NULL, body BLOB NOT NULL, source TEXT, received_at TEXT NOT NULL);
        INSERT INTO events_v5 SELECT seq, event_id, subject_id, created_at, event_type, signer_fp, body, source,
            received_at FROM events;
        DROP TABLE events;
        ALTER TABLE events_v5 RENAME TO events;
        CREATE INDEX events_by_subject ON events(subject_id, created_at, event_id);
        CREATE INDEX events_by_order ON events(created_at, event_id);
        CREATE INDEX events_by_signer ON events(subject_id, signer_fp);
        CREATE INDEX events_by_type ON events(event_type);
        PRAGMA user_version=5""")
    c.close()


def test_schema_5_store_upgrades_to_the_compact_event_key_and_gives_the_old_pages_back(tmp_path: Path):
    cfg = config(tmp_path)
    subjects = [synthetic_subject(REG, 40 + i, 30, MIRRORS) for i in range(10)]
    keys = [m.entry() for m in MIRRORS]
    with Store(cfg.db_path) as store:
        for pn, evs in subjects:
            ingest_events(store, pn, evs, keys, source="a", trusted=cfg.trusted_ring(), registry=cfg.registry, now=NOW)
        before = table_dump(store)
        counts = {s.id: store.signer_counts(s.id) for s in store.subjects()}
        assert sum(len(c) for c in counts.values()) > len(counts)  # several signers per record
        seqs = list(store.db.execute("SELECT seq, event_id FROM events ORDER BY seq"))
    back_to_schema_5(cfg.db_path)
    with pytest.raises(StoreError, match="needs a schema upgrade"):
        Store(cfg.db_path, readonly=True)
    size_v5 = cfg.db_path.stat().st_size

    with Store(cfg.db_path) as store:  # read-write: upgrades
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        schema = "SELECT type, name, sql FROM sqlite_schema ORDER BY name"
        with Store(tmp_path / "fresh.sqlite3") as fresh:
            assert list(store.db.execute(schema)) == list(fresh.db.execute(schema))  # as if created today
        assert table_dump(store) == before and store.integrity_check() == ["ok"]
        assert {s.id: store.signer_counts(s.id) for s in store.subjects()} == counts
        assert list(store.db.execute("SELECT seq, event_id FROM events ORDER BY seq")) == seqs  # merged_seq still holds
        assert store.db.execute("PRAGMA freelist_count").fetchone()[0] < 8  # compacted after the rewrite
        ids = [eid for _seq, eid in seqs]
        assert store.known_event_ids(ids + ["sha256:" + "0" * 64, "junk"]) == set(ids)
        pn, evs = subjects[3]
        again = ingest_events(store, pn, evs, keys, source="b", trusted=cfg.trusted_ring(), registry=cfg.registry,
                              now=NOW)
        assert again.new_event_ids == [] and again.known == 30 and store.event_count() == 300
        assert_states_are_fresh_merges(store, cfg)
    assert cfg.db_path.stat().st_size <= size_v5


def test_zlib_rows_of_a_schema_7_store_read_the_same_after_the_upgrade_and_new_rows_are_zstd(tmp_path: Path):
    """Schema 8 writes zstd; the rows earlier versions deflated are not rewritten,
    and must come back byte for byte."""
    import zlib

    import apsw
    import zstandard

    cfg = config(tmp_path)
    subjects = [synthetic_subject(REG, 60 + i, 20, MIRRORS) for i in range(4)]
    keys = [m.entry() for m in MIRRORS]
    with Store(cfg.db_path) as store:
        for pn, evs in subjects[:3]:
            ingest_events(store, pn, evs, keys, source="a", trusted=cfg.trusted_ring(), registry=cfg.registry, now=NOW)
        bodies = {pn: store.event_bodies(store.subject(pn).id) for pn, _ in subjects[:3]}
        states = {pn: store.state_bytes(pn) for pn, _ in subjects[:3]}
    back_to_schema_8(cfg.db_path)  # schema 7 had the same tables
    c = apsw.Connection(str(cfg.db_path))  # as schema 7 wrote them: zlib
    c.create_scalar_function("as_zlib", lambda b: zlib.compress(zstandard.ZstdDecompressor().decompress(b), 1), 1)
    c.execute("UPDATE events SET body=as_zlib(body); UPDATE subjects SET state=as_zlib(state) WHERE state IS NOT NULL;"
              "PRAGMA user_version=7")
    assert {bytes(b)[:1] for (b,) in c.execute("SELECT body FROM events")} == {b"\x78"}
    c.close()

    with Store(cfg.db_path) as store:
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 10
        assert {pn: store.event_bodies(store.subject(pn).id) for pn, _ in subjects[:3]} == bodies
        assert {pn: store.state_bytes(pn) for pn, _ in subjects[:3]} == states
        pn, evs = subjects[3]
        ingest_events(store, pn, evs, keys, source="a", trusted=cfg.trusted_ring(), registry=cfg.registry, now=NOW)
        sid = store.subject(pn).id
        new = {bytes(b)[:4] for (b,) in store.db.execute("SELECT body FROM events WHERE subject_id=?", (sid,))}
        assert new == {b"\x28\xb5\x2f\xfd"}  # the zstd frame's magic
        assert_states_are_fresh_merges(store, cfg)


def test_a_damaged_stored_document_is_a_store_error_naming_the_remedy(tmp_path: Path):
    import apsw

    cfg = config(tmp_path)
    pn, evs = synthetic_subject(REG, 80, 10, MIRRORS)
    with Store(cfg.db_path) as store:
        ingest_events(store, pn, evs, [m.entry() for m in MIRRORS], source="a", trusted=cfg.trusted_ring(),
                      registry=cfg.registry, now=NOW)
    c = apsw.Connection(str(cfg.db_path))  # one zstd row and one zlib-looking row, damaged on disk
    (first,) = c.execute("SELECT body FROM events ORDER BY seq LIMIT 1").fetchone()
    c.execute("UPDATE events SET body=? WHERE seq=(SELECT min(seq) FROM events)", (bytes(first)[:9] + b"\0\xff\0\xff",))
    c.execute("UPDATE events SET body=x'789c0102' WHERE seq=(SELECT max(seq) FROM events)")
    c.close()
    with Store(cfg.db_path) as store:
        sid = store.subject(pn).id
        with pytest.raises(StoreError, match="stored document is corrupt.*move it aside"):
            store.event_bodies(sid)
        (last,) = store.db.execute("SELECT event_id FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        with pytest.raises(StoreError, match="stored document is corrupt"):
            store.events_by_id([last])
        assert store.state_bytes(pn) is not None  # the rest of the store still reads


def test_a_signer_first_seen_in_a_rolled_back_batch_is_stored_with_the_next_one(env):
    """Signers are numbered in their own table (schema 9); a number made inside a
    batch that rolls back is gone, and the next batch must not reuse it."""
    from pithnode.store import NewEvent

    store, _cfg = env
    ids = ["sha256:" + c * 64 for c in "abc"]
    with store.transaction():
        sid = store.ensure_subject("pith:2026:AAAAAAAAAAAAAAAAAAAAAAAAAA")
        store.add_events(sid, [NewEvent(ids[0], NOW, "t", "old", b'{"x":0}')], "s", NOW)
    with pytest.raises(RuntimeError, match="half-way"):
        with store.transaction():
            store.add_events(sid, [NewEvent(ids[1], NOW, "t", "new", b'{"x":1}')], "s", NOW)
            raise RuntimeError("half-way")
    with store.transaction():
        store.add_events(sid, [NewEvent(ids[2], NOW, "t", "new", b'{"x":2}')], "s", NOW)
    assert store.signer_counts(sid) == {"old": 1, "new": 1}
    assert [row[2] for row in store.signer_chain_heads("new", sid)] == [ids[2]]
    bodies, signers = store.bodies_and_signers(ids)
    assert sorted(bodies) == [b'{"x":0}', b'{"x":2}'] and signers == {"old", "new"}
    assert store.integrity_check() == ["ok"]


def test_event_ids_sharing_a_key_are_told_apart_by_the_full_id(env):
    """The key is 8 bytes of the hash: ids that share it (an attacker can make such
    pairs) are separate events, and a lookup never answers for the other one."""
    from pithnode.store import NewEvent, event_key

    store, _cfg = env
    prefix = "sha256:" + "ab" * 8
    a, b, c = (prefix + x * 48 for x in "123")
    assert event_key(a) == event_key(b) == event_key(c)
    assert event_key("sha256:xyz") is None and event_key("md5:" + "0" * 67) is None
    assert event_key("sha256:+" + "0" * 63) is None and event_key("sha256:0_" + "0" * 62) is None
    assert event_key("sha256:" + "0" * 64) == -(1 << 63) and event_key("sha256:" + "f" * 64) == (1 << 63) - 1
    body = b'{"x":1}'
    with store.transaction():
        sid = store.ensure_subject("pith:2026:AAAAAAAAAAAAAAAAAAAAAAAAAA")
        new = store.add_events(sid, [NewEvent(a, NOW, "t", "fp", body), NewEvent(b, NOW, "t", "fp", body),
                                     NewEvent(a, NOW, "t", "fp2", body)], "s", NOW)
    assert new == [a, b] and store.event_count() == 2
    assert store.known_event_ids([a, b, c]) == {a, b}
    assert store.known_event_ids([c]) == set()
    assert store.event_sources([b, c]) == {b: "s"}
    assert store.bodies_and_signers([a]) == ([body], {"fp"})  # the first copy's signer
    with pytest.raises(ValueError, match="not an event id"):
        with store.transaction():
            store.add_events(sid, [NewEvent("sha256:short", NOW, "t", "fp", body)], "s", NOW)


def test_schema_4_store_upgrades_with_every_held_event_visible(tmp_path: Path):
    import apsw

    cfg = config(tmp_path)
    with Store(cfg.db_path) as store:
        res = ingest(store, cfg, parse_bundle(REAL_BUNDLE.read_bytes()))
    back_to_schema_5(cfg.db_path)
    c = apsw.Connection(str(cfg.db_path))  # back to schema 4: no merged_seq
    c.execute("ALTER TABLE subjects DROP COLUMN merged_seq; PRAGMA user_version=4")
    c.close()
    with Store(cfg.db_path) as store:
        subject = store.subject(res.pith_number)
        assert len(events_of(store, subject)) == 2 and store.unmerged_subjects() == []
        assert subject.state_sha256 == REAL_STATE_SHA


def test_flood_quotas_refuse_exactly_what_counting_every_signer_refuses(env):
    """Ingest skips counting a record's signers while no limit can bind (`Quotas.may_bind`);
    batch after batch it must refuse exactly what the plain rule, applied to the
    counts of everything stored, refuses: both limits, at and past their edge,
    the registry's events never refused nor counted among the capped signers."""
    import hashlib
    import random

    from pithnode.core.ingest_plan import Admitted, Batch, decide
    from pithnode.core.ingest_plan import Quotas
    from pithnode.ingest import read_snapshot
    from pithnode.store import NewEvent

    store, _cfg = env
    registry = frozenset({"reg"})
    rng = random.Random(6)
    serial = 0
    for max_signers, max_events in [(1, 9), (2, 3), (3, 2), (4, 4), (9, 1)]:
        quotas = Quotas(max_signers, max_events)
        pn = f"pith:2026:{'ABCDEFGHIJKLMNOPQRSTUVWXYZ'[max_signers]}" + "A" * 25
        with store.transaction():
            sid = store.ensure_subject(pn)
        for _batch in range(8):
            fps = [rng.choice(["reg", "m1", "m2", "m3", "m4", "m5"]) for _ in range(rng.randint(1, 4))]
            events = []
            for fp in fps:
                serial += 1
                events.append(Admitted("sha256:" + hashlib.sha256(str(serial).encode()).hexdigest(), NOW, "t", fp,
                                       b"{}"))
            counts, expected = store.signer_counts(sid), []
            for fp in fps:  # the rule, on the counts of everything stored: the registry is never capped
                others = {f for f in counts if f not in registry}
                if fp in registry or (counts.get(fp, 0) < max_events and (fp in counts or len(others) < max_signers)):
                    counts[fp] = counts.get(fp, 0) + 1
                    expected.append(fp)
            with store.transaction():
                batch = Batch(pn, "s", NOW, registry, events, quotas=quotas)
                plan = decide(batch, read_snapshot(store, batch))
                kept = plan.events
                assert [e.signer_fp for e in kept] == expected
                assert len(kept) + len(plan.quota_refusals) == len(events)
                store.add_events(sid, [NewEvent(*e[:5]) for e in kept], "s", NOW)
        assert store.subject_event_count(sid) == sum(store.signer_counts(sid).values())


def test_an_imported_disagreeing_bundle_is_kept_whole_as_evidence(env):
    """`pithnode import` checks bundles in worker processes, which send back a slim copy: the
    evidence of a disagreement must still be the signed bundle itself, checkable offline."""
    from pithnode.core import state_hash
    from pithnode.ingest import import_bundles
    from pithnode.views import evidence_doc, evidence_reports

    store, cfg = env
    pn, evs = synthetic_subject(REG, 31, 5, MIRRORS)
    lie = json.loads(json.dumps(merge(pn, evs, REG.ring().merged(KeyRingOf(MIRRORS)), {REG.fingerprint})))
    lie["current"]["graph_snapshots"], lie["event_count"] = [], 99
    lie["state_sha256"] = state_hash(lie)
    bundle = REG.bundle(pn, evs, keys=MIRRORS, state=lie)
    data = canonical_bytes(bundle)
    ((source, result),) = list(import_bundles(store, [("liar.json", lambda: data)], trusted=cfg.trusted_ring(),
                                              registry=cfg.registry, now=lambda: "2026-12-03T00:00:00Z", workers=1))
    assert source == "liar.json" and not isinstance(result, Exception) and result.source_state_matches is False
    (report,) = evidence_reports(store)
    assert evidence_doc(store, report) == bundle
