"""Hostile peers against real nodes on 127.0.0.1: what one peer may make a node
send, store, log and compute is bounded (docs/SECURITY.md, "Budgets"), and
honest nodes keep converging meanwhile, with records full of max-size events."""

from __future__ import annotations

import hashlib
import logging
import os
import random
from pathlib import Path

import httpx
import msgpack
import trio
from helpers import MIRRORS, REG
from httpserver import Route, running_server
from nodes import get_json, nodes, push, wait_converged
from pithnode.store import eventlog, journal
from pithnode.core import canonical_bytes, reconcile
from pithnode.core.events import MAX_EVENT_BYTES
from pithnode.core.reconcile import Reconciler, ReconcileSet
from pithnode.node import peer as peer_mod
from pithnode.testing.synth import SynthMirror, synthetic_subject


def max_size_events(pn: str, n: int, signer: SynthMirror = MIRRORS[0]) -> list[dict]:
    """`n` citations by one signer, chained, each as close to the spec's 262,144-byte cap as it gets."""
    out: list[dict] = []
    pad = MAX_EVENT_BYTES - 2_000
    for i in range(n):
        at = f"2026-03-01T00:{i // 60:02d}:{i % 60:02d}Z"
        ev = signer.event(pn, "citation_signature", "citation",
                          {"citing": f"pith:2026:{'A' * 26}", "context": "x" * pad},
                          at, prev=out[-1]["event_id"] if out else None)
        size = len(canonical_bytes(ev))
        ev = signer.event(pn, "citation_signature", "citation",
                          {"citing": f"pith:2026:{'A' * 26}", "context": "x" * (pad + MAX_EVENT_BYTES - size)},
                          at, prev=out[-1]["event_id"] if out else None)
        assert len(canonical_bytes(ev)) == MAX_EVENT_BYTES
        out.append(ev)
    return out


async def seed(running, n: int, events: int = 8) -> str:
    pn, evs = synthetic_subject(REG, n, events, MIRRORS)
    await running.node.ingest_bundle(REG.bundle(pn, evs, keys=MIRRORS), source="test")
    return pn


async def test_gossip_stays_live_with_a_record_full_of_max_size_events(tmp_path: Path):
    """80 events of 262,144 bytes on one record (21 MB, over the 16 MiB message
    cap): fetched in pages, pushed in pages, and two gossiping nodes converge."""
    async with nodes(tmp_path, 3, gossip_interval=3600.0, attest=False) as (a, b, c):
        pn = await seed(a, 7000)
        big = max_size_events(pn, 80)
        with trio.fail_after(120):
            res = await a.node.ingest_events(pn, big, [MIRRORS[0].entry()], source="test")
            assert len(res.new_event_ids) == 80
            # pull: b reconciles with a and fetches in answers of at most ANSWER_BYTES
            fetched, _ = await b.peers.sync_with(a.url)
            assert fetched == 88 and b.node.store.event_count() == 88
            # push: a pushes them all to c in messages under the cap
            sent = await a.peers.push_to(c.url, [e["event_id"] for e in big])
            assert sent == 80 and c.node.store.known_event_ids([e["event_id"] for e in big]) == {
                e["event_id"] for e in big}
            assert a.peers.wire["bytes_out"] < 80 * MAX_EVENT_BYTES * 1.1  # each event sent once
            # an asker's budget is honoured, and `next` says where the answer stopped
            ids = [e["event_id"] for e in big[:10]]
            async with httpx.AsyncClient() as client:
                r = await client.post(f"{a.url}/peer/v1/events", content=peer_mod.encode(
                    {"v": 1, "ids": ids, "max_bytes": peer_mod.MIN_ANSWER_BYTES}))
                answer = msgpack.unpackb(r.content)
                assert len(answer["events"]) == 4 and answer["next"] == 4
                # an asker that says nothing (an older node) gets ANSWER_BYTES' worth, never 21 MB
                r = await client.post(f"{a.url}/peer/v1/events", content=peer_mod.encode(
                    {"v": 1, "ids": [e["event_id"] for e in big]}))
                answer = msgpack.unpackb(r.content)
                assert len(answer["events"]) == 32 and answer["next"] == 32 and len(r.content) < 9 * 1024 * 1024
            # and the gossip loop itself converges a third node that holds nothing
        async with nodes(tmp_path / "more", 1, gossip_interval=0.5, attest=False) as (d,):
            d.peers.add_peer(a.url, operator=True)
            await wait_converged([a, d], [pn.rsplit(":", 1)[-1]], timeout=120)


