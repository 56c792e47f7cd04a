#!/usr/bin/env python3
"""Hostile pushes against a real node over loopback: successive pushes of N
events, each on a new record signed by a new key (the subjects x keys case).
Per push: its wall time and the longest event-loop stall seen meanwhile (a
task that wakes every 10 ms notes how late it woke).

    python scripts/bench_hostile.py [--events N] [--pushes P] [--against DIR] [--json]

With `--against DIR` (a checkout of other code, e.g. `git archive main`), the
same run is made by this code and by DIR's in alternating child processes and
the ratios are printed: load from others on a shared machine hits both sides.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import msgpack
import trio

ROOT = Path(__file__).resolve().parent.parent


async def one_run(events: int, pushes: int) -> dict[str, list[float]]:
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import MIRRORS, REG  # noqa: F401  (the synthetic registry the node trusts)
    from nodes import node_config
    from pithnode.config import Config
    from pithnode.core import canonical_bytes
    from pithnode.node.runner import run_node
    from pithnode.testing.synth import SynthMirror

    budgets = {k: 10**9 for k in ("peer_new_records_per_hour", "peer_new_keys_per_hour")
               if k in {f.name for f in dataclasses.fields(Config)}}  # older code has none: nothing to lift
    bodies = []
    for p in range(pushes):
        evs, keys = [], []
        for i in range(events):
            s = SynthMirror(f"bench-stranger-{p}-{i}")
            pn, _ = REG.record_created(100_000 + p * events + i)
            evs.append(canonical_bytes(s.citation(pn, "2026-05-01T00:00:00Z", i)))
            keys.append(s.entry())
        bodies.append(msgpack.packb({"v": 1, "events": evs, "keys": keys}, use_bin_type=True))
    out: dict[str, list[float]] = {"push_s": [], "stall_s": []}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = node_config(Path(tmp), "n", attest=False, peer_rate_limit=0.0, **budgets)
        async with trio.open_nursery() as nursery:
            running = await nursery.start(run_node, cfg)
            worst = [0.0]

            async def watch() -> None:
                while True:
                    t = trio.current_time()
                    await trio.sleep(0.01)
                    worst[0] = max(worst[0], trio.current_time() - t - 0.01)

            nursery.start_soon(watch)
            async with httpx.AsyncClient(timeout=600) as client:
                for body in bodies:
                    worst[0] = 0.0
                    t = time.perf_counter()
                    r = await client.post(f"{running.url}/peer/v1/push", content=body)
                    assert r.status_code == 200, r.text
                    out["push_s"].append(round(time.perf_counter() - t, 3))
                    out["stall_s"].append(round(worst[0], 3))
            running.shutdown.set()
            nursery.cancel_scope.cancel()
    return out


def child(code: Path, events: int, pushes: int) -> dict[str, list[float]]:
    env = dict(os.environ, PYTHONPATH=f"{code}{os.pathsep}{ROOT / 'tests'}")
    proc = subprocess.run([sys.executable, __file__, "--child", "--events", str(events), "--pushes", str(pushes)],
                          env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--pushes", type=int, default=4)
    ap.add_argument("--against", type=Path)
    ap.add_argument("--pairs", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", action="store_true")
    args = ap.parse_args()
    if args.child or args.against is None:
        res = trio.run(one_run, args.events, args.pushes)
        print(json.dumps(res))
        return
    runs: dict[str, list[dict[str, list[float]]]] = {"this": [], "against": []}
    for _ in range(args.pairs):
        runs["this"].append(child(ROOT, args.events, args.pushes))
        runs["against"].append(child(args.against.resolve(), args.events, args.pushes))
    if args.json:
        print(json.dumps(runs))
        return
    for side, results in runs.items():
        for r in results:
            print(f"{side:8} push s {r['push_s']}  longest stall s {r['stall_s']}")
    this, other = runs["this"][-1], runs["against"][-1]
    print("last push, this / against: time x%.3f, stall x%.3f" % (
        this["push_s"][-1] / other["push_s"][-1], this["stall_s"][-1] / max(other["stall_s"][-1], 1e-3)))


if __name__ == "__main__":
    main()
