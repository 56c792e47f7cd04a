"""Small simulated networks (pithnode/testing/sim.py): the shipped peer logic over an
in-memory network reaches every honest node and spreads equivocation
reports, with Byzantine peers, churn and a healed partition; the peer choice
itself (node/gossip.py)."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest

from pithnode.node.gossip import DISCOVER_PICKS, KEPT_PEERS, ROUND_PEERS, PeerTable
from pithnode.node.peer import answer_cap
from pithnode.testing.sim import BYZANTINE_KINDS, Network, World, simulate

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def world() -> World:
    return World.make(30)


def bound(n: int) -> float:
    return math.log2(n) + 2


def test_a_third_byzantine_cannot_stop_an_event_nor_hide_a_fork(world: World) -> None:
    res = simulate(nodes=48, byzantine=0.3, seed=3, world=world)
    assert res["honest_reached_all"] and res["rounds_to_all_honest"] <= bound(48)
    assert res["equivocation_known_by_all_honest_rounds"] <= bound(48)
    # the node whose whole peer list is Byzantine still gets it (honest peers reconcile with it)
    assert res["eclipsed_node_rounds"] is not None


def test_every_kind_of_byzantine_peer_is_in_the_network(world: World) -> None:
    net = Network(nodes=40, byzantine=0.3, seed=2, world=world)
    assert {n.kind for n in net.byz} == set(BYZANTINE_KINDS)
    assert all(net.nodes[net.index[u]].kind for u in net.eclipsed.peers)  # type: ignore[union-attr]
    for _ in range(3):
        net.step()
    # peers answering garbage or over-large messages failed and were backed off from
    broken = [st for n in net.honest for u, st in n.peers.items()
              if net.nodes[net.index[u]].kind in ("garbage", "oversized")]
    assert broken and all(st.failures > 0 or not st.healthy for st in broken)
    # fresh-key floods are admitted only within a stranger's budget, and only valid events
    assert all(set(n.bodies) <= set(net.base_bodies) | set(net.junk_by_id) for n in net.honest)


def test_a_healed_partition_converges_and_churn_does_not_stop_it(world: World) -> None:
    res = simulate(nodes=40, partition=0.5, churn=0.2, seed=5, world=world)
    assert res["honest_reached_all"] and res["equivocation_known_by_all_honest_rounds"] is not None
    heal = res["after_heal"]
    assert heal["honest_reached_all"] and heal["rounds_to_all_honest"] <= bound(40)


def test_an_event_costs_each_node_about_its_size_once_exchanges_do_not_overlap(world: World) -> None:
    """Jittered (the node's independent timers), no Byzantine node: every byte of
    every message per event a node took in stays within twice the event's size;
    in lockstep, within three times (what it is spent on: docs/SCALE.md)."""
    jittered = simulate(nodes=48, seed=3, world=world, lockstep=False)
    assert jittered["honest_reached_all"] and jittered["bytes_ratio_to_event"] <= 2
    assert simulate(nodes=48, seed=3, world=world)["bytes_ratio_to_event"] <= 3


def test_a_hostile_peer_costs_each_honest_node_one_capped_answer_at_most(world: World) -> None:
    """Peers answering over the cap of what was asked are read up to that cap (one
    event's worth: the first request to a stranger asks one id), dropped at once
    and not learned again; peers that lack everything and do not count what they
    are pushed get one event (not checked here: nothing new is pushed). Among
    honest nodes an event still costs about its size."""
    net = Network(nodes=40, byzantine=0.3, seed=2, world=world, lockstep=False)
    for _ in range(12):
        net.step()
    oversized = [n for n in net.byz if n.kind == "oversized"]
    one_answer = answer_cap("events", {"ids": ["sha256:" + "0" * 64]}) + 1
    over = sum(v for k, v in net.wire.items() if k.endswith("over its cap"))
    assert 0 < over <= len(net.honest) * len(oversized) * one_answer
    met = [st for n in net.honest for st in n.peers.values() if st.url in {m.url for m in oversized}]
    assert all(st.failures == 0 and st.last_ok is None for st in met)  # the ones left were never asked yet
    assert sum(len(n.peers.banned) for n in net.honest) >= over // one_answer  # every one read was banned
    res = simulate(nodes=48, byzantine=0.3, seed=3, world=world, lockstep=False)
    assert res["honest_exchanges_ratio_to_event"] <= 2


def test_discovery_draws_a_few_mirrors_at_random_each_hint_its_own_source() -> None:
    table = PeerTable("https://me.test")
    hints = [f"https://hint{i}.test" for i in range(2_000)]
    rng = random.Random(4)
    for _ in range(10):
        assert len(table.learn(hints, None, rng)) == DISCOVER_PICKS
    assert len(table) == 10 * DISCOVER_PICKS  # not 4 places for all hints together
    assert len({int(u.removeprefix("https://hint").removesuffix(".test")) // 100 for u in table}) > 5  # all over
    listed = [f"https://listed{i}.test" for i in range(50)]
    for _ in range(5):
        table.learn(listed, "https://lister.test", rng)
    assert len([u for u in table if "listed" in u]) == 4  # one lister: 4 places
    url = next(u for u in table if "hint" in u)
    table.failed(table[url], "over the cap", 0.0, rng, drop=True)
    assert url not in table and not table.learn([url], None, rng) and not table.add(url)[0]
    assert table.add(url, operator=True)[0]  # the operator decides


def test_the_same_seed_gives_the_same_run(world: World) -> None:
    a, b = (simulate(nodes=24, byzantine=0.2, seed=9, world=world) for _ in range(2))
    a.pop("cpu_seconds"), b.pop("cpu_seconds")
    assert a == b


def test_a_round_keeps_the_peers_that_brought_news_and_draws_the_rest() -> None:
    table = PeerTable("https://me.test")
    table.add("https://op.test", operator=True)
    for i in range(20):
        table.add(f"https://p{i}.test", via=f"source {i}")
    for i, url in enumerate(["https://p3.test", "https://p7.test", "https://p9.test"]):
        table.succeeded(table[url], "now", news_at=float(i))
    rng = random.Random(1)
    rounds = [table.round_peers(100.0, rng) for _ in range(30)]
    for chosen in rounds:
        assert chosen[0] == "https://op.test" and len(chosen) == 1 + ROUND_PEERS
        assert chosen[1:1 + KEPT_PEERS] == ["https://p9.test", "https://p7.test"]  # newest news first
    assert len({u for chosen in rounds for u in chosen[1 + KEPT_PEERS:]}) > 8  # the others vary


def test_events_from_peers_are_pushed_on_to_operator_peers_only() -> None:
    table = PeerTable("https://me.test")
    table.add("https://op.test", operator=True)
    for i in range(10):
        table.add(f"https://p{i}.test", via=f"source {i}")
    items = [("sha256:own", None), ("sha256:relayed", "https://p1.test")]
    targets = table.push_targets(items, 0.0, random.Random(1))
    assert targets.pop("https://op.test") == ["sha256:own", "sha256:relayed"]
    assert len(targets) == ROUND_PEERS and all(ids == ["sha256:own"] for ids in targets.values())


def test_the_script_prints_one_json_object_and_refuses_bad_usage() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "simulate.py"), "--nodes", "20", "--byzantine",
                          "0.2", "--partition", "0.5", "--seed", "4", "--json"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    for key in ("honest_reached_all", "rounds_to_all_honest", "equivocation_known_by_all_honest_rounds",
                "bytes_per_node_per_event", "messages_per_node_per_round", "after_heal"):
        assert key in res
    bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "simulate.py"), "--byzantine", "1.5"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "fraction" in bad.stderr
