#!/usr/bin/env python3
"""What a record's page costs to render, against building the record's signed
bundle (the heaviest document the node already builds on its event loop),
measured side by side in one run at several record sizes; and the status page.

    python scripts/bench_pages.py [--events 100,2000] [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import trio

from pithnode.config import load_config
from pithnode.node.pages import Pages
from pithnode.node.peer import PeerService
from pithnode.node.service import Node
from pithnode.testing.synth import SynthMirror, SynthRegistry, synthetic_subject


def timed(fn, rounds: int) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(rounds):  # the best of several: the machine is shared
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


async def bench(sizes: list[int], rounds: int, tmp: Path) -> list[dict]:
    reg, mirrors = SynthRegistry(), [SynthMirror("mirror-a"), SynthMirror("mirror-b")]
    cfg = load_config(None, env={}, data_dir=str(tmp), registry_fingerprints=[reg.fingerprint],
                      registry_keys=[reg.config_entry()], mirrors=[])
    node = Node(cfg)
    pages = Pages(node, PeerService(node))
    out = []
    try:
        for n in sizes:
            pn, events = synthetic_subject(reg, n, n, mirrors)
            await node.ingest_bundle(reg.bundle(pn, events, keys=mirrors), source="bench")
            subject = node.store.subject(pn)
            assert subject is not None
            page = timed(lambda: pages.record_page(subject), rounds)
            bundle = timed(lambda: node.bundle_bytes(pn), rounds)
            status = timed(pages.status_page, rounds)
            out.append({"events": n, "record_page_ms": round(page * 1000, 1),
                        "bundle_ms": round(bundle * 1000, 1), "page_to_bundle": round(page / bundle, 2),
                        "page_kib": len(pages.record_page(subject)) // 1024, "status_page_ms": round(status * 1000, 2)})
    finally:
        node.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", default="100,2000", help="record sizes, comma-separated (default 100,2000)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pithnode-bench-pages-") as tmp:
        rows = trio.run(bench, [int(s) for s in args.events.split(",")], args.rounds, Path(tmp))
    if args.json:
        print(json.dumps({"pages": rows}))
        return
    for r in rows:
        print(f"{r['events']:>6} events: record page {r['record_page_ms']} ms ({r['page_kib']} KiB), "
              f"bundle {r['bundle_ms']} ms, page/bundle {r['page_to_bundle']}x; status page {r['status_page_ms']} ms")


if __name__ == "__main__":
    main()
