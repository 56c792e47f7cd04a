#!/usr/bin/env python3
"""Reconciliation benchmark: two sets sharing N event ids (canonical order by
created_at), with M of them missing on one side, reconciled with the peer
protocol's messages (msgpack-framed as on the wire). Prints round trips and
bytes both ways for: nothing missing, M missing; and beside it a naive
exchange of the full id list. Targets (issue 6): nothing missing: one round
trip, < 2 KiB; M missing: <= 6 round trips and bytes <= 1.3x the missing
events' own bytes + 32 KiB (events taken as --event-bytes each).

    python scripts/bench_reconcile.py [--items 100000] [--missing 100] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time

import msgpack

from pithnode.core.reconcile import Reconciler, ReconcileSet


def framed(msg: bytes | None) -> int:
    """Bytes of one peer message carrying `msg` ({v, msg} in msgpack)."""
    return len(msgpack.packb({"v": 1, "msg": msg}, use_bin_type=True))


def exchange(a: ReconcileSet, b: ReconcileSet) -> dict[str, float]:
    t = time.perf_counter()
    rec = Reconciler(a)
    msg: bytes | None = rec.initiate()
    rounds = sent = received = 0
    while msg is not None:
        rounds += 1
        sent += framed(msg)
        reply = Reconciler(b).respond(msg)
        received += framed(reply)
        if reply is None:
            break
        msg = rec.reconcile(reply)
    return {"round_trips": rounds, "bytes_sent": sent, "bytes_received": received,
            "bytes_total": sent + received, "need": len(rec.need), "have": len(rec.have),
            "seconds": round(time.perf_counter() - t, 4)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--subjects", type=int, default=2_000)
    ap.add_argument("--missing", type=int, default=100)
    ap.add_argument("--event-bytes", type=int, default=1_500, help="assumed size of one event on the wire")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rng = random.Random(11)
    items = []
    for i in range(args.items):
        day, sec = rng.randrange(200), rng.randrange(86400)
        ts = f"2026-{1 + day // 28 % 12:02d}-{1 + day % 28:02d}T{sec // 3600:02d}:{sec % 3600 // 60:02d}:{sec % 60:02d}Z"
        items.append((ts, "sha256:" + hashlib.sha256(f"{i % args.subjects}/{i}".encode()).hexdigest()))
    full = ReconcileSet(items)
    # one event missing in each of `missing` different subjects
    by_subject: dict[int, int] = {}
    for i in rng.sample(range(args.items), args.items):
        by_subject.setdefault(i % args.subjects, i)
        if len(by_subject) == args.missing:
            break
    gone = set(by_subject.values())
    partial = ReconcileSet([x for i, x in enumerate(items) if i not in gone])
    same = exchange(full, ReconcileSet(items))
    diff = exchange(partial, full)
    naive = len(msgpack.packb({"v": 1, "ids": [e for _, e in items]}, use_bin_type=True))
    budget = 1.3 * args.missing * args.event_bytes + 32 * 1024
    wire = diff["bytes_total"] + args.missing * args.event_bytes  # the events themselves still travel
    out = {
        "items": args.items, "missing": args.missing,
        "in_sync": same, "with_missing": diff, "naive_full_list_bytes": naive,
        "with_missing_wire_bytes_incl_events": wire, "budget_bytes": round(budget),
        "pass_in_sync": same["round_trips"] == 1 and same["bytes_total"] < 2048,
        "pass_missing": diff["round_trips"] + 1 <= 6 and wire <= budget and diff["need"] == args.missing,
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{args.items} events; {args.missing} missing on one side, one in each of {args.missing} subjects")
        print(f"in sync:      {same['round_trips']} round trip, {same['bytes_total']} bytes both ways"
              f"  -> {'PASS' if out['pass_in_sync'] else 'FAIL'} (1 round trip, < 2048 bytes)")
        print(f"{args.missing} missing:  {diff['round_trips']} reconcile round trips (+1 to fetch the events), "
              f"{diff['bytes_total']} bytes of reconciliation, found {diff['need']}")
        print(f"              wire incl. the events: {wire} bytes; budget 1.3x events + 32 KiB = {budget:.0f}"
              f"  -> {'PASS' if out['pass_missing'] else 'FAIL'}")
        print(f"naive full id list, one way: {naive} bytes ({naive / max(1, diff['bytes_total']):.0f}x the reconciliation)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
