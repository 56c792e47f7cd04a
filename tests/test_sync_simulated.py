"""Sync, resolve and the poller against in-memory mirrors (tests/mirror_simulator.py):
the attacks a mirror client resists, without sockets. tests/test_sync.py runs the
same paths over real loopback servers and the real CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from helpers import MIRRORS, REG, config
from mirror_simulator import Behaviour, MirrorSimulator

from pithnode.core import mirror_hint_entry
from pithnode.store import Store
from pithnode.sync import SyncReport, resolve, sync
from pithnode.testing.synth import synthetic_subject

A, B, C, D, E = (f"https://{n}.test" for n in "abcde")
BUILT = "2026-03-01T00:00:00Z"


def path_of(pn: str) -> str:
    return f"/pith/{pn.rsplit(':', 1)[-1]}/bundle.json"


def bundle(pn: str, events: list[dict[str, Any]], base: str, **kw: Any) -> dict[str, Any]:
    return REG.bundle(pn, events, keys=MIRRORS, base_url=base, **{"built_at": BUILT, **kw})


async def run_sync(tmp: Path, sim: MirrorSimulator, text: str, mirrors: list[str], *,
                   sync_timeout: float = 60.0, now: str = "2026-03-10T00:00:00Z") -> SyncReport:
    cfg = config(tmp)
    with trio.fail_after(sync_timeout + 5), Store(cfg.db_path) as store:
        return await sync(text, store=store, fetcher=sim, mirrors=mirrors, trusted=cfg.trusted_ring(),
                          registry=cfg.registry, max_bytes=200_000, now=lambda: now, timeout=sync_timeout)


def by_host(rep: SyncReport) -> dict[str, Any]:
    return {s.url.split("/pith/")[0]: s for s in rep.sources}


async def test_slow_endless_failing_and_redirecting_mirrors(tmp_path: Path, autojump_clock: Any) -> None:
    pn, events = synthetic_subject(REG, 8000, 8, MIRRORS)
    path = path_of(pn)
    sim = MirrorSimulator(total_timeout=30.0)
    for base in (A, B, C, D, E):
        sim.add(base)
    sim.mirrors[A].publish(path, bundle(pn, events, A))
    sim.mirrors[B].behaviours[path] = Behaviour(hang=True)
    sim.mirrors[C].behaviours[path] = Behaviour(status=500)
    sim.mirrors[D].behaviours[path] = Behaviour(endless=True)
    sim.mirrors[E].behaviours[path] = Behaviour(redirect=f"{A}{path}")
    rep = await run_sync(tmp_path, sim, pn, [A, B, C, D, E])
    out = by_host(rep)
    assert out[A].error is None and out[A].agrees
    assert "no complete answer within 30 s" in out[B].error
    assert "HTTP 500" in out[C].error
    assert "over the cap of 200000" in out[D].error
    assert out[E].error is None and out[E].agrees  # followed to A's copy
    assert rep.event_count == 8 and rep.all_agree


async def test_a_mirror_slower_than_the_sync_deadline_is_given_up(tmp_path: Path, autojump_clock: Any) -> None:
    pn, events = synthetic_subject(REG, 8100, 6, MIRRORS)
    path = path_of(pn)
    sim = MirrorSimulator(total_timeout=3600.0)
    sim.add(A).publish(path, bundle(pn, events, A))
    sim.add(B).publish(path, bundle(pn, events, B))
    sim.mirrors[B].behaviours[path] = Behaviour(trickle=1.0)  # a byte a second: within no per-read timeout
    t0 = trio.current_time()
    rep = await run_sync(tmp_path, sim, pn, [A, B], sync_timeout=20.0)
    assert trio.current_time() - t0 == pytest.approx(20.0)
    assert "no answer within the sync's deadline of 20 s" in by_host(rep)[B].error
    assert rep.event_count == 6 and by_host(rep)[A].agrees


async def test_redirect_loop_is_an_error(tmp_path: Path) -> None:
    pn, events = synthetic_subject(REG, 8200, 4, MIRRORS)
    path = path_of(pn)
    sim = MirrorSimulator()
    sim.add(A).behaviours[path] = Behaviour(redirect=path)
    rep = await run_sync(tmp_path, sim, pn, [A])
    assert "more than 5 redirects" in by_host(rep)[A].error
    assert not rep.replicated and rep.error and "no source gave a usable bundle" in rep.error
    assert len(sim.requests) == 6


async def test_rollback_and_freeze_are_flagged_and_the_union_kept(tmp_path: Path) -> None:
    pn, events = synthetic_subject(REG, 8300, 12, MIRRORS)
    path = path_of(pn)
    sim = MirrorSimulator()
    sim.add(A).publish(path, bundle(pn, events, A))
    sim.add(B).publish(path, bundle(pn, events, B))
    first = await run_sync(tmp_path, sim, pn, [A, B])
    assert first.event_count == 12 and all(not s.flags for s in first.sources)
    # A withholds two events it served (re-signed: authentic, yet a rollback) and stays at its
    # built_at while B moves on more than 48 hours
    sim.mirrors[A].publish(path, bundle(pn, events[:-2], A))
    sim.mirrors[B].publish(path, bundle(pn, events, B, built_at="2026-03-09T00:00:00Z"))
    await run_sync(tmp_path, sim, pn, [A, B])
    rep = await run_sync(tmp_path, sim, pn, [A, B])
    out = by_host(rep)
    assert "rollback" in out[A].flags and "stale" in out[A].flags and not out[B].flags
    assert rep.event_count == 12 and not out[A].agrees and out[B].agrees and not rep.all_agree


async def test_mix_and_match_bundle_of_another_record_is_refused(tmp_path: Path) -> None:
    pn, events = synthetic_subject(REG, 8400, 6, MIRRORS)
    other_pn, other_events = synthetic_subject(REG, 8401, 6, MIRRORS)
    path = path_of(pn)
    sim = MirrorSimulator()
    sim.add(A).publish(path, bundle(pn, events, A))
    sim.add(B).publish(path, bundle(other_pn, other_events, B))  # authentic, but not the record asked for
    rep = await run_sync(tmp_path, sim, pn, [A, B])
    assert by_host(rep)[B].error == f"bundle is for {other_pn}, not the requested record"
    assert rep.pith_number == pn and rep.event_count == 6 and rep.all_agree
    cfg = config(tmp_path)
    with Store(cfg.db_path) as store:
        assert store.subject(other_pn) is None  # nothing of it was stored


async def test_disagreeing_mirror_found_through_a_hint_gives_equivocation_evidence(tmp_path: Path) -> None:
    pn, events = synthetic_subject(REG, 8500, 16, MIRRORS)
    code = pn.rsplit(":", 1)[-1]
    path = path_of(pn)
    graphs = [e for e in events if e["event_type"] == "graph_snapshot"]
    rival = REG.graph_snapshot(pn, "2026-05-05T00:00:00Z", prev=graphs[-2], n_claims=7)
    hint = mirror_hint_entry("b", B, code)
    sim = MirrorSimulator()
    sim.add(A).publish(path, bundle(pn, events, A, mirror_hints=[hint]))
    sim.add(B).publish(path, bundle(pn, [*events, rival], B))
    rep = await run_sync(tmp_path, sim, pn, [A])  # B is only named by A's bundle
    assert [s.url for s in rep.sources] == [f"{A}{path}", hint["bundle_url"]]
    assert len(rep.equivocations) == 1
    assert set(rep.equivocations[0]["event_ids"]) == {rival["event_id"], graphs[-1]["event_id"]}
    assert not rep.all_agree


async def test_resolve_takes_the_first_mirror_that_knows_and_waits_for_no_stalled_one(
        tmp_path: Path, autojump_clock: Any) -> None:
    pn, _ = synthetic_subject(REG, 8600, 4, MIRRORS)
    sim = MirrorSimulator(total_timeout=3600.0)
    sim.add(A).behaviours["/api/pith-number/resolve"] = Behaviour(hang=True)
    sim.add(B)  # does not know it: 404
    sim.add(C).resolve["2607.00001"] = pn
    cfg = config(tmp_path)
    with Store(cfg.db_path) as store:
        t0 = trio.current_time()
        target = await resolve("10.48550/arXiv.2607.00001", mirrors=[A, B, C], store=store, fetcher=sim, max_bytes=10_000)
        assert trio.current_time() == t0  # the stalled mirror was cancelled, not waited for
        assert target.pith_number == pn and target.how == f"arXiv 2607.00001 via {C}"
        assert target.bundle_urls == [f"{m}{path_of(pn)}" for m in (A, B, C)]
        sim.mirrors[C].resolve.clear()
        with pytest.raises(Exception, match="did not resolve: .*HTTP 404"):
            with trio.fail_after(7200):
                await resolve("2607.00001", mirrors=[B, C], store=store, fetcher=sim, max_bytes=10_000)


async def test_poller_uses_conditional_requests_and_backs_off_a_failing_host(tmp_path: Path) -> None:
    from nodes import node_config

    from pithnode.node.poller import Poller
    from pithnode.node.service import Node

    pn, events = synthetic_subject(REG, 8700, 6, MIRRORS)
    url = f"{A}{path_of(pn)}"
    code = pn.rsplit(":", 1)[-1]
    sim = MirrorSimulator()
    sim.add(A).publish(path_of(pn), bundle(pn, events, A))
    node = Node(node_config(tmp_path, "poll"))
    try:
        poller = Poller(node, sim)
        with trio.fail_after(60):
            await poller.poll_url(url, code)
            assert node.store.subject(pn) is not None and node.store.subject(pn).followed
            await poller.poll_url(url, code)
            assert node.metrics.registry.get_sample_value("pithnode_fetches_total", {"outcome": "not_modified"}) == 1
            sim.mirrors[A].behaviours[path_of(pn)] = Behaviour(status=503, retry_after=120.0)
            t0 = trio.current_time()
            await poller.poll_url(url, code)
            asked = len(sim.requests)
            await poller.poll_url(url, code)  # the host is backed off: not asked again
            assert len(sim.requests) == asked == 3
            assert poller.backoff.until["a.test"] >= t0 + 120.0  # Retry-After honoured
            src = node.store.source(url)
            assert src is not None and src.last_error == f"{url}: HTTP 503" and src.failures == 1
    finally:
        node.close()
