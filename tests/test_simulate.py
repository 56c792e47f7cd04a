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

from pithnode.node.gossip import KEPT_PEERS, ROUND_PEERS, PeerTable
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
                          "0.2", "--partition", "0.5", "--seed", "4", "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    for key in ("honest_reached_all", "rounds_to_all_honest", "equivocation_known_by_all_honest_rounds",
                "bytes_per_node_per_event", "messages_per_node_per_round", "after_heal"):
        assert key in res
    bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "simulate.py"), "--byzantine", "1.5"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "fraction" in bad.stderr
