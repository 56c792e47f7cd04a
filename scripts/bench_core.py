#!/usr/bin/env python3
"""Core benchmark: sign N synthetic events over S subjects with test keys,
then measure in the same run, on one thread: the bare PyNaCl verify rate on
those very signatures, the admission rate (the core's `admit`), merge time
per event, and merge time of a 10,000-event subject against a 1,000-event one.

Targets (issue 3): admission >= 0.55x bare verify; merge per event <= 0.3x
verify per event; merge(10k) <= 12x merge(1k).

    python scripts/bench_core.py [--events 20000] [--subjects 200] [--json]
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time

from nacl.signing import VerifyKey

from pithnode.core import admit, merge
from pithnode.synth import SynthMirror, SynthRegistry, synthetic_subject


def best_of(n: int, fn) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--subjects", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    reg, mirrors = SynthRegistry(), [SynthMirror("bench-a"), SynthMirror("bench-b")]
    ring = reg.ring()
    for m in mirrors:
        ring.add_raw(m.raw, m.key_id)
    registry = frozenset({reg.fingerprint})
    print(f"signing {args.events} events over {args.subjects} subjects...", file=sys.stderr)
    subjects = [synthetic_subject(reg, 20_000 + n, args.events // args.subjects, mirrors) for n in range(args.subjects)]
    events = [(pn, e) for pn, evs in subjects for e in evs]
    raw = {m.fingerprint: m.raw for m in [reg, *mirrors]}
    sigs = [(VerifyKey(raw[e["signer"]["public_key_fingerprint"]]), bytes.fromhex(e["content_sha256"]),
             base64.b64decode(e["signature"]["signature_b64"])) for _, e in events]

    def verify_all() -> None:
        for vk, msg, sig in sigs:
            vk.verify(msg, sig)

    def admit_all() -> None:
        for pn, e in events:
            assert admit(e, pn, ring).admitted

    def merge_all() -> None:
        for pn, evs in subjects:
            merge(pn, evs, ring, registry)

    t_verify = best_of(3, verify_all)
    t_admit = best_of(3, admit_all)
    t_merge = best_of(3, merge_all)
    n = len(events)
    print("building a 1,000- and a 10,000-event subject...", file=sys.stderr)
    small = synthetic_subject(reg, 1, 1_000, mirrors)
    large = synthetic_subject(reg, 2, 10_000, mirrors)
    t_small = best_of(5, lambda: merge(small[0], small[1], ring, registry))
    t_large = best_of(3, lambda: merge(large[0], large[1], ring, registry))
    out = {
        "events": n, "subjects": args.subjects,
        "verify_per_s": round(n / t_verify), "admit_per_s": round(n / t_admit),
        "admit_ratio": round(t_verify / t_admit, 3),
        "verify_us_per_event": round(t_verify / n * 1e6, 2), "merge_us_per_event": round(t_merge / n * 1e6, 2),
        "merge_to_verify_ratio": round(t_merge / t_verify, 3),
        "merge_1k_ms": round(t_small * 1e3, 2), "merge_10k_ms": round(t_large * 1e3, 2),
        "merge_10k_over_1k": round(t_large / t_small, 2),
    }
    out["pass"] = {"admission_ge_0.55x_verify": out["admit_ratio"] >= 0.55,
                   "merge_le_0.3x_verify": out["merge_to_verify_ratio"] <= 0.3,
                   "merge_10k_le_12x_1k": out["merge_10k_over_1k"] <= 12}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        ok = lambda b: "PASS" if b else "FAIL"  # noqa: E731
        p = out["pass"]
        print(f"{n} events over {args.subjects} subjects, one thread, best of 3")
        print(f"bare PyNaCl verify:  {out['verify_per_s']:>8} /s  ({out['verify_us_per_event']} us/event)")
        print(f"admission:           {out['admit_per_s']:>8} /s  ratio {out['admit_ratio']:.2f}x  "
              f"{ok(p['admission_ge_0.55x_verify'])} (>= 0.55x)")
        print(f"merge:               {out['merge_us_per_event']:>8} us/event  ratio {out['merge_to_verify_ratio']:.2f}x "
              f"of verify  {ok(p['merge_le_0.3x_verify'])} (<= 0.3x)")
        print(f"merge 1k: {out['merge_1k_ms']} ms; 10k: {out['merge_10k_ms']} ms; ratio {out['merge_10k_over_1k']:.1f}x  "
              f"{ok(p['merge_10k_le_12x_1k'])} (<= 12x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
