#!/usr/bin/env python3
"""Store cost of a full sync as the store grows (issue 6, scaling): the
`Store` alone, no network, no admission. Fills a store with N events over S
records (the offline import), then replays every event, in the order a sync
fetches them (time, id), into a fresh store: `--batch` events per commit,
grouped by record as the node's `apply_admitted` does. Prints the store cost
per event of each tenth of the replay and the ratio last / first tenth.

    python scripts/bench_store.py [--events 1000000] [--subjects 20000] [--batch 5000] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from itertools import islice
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_node  # noqa: E402

from pithnode.core.ingest_plan import Admitted, Batch, decide  # noqa: E402
from pithnode.core.ingest_plan import Quotas  # noqa: E402
from pithnode.ingest import read_snapshot  # noqa: E402
from pithnode.store import NewEvent, Store  # noqa: E402


def replay(source: Store, target: Store, batch: int, windows: int = 10) -> list[float]:
    """Every event of `source` into `target`, in sync order; us per event per window."""
    total = source.event_count()
    rows = source.db.execute(
        "SELECT s.pith_number, e.event_id, e.created_at, e.event_type, k.fingerprint, e.body "
        "FROM events e JOIN subjects s ON s.id = e.subject_id JOIN signers k ON k.id = e.signer_id "
        "ORDER BY e.created_at, e.event_id")
    quotas, registry = Quotas(), frozenset({bench_node.REG.fingerprint})
    out: list[float] = []
    spent, in_window, done = 0.0, 0, 0
    while chunk := list(islice(rows, batch)):
        by_subject: dict[str, list[NewEvent]] = defaultdict(list)
        for pn, eid, created, etype, fp, body in chunk:
            by_subject[pn].append(NewEvent(eid, created, etype, fp, bytes(body)))
        t = time.perf_counter()
        with target.transaction():
            for pn, events in by_subject.items():  # what ingest does per record, but for the merge
                work = Batch(pn, "peer", "2026-11-23T00:00:00Z", registry, [Admitted(*e) for e in events],
                             quotas=quotas)
                snap = read_snapshot(target, work)
                plan = decide(work, snap)
                sid = snap.subject_id if snap.subject_id is not None else target.ensure_subject(pn)
                target.add_events(sid, [NewEvent(*e[:5]) for e in plan.events], "peer", work.now)
        spent += time.perf_counter() - t
        in_window += len(chunk)
        done += len(chunk)
        if in_window >= total / windows or done == total:
            out.append(round(spent / in_window * 1e6, 1))
            print(f"  {done:>9,} events: {out[-1]} us/event", file=sys.stderr, flush=True)
            spent, in_window = 0.0, 0
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--subjects", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=5_000)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pithnode-bench-store-") as tmp:
        src = bench_node.cfg(Path(tmp), "src")
        t = time.perf_counter()
        bench_node.fill(src, bench_node.make_subjects(a.events, a.subjects))
        print(f"filled {a.events:,} events in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        with Store(src.db_path, readonly=True) as source, Store(Path(tmp) / "replay.sqlite3") as target:
            t = time.perf_counter()
            windows = replay(source, target, a.batch)
            seconds = time.perf_counter() - t
    result = {"store_replay": {"events": a.events, "subjects": a.subjects, "batch": a.batch,
                               "us_per_event_by_tenth": windows, "seconds": round(seconds, 1),
                               "last_over_first": round(windows[-1] / windows[0], 2)}}
    print(json.dumps(result, indent=2) if a.json else
          f"store cost per event, first -> last tenth: {windows[0]} -> {windows[-1]} us "
          f"(x{result['store_replay']['last_over_first']}), {seconds:.1f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