async def test_peer_strings_are_bounded_and_rejections_counted_not_copied(tmp_path: Path, caplog, monkeypatch):
    """A huge `from` is refused; wrong-hash events are counted per (source, reason)
    with a few samples, the samples and tallies are capped, and the log gets one
    line per push at most, not one per event."""
    monkeypatch.setattr(journal, "REJECTION_SAMPLES", 12)
    monkeypatch.setattr(journal, "REJECTION_TALLIES", 3)
    caplog.set_level(logging.WARNING, logger="pithnode.node")
    async with nodes(tmp_path, 1, attest=False) as (a,):
        pn, evs = synthetic_subject(REG, 7100, 4, MIRRORS)
        bad = [dict(evs[1], event_id="sha256:" + os.urandom(32).hex() + "y" * 5_000) for _ in range(500)]
        body = {"v": 1, "events": [canonical_bytes(e) for e in bad], "keys": []}
        async with httpx.AsyncClient(timeout=60) as client:
            r = await client.post(f"{a.url}/peer/v1/push",
                                  content=peer_mod.encode({**body, "from": "http://x/" + "a" * 1_000_000}))
            assert r.status_code == 400 and a.node.store.rejection_tally() == []
            size = a.node.store.size_bytes()
            for host in ("h0", "h1", "h2", "h0", "h3"):
                r = await client.post(f"{a.url}/peer/v1/push",
                                      content=peer_mod.encode({**body, "from": f"http://{host}.test"}))
                assert r.status_code == 200 and msgpack.unpackb(r.content)["rejected"] == 500
        tally = a.node.store.rejection_tally()  # capped at 3: the least recently seen (h1) dropped
        assert [(t.source, t.reason, t.count) for t in tally] == [
            ("peer http://h3.test", "hash_mismatch", 500), ("peer http://h0.test", "hash_mismatch", 1000),
            ("peer http://h2.test", "hash_mismatch", 500)]
        samples = a.node.store.rejections(limit=10_000)
        assert len(samples) == 12 and all(len(s.event_id or "") <= 80 for s in samples)
        assert a.node.store.size_bytes() - size < 1024 * 1024  # 2,500 rejections of 5 KB ids: not 12 MB
        lines = [r for r in caplog.records if "rejected" in r.getMessage()]
        assert 1 <= len(lines) <= 5 and all(len(r.getMessage()) < 2_000 for r in lines)
        # a push naming itself anew each time still cannot make a line each
        async with httpx.AsyncClient(timeout=60) as client:
            for i in range(40):
                r = await client.post(f"{a.url}/peer/v1/push", content=peer_mod.encode(
                    {"v": 1, "events": body["events"][:2], "keys": [], "from": f"http://new{i}.test"}))
                assert r.status_code == 200
        lines = [r for r in caplog.records if "rejected" in r.getMessage()]
        assert len(lines) <= 5 + 20
        # a key entry's label is the peer's to choose: a huge one is not stored (the key is)
        signer = SynthMirror("long-label")
        r = await push(a.url, [signer.citation(pn, "2026-05-01T00:00:00Z", 1)],
                       [dict(signer.entry(), key_id="k" * 100_000)])
        assert msgpack.unpackb(r.content)["admitted"] == 1
        assert a.node.store.key(signer.fingerprint) == (signer.raw, None)


async def test_a_stranger_may_make_us_store_a_bounded_number_of_new_records_and_keys(tmp_path: Path):
    """Each event on a new record by a new key: past the stranger's allowance they
    are refused (`quota`, counted), a known signer on a held record still gets in,
    and adding keys grows the store's key ring in place (not rebuilt per key)."""
    async with nodes(tmp_path, 1, attest=False, peer_new_records_per_hour=30, peer_new_keys_per_hour=40) as (a,):
        held = await seed(a, 7200)
        ring = a.node.store.key_ring()
        flood, keys = [], []
        for i in range(200):
            s = SynthMirror(f"stranger-{i}", f"https://stranger{i}.test")
            pn, _ = REG.record_created(7300 + i)
            flood.append(s.citation(pn, "2026-05-01T00:00:00Z", i))
            keys.append(s.entry())
        with trio.fail_after(60):
            r = await push(a.url, flood, keys)
        counts = msgpack.unpackb(r.content)
        assert counts["admitted"] == 30 and counts["rejected"] == 170
        assert a.node.store.subject_count() == 31
        assert {(t.reason, t.count) for t in a.node.store.rejection_tally()} == {("quota", 170)}
        assert a.node.store.key_ring() is ring and len(ring) == 2 + 1 + 30  # mirrors, registry, 30 new
        # on a record it holds, new keys are charged too (10 left of 40), known ones are not
        more = [SynthMirror(f"late-{i}", f"https://late{i}.test") for i in range(15)]
        r = await push(a.url, [m.citation(held, "2026-05-02T00:00:00Z", i) for i, m in enumerate(more)]
                       + [MIRRORS[1].citation(held, "2026-05-03T00:00:00Z", 99)], [m.entry() for m in more])
        assert msgpack.unpackb(r.content)["admitted"] == 11


