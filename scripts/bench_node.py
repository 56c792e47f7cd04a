#!/usr/bin/env python3
"""Node benchmarks over real loopback HTTP (issue 6), each printed as a ratio
against a reference measured in the same run.

  ingest       a fresh node syncs N events over S subjects from a serving node
               (reconcile + fetch + admission + store + merge); ratio to the
               bare single-thread PyNaCl verify rate on the same signatures
  reconcile    two nodes sharing N events, then with M missing on one side
               (spread over M subjects): round trips and bytes on the wire,
               beside a naive full id list
  propagation  K nodes in a random graph of degree 3: hops and wall time for
               one new event to reach every node

    python scripts/bench_node.py ingest|reconcile|propagation [--events N] [--subjects S] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgpack
import trio

from bench_ingest import bare_verify_rate, signatures
from pithnode.config import load_config
from pithnode.ingest import import_bundles
from pithnode.node import peer
from pithnode.node.runner import run_node
from pithnode.store import Store
from pithnode.testing.procs import free_port, wait_up
from pithnode.testing.synth import SynthMirror, SynthRegistry, synthetic_subject

REG = SynthRegistry("bench-registry")
MIRRORS = [SynthMirror("bench-a"), SynthMirror("bench-b")]


def cfg(tmp: Path, name: str, **extra: Any):  # type: ignore[no-untyped-def]
    e = REG.config_entry()
    settings = dict(data_dir=str(tmp / name), listen="127.0.0.1:0", registry_fingerprints=[REG.fingerprint],
                    registry_keys=[e], allow_private_addresses=True, mirrors=[], poll_interval=3600.0,
                    gossip_interval=3600.0, attest=False, peer_rate_limit=0.0, durability="full")
    return load_config(None, env={}, **{**settings, **extra})


def make_subjects(n_events: int, n_subjects: int) -> list[tuple[str, list[dict[str, Any]]]]:
    per = max(2, n_events // n_subjects)
    return [synthetic_subject(REG, 50_000 + i, per, MIRRORS) for i in range(n_subjects)]


def fill(config: Any, subjects: list[tuple[str, list[dict[str, Any]]]]) -> None:
    """Load a node's store before it starts (the fast offline import path)."""
    from pithnode.core import canonical_bytes

    items = [(f"seed{i}", (lambda b=canonical_bytes(REG.bundle(pn, evs, keys=MIRRORS)): b))
             for i, (pn, evs) in enumerate(subjects)]
    with Store(config.db_path) as store:
        for _src, res in import_bundles(store, items, trusted=config.trusted_ring(), registry=config.registry,
                                        now=lambda: "2026-11-23T00:00:00Z"):
            assert not isinstance(res, Exception), res


