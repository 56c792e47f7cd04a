"""Several real nodes on 127.0.0.1: serving, gossip, convergence, equivocation
reports, hostile peers, partitions, restarts."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import msgpack
import pytest
import trio

from helpers import MIRRORS, REAL_BUNDLE, REAL_STATE_SHA, REG
from nodes import connect, get_json, nodes, push, wait_converged
from pithnode.core import check_bundle, default_registry_ring
from pithnode.testing.synth import synthetic_subject

RING5 = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 0)]


async def seed(running, n: int = 1000, events: int = 12) -> tuple[str, list[dict]]:
    pn, evs = synthetic_subject(REG, n, events, MIRRORS)
    await running.node.ingest_bundle(REG.bundle(pn, evs, keys=MIRRORS), source="test")
    return pn, evs


async def test_node_serves_resolver_urls_of_the_real_bundle(tmp_path: Path):
    async with nodes(tmp_path, 1) as (a,):
        res = await a.node.ingest_bundle(json.loads(REAL_BUNDLE.read_text()), source="file")
        assert res.state_sha256 == REAL_STATE_SHA
        code = "EL6A4QOTPLYS3LFEIZGOL5QVTM"
        status, state = await get_json(f"{a.url}/pith/{code}/state.json")
        assert status == 200
        async with httpx.AsyncClient() as client:
            # conditional GET (the node's own attestations may land between two requests and
            # change the bundle: then the ETag changes too, and the next pair is tried)
            for _ in range(50):
                r = await client.get(f"{a.url}/pith/{code}/bundle.json")
                r304 = await client.get(f"{a.url}/pith/{code}/bundle.json", headers={"if-none-match": r.headers["etag"]})
                if r304.status_code != 200:
                    break
                assert r304.headers["etag"] != r.headers["etag"]
                await trio.sleep(0.1)
            assert r304.status_code == 304 and r304.content == b""
            bundle = r.json()
            rgz = await client.get(f"{a.url}/pith/{code}/bundle.json", headers={"accept-encoding": "gzip"})
            assert rgz.headers.get("content-encoding") == "gzip"
            assert rgz.json() == bundle or rgz.headers["etag"] != r.headers["etag"]  # same version, same bytes
            for path in (f"/.well-known/pith/{code}/bundle.json", f"/pith/{code}.json",
                         f"/api/pith-number/{code}/events.json", f"/api/pith-number/{code}/graph.json",
                         "/pith-mirrors.json", "/equivocations.json", "/pith-signing-key.json", "/healthz", "/"):
                assert (await client.get(a.url + path)).status_code == 200, path
            assert (await client.get(a.url + "/pith/../../etc/passwd")).status_code == 404
            assert (await client.post(f"{a.url}/pith/{code}/state.json")).status_code == 405
            metrics = (await client.get(a.url + "/metrics")).text
            assert "pithnode_events_admitted_total" in metrics
        # the node's own bundle verifies: its signature, every event, its state;
        # it holds the node's own witness/storage/mirror events once attested
        ring = default_registry_ring()
        report = check_bundle(bundle, ring, {"8d4b5ee74e4693bcd1df2446408b0d54"})
        assert report.signature_ok and report.state_matches
        assert all(x.admitted for x in report.admission)
        assert any(h["status"] == "self" and h["base_url"] == a.url for h in bundle["mirror_hints"])
        record = (await get_json(f"{a.url}/pith/{code}.json"))[1]
        assert record["pith_number"] == bundle["pith_number"]


async def test_own_attestations_are_made_once_and_chain_across_restarts(tmp_path: Path):
    async with nodes(tmp_path, 1) as (a,):
        pn, _ = await seed(a)
        with trio.fail_after(10):
            while len(a.node.own_events(a.node.store.subject(pn))) < 3:
                await trio.sleep(0.05)
        first = {e["event_type"]: e for e in a.node.own_events(a.node.store.subject(pn))}
        assert set(first) == {"timestamp_anchor", "storage_attestation", "mirror_hint"}
        url_before = a.url
    # restart with a renewal interval of zero: storage is renewed, chained; nothing forks
    async with nodes(tmp_path, 1, storage_renewal_days=0.0) as (a,):
        subject = a.node.store.subject(pn)
        with trio.fail_after(10):
            while not any(e["prev_event"] == first["storage_attestation"]["event_id"]
                          for e in a.node.own_events(subject)):
                await trio.sleep(0.05)
        own = a.node.own_events(subject)
        state = json.loads(a.node.store.state_bytes(pn))
        assert state["equivocation_count"] == 0, state["equivocations"]
        renewal = next(e for e in own if e["prev_event"] == first["storage_attestation"]["event_id"])
        assert renewal["supersedes"] == [first["storage_attestation"]["event_id"]]
        assert sum(e["event_type"] == "timestamp_anchor" for e in own) == 1
        assert url_before  # the port may differ across restarts: the chain continues regardless


async def test_five_nodes_converge_and_all_report_the_same_equivocation(tmp_path: Path):
    async with nodes(tmp_path, 5) as running:
        connect(running, RING5)
        pn, evs = await seed(running[0])
        code = pn.rsplit(":", 1)[-1]
        await wait_converged(running, [code])
        # one new event published at node 2 reaches all five
        last_graph = [e for e in evs if e["event_type"] == "graph_snapshot"][-1]
        new = REG.graph_snapshot(pn, "2026-03-01T00:00:00Z", prev=last_graph)
        r = await push(running[2].url, [new], [])
        assert r.status_code == 200 and msgpack.unpackb(r.content)["admitted"] == 1
        await wait_converged(running, [code])
        for r_ in running:
            assert r_.node.store.events_by_id([new["event_id"]])
        # a conflicting successor of the same graph snapshot, injected at node 4
        rival = REG.graph_snapshot(pn, "2026-03-01T00:00:01Z", prev=last_graph, n_claims=5)
        assert (await push(running[4].url, [rival], [])).status_code == 200
        await wait_converged(running, [code])
        evidence = []
        for r_ in running:
            status, doc = await get_json(f"{r_.url}/equivocations.json")
            eqs = doc["equivocations"]
            assert len(eqs) == 1, r_.url
            evidence.append((tuple(sorted(eqs[0]["event_ids"])), tuple(e["event_id"] for e in eqs[0]["events"])))
        assert len(set(evidence)) == 1
        assert set(evidence[0][0]) == {new["event_id"], rival["event_id"]}


async def test_empty_node_converges_from_its_peers_alone(tmp_path: Path):
    async with nodes(tmp_path, 3) as running:
        connect(running, [(0, 1)])
        pns = [(await seed(running[0], 2000 + i))[0] for i in range(3)]
        codes = [pn.rsplit(":", 1)[-1] for pn in pns]
        await wait_converged(running[:2], codes)
        connect(running, [(2, 1)])  # a newcomer that knows one peer
        await wait_converged(running, codes)


async def test_partition_heals(tmp_path: Path):
    async with nodes(tmp_path, 4) as running:
        connect(running, [(0, 1), (2, 3)])
        pn, evs = await seed(running[0], 3000)
        await seed(running[2], 3000)
        code = pn.rsplit(":", 1)[-1]
        last_graph = [e for e in evs if e["event_type"] == "graph_snapshot"][-1]
        left = REG.graph_snapshot(pn, "2026-04-01T00:00:00Z", prev=last_graph)
        mine = [e for e in evs if e["event_type"] == "citation_signature" and e["signer"]["key_id"] == MIRRORS[0].key_id]
        right = MIRRORS[0].citation(pn, "2026-04-01T00:00:05Z", 999, prev=mine[-1])
        await push(running[1].url, [left], [])
        await push(running[3].url, [right], [MIRRORS[0].entry()])
        await wait_converged(running[:2], [code])
        await wait_converged(running[2:], [code])
        assert (await get_json(f"{running[0].url}/pith/{code}/state.json"))[1] != \
            (await get_json(f"{running[2].url}/pith/{code}/state.json"))[1]
        connect(running, [(1, 2)])  # heal
        await wait_converged(running, [code])


async def test_hostile_peer_is_refused_while_honest_nodes_converge(tmp_path: Path):
    async with nodes(tmp_path, 3) as running:
        connect(running, [(0, 1), (1, 2)])
        pn, evs = await seed(running[0], 4000)
        code = pn.rsplit(":", 1)[-1]
        target = running[1].url
        async with httpx.AsyncClient() as client:
            for body in (b"\xc1garbage", b"", msgpack.packb([1, 2, 3]), msgpack.packb({"v": 99}), b"\x91" * 100_000,
                         msgpack.packb({"v": 1}) + b"trailing"):
                for kind in ("reconcile", "events", "push"):
                    r = await client.post(f"{target}/peer/v1/{kind}", content=body)
                    assert r.status_code == 400, (kind, body[:20], r.status_code)
            for kind, msg in [("push", {"v": 1, "events": "x"}), ("push", {"v": 1, "events": [1, 2]}),
                              ("reconcile", {"v": 1, "msg": [[1, 2], "zz"]}), ("reconcile", {"v": 1, "msg": b"\x01\x05"}),
                              ("events", {"v": 1, "ids": list(range(10))}), ("events", {"v": 1, "ids": ["x"] * 6000})]:
                r = await client.post(f"{target}/peer/v1/{kind}", content=msgpack.packb(msg))
                assert r.status_code == 400, (kind, msg, r.status_code)
            # unknown fields are ignored
            r = await client.post(f"{target}/peer/v1/events", content=msgpack.packb({"v": 1, "ids": [], "extra": 1}))
            assert r.status_code == 200 and msgpack.unpackb(r.content)["events"] == []
            big = b"\x00" * (17 * 1024 * 1024)
            r = await client.post(f"{target}/peer/v1/push", content=big)
            assert r.status_code == 413
        # tampered events are rejected one by one, with reasons
        bad = dict(evs[-1], payload={"tampered": True})
        r = await push(target, [bad, {"not": "an event"}], [])
        assert r.status_code == 200
        assert msgpack.unpackb(r.content)["rejected"] == 2
        reasons = {x.reason for x in running[1].node.store.rejections()}
        assert "hash_mismatch" in reasons
        await wait_converged(running, [code])


async def test_polling_follows_a_record_with_conditional_requests(tmp_path: Path):
    from httpserver import running_server

    pn, evs = synthetic_subject(REG, 5000, 10, MIRRORS)
    code = pn.rsplit(":", 1)[-1]
    async with running_server() as registry:
        path = f"/pith/{code}/bundle.json"
        registry.static(path, json.dumps(REG.bundle(pn, evs, keys=MIRRORS, base_url=registry.url)).encode())
        async with nodes(tmp_path, 1, mirrors=[registry.url], follow=[pn], poll_interval=0.3) as (a,):
            with trio.fail_after(10):
                while a.node.store.subject(pn) is None:
                    await trio.sleep(0.05)
                while registry.hits[path] < 3:
                    await trio.sleep(0.05)
            assert a.node.store.subject(pn).followed
            # later polls are conditional and answered 304: nothing is re-ingested
            conditional = [r for r in registry.requests if r["path"] == path and "if-none-match" in r]
            assert conditional
            src = a.node.store.source(registry.url + path)
            assert src is not None and src.etag and src.last_success and src.failures == 0
            # a new event at the registry is picked up by the next poll
            last = [e for e in evs if e["event_type"] == "graph_snapshot"][-1]
            new = REG.graph_snapshot(pn, "2026-06-01T00:00:00Z", prev=last)
            registry.static(path, json.dumps(REG.bundle(pn, [*evs, new], keys=MIRRORS, base_url=registry.url)).encode())
            with trio.fail_after(10):
                while not a.node.store.events_by_id([new["event_id"]]):
                    await trio.sleep(0.05)
            # a failing source backs off instead of being hammered
            registry.static(path, b"", fail_first=10**6)
            before = registry.hits[path]
            await trio.sleep(1.5)
            assert registry.hits[path] - before <= 2
            assert (src := a.node.store.source(registry.url + path)) is not None and src.failures >= 1


async def test_peers_are_discovered_from_mirror_hint_events(tmp_path: Path):
    async with nodes(tmp_path, 3) as running:
        connect(running, [(0, 1), (1, 2)])
        pn, _ = await seed(running[0], 6000)
        with trio.fail_after(10):  # node 0 signs its mirror_hint; gossip carries it to node 2
            while not any(e["event_type"] == "mirror_hint"
                          for e in running[0].node.own_events(running[0].node.store.subject(pn))):
                await trio.sleep(0.05)
        await wait_converged(running, [pn.rsplit(":", 1)[-1]])
        # node 2 never heard of node 0 but holds its signed mirror_hint event
        from pithnode.node.runner import discover

        await discover(running[2])
        assert running[0].url in running[2].peers.peers


async def test_on_equivocation_hook_gets_the_report_on_stdin(tmp_path: Path):
    out = tmp_path / "reports.jsonl"
    async with nodes(tmp_path, 1, on_equivocation=f"sh -c 'cat >> {out}'") as (a,):
        pn, evs = await seed(a, 6100)
        last = [e for e in evs if e["event_type"] == "graph_snapshot"][-1]
        prev = next(e for e in evs if e["event_id"] == last["prev_event"])
        rival = REG.graph_snapshot(pn, "2026-07-01T00:00:00Z", prev=prev, n_claims=8)
        await push(a.url, [rival], [])
        with trio.fail_after(10):
            while not out.exists() or not out.read_text().strip():
                await trio.sleep(0.05)
        report = json.loads(out.read_text().splitlines()[0])
        assert report["kind"] == "equivocation" and report["pith_number"] == pn
        assert set(report["event_ids"]) == {rival["event_id"], last["event_id"]}
        metrics = (await httpx.AsyncClient().get(a.url + "/metrics")).text
        assert 'pithnode_reports_total{kind="equivocation"} 1.0' in metrics


def test_bulk_admission_workers_yield_the_cpu_to_readers():
    """The worker processes run at a lower priority than the process serving
    readers (measured: a reader's p99 x2.1 -> x1.5 while the node ingests)."""
    import os

    from pithnode.node.admission import ADMISSION_NICE, AdmissionWorkers

    workers = AdmissionWorkers()
    pool = workers.pool
    if pool is None:
        pytest.skip("one core: admission runs on a thread")
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        assert pool.submit(os.getpriority, os.PRIO_PROCESS, 0).result(timeout=60) == min(19, mine + ADMISSION_NICE)
    finally:
        workers.close()


async def test_a_far_behind_node_catches_up_in_one_reconciliation_and_merges_once(tmp_path: Path, monkeypatch):
    """One reconciliation over the set built once, its ids fetched MAX_NEED
    at a time, stored APPLY_BATCH at a time, every subject merged once at the
    end: the states equal the source's."""
    from pithnode.node import gossip
    from pithnode.node import peer as peer_mod

    from pithnode.core import reconcile

    monkeypatch.setattr(reconcile, "MAX_REPLY_IDS", 20)  # a reply lists 20 ids: many rounds, as at 1M events
    monkeypatch.setattr(gossip, "MAX_NEED", 40)  # the sync steps (node/gossip.py)
    monkeypatch.setattr(peer_mod, "APPLY_BATCH", 15)
    monkeypatch.setattr(peer_mod, "MAX_EVENTS", 5)  # events per answer: three answers per commit
    async with nodes(tmp_path, 2, gossip_interval=3600.0, attest=False) as (a, b):
        subjects = [await seed(a, 2000 + i, 30) for i in range(6)]
        batches: list[int] = []
        real_fetch, real_build = b.peers._fetch, peer_mod._build_set
        sets_built = 0
        steps: list[tuple[str, int]] = []  # ("start", events) per answer, ("apply", events) per commit
        real_start, real_apply = b.node.start_admission, b.node.apply_admitted

        def start(raw, keys):  # type: ignore[no-untyped-def]
            steps.append(("start", len(raw)))
            return real_start(raw, keys)

        async def apply(futures, keys, **kw):  # type: ignore[no-untyped-def]
            results, unreadable = await real_apply(futures, keys, **kw)
            steps.append(("apply", sum(len(r.new_event_ids) for r in results)))
            return results, unreadable

        monkeypatch.setattr(b.node, "start_admission", start)
        monkeypatch.setattr(b.node, "apply_admitted", apply)

        async def counted(url: str, ids: list[str]) -> int:
            batches.append(len(ids))
            return await real_fetch(url, ids)

        def counted_build(path):  # type: ignore[no-untyped-def]
            nonlocal sets_built
            sets_built += path == b.node.store.path  # (a builds its own set too, once)
            return real_build(path)

        monkeypatch.setattr(b.peers, "_fetch", counted)
        monkeypatch.setattr(peer_mod, "_build_set", counted_build)
        fetched, _ = await b.peers.sync_with(a.url)
        assert fetched == a.node.store.event_count() == b.node.store.event_count() == 180
        assert len(batches) >= 180 // 40 and max(batches) < 40 + 20 and sum(batches) == 180
        assert sets_built == 1 and not b.node.unmerged and b.node.store.unmerged_subjects() == []
        # A full batch is committed only once the next batch's admission has started
        # (the workers stay busy while this process stores): 15 + 15 started, then a commit of 15.
        first_apply = steps.index(("apply", 15))
        assert sum(n for kind, n in steps[:first_apply] if kind == "start") == 30
        assert [n for kind, n in steps if kind == "apply"][:2] == [15, 15]
        assert sum(n for kind, n in steps if kind == "apply") == 180
        assert b.node.store.meta("unmerged") == ""
        assert (await get_json(f"{b.url}/healthz"))[1] == {"ok": True, "events": 180, "unmerged_subjects": 0}
        for pn, _evs in subjects:
            assert b.node.store.subject(pn).state_sha256 == a.node.store.subject(pn).state_sha256
            status, bundle = await get_json(f"{b.url}/pith/{pn.rsplit(':', 1)[1]}/bundle.json")
            report = check_bundle(bundle, default_registry_ring().merged(REG.ring()), frozenset({REG.fingerprint}))
            assert status == 200 and report.problems == [] and report.state_matches


async def test_a_peer_failing_mid_sync_leaves_what_it_sent_stored(tmp_path: Path, monkeypatch):
    """Batches are committed one behind the fetching: when the peer fails, the
    answers it gave are stored all the same, and merged by the next gossip pass."""
    from pithnode.node import peer as peer_mod

    monkeypatch.setattr(peer_mod, "APPLY_BATCH", 15)
    monkeypatch.setattr(peer_mod, "MAX_EVENTS", 5)
    async with nodes(tmp_path, 2, gossip_interval=3600.0, attest=False) as (a, b):
        for i in range(3):
            await seed(a, 2100 + i, 30)
        real_post, answers = b.peers.post, 0

        async def failing(url: str, kind: str, msg: dict) -> dict:  # type: ignore[type-arg]
            nonlocal answers
            if kind == "events":
                answers += 1
                if answers == 9:  # two batches of 15 started, one of them not committed yet
                    raise peer_mod.PeerError("peer went away")
            return await real_post(url, kind, msg)

        monkeypatch.setattr(b.peers, "post", failing)
        with pytest.raises(peer_mod.PeerError):
            await b.peers.sync_with(a.url)
        assert b.node.store.event_count() == 8 * 5
        monkeypatch.setattr(b.peers, "post", real_post)
        fetched, _ = await b.peers.sync_with(a.url)  # the rest, then every subject merged
        assert fetched == 90 - 40 and b.node.store.unmerged_subjects() == []
        for s in a.node.store.subjects():
            assert b.node.store.subject(s.pith_number).state_sha256 == s.state_sha256


async def test_subjects_a_stopped_sync_left_unmerged_are_merged_at_start(tmp_path: Path):
    from nodes import node_config
    from pithnode.ingest import ingest_events
    from pithnode.store import Store

    cfg = node_config(tmp_path, "node0", attest=False)
    pn, evs = synthetic_subject(REG, 3000, 20, MIRRORS)
    Path(cfg.data_dir).mkdir(parents=True)
    with Store(cfg.db_path) as store:  # what a sync killed before its merge pass leaves
        ingest_events(store, pn, evs[:8], [m.entry() for m in MIRRORS], source="x", trusted=cfg.trusted_ring(),
                      registry=cfg.registry, now="2026-11-23T00:00:00Z")
        ingest_events(store, pn, evs[8:], [m.entry() for m in MIRRORS], source="x", trusted=cfg.trusted_ring(),
                      registry=cfg.registry, now="2026-11-23T00:00:00Z", merge=False)
        with store.transaction():
            store.set_meta("unmerged", "1")
        assert store.unmerged_subjects() == [pn]
    async with nodes(tmp_path, 1, attest=False) as (a,):
        with trio.fail_after(10):
            while a.node.store.unmerged_subjects():
                await trio.sleep(0.05)
        status, state = await get_json(f"{a.url}/pith/{pn.rsplit(':', 1)[1]}/state.json")
        assert status == 200 and state["event_count"] == 20 and a.node.store.meta("unmerged") == ""


async def bulk_stored(node, pn: str, evs: list[dict]) -> None:  # type: ignore[no-untyped-def]
    """Store events as a bulk sync does: admitted in the workers, not merged yet."""
    from pithnode.core import canonical_bytes

    keys = [m.entry() for m in MIRRORS]
    await node.apply_admitted(node.start_admission([canonical_bytes(e) for e in evs], keys), keys, source="x",
                              merge=False)
    assert pn in node.unmerged


@pytest.mark.parametrize("cores", ["several", "one"])
async def test_a_merge_overtaken_by_new_events_is_done_again_never_stored_stale(tmp_path: Path, monkeypatch, cores):
    """Merges run in worker processes (on one core: a thread) while the node goes on:
    a subject that takes events after its bodies were read must not get the older state back."""
    from pithnode.core import merge
    from pithnode.ingest import ingest_events
    from pithnode.node.admission import AdmissionWorkers

    workers = AdmissionWorkers(processes=0) if cores == "one" else None  # threads only, as on one core
    async with nodes(tmp_path, 1, workers=workers, gossip_interval=3600.0, attest=False) as (a,):
        node = a.node
        pn, evs = synthetic_subject(REG, 3100, 20, MIRRORS)
        await bulk_stored(node, pn, evs[:12])
        real, started = node.merges.start, 0

        def start_then_more_arrive(trusted):  # type: ignore[no-untyped-def]
            nonlocal started
            chunk = real(trusted)  # 12 bodies read, merging in a worker
            started += 1
            if started == 1:  # meanwhile 8 more events are stored and merged inline
                ingest_events(node.store, pn, evs[12:], [m.entry() for m in MIRRORS], source="y",
                              trusted=node.trusted, registry=node.registry, now="2026-11-23T00:00:00Z")
            return chunk

        monkeypatch.setattr(node.merges, "start", start_then_more_arrive)
        await node.merge_pending("x")
        assert started == 2  # the overtaken merge was started again
        want = merge(pn, evs, node.ring(), node.registry)
        assert node.store.subject(pn).state_sha256 == want["state_sha256"]
        assert node.store.unmerged_subjects() == [] and not node.unmerged and node.store.meta("unmerged") == ""


async def test_a_merge_failing_in_a_worker_leaves_the_subject_unmerged_and_stored(tmp_path: Path):
    import apsw

    from pithnode.store import StoreError

    async with nodes(tmp_path, 1, gossip_interval=3600.0, attest=False) as (a,):
        node = a.node
        pn, evs = synthetic_subject(REG, 3200, 10, MIRRORS)
        await bulk_stored(node, pn, evs)
        c = apsw.Connection(str(node.cfg.db_path))  # a damaged row: the worker cannot read it
        c.execute("UPDATE events SET body=x'28b52ffd00ff00ff' WHERE seq=(SELECT max(seq) FROM events)")
        c.close()
        with pytest.raises(StoreError, match="stored document is corrupt"):
            await node.merge_pending("x")
        assert node.unmerged == {pn} and node.store.unmerged_subjects() == [pn]
        assert node.store.meta("unmerged") == "1" and node.store.event_count() == 10


async def test_admission_workers_killed_before_or_during_a_sync_are_replaced(tmp_path: Path, monkeypatch):
    """A worker process killed (the OOM killer, a stray kill) breaks its pool: the
    work it held fails, nothing half-stored, no peer blamed, and new workers
    take the next round; the node keeps running."""
    import os
    import signal

    from pithnode.node.admission import AdmissionWorkers

    workers = AdmissionWorkers()
    if workers.pool is None:
        pytest.skip("one core: admission runs on a thread")

    def kill_workers() -> None:  # at once: work just started is still queued or running
        for pid in workers.pool.pids:  # type: ignore[union-attr]
            os.kill(pid, signal.SIGKILL)

    async with nodes(tmp_path, 3, workers=workers, gossip_interval=3600.0, attest=False) as (a, b, c):
        for i in range(4):
            await seed(a, 3300 + i, 30)
        kill_workers()
        await trio.sleep(0.2)
        fetched, _ = await b.peers.sync_with(a.url)  # new workers admit all of it
        assert fetched == 120 and b.node.store.unmerged_subjects() == []

        real_start = c.node.start_admission

        def start_then_kill(raw, keys):  # type: ignore[no-untyped-def]
            futures = real_start(raw, keys)
            kill_workers()  # while they admit
            return futures

        monkeypatch.setattr(c.node, "start_admission", start_then_kill)
        c.peers.add_peer(a.url, operator=True)
        await c.peers._guarded(a.url, c.peers.sync_with)  # logged; the node goes on
        assert c.node.store.event_count() == 0 and c.peers.peers[a.url].failures == 0
        pn, evs = synthetic_subject(REG, 3310, 300, MIRRORS)  # a push big enough for the workers
        r = await push(c.url, evs, [m.entry() for m in MIRRORS])
        assert r.status_code == 503 and r.headers["retry-after"] and c.node.store.event_count() == 0
        monkeypatch.setattr(c.node, "start_admission", real_start)
        await c.peers._guarded(a.url, c.peers.sync_with)
        for s in a.node.store.subjects():
            assert c.node.store.subject(s.pith_number).state_sha256 == s.state_sha256
        assert (await push(c.url, evs, [m.entry() for m in MIRRORS])).status_code == 200


async def test_a_sync_against_a_lying_peer_ends_within_its_round_caps(tmp_path: Path, monkeypatch):
    """A peer whose reconciliation never settles, or that names events it then
    will not serve, costs a bounded number of round trips, and nothing is stored."""
    import os

    from pithnode.core import reconcile
    from pithnode.node import gossip
    from pithnode.node import peer as peer_mod

    monkeypatch.setattr(reconcile, "MAX_REPLY_IDS", 20)
    monkeypatch.setattr(gossip, "MAX_NEED", 30)  # the sync steps (node/gossip.py)
    async with nodes(tmp_path, 2, gossip_interval=3600.0, attest=False) as (a, b):
        for i in range(10):
            await seed(a, 2100 + i, 30)
        await seed(b, 2200, 30)
        honest = a.peers.handle

        async def never_settles(kind: str, body: bytes, client: str) -> bytes:
            if kind != "reconcile":
                return await honest(kind, body, client)
            noise = reconcile.Range(reconcile._INF, reconcile.FINGERPRINT, fingerprint=os.urandom(reconcile.FP_BYTES))
            return peer_mod.encode({"v": 1, "msg": reconcile.encode([noise])})

        monkeypatch.setattr(a.peers, "handle", never_settles)
        before = b.peers.wire["requests"]
        assert await b.peers.sync_with(a.url) == (0, 0)
        assert b.peers.wire["requests"] - before <= peer_mod.MAX_IDLE_ROUNDS + 2

        async def withholds(kind: str, body: bytes, client: str) -> bytes:
            if kind == "events":
                return peer_mod.encode({"v": 1, "events": [], "keys": []})
            return await honest(kind, body, client)

        monkeypatch.setattr(a.peers, "handle", withholds)
        before = b.peers.wire["requests"]
        fetched, _pushed = await b.peers.sync_with(a.url)
        rounds = b.peers.wire["requests"] - before
        assert fetched == 0 and b.node.store.event_count() == 30
        assert rounds <= 8  # stopped at the first batch that brought nothing, not after 300 / 20 rounds


async def test_events_another_process_stored_are_offered_to_peers(tmp_path: Path, monkeypatch):
    """`pithnode import` may write to a running node's store. The node's
    reconciliation set takes those events too (it follows the store's seq, not
    the node's own writes), in place; it is built anew (on a thread) only when
    adding them would rewrite too much of it on the event loop."""
    from pithnode.ingest import ingest_bundle
    from pithnode.node import peer as peer_mod
    from pithnode.store import Store

    async with nodes(tmp_path, 2, gossip_interval=3600.0, attest=False) as (a, b):
        await seed(a, 1200, 20)
        assert await b.peers.sync_with(a.url) == (20, 0)
        built = await a.peers.reconcile_set()
        cfg = a.node.cfg

        def other_process_stores(n: int, events: int) -> str:
            pn, evs = synthetic_subject(REG, n, events, MIRRORS)
            with Store(cfg.db_path) as other:  # a second connection, as another process has
                ingest_bundle(other, REG.bundle(pn, evs, keys=MIRRORS), source="import", trusted=cfg.trusted_ring(),
                              registry=cfg.registry, now="2026-11-23T00:00:00Z")
            return pn

        pn = other_process_stores(1201, 15)
        assert await b.peers.sync_with(a.url) == (15, 0)
        assert await a.peers.reconcile_set() is built and len(built) == 35  # grown in place
        assert b.node.store.subject(pn).state_sha256 == a.node.store.subject(pn).state_sha256

        # events dated among those held (not after them all) would rewrite part of the
        # set; over the limit, the set is built anew instead
        monkeypatch.setattr(peer_mod, "SET_MAX_REWRITE", 0)
        pn = other_process_stores(1202, 12)
        assert await b.peers.sync_with(a.url) == (12, 0)
        again = await a.peers.reconcile_set()
        assert again is not built and len(again) == 47 and len(built) == 35
        assert b.node.store.subject(pn).state_sha256 == a.node.store.subject(pn).state_sha256


async def test_a_cancelled_wait_for_admission_returns_at_once_and_cancels_work_not_started(tmp_path: Path):
    """The node waits for its workers' results on the event loop (the future wakes it), not in a thread
    parked on each result: a cancelled wait returns at once, and work not started is not run."""
    import threading
    from concurrent.futures import Future

    from nodes import node_config
    from pithnode.node.admission import AdmissionWorkers
    from pithnode.node.service import Node

    node = Node(node_config(tmp_path, "n"), workers=AdmissionWorkers(processes=0))
    pending: Future[list] = Future()  # admission work no worker has taken yet
    finish = threading.Timer(10, lambda: pending.done() or pending.set_result([]))  # bounds a wait that ignores
    finish.start()  # its cancellation
    try:
        with trio.fail_after(60), trio.move_on_after(0.2) as waited:
            await node.apply_admitted([pending], [], source="x")
        assert waited.cancelled_caught
        assert pending.cancelled()  # not waited for to its end: cancelled, and no thread left waiting on it
        assert node.store.event_count() == 0
    finally:
        finish.cancel()
        node.close()


def test_a_document_dropped_from_the_cache_is_not_found_by_its_path_either():
    """One cache: the server's index of documents by request path points into it, so a document
    that leaves it (changed, or least recently used past its byte cap) is gone for both."""
    from pithnode.node.cache import DocumentCache

    cache = DocumentCache(max_bytes=100)
    a = cache.get(("pith:A", "state"), lambda: b"a" * 60, version="v1")
    cache.served_at("/pith/A/state.json", 1, "state", a)
    assert cache.at_path("/pith/A/state.json", 1) == ("state", a)
    assert cache.at_path("/pith/A/state.json", 2) is None  # the store changed since
    cache.get(("pith:B", "state"), lambda: b"b" * 60, version="v1")  # over 100 bytes: A is dropped
    assert cache.at_path("/pith/A/state.json", 1) is None
    b = cache.get(("pith:B", "state"), lambda: b"never built", version="v1")
    cache.served_at("/pith/B/state.json", 1, "state", b)
    cache.forget({"pith:B"})  # its record took events
    assert cache.at_path("/pith/B/state.json", 1) is None