async def test_operator_peers_keep_their_place_and_strangers_cannot_eclipse_a_node(tmp_path: Path):
    """70 pushes, each bringing news and naming a junk peer, from one address: they
    take at most MAX_PEERS_PER_SOURCE places; the operator's peer stays; a real
    peer pushing afterwards gets in; a learned peer that keeps failing ages out."""
    async with nodes(tmp_path, 3, gossip_interval=3600.0, attest=False) as (a, b, o):
        a.peers.add_peer(o.url, operator=True)
        pn = await seed(a, 7400)
        for i in range(70):
            s = SynthMirror(f"eclipse-{i}")
            body = peer_mod.encode({"v": 1, "from": f"http://127.0.0.1:9/junk{i}",
                                    "events": [canonical_bytes(s.citation(pn, "2026-05-01T00:00:00Z", i))],
                                    "keys": [s.entry()]})
            async with httpx.AsyncClient() as client:
                r = await client.post(f"{a.url}/peer/v1/push", content=body)
            assert msgpack.unpackb(r.content)["admitted"] == 1
        assert o.url in a.peers.peers and a.peers.peers[o.url].operator
        junk = [u for u in a.peers.peers if "/junk" in u]
        assert len(junk) <= peer_mod.MAX_PEERS_PER_SOURCE
        # a push naming nothing new earns no place
        r = await push(a.url, [], [])
        # a real peer that brings news gets a place
        await seed(b, 7401)
        assert await b.peers.push_to(a.url, sorted(b.node.store.known_event_ids(
            [e for _, e in b.node.store.event_keys()]))) > 0
        assert b.url in a.peers.peers and o.url in a.peers.peers
        # learned peers that keep failing age out; the operator's never do
        with trio.fail_after(60):
            for _ in range(peer_mod.PEER_MAX_FAILURES):
                for url in junk:
                    if url in a.peers.peers:
                        await a.peers._guarded(url, a.peers.sync_with)
        assert not [u for u in a.peers.peers if "/junk" in u] and o.url in a.peers.peers


async def test_reconciliation_work_is_charged_to_the_peer_and_done_off_the_event_loop(tmp_path: Path):
    """Messages of 99,998 wrong fingerprints: the address that sends them gets 429
    once its CPU budget is spent, while honest health checks are answered."""
    async with nodes(tmp_path, 1, attest=False, peer_cpu_share=0.01, peer_rate_limit=1000.0) as (a,):
        for i in range(4):
            await seed(a, 7500 + i, 400)
        ranges = [reconcile.Range((1_700_000_000 + i, b""), reconcile.FINGERPRINT, fingerprint=os.urandom(12))
                  for i in range(99_998)] + [reconcile.Range(reconcile._INF, reconcile.FINGERPRINT,
                                                             fingerprint=os.urandom(12))]
        heavy = peer_mod.encode({"v": 1, "msg": reconcile.encode(ranges)})
        statuses: list[int] = []
        retry_after: list[str | None] = []
        honest: list[int] = []

        async def attacker() -> None:
            async with httpx.AsyncClient(timeout=60) as client:
                for _ in range(40):
                    r = await client.post(f"{a.url}/peer/v1/reconcile", content=heavy)
                    statuses.append(r.status_code)
                    if r.status_code == 429:
                        retry_after.append(r.headers.get("retry-after"))
                        return

        async def checker() -> None:
            while not statuses or statuses[-1] != 429:
                with trio.fail_after(20):
                    status, _ = await get_json(f"{a.url}/healthz")
                honest.append(status)
                await trio.sleep(0.1)

        with trio.fail_after(240):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(attacker)
                nursery.start_soon(checker)
        assert statuses[-1] == 429 and 200 in statuses and len(statuses) < 40
        assert retry_after == ["1"]  # a well-behaved peer knows when to come back
        assert honest and set(honest) == {200}


