#!/usr/bin/env python3
"""Core benchmark, one thread, everything measured in the same run.

Signs N synthetic events over S subjects with test keys (pithnode.testing.synth), then
measures on those very events:

  verify     bare PyNaCl: VerifyKey.verify(32 raw digest bytes, signature),
             one VerifyKey per signer built beforehand (as the key ring does)
  admission  the core's `admit` on each event (format checks, canonical JSON,
             content hash, key lookup, the same Ed25519 verify)
  merge      the core's `merge` of every subject, per event

and then merges a 1,000-event and a 10,000-event subject, built separately,
with the rest of the data set freed first. Their runs alternate, so each
starts with the other's data in the caches, as merges of different subjects
do on a node (run back to back, the 1,000-event subject would find itself
still cache-resident from its own previous run, which the 10,000-event one,
at ~25 MB of events, cannot). Each figure is the best of several runs: the
machine's other load only ever adds time.

Targets (printed PASS/FAIL; the exit status is 1 when one fails):
  admission rate >= 0.55 x bare verify rate
  merge time per event <= 0.3 x verify time per event
  merge(10,000-event subject) <= 12 x merge(1,000-event subject)

`--steps` times admission and the merge one step at a time instead (us per
event, best of `--runs`): parse, shape checks, CJ of the content and of the
event, hash, verify, and for the merge the parse of stored bodies and
`merge_document`. `--against DIR` runs it alternately (`--rounds` times each)
on this tree's code and on the `pithnode` package found in DIR (say, a `git
worktree` of the code before a change), each in its own process, and prints
both side by side, best of all rounds, with their ratio: load from elsewhere
hits both sides alike.

    python scripts/bench_core.py [--events 20000] [--subjects 200] [--json]
    python scripts/bench_core.py --steps [--against DIR --rounds 3] [--events 4000]
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nacl
from nacl.signing import VerifyKey

from pithnode.core import KeyRing, admit, merge
from pithnode.testing.synth import SynthMirror, SynthRegistry, synthetic_subject

TARGET_ADMIT = 0.55
TARGET_MERGE = 0.3
TARGET_SCALING = 12.0


def timed(fn: Callable[[], Any]) -> float:
    gc.collect()
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def throughput(n_events: int, n_subjects: int, runs: int, reg: SynthRegistry, mirrors: list[SynthMirror],
               ring: KeyRing, registry: frozenset[str]) -> tuple[int, float, float, float, float]:
    """Sign the events, then (events, signing s, verify s, admission s, merge s), best of `runs`."""
    print(f"signing {n_events} events over {n_subjects} subjects...", file=sys.stderr)
    t0 = time.perf_counter()
    per = n_events // n_subjects
    extra = n_events - per * n_subjects
    subjects = [synthetic_subject(reg, 20_000 + i, per + (1 if i < extra else 0), mirrors) for i in range(n_subjects)]
    t_sign = time.perf_counter() - t0
    events = [(pn, e) for pn, evs in subjects for e in evs]
    n = len(events)
    vks = {s.fingerprint: VerifyKey(s.raw) for s in (reg, *mirrors)}
    sigs = [(vks[e["signer"]["public_key_fingerprint"]], bytes.fromhex(e["content_sha256"]),
             base64.b64decode(e["signature"]["signature_b64"])) for _, e in events]

    def verify_all() -> None:
        for vk, msg, sig in sigs:
            vk.verify(msg, sig)

    def admit_all() -> None:
        for pn, e in events:
            if not admit(e, pn, ring).admitted:
                raise SystemExit(f"event {e['event_id']} not admitted")

    def merge_all() -> None:
        for pn, evs in subjects:
            merge(pn, evs, ring, registry)

    # interleave the three so that a burst of outside load hits them alike
    t_verify = t_admit = t_merge = float("inf")
    for _ in range(runs):
        t_verify = min(t_verify, timed(verify_all))
        t_admit = min(t_admit, timed(admit_all))
        t_merge = min(t_merge, timed(merge_all))

    return n, t_sign, t_verify, t_admit, t_merge


def steps(n_events: int, n_subjects: int, runs: int) -> dict[str, float]:
    """us per event of each step of admission and of the merge, timed one at a time."""
    from pithnode.core import canonical, canonical_bytes, merge_document, parse_json, sha256_hex
    from pithnode.core.events import content_of, malformed_reason

    # what admission serializes the content with (the fast path's name; before it, canonical_bytes)
    cj_checked = getattr(canonical, "admissible_bytes", canonical_bytes)
    reg, mirrors = SynthRegistry(), [SynthMirror("bench-a"), SynthMirror("bench-b")]
    ring = reg.ring()
    for m in mirrors:
        ring.add_raw(m.raw, m.key_id)
    registry = frozenset({reg.fingerprint})
    per = max(2, n_events // n_subjects)
    subjects = [synthetic_subject(reg, 30_000 + i, per, mirrors) for i in range(n_subjects)]
    wire = [(pn, canonical_bytes(e)) for pn, evs in subjects for e in evs]  # events as they arrive
    n = len(wire)
    events = [(pn, parse_json(b)) for pn, b in wire]
    contents = [content_of(e) for _, e in events]
    content_bytes = [cj_checked(c) for c in contents]
    vks = {s.fingerprint: VerifyKey(s.raw) for s in (reg, *mirrors)}
    sigs = [(vks[e["signer"]["public_key_fingerprint"]], bytes.fromhex(e["content_sha256"]),
             base64.b64decode(e["signature"]["signature_b64"])) for _, e in events]
    stored = [[b for _, b in wire[i * per:(i + 1) * per]] for i in range(n_subjects)]
    pns = [pn for pn, _ in subjects]
    parsed_subjects = [[parse_json(b) for b in bodies] for bodies in stored]

    def verify_all() -> None:
        for vk, msg, sig in sigs:
            vk.verify(msg, sig)

    def admit_all() -> None:
        for pn, e in events:
            admit(e, pn, ring)

    table: dict[str, Callable[[], Any]] = {
        "parse event": lambda: [parse_json(b) for _, b in wire],
        "shape checks (malformed_reason)": lambda: [malformed_reason(e) for _, e in events],
        "CJ of the content": lambda: [cj_checked(c) for c in contents],
        "CJ of the event": lambda: [cj_checked(e) for _, e in events],
        "sha256 of the content": lambda: [sha256_hex(c) for c in content_bytes],
        "Ed25519 verify": verify_all,
        "admit (all of the above but parse)": admit_all,
        "merge: parse stored bodies": lambda: [[parse_json(b) for b in bodies] for bodies in stored],
        "merge: merge_document": lambda: [merge_document(pn, evs, ring, registry)
                                          for pn, evs in zip(pns, parsed_subjects)],
    }
    best = {name: float("inf") for name in table}
    for _ in range(runs):
        for name, fn in table.items():
            best[name] = min(best[name], timed(fn))
    out = {name: t / n * 1e6 for name, t in best.items()}
    out["merge: per event (parse + merge_document)"] = (out["merge: parse stored bodies"]
                                                        + out["merge: merge_document"])
    return out


def against(args: argparse.Namespace) -> int:
    """`--steps` on this tree's code and on DIR's, alternately, each in a fresh process."""
    here = str(Path(__file__).resolve().parent.parent)
    cmd = [sys.executable, __file__, "--steps", "--json", "--events", str(args.events), "--subjects",
           str(args.subjects), "--runs", str(args.runs)]
    sides: dict[str, list[dict[str, float]]] = {"now": [], "before": []}
    for r in range(args.rounds):
        for side, path in (("before", args.against), ("now", here)):
            print(f"round {r + 1}/{args.rounds}: {side}...", file=sys.stderr)
            env = {**os.environ, "PYTHONPATH": path}
            sides[side].append(json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True).stdout))
    best = {side: {k: min(run[k] for run in runs) for k in runs[0]} for side, runs in sides.items()}
    rows = [{"step": k, "before_us": round(best["before"][k], 2), "now_us": round(best["now"][k], 2),
             "now_over_before": round(best["now"][k] / best["before"][k], 3)} for k in best["now"]]
    if args.json:
        print(json.dumps({"events": args.events, "subjects": args.subjects, "rounds": args.rounds, "steps": rows},
                         indent=2))
    else:
        print(f"us per event, best of {args.rounds} alternating rounds x {args.runs} runs "
              f"({args.events} events over {args.subjects} subjects; before = {args.against})")
        print(f"  {'step':45} {'before':>8} {'now':>8} {'now/before':>10}")
        for row in rows:
            print(f"  {row['step']:45} {row['before_us']:8.2f} {row['now_us']:8.2f} {row['now_over_before']:10.2f}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20_000, help="events to sign (default 20000)")
    ap.add_argument("--subjects", type=int, default=200, help="subjects they are spread over (default 200)")
    ap.add_argument("--runs", type=int, default=3, help="runs of each measurement; the best counts (default 3)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--steps", action="store_true", help="time each step of admission and the merge")
    ap.add_argument("--against", metavar="DIR", help="with --steps: compare with the pithnode package in DIR")
    ap.add_argument("--rounds", type=int, default=3, help="with --against: alternating rounds (default 3)")
    args = ap.parse_args()
    if args.events < args.subjects or args.subjects < 1:
        ap.error("need at least one event per subject")
    if args.against:
        return against(args)
    if args.steps:
        out = steps(args.events, args.subjects, args.runs)
        if args.json:
            print(json.dumps(out))
        else:
            for name, us in out.items():
                print(f"  {name:45} {us:8.2f} us/event")
        return 0

    reg, mirrors = SynthRegistry(), [SynthMirror("bench-a"), SynthMirror("bench-b")]
    ring = reg.ring()
    for m in mirrors:
        ring.add_raw(m.raw, m.key_id)
    registry = frozenset({reg.fingerprint})

    n, t_sign, t_verify, t_admit, t_merge = throughput(args.events, args.subjects, args.runs, reg, mirrors, ring, registry)
    gc.collect()  # the throughput data set is gone: the scaling runs have the heap to themselves
    print("building a 1,000- and a 10,000-event subject...", file=sys.stderr)
    small = synthetic_subject(reg, 1, 1_000, mirrors)
    large = synthetic_subject(reg, 2, 10_000, mirrors)
    t_small = t_large = float("inf")
    for _ in range(max(5, 2 * args.runs)):
        t_small = min(t_small, timed(lambda: merge(small[0], small[1], ring, registry)))
        t_large = min(t_large, timed(lambda: merge(large[0], large[1], ring, registry)))

    out: dict[str, Any] = {
        "events": n,
        "subjects": args.subjects,
        "runs": args.runs,
        "python": platform.python_version(),
        "pynacl": nacl.__version__,
        "cpus": os.cpu_count(),
        "sign_per_s": round(n / t_sign),
        "verify_per_s": round(n / t_verify),
        "admit_per_s": round(n / t_admit),
        "admit_over_verify_rate": round(t_verify / t_admit, 3),
        "verify_us_per_event": round(t_verify / n * 1e6, 2),
        "admit_us_per_event": round(t_admit / n * 1e6, 2),
        "merge_us_per_event": round(t_merge / n * 1e6, 2),
        "merge_over_verify_time": round(t_merge / t_verify, 3),
        "merge_1k_ms": round(t_small * 1e3, 2),
        "merge_10k_ms": round(t_large * 1e3, 2),
        "merge_10k_over_1k": round(t_large / t_small, 2),
    }
    out["pass"] = {
        f"admission_ge_{TARGET_ADMIT}x_verify": t_verify / t_admit >= TARGET_ADMIT,
        f"merge_le_{TARGET_MERGE}x_verify": t_merge / t_verify <= TARGET_MERGE,
        f"merge_10k_le_{TARGET_SCALING:g}x_1k": t_large / t_small <= TARGET_SCALING,
    }
    ok = all(out["pass"].values())
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        mark = ["PASS" if b else "FAIL" for b in out["pass"].values()]
        print(f"{n} events over {args.subjects} subjects; one thread; best of {args.runs} "
              f"(Python {out['python']}, PyNaCl {out['pynacl']}, {out['cpus']} CPUs)")
        print(f"  signing (synth):    {out['sign_per_s']:>8} events/s")
        print(f"  bare PyNaCl verify: {out['verify_per_s']:>8} events/s  {out['verify_us_per_event']:>7} us/event")
        print(f"  admission:          {out['admit_per_s']:>8} events/s  {out['admit_us_per_event']:>7} us/event")
        print(f"  merge:              {'':>8}           {out['merge_us_per_event']:>7} us/event")
        print(f"  admission rate / verify rate  = {out['admit_over_verify_rate']:.2f}  "
              f"(target >= {TARGET_ADMIT})  {mark[0]}")
        print(f"  merge time / verify time      = {out['merge_over_verify_time']:.2f}  "
              f"(target <= {TARGET_MERGE})  {mark[1]}")
        print(f"  merge 1,000-event subject {out['merge_1k_ms']} ms, 10,000-event subject {out['merge_10k_ms']} ms")
        print(f"  merge 10k / merge 1k          = {out['merge_10k_over_1k']:.2f}  "
              f"(target <= {TARGET_SCALING:g})  {mark[2]}")
        print("ALL PASS" if ok else "SOME TARGET FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
