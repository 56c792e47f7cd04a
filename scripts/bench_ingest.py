#!/usr/bin/env python3
"""Ingest benchmark: import N synthetic events end to end (bundle bytes ->
parse -> checks -> admission -> SQLite -> merge) into a fresh store, and the
bare single-thread PyNaCl verify rate on the very same signatures, measured
in the same run. Target: ingest >= 0.5x bare verify; goal beyond: >= 1.0x
with the checks in worker processes (one per core).

    python scripts/bench_ingest.py [--events 50000] [--per-subject 40] [--json]

`--against DIR` imports the same bundles (checks in workers) alternately with
this tree's code and with the `pithnode` package in DIR (the code before a
change), `--rounds` times each, each import in a fresh process, each rate
over the bare verify rate measured just before it.

    python scripts/bench_ingest.py --against DIR [--rounds 3] [--events 40000]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pithnode.core import canonical_bytes
from pithnode.ingest import ingest_bundle, import_bundles, parse_bundle
from pithnode.store import Store
from pithnode.testing.synth import Signer, SynthMirror, SynthRegistry, synthetic_subject


def make_bundles(n_events: int, per_subject: int) -> tuple[list[bytes], list[tuple[bytes, bytes, bytes]]]:
    reg = SynthRegistry()
    mirrors = [SynthMirror("bench-a"), SynthMirror("bench-b")]
    bundles, sigs = [], []
    for n in range(max(1, n_events // per_subject)):
        pn, events = synthetic_subject(reg, 10_000 + n, per_subject, mirrors)
        sigs += signatures(events, [reg, *mirrors])
        bundles.append(canonical_bytes(reg.bundle(pn, events, keys=mirrors)))
    return bundles, sigs, reg


def signatures(events: list[dict[str, Any]], signers: list[Signer]) -> list[tuple[bytes, bytes, bytes]]:
    """(public key, signed digest, signature) of each event: all a bare verify needs, as bytes."""
    keys = {s.fingerprint: s.raw for s in signers}
    return [(keys[e["signer"]["public_key_fingerprint"]], bytes.fromhex(e["content_sha256"]),
             base64.b64decode(e["signature"]["signature_b64"])) for e in events]


def bare_verify_rate(sigs: list[tuple[bytes, bytes, bytes]]) -> float:
    from nacl.signing import VerifyKey

    vks: dict[bytes, VerifyKey] = {}
    t = time.perf_counter()
    for raw, msg, sig in sigs:
        vk = vks.get(raw) or vks.setdefault(raw, VerifyKey(raw))
        vk.verify(msg, sig)
    return len(sigs) / (time.perf_counter() - t)


def run_import(bundles: list[bytes], reg: SynthRegistry, pipelined: bool, workers: int | None = None) -> float:
    trusted = reg.ring()
    registry = frozenset({reg.fingerprint})
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "bench.sqlite3", durability="full") as store:
        t = time.perf_counter()
        if pipelined:
            items = [(f"b{i}", (lambda b=b: b)) for i, b in enumerate(bundles)]
            for _src, res in import_bundles(store, items, trusted=trusted, registry=registry,
                                            now=lambda: "2026-11-23T00:00:00Z", workers=workers):
                assert not isinstance(res, Exception), res
        else:
            for i, b in enumerate(bundles):
                ingest_bundle(store, parse_bundle(b), source=f"b{i}", trusted=trusted, registry=registry,
                              now="2026-11-23T00:00:00Z")
        elapsed = time.perf_counter() - t
        n = store.event_count()
    return n / elapsed


def against(args: argparse.Namespace) -> int:
    print(f"signing {args.events} events...", file=sys.stderr)
    bundles, sigs, _reg = make_bundles(args.events, args.per_subject)
    here = str(Path(__file__).resolve().parent.parent)
    ratios: dict[str, list[float]] = {"before": [], "now": []}
    cpu: dict[str, list[float]] = {"before": [], "now": []}  # the importing process's CPU per event (us)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "bundles.pickle"
        data.write_bytes(pickle.dumps(bundles))
        for r in range(args.rounds):
            for side, path in (("before", args.against), ("now", here)):
                print(f"round {r + 1}/{args.rounds}: {side}...", file=sys.stderr)
                verify = bare_verify_rate(sigs)
                out = subprocess.run([sys.executable, __file__, "--child", str(data)], check=True,
                                     capture_output=True, env={**os.environ, "PYTHONPATH": path}).stdout
                rate, cpu_us = json.loads(out)
                ratios[side].append(rate / verify)
                cpu[side].append(cpu_us)
    mid = {side: sorted(rs)[len(rs) // 2] for side, rs in ratios.items()}
    mid_cpu = {side: sorted(cs)[len(cs) // 2] for side, cs in cpu.items()}
    if args.json:
        print(json.dumps({"events": len(sigs), "rounds": args.rounds, "ratios": ratios, "median": mid,
                          "parent_cpu_us": cpu, "median_parent_cpu_us": mid_cpu}, indent=2))
        return 0
    print(f"pithnode import of {len(sigs)} events ({len(bundles)} bundles), checks in workers, over bare verify; "
          f"{args.rounds} alternating rounds; before = {args.against}")
    for side in ("before", "now"):
        print(f"  {side:6} {', '.join(f'{x:.3f}' for x in ratios[side])}  (median {mid[side]:.3f})")
    print(f"  now / before (medians): {mid['now'] / mid['before']:.3f}")
    print("the importing process's own CPU per event (us; it decides and commits, the workers check):")
    for side in ("before", "now"):
        print(f"  {side:6} {', '.join(f'{x:.1f}' for x in cpu[side])}  (median {mid_cpu[side]:.1f})")
    print(f"  now / before (medians): {mid_cpu['now'] / mid_cpu['before']:.3f}")
    return 0


def child(path: str) -> int:
    """One import of the pickled bundles (for --against); prints its rate and this process's CPU per event."""
    bundles = pickle.loads(Path(path).read_bytes())
    events = sum(len(json.loads(b)["events"]) for b in bundles)
    cpu = time.process_time()
    rate = run_import(bundles, SynthRegistry(), pipelined=True)
    print(json.dumps([rate, (time.process_time() - cpu) * 1e6 / events]))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--per-subject", type=int, default=40)
    ap.add_argument("--workers", type=int, default=None, help="checking processes (default: one per core)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--against", metavar="DIR", help="compare with the pithnode package in DIR, alternately")
    ap.add_argument("--rounds", type=int, default=3, help="with --against: alternating rounds (default 3)")
    ap.add_argument("--child", metavar="FILE", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child)
    if args.against:
        return against(args)
    print(f"signing {args.events} events...", file=sys.stderr)
    bundles, sigs, reg = make_bundles(args.events, args.per_subject)
    verify = bare_verify_rate(sigs)
    sequential = run_import(bundles, reg, pipelined=False)
    pipelined = run_import(bundles, reg, pipelined=True, workers=args.workers)
    verify_after = bare_verify_rate(sigs)  # the machine is noisy: measure the reference on both sides
    ref = (verify + verify_after) / 2
    out = {
        "events": len(sigs), "subjects": len(bundles), "bare_verify_per_s": round(ref),
        "ingest_sequential_per_s": round(sequential), "ingest_pipelined_per_s": round(pipelined),
        "ratio_sequential": round(sequential / ref, 3), "ratio_pipelined": round(pipelined / ref, 3),
        "target_0_5x": pipelined / ref >= 0.5, "goal_1_0x": pipelined / ref >= 1.0,
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"events {out['events']} over {out['subjects']} subjects (durability=full)")
        print(f"bare PyNaCl verify, one thread: {ref:10.0f} /s")
        print(f"ingest, sequential:             {sequential:10.0f} /s  ratio {out['ratio_sequential']:.2f}x")
        print(f"ingest, checks in workers:      {pipelined:10.0f} /s  ratio {out['ratio_pipelined']:.2f}x")
        print(f"target >= 0.5x: {'PASS' if out['target_0_5x'] else 'FAIL'};"
              f" goal >= 1.0x: {'PASS' if out['goal_1_0x'] else 'not reached'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