async def test_a_peer_teaching_one_fake_id_per_round_is_dropped_by_what_gets_stored(tmp_path: Path, monkeypatch):
    """Each reply names one more id the peer will not serve and keeps a range open:
    the sync fetches after MAX_IDLE_ROUNDS rounds, stores nothing, and stops."""
    async with nodes(tmp_path, 2, gossip_interval=3600.0, attest=False) as (a, b):
        await seed(a, 7600, 20)
        honest = a.peers.handle

        async def liar(kind: str, body: bytes, client: str) -> bytes:
            if kind != "reconcile":
                return await honest(kind, body, client)
            fake = reconcile.Range((1_800_000_000, b""), reconcile.FULL, ids=[os.urandom(32)])
            rest = reconcile.Range(reconcile._INF, reconcile.FINGERPRINT, fingerprint=os.urandom(reconcile.FP_BYTES))
            return peer_mod.encode({"v": 1, "msg": reconcile.encode([fake, rest])})

        monkeypatch.setattr(a.peers, "handle", liar)
        with trio.fail_after(120):
            assert await b.peers.sync_with(a.url) == (0, 0)
        assert b.peers.wire["requests"] <= peer_mod.MAX_IDLE_ROUNDS + 4


def test_the_store_has_a_size_cap_by_default():
    from pithnode.config import Config

    assert Config().max_store_bytes == 32 * 1024**3


async def test_mirror_hints_are_parsed_once_not_at_every_rebuild(tmp_path: Path, monkeypatch):
    """/pith-mirrors.json is rebuilt whenever the store changes; each rebuild reads
    only the mirror_hint events stored since the last (2,000 max-size hints
    re-parsed at every rebuild cost 0.6 s on the event loop)."""
    from pithnode.core import mirror_hint_entry

    async with nodes(tmp_path, 1, attest=False) as (a,):
        pn = await seed(a, 7700)
        code = pn.rsplit(":", 1)[-1]
        hints = [SynthMirror(f"hinter-{i}", f"https://hinter{i}.test") for i in range(51)]

        def hint(m: SynthMirror) -> dict:
            return m.event(pn, "mirror_hint", "mirror", mirror_hint_entry(m.key_id, m.base_url, code),
                           "2026-05-01T00:00:00Z")

        r = await push(a.url, [hint(m) for m in hints[:50]], [m.entry() for m in hints[:50]])
        assert msgpack.unpackb(r.content)["admitted"] == 50
        status, doc = await get_json(f"{a.url}/pith-mirrors.json")
        assert status == 200 and len(doc["mirrors"]) == 51
        read = []
        real_unpack = eventlog.unpack
        monkeypatch.setattr(eventlog, "unpack", lambda b: read.append(1) or real_unpack(b))
        r = await push(a.url, [hint(hints[50])], [hints[50].entry()])
        assert msgpack.unpackb(r.content)["admitted"] == 1
        read.clear()  # (the push read the record's events to merge it)
        status, doc = await get_json(f"{a.url}/pith-mirrors.json")
        assert len(doc["mirrors"]) == 52 and "https://hinter50.test" in {m["base_url"] for m in doc["mirrors"]}
        assert len(read) == 1  # the new hint, not all 51 again


async def test_a_learned_peer_giving_an_answer_no_honest_peer_gives_is_dropped_at_once(tmp_path: Path, monkeypatch):
    """Over the cap of what was asked (a 5 MB reply to a first reconciliation
    message, whose honest reply is under 1 KB; an endless body sent without a
    length), or a push answer that does not count the events sent: the learned
    peer is dropped at the first such answer, little of it is read, and it is not
    learned again; an operator's peer only backs off."""
    async with nodes(tmp_path, 3, gossip_interval=3600.0, attest=False) as (a, b, c), running_server() as endless:
        pn = await seed(b, 7700, 6)

        async def oversized(kind: str, body: bytes, client: str) -> bytes:
            return b"\x00" * 5_000_000

        async def uncounted(kind: str, body: bytes, client: str) -> bytes:
            return peer_mod.encode({"v": 1})

        monkeypatch.setattr(a.peers, "handle", oversized)
        monkeypatch.setattr(c.peers, "handle", uncounted)
        endless.routes["/peer/v1/reconcile"] = Route(mode="endless")
        ids = sorted(e for _, e in b.node.store.event_keys())
        with trio.fail_after(60):
            for url in (a.url, endless.url):
                assert b.peers.add_peer(url, via="a list")
                await b.peers._guarded(url, b.peers.sync_with)
                assert url not in b.peers.peers and not b.peers.add_peer(url, via="another list")
            first = peer_mod.reply_cap(Reconciler(await b.peers.reconcile_set()).initiate())
            assert b.peers.wire["bytes_in"] <= first + 65_536  # the declared 5 MB unread; one chunk past the cap
            assert b.peers.add_peer(c.url, via="a list")
            await b.peers._guarded(c.url, b.peers.push_to, ids)
            assert c.url not in b.peers.peers
            assert b.peers.add_peer(a.url, operator=True)  # the operator decides
            await b.peers._guarded(a.url, b.peers.sync_with)
            assert a.url in b.peers.peers and b.peers.peers[a.url].failures == 1
        assert pn