def serve_in_process(tmp: Path, config: Any, http_workers: int = 0, peers: tuple[str, ...] = (),
                     gossip_interval: float = 3600.0,
                     env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """`pithnode run` on a store, in a child process; returns it and its URL."""
    port = free_port()
    e = REG.config_entry()
    toml = tmp / f"{config.data_dir.name}.toml"
    toml.write_text("\n".join([
        f'data_dir = "{config.data_dir}"', f'registry_fingerprints = ["{REG.fingerprint}"]',
        f'registry_keys = [{{key_id = "{e["key_id"]}", public_key_b64 = "{e["public_key_b64"]}", '
        f'fingerprint_sha256_hex = "{e["fingerprint_sha256_hex"]}"}}]',
        "mirrors = []", "attest = false", "peer_rate_limit = 0.0", f"gossip_interval = {gossip_interval}",
        "poll_interval = 3600.0", "allow_private_addresses = true", f"http_workers = {http_workers}",
        f"peers = {json.dumps(list(peers))}"]) + "\n")
    proc = subprocess.Popen([sys.executable, "-m", "pithnode", "run", "--config", str(toml),
                             "--listen", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env)
    return proc, f"http://127.0.0.1:{port}"


async def bench_ingest(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    subjects = make_subjects(args.events, args.subjects)
    sigs = signatures([e for _, evs in subjects for e in evs], [REG, *MIRRORS])
    print(f"loading {len(sigs)} events into the serving node...", file=sys.stderr)
    src_cfg = cfg(tmp, "serving")
    fill(src_cfg, subjects)
    # The syncing node runs in this process: it must not carry the benchmark's own
    # data (~340k objects at 100k events, which every full GC pass would walk).
    del subjects
    gc.collect()
    verify = bare_verify_rate(sigs)
    serving = serve_in_process(tmp, src_cfg)  # its own process, as a real peer would be
    try:
        async with trio.open_nursery() as nursery:
            b = await nursery.start(run_node, cfg(tmp, "fresh"))
            await wait_up(serving[1])
            print("fresh node syncing over loopback HTTP...", file=sys.stderr)
            pool = b.node.workers.pool
            workers = pool.pids if pool is not None else []  # the node's
            before = {"serving_node": cpu_seconds(serving[0].pid), "syncing_node": time.process_time(),
                      "admission_workers": sum(cpu_seconds(w) for w in workers)}
            t = time.perf_counter()
            rounds = 0
            while b.node.store.event_count() < len(sigs) and rounds < 50:
                await b.peers.sync_with(serving[1])
                rounds += 1
            elapsed = time.perf_counter() - t
            held = b.node.store.event_count()
            workers = pool.pids if pool is not None else []
            cpu = {"serving_node": cpu_seconds(serving[0].pid) - before["serving_node"],
                   "syncing_node": time.process_time() - before["syncing_node"],
                   "admission_workers": sum(cpu_seconds(w) for w in workers) - before["admission_workers"]}
            b.shutdown.set()
    finally:
        serving[0].terminate()
        serving[0].wait(timeout=15)
    verify_after = bare_verify_rate(sigs)
    ref = (verify + verify_after) / 2
    rate = held / elapsed
    per_event = {k: round(v * 1e6 / held, 1) for k, v in cpu.items()}
    return {"events": len(sigs), "subjects": args.subjects, "synced": held, "seconds": round(elapsed, 2),
            "sync_calls": rounds, "events_per_s": round(rate), "bare_verify_per_s": round(ref),
            "bare_verify_us": round(1e6 / ref, 1), "cpu_us_per_event": per_event,
            "ratio": round(rate / ref, 3), "target": 1.0, "pass": rate / ref >= 1.0}


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of a live process (Linux /proc)."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def bench_reconcile(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    subjects = make_subjects(args.events, args.subjects)
    rng = random.Random(3)
    missing_in = set(rng.sample(range(len(subjects)), args.missing))
    dropped: set[str] = set()
    partial = []
    for i, (pn, evs) in enumerate(subjects):
        if i in missing_in:
            gone = evs[-1]  # the newest event of that subject
            dropped.add(gone["event_id"])
            partial.append((pn, evs[:-1]))
        else:
            partial.append((pn, evs))
    print(f"loading two nodes with {args.events} events ({args.missing} missing on one)...", file=sys.stderr)
    ca, cb = cfg(tmp, "full"), cfg(tmp, "partial")
    fill(ca, subjects)
    fill(cb, partial)
    missing_bytes = sum(len(json.dumps(e, separators=(",", ":")).encode()) for _, evs in subjects for e in evs
                        if e["event_id"] in dropped)
    out: dict[str, Any] = {"events": args.events, "missing": args.missing, "missing_events_bytes": missing_bytes}
    async with trio.open_nursery() as nursery:
        a = await nursery.start(run_node, ca)
        b = await nursery.start(run_node, cb)
        # in sync first: b reconciles with a copy of itself, a second node holding what it holds
        c = await nursery.start(run_node, cfg(tmp, "partial-copy"))
        for name, (x, y) in {"in_sync": (b, c), "with_missing": (b, a)}.items():
            if name == "in_sync":  # c starts empty and copies b by gossip first
                await c.peers.sync_with(b.url)
            x.peers.wire.update(requests=0, bytes_out=0, bytes_in=0)
            fetched, pushed = await x.peers.sync_with(y.url)
            w = dict(x.peers.wire)
            out[name] = {"round_trips": w["requests"], "bytes_both_ways": w["bytes_out"] + w["bytes_in"],
                         "fetched": fetched, "pushed": pushed}
        for r in (a, b, c):
            r.shutdown.set()
    naive = len(msgpack.packb({"v": 1, "ids": [e["event_id"] for _, evs in subjects for e in evs]}, use_bin_type=True))
    budget = 1.3 * missing_bytes + 32 * 1024
    out.update(naive_full_list_bytes=naive, budget_bytes=round(budget),
               pass_in_sync=out["in_sync"]["round_trips"] == 1 and out["in_sync"]["bytes_both_ways"] < 2048,
               pass_missing=out["with_missing"]["round_trips"] <= 6 and out["with_missing"]["bytes_both_ways"] <= budget
               and out["with_missing"]["fetched"] == args.missing)
    return out


def random_regular_graph(n: int, d: int, rng: random.Random) -> list[set[int]]:
    """A connected random graph with every degree d (pairing model, retried)."""
    while True:
        stubs = [v for v in range(n) for _ in range(d)]
        rng.shuffle(stubs)
        adj: list[set[int]] = [set() for _ in range(n)]
        ok = True
        for a, b in zip(stubs[::2], stubs[1::2]):
            if a == b or b in adj[a]:
                ok = False
                break
            adj[a].add(b)
            adj[b].add(a)
        if ok and _eccentricity(adj, 0) < n:
            return adj


def _eccentricity(adj: list[set[int]], src: int) -> int:
    dist = {src: 0}
    frontier = [src]
    while frontier:
        nxt = []
        for v in frontier:
            for w in adj[v]:
                if w not in dist:
                    dist[w] = dist[v] + 1
                    nxt.append(w)
        frontier = nxt
    return max(dist.values()) if len(dist) == len(adj) else len(adj)


async def bench_propagation(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    n = args.nodes
    adj = random_regular_graph(n, 3, random.Random(5))
    pn, evs = synthetic_subject(REG, 777, 6, MIRRORS)
    async with trio.open_nursery() as nursery:
        nodes = [await nursery.start(run_node, cfg(tmp, f"n{i}", gossip_interval=3600.0)) for i in range(n)]
        for i, nbrs in enumerate(adj):
            for j in nbrs:
                nodes[i].peers.add_peer(nodes[j].url, operator=True)
        url_of = {r.url: i for i, r in enumerate(nodes)}
        await nodes[0].node.ingest_bundle(REG.bundle(pn, evs, keys=MIRRORS), source="bench")
        with trio.fail_after(60):
            while any(r.node.store.event_count() < len(evs) for r in nodes):
                await trio.sleep(0.01)
        last = [e for e in evs if e["event_type"] == "graph_snapshot"][-1]
        new = REG.graph_snapshot(pn, "2026-09-09T00:00:00Z", prev=last)
        t = time.perf_counter()
        arrival: dict[int, float] = {}
        await nodes[0].node.ingest_events(pn, [new], [], source="bench")
        with trio.fail_after(60):
            while len(arrival) < n:
                for i, r in enumerate(nodes):
                    if i not in arrival and r.node.store.events_by_id([new["event_id"]]):
                        arrival[i] = time.perf_counter() - t
                await trio.sleep(0.002)
        # hops: follow each node's first source of the event back to the origin
        hops = {}
        for i, r in enumerate(nodes):
            h, cur = 0, i
            while cur != 0 and h <= n:
                src = next(iter(nodes[cur].node.store.event_sources([new["event_id"]]).values()))
                cur = url_of.get(src.removeprefix("peer "), 0)
                h += 1
            hops[i] = h
        for r in nodes:
            r.shutdown.set()
    bound = math.log2(n) + 2
    return {"nodes": n, "degree": 3, "max_hops": max(hops.values()), "graph_eccentricity_from_origin": _eccentricity(adj, 0),
            "bound_hops": round(bound, 2), "wall_seconds_all": round(max(arrival.values()), 3),
            "pass": max(hops.values()) <= bound}


def wrk(url: str, seconds: int, conns: int = 64) -> dict[str, float]:
    """requests/s and latency percentiles from wrk (keep-alive clients)."""
    out = subprocess.run(["wrk", "-t2", f"-c{conns}", f"-d{seconds}s", "--latency", url],
                         capture_output=True, text=True, timeout=seconds + 30).stdout

    def ms(text: str) -> float:
        v = float(text[:-2] if text.endswith("ms") else text[:-1] if text.endswith("s") and not text.endswith("us")
                  else text[:-2])
        return v * (1 if text.endswith("ms") else 1000 if not text.endswith("us") else 0.001)

    res = {"rps": float(next(line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec")))}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("50%", "99%"):
            res["p" + parts[0][:-1] + "_ms"] = round(ms(parts[1]), 3)
    return res


NGINX_CONF = """worker_processes auto; daemon off; pid {root}/nginx.pid; error_log {root}/error.log;
events {{ worker_connections 1024; }}
http {{ access_log off; default_type application/json; keepalive_requests 100000;
  server {{ listen 127.0.0.1:{port}; root {root}/www; }} }}
"""


async def bench_serving(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import httpx

    if not (shutil.which("wrk") and shutil.which("nginx")):
        return {"skipped": "needs wrk and nginx: apt-get install wrk nginx-light"}
    subjects = make_subjects(args.events, args.subjects)
    node_cfg = cfg(tmp, "serving")
    fill(node_cfg, subjects)
    baseline = None
    if args.baseline_code:  # the same store, served by other code (a checkout of another commit)
        shutil.copytree(node_cfg.data_dir, tmp / "baseline")
        baseline = serve_in_process(tmp, replace(node_cfg, data_dir=tmp / "baseline"), args.http_workers,
                                    env={**os.environ, "PYTHONPATH": str(Path(args.baseline_code).resolve())})
    proc, url = serve_in_process(tmp, node_cfg, args.http_workers)
    code = subjects[0][0].rsplit(":", 1)[-1]
    paths = [f"/pith/{code}/bundle.json", f"/pith/{code}/state.json"]
    nginx = None
    try:
        await wait_up(url)
        www = tmp / "nginx" / "www"
        async with httpx.AsyncClient() as client:
            for p in paths:  # the same bytes, as static files
                (www / p.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
                (www / p.lstrip("/")).write_bytes((await client.get(url + p)).content)
        nport = free_port()
        for d in (tmp, tmp / "nginx", *[q for q in www.rglob("*")], www):  # nginx workers drop root
            d.chmod(0o755)
        (tmp / "nginx" / "nginx.conf").write_text(NGINX_CONF.format(root=tmp / "nginx", port=nport))
        nginx = subprocess.Popen(["nginx", "-c", str(tmp / "nginx" / "nginx.conf"), "-p", str(tmp / "nginx")],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await wait_up(f"http://127.0.0.1:{nport}", paths[1], poll=0.05)
        out: dict[str, Any] = {"bundle_bytes": (www / paths[0].lstrip("/")).stat().st_size}
        targets = {"node": url, "nginx": f"http://127.0.0.1:{nport}"}
        if baseline is not None:
            await wait_up(baseline[1])
            targets["baseline"] = baseline[1]
        for p in paths:  # rounds alternate the servers, so load from elsewhere falls on all of them
            runs: dict[str, list[dict[str, float]]] = {k: [] for k in targets}
            for _ in range(args.rounds):
                for k, u in targets.items():
                    runs[k].append(await trio.to_thread.run_sync(wrk, u + p, args.seconds))
            ratios = sorted(n["rps"] / r["rps"] for n, r in zip(runs["node"], runs["nginx"]))
            out[p.rsplit("/", 1)[1]] = {
                **{k: sorted(v, key=lambda r: r["rps"])[len(v) // 2] for k, v in runs.items()},  # median round
                "ratio": round(ratios[len(ratios) // 2], 3), "ratios": [round(r, 3) for r in ratios],
                "pass": ratios[len(ratios) // 2] >= 0.25,
                **({"vs_baseline": sorted(round(n["rps"] / b["rps"], 3) for n, b in zip(runs["node"], runs["baseline"]))}
                   if baseline is not None else {})}
        out["pipelining_flood"] = await pipelining_flood(proc.pid, url, paths[0], args.flood_connections,
                                                         args.flood_requests)
        # readers while the node ingests at full speed (another process pushes fresh subjects)
        pusher = subprocess.Popen([sys.executable, __file__, "push-load", url, "--seconds", str(args.seconds + 2)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            await trio.to_thread.run_sync(pusher.stdout.readline)  # its events are signed
            pusher.stdin.write("go\n")
            pusher.stdin.flush()
            await trio.sleep(1)
            loaded = await trio.to_thread.run_sync(wrk, url + paths[1], args.seconds)
            load = json.loads(await trio.to_thread.run_sync(pusher.stdout.readline))
        finally:
            try:
                pusher.wait(timeout=args.seconds + 60)
            except subprocess.TimeoutExpired:
                pusher.kill()
        idle = out["state.json"]["node"]
        out["state.json_while_ingesting"] = {**loaded, "ingest_events_per_s": round(load["events"] / load["seconds"]),
                                             "load_ran_dry": load["ran_dry"],
                                             "slowdown_p50": round(loaded["p50_ms"] / idle["p50_ms"], 2),
                                             "slowdown_p99": round(loaded["p99_ms"] / idle["p99_ms"], 2),
                                             "pass": loaded["p99_ms"] <= 2 * idle["p99_ms"]}
        return out
    finally:
        for p in [proc] + ([baseline[0]] if baseline else []):
            p.terminate()
            p.wait(timeout=15)
        if nginx is not None:
            nginx.terminate()
            nginx.wait(timeout=15)


async def pipelining_flood(pid: int, url: str, path: str, conns: int, requests: int,
                           seconds: float = 3.0) -> dict[str, Any]:
    """The node's memory (PSS of it and its fronts) while `conns` connections each write
    `requests` pipelined GETs of `path` and never read; /healthz answered meanwhile."""
    import httpx

    host, port = url.removeprefix("http://").rsplit(":", 1)
    before, streams = pss_mb(pid), []
    try:
        flood = b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode() * requests
        for _ in range(conns):
            streams.append(await trio.open_tcp_stream(host, int(port)))
            with trio.move_on_after(5):
                await streams[-1].send_all(flood)
        peak, start = before, trio.current_time()
        while trio.current_time() - start < seconds:
            await trio.sleep(0.2)
            peak = max(peak, pss_mb(pid))
        async with httpx.AsyncClient() as client:
            t = time.perf_counter()
            health = (await client.get(url + "/healthz")).status_code
            health_ms = (time.perf_counter() - t) * 1000
        peak = max(peak, pss_mb(pid))
    finally:
        for stream in streams:
            await stream.aclose()
    return {"connections": conns, "pipelined_each": requests, "pss_before_mb": round(before, 1),
            "pss_peak_mb": round(peak, 1), "growth_mb": round(peak - before, 1), "healthz": health,
            "healthz_ms": round(health_ms, 1), "pass": peak - before < 100 and health == 200}


def push_load(url: str, seconds: float) -> None:
    """Push fresh synthetic subjects to a node as fast as it takes them. The
    events are signed before the load starts (signing them here, on the same two
    cores, would measure the load generator, not the node); prints `ready`, then
    after the load one JSON line: events pushed, seconds, whether it ran dry."""
    import httpx

    keys = [REG.entry(), *(m.entry() for m in MIRRORS)]
    bodies = []
    for n in range(PUSH_BATCHES):
        evs = [e for i in range(10) for e in synthetic_subject(REG, 900_000 + n * 10 + i, 40, MIRRORS)[1]]
        bodies.append((len(evs), peer.encode({"v": 1, "events": [json.dumps(e).encode() for e in evs], "keys": keys})))
    print("ready", flush=True)
    sys.stdin.readline()  # go
    pushed, t0 = 0, time.monotonic()
    with httpx.Client(timeout=30) as client:
        for count, body in bodies:
            if time.monotonic() - t0 >= seconds:
                break
            client.post(f"{url}/peer/v1/push", content=body).raise_for_status()
            pushed += count
    took = time.monotonic() - t0
    print(json.dumps({"events": pushed, "seconds": round(took, 2), "ran_dry": took < seconds}), flush=True)


PUSH_BATCHES = 200  # x 400 events: more than a node ingests in the measured seconds


async def bench_footprint(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Store size against the events' canonical bytes; restart-to-serving time;
    RSS while serving and syncing; per-request cost as the store grows."""
    import httpx

    subjects = make_subjects(args.events, args.subjects)
    canonical = sum(len(json.dumps(e, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode())
                    for _, evs in subjects for e in evs)
    node_cfg = cfg(tmp, "big")
    t = time.perf_counter()
    fill(node_cfg, subjects)
    import_s = time.perf_counter() - t
    db = node_cfg.db_path
    size = db.stat().st_size + sum(p.stat().st_size for p in db.parent.glob(db.name + "-*"))
    copy_cfg = cfg(tmp, "copy")  # a peer holding the same events, for the incremental sync
    copy_cfg.db_path.parent.mkdir(parents=True)
    shutil.copyfile(db, copy_cfg.db_path)
    proc, url = serve_in_process(tmp, node_cfg, args.http_workers)
    try:
        t = time.perf_counter()
        await wait_up(url)
        restart_s = time.perf_counter() - t
        code = subjects[len(subjects) // 2][0].rsplit(":", 1)[-1]
        async with httpx.AsyncClient() as client:
            t = time.perf_counter()
            for _ in range(200):
                (await client.get(f"{url}/pith/{code}/state.json")).raise_for_status()
            state_ms = (time.perf_counter() - t) / 200 * 1000
            # syncing: a peer with nothing asks for everything once (reconcile + serve every event)
        n = sum(len(evs) for _, evs in subjects)
        sync_s, syncing_rss, pss = None, None, {}
        if not args.skip_sync:  # a fresh node, its own process, gossips with this one until it holds everything
            peer_proc, peer_url = serve_in_process(tmp, cfg(tmp, "peer"), 0, peers=(url,), gossip_interval=1.0)
            try:
                # timed from when it answers (its first gossip round starts then): the
                # process's start-up (~0.5 s of imports) is not sync work
                await wait_up(peer_url, poll=0.02)
                t = time.perf_counter()
                pss = {"serving": 0.0, "syncing": 0.0}
                async with httpx.AsyncClient(timeout=30) as client:
                    with trio.fail_after(4 * 3600):
                        polls = 0
                        while (h := (await client.get(f"{peer_url}/healthz")).json())["events"] < n or \
                                h["unmerged_subjects"]:  # synced: every event stored and merged
                            if polls % 10 == 0:
                                for k, p in (("serving", proc.pid), ("syncing", peer_proc.pid)):
                                    pss[k] = max(pss[k], pss_mb(p))
                            polls += 1
                            await trio.sleep(0.05)
                sync_s = round(time.perf_counter() - t, 2)
                syncing_rss = peak_rss_mb(peer_proc.pid)
            finally:
                peer_proc.terminate()
                peer_proc.wait(timeout=60)
        incremental = await incremental_sync(subjects, url, proc.pid, copy_cfg)
        rss = peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    return {"events": n, "subjects": len(subjects), "import_s": round(import_s, 1),
            "store_bytes": size, "canonical_bytes": canonical, "store_ratio": round(size / canonical, 3),
            "restart_to_serving_s": round(restart_s, 2), "state_request_ms": round(state_ms, 3),
            "full_sync_to_empty_peer_s": sync_s, "incremental_sync": incremental, "http_workers": args.http_workers,
            "peak_rss_mb_serving": rss, "peak_rss_mb_syncing": syncing_rss,
            "peak_pss_mb_sampled": {k: round(v, 1) for k, v in pss.items()} if sync_s is not None else None,
            "pass_store": size / canonical <= 1.3, "pass_restart": restart_s <= 3,
            # each node process's peak RSS, and what a node with its helper processes costs
            # together (PSS: a page shared by several processes is counted once, split)
            "pass_rss": max(rss["node"], (syncing_rss or rss)["node"], *pss.values()) <= 250}


async def incremental_sync(subjects: list[tuple[str, list[dict[str, Any]]]], url: str, serving_pid: int,
                           copy_cfg: Any) -> dict[str, Any]:
    """Per-sync cost at this size: the serving node takes one new event for each
    of 100 records (pushed), then a peer that held everything else syncs once.
    The first round warms what a running node has warm already (its
    reconciliation set, its worker processes); the next ones are measured."""
    import httpx

    rounds: list[list[bytes]] = [[] for _ in range(1 + INCREMENT_ROUNDS)]
    for i in range(0, len(subjects), max(1, len(subjects) // INCREMENT))[:INCREMENT]:
        evs = subjects[i][1]
        more = synthetic_subject(REG, 50_000 + i, len(evs) + len(rounds), MIRRORS)[1]  # as make_subjects made them
        assert more[: len(evs)] == evs
        for r, ev in zip(rounds, more[len(evs) :]):
            r.append(json.dumps(ev).encode())
    keys = [REG.entry(), *(m.entry() for m in MIRRORS)]
    gc.freeze()  # the benchmark's own events (this process) are not walked by GC passes during the sync
    async with trio.open_nursery() as nursery, httpx.AsyncClient(timeout=60) as client:
        b = await nursery.start(run_node, copy_cfg)
        runs = []
        for fresh in rounds:
            msg = peer.encode({"v": 1, "events": fresh, "keys": keys})
            (await client.post(f"{url}/peer/v1/push", content=msg)).raise_for_status()
            b.peers.wire.update(requests=0, bytes_out=0, bytes_in=0)
            before, t = cpu_seconds(serving_pid), time.perf_counter()
            fetched, _pushed = await b.peers.sync_with(url)
            runs.append({"seconds": time.perf_counter() - t, "serving_cpu": cpu_seconds(serving_pid) - before,
                         "fetched": fetched, **b.peers.wire})
        b.shutdown.set()
    gc.unfreeze()
    runs = runs[1:]
    median = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
    return {"new_events": len(rounds[1]), "fetched": [r["fetched"] for r in runs],
            "seconds": round(median["seconds"], 3), "seconds_each": [round(r["seconds"], 3) for r in runs],
            "serving_node_cpu_s": round(sum(r["serving_cpu"] for r in runs) / len(runs), 3),
            "round_trips": median["requests"], "bytes_both_ways": median["bytes_out"] + median["bytes_in"]}


INCREMENT = 100  # records that each take one new event, for the incremental sync
INCREMENT_ROUNDS = 3  # measured incremental syncs (the median is reported)


def pss_mb(pid: int) -> float:
    """Proportional set size (shared pages split between their sharers) of a
    process and its descendants now: what they cost the machine together."""
    return sum(_pss(p) for p in [pid, *_descendants(pid)]) / 1024


def _pss(pid: int) -> float:
    try:
        return float(next(line.split()[1] for line in open(f"/proc/{pid}/smaps_rollup") if line.startswith("Pss:")))
    except (OSError, StopIteration):
        return 0.0


def _descendants(pid: int) -> list[int]:
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        try:
            parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (ValueError, OSError, IndexError):
            continue
    mine, out = {pid}, []
    for _ in range(4):  # children, grandchildren...
        for p, pp in parent.items():
            if pp in mine and p not in mine:
                mine.add(p)
                out.append(p)
    return out


def peak_rss_mb(pid: int) -> dict[str, float]:
    """Peak RSS (VmHWM) of a node process, and summed over its front processes and
    its other descendants (the admission workers and their fork server)."""
    def hwm(p: int | str) -> float:
        try:
            return int(next(line.split()[1] for line in open(f"/proc/{p}/status") if line.startswith("VmHWM"))) / 1024
        except OSError:  # exited meanwhile
            return 0.0

    fronts, others = [], []
    for p in _descendants(pid):
        try:
            is_front = b"pithnode.node.front" in Path(f"/proc/{p}/cmdline").read_bytes()
        except OSError:
            continue
        (fronts if is_front else others).append(p)
    out = {"node": round(hwm(pid), 1), "fronts": round(sum(hwm(f) for f in fronts), 1),
           "workers": round(sum(hwm(w) for w in others), 1)}
    return {**out, "total": round(out["node"] + out["fronts"] + out["workers"], 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    if len(sys.argv) > 1 and sys.argv[1] == "push-load":  # helper process for `serving`
        push_load(sys.argv[2], float(sys.argv[4]))
        return 0
    ap.add_argument("which", choices=["ingest", "reconcile", "propagation", "serving", "footprint"])
    ap.add_argument("--seconds", type=int, default=5, help="wrk duration per measurement (serving)")
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--subjects", type=int, default=2_000)
    ap.add_argument("--missing", type=int, default=100)
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--skip-sync", action="store_true", help="footprint: no full sync to an empty peer")
    ap.add_argument("--http-workers", type=int, default=2,
                    help="serving, footprint: the node's front processes (config http_workers)")
    ap.add_argument("--rounds", type=int, default=3, help="serving: rounds alternating node, nginx (and baseline)")
    ap.add_argument("--baseline-code", help="serving: also serve the store with the pithnode package in this "
                                            "directory (e.g. a `git worktree` of main), in the same rounds")
    ap.add_argument("--flood-connections", type=int, default=60, help="serving: pipelining flood connections")
    ap.add_argument("--flood-requests", type=int, default=1000, help="serving: pipelined requests on each")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    fn = {"ingest": bench_ingest, "reconcile": bench_reconcile, "propagation": bench_propagation,
          "serving": bench_serving, "footprint": bench_footprint}[args.which]
    with tempfile.TemporaryDirectory(prefix="pithnode-bench-") as tmp:
        out = trio.run(fn, args, Path(tmp))
    print(json.dumps({args.which: out}, indent=None if not args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