async def test_concurrent_syncs_fetch_each_new_event_once(tmp_path: Path):
    """Two peers hold the same new events (here 6 of 262,144 bytes); the node
    syncs with both at once, as a round does: each event crosses the wire once."""
    async with nodes(tmp_path, 3, gossip_interval=3600.0, attest=False) as (a, b, c):
        pn = await seed(a, 7800, 4)
        with trio.fail_after(120):
            await b.peers.sync_with(a.url)
            await c.peers.sync_with(a.url)
            big = max_size_events(pn, 6)
            for n in (a, b):
                res = await n.node.ingest_events(pn, big, [MIRRORS[0].entry()], source="test")
                assert len(res.new_event_ids) == 6
            before = c.peers.wire["bytes_in"]
            fetched: list[int] = []

            async def sync(url: str) -> None:
                fetched.append((await c.peers.sync_with(url))[0])

            async with trio.open_nursery() as nursery:
                nursery.start_soon(sync, a.url)
                nursery.start_soon(sync, b.url)
        assert sum(fetched) == 6 and c.node.store.known_event_ids([e["event_id"] for e in big]) == {
            e["event_id"] for e in big}
        assert c.peers.wire["bytes_in"] - before < 1.2 * 6 * MAX_EVENT_BYTES  # not twice


def test_every_honest_reconciliation_reply_is_within_the_cap_its_request_sets():
    """peer.reply_cap bounds the reply to each message of a reconciliation by
    that message alone, however far apart the sets are (an empty node against
    5,000 events included): an asker can refuse more without dropping honest peers."""
    rng = random.Random(1)
    for trial in range(60):
        n = rng.choice([0, 1, 3, 5, 20, 100, 1_000, 5_000])
        base = [(f"2026-0{rng.randrange(1, 9)}-01T00:00:{rng.randrange(60):02d}Z",
                 "sha256:" + hashlib.sha256(f"{trial}-{i}".encode()).hexdigest()) for i in range(n)]
        mine = ReconcileSet(sorted(x for x in base if rng.random() < rng.choice([0.0, 0.5, 0.99, 1.0])))
        theirs = ReconcileSet(sorted(x for x in base if rng.random() < rng.choice([0.0, 0.5, 0.99, 1.0])))
        rec = Reconciler(mine)
        msg: bytes | None = rec.initiate()
        while msg is not None:
            reply = Reconciler(theirs).respond(msg)
            if reply is None:
                break
            assert len(reply) <= peer_mod.reply_cap(msg)
            msg = rec.reconcile(reply)
        assert rec.need == ids_of(theirs) - ids_of(mine) and rec.have == ids_of(mine) - ids_of(theirs)


def ids_of(s: ReconcileSet) -> set[str]:
    return {"sha256:" + s._id(i).hex() for i in range(len(s))}


async def test_a_peer_that_always_lacks_our_events_is_pushed_each_of_them_once(tmp_path: Path, monkeypatch):
    """Its reconciliation says it holds nothing, at every sync; it takes the
    pushes and counts them. The first push to it, a stranger, carries one
    event; each event reaches it once, not once per sync."""
    async with nodes(tmp_path, 2, gossip_interval=3600.0, attest=False) as (a, b):
        await seed(b, 7900, 6)
        honest = a.peers.handle
        pushed: list[int] = []

        async def forgetful(kind: str, body: bytes, client: str) -> bytes:
            if kind == "reconcile":
                reply = Reconciler(ReconcileSet([])).respond(peer_mod.decode(body).get("msg"))
                return peer_mod.encode({"v": 1, "msg": reply})
            if kind == "push":
                pushed.append(len(peer_mod.decode(body)["events"]))
            return await honest(kind, body, client)

        monkeypatch.setattr(a.peers, "handle", forgetful)
        held = b.node.store.event_count()
        assert b.peers.add_peer(a.url, via="a list")
        with trio.fail_after(60):
            for _ in range(3):
                await b.peers._guarded(a.url, b.peers.sync_with)
        assert pushed[0] == 1 and sum(pushed) == held and a.url in b.peers.peers, (pushed, held)
