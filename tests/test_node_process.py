"""`pithnode run` as a real process: SIGTERM during ingest stops it within
10 s and loses nothing it acknowledged; a restart serves the same data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import msgpack
import trio

from helpers import MIRRORS, REG, write_config
from nodes import free_port, nodes, wait_up
from pithnode.core import canonical_bytes, merge
from pithnode.config import load_config
from pithnode.node import peer
from pithnode.store import Store
from pithnode.testing.synth import synthetic_subject
from pithnode.views import events_of


def start(cfg_path: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PITHNODE_")}
    return subprocess.Popen([sys.executable, "-m", "pithnode", "run", "--config", str(cfg_path),
                             "--listen", f"127.0.0.1:{port}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def test_sigterm_during_ingest_loses_nothing_acknowledged(tmp_path: Path):
    cfg_path = write_config(tmp_path, mirrors=[], gossip_interval=3600.0, poll_interval=3600.0)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start(cfg_path, port)
    acknowledged: set[str] = set()
    try:
        await wait_up(url)
        batches = []
        for n in range(60):
            pn, evs = synthetic_subject(REG, 5000 + n, 30, MIRRORS)
            batches.append(evs)
        keys = [REG.entry(), *(m.entry() for m in MIRRORS)]

        async def pusher(i: int) -> None:
            async with httpx.AsyncClient(timeout=20) as client:
                for evs in batches[i::4]:
                    body = peer.encode({"v": 1, "events": [json.dumps(e).encode() for e in evs], "keys": keys})
                    try:
                        r = await client.post(f"{url}/peer/v1/push", content=body)
                    except httpx.HTTPError:
                        return  # the node went away: this batch was not acknowledged
                    if r.status_code == 200 and msgpack.unpackb(r.content)["rejected"] == 0:
                        acknowledged.update(e["event_id"] for e in evs)

        async with trio.open_nursery() as nursery:
            for i in range(4):
                nursery.start_soon(pusher, i)
            await trio.sleep(1.5)
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = await trio.to_thread.run_sync(lambda: proc.wait(timeout=15))
            stopped_in = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, proc.stderr.read().decode()[-2000:] if proc.stderr else code
    assert stopped_in < 10
    assert acknowledged, "some batches should have been acknowledged before the signal"
    cfg = load_config(cfg_path, env={})
    with Store(cfg.db_path) as store:
        assert store.integrity_check() == ["ok"]
        assert not acknowledged - store.known_event_ids(acknowledged)
        ring = cfg.trusted_ring().merged(store.key_ring())
        for s in store.subjects():
            assert store.state_bytes(s.pith_number) == canonical_bytes(
                merge(s.pith_number, events_of(store, s), ring, cfg.registry))
        held = store.event_count()
    # a restart resumes and serves what it held
    proc = start(cfg_path, port)
    try:
        await wait_up(url)
        async with httpx.AsyncClient() as client:
            assert (await client.get(url + "/healthz")).json()["events"] >= held
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)


def test_demo_script_runs_offline_and_reports_the_equivocation_everywhere():
    demo = Path(__file__).parent.parent / "scripts" / "demo"
    out = subprocess.run([sys.executable, str(demo), "--hold", "0", "--json"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout[out.stdout.index("{"):out.stdout.rindex("}") + 1])
    assert summary["same_evidence"] and len(summary["equivocation_event_ids"]) == 2


def test_example_config_documents_every_setting():
    from dataclasses import fields

    from pithnode.config import Config

    text = (Path(__file__).parent.parent / "config" / "pithnode.example.toml").read_text()
    for f in fields(Config):
        assert f"{f.name} =" in text, f.name
    load_config(Path(__file__).parent.parent / "config" / "pithnode.example.toml", env={})


def fronts_of(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid \
                    and b"pithnode.node.front" in (d / "cmdline").read_bytes():
                out.append(int(d.name))
        except (OSError, ValueError, IndexError):
            pass
    return out


async def test_front_processes_serve_what_the_node_holds(tmp_path: Path):
    """http_workers = 2: the peer protocol, health and metrics pass through the fronts to the node;
    documents come from the fronts, current with the node's commits, the same bytes from each;
    a front that dies is replaced; SIGTERM stops them all."""
    from pithnode.core import check_bundle, KeyRing

    cfg_path = write_config(tmp_path, mirrors=[], gossip_interval=3600.0, poll_interval=3600.0, http_workers=2,
                            attest=False)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start(cfg_path, port)
    try:
        await wait_up(url)
        first = sorted(fronts_of(proc.pid))
        up_at = trio.current_time()
        assert len(first) == 2
        pn, evs = synthetic_subject(REG, 7000, 30, MIRRORS)
        code = pn.rsplit(":", 1)[-1]
        keys = [REG.entry(), *(m.entry() for m in MIRRORS)]
        async with httpx.AsyncClient(timeout=20) as client:
            body = peer.encode({"v": 1, "events": [json.dumps(e).encode() for e in evs[:20]], "keys": keys})
            r = await client.post(f"{url}/peer/v1/push", content=body)
            assert r.status_code == 200 and msgpack.unpackb(r.content)["admitted"] == 20
            assert (await client.get(url + "/healthz")).json()["events"] == 20
            metrics = (await client.get(url + "/metrics")).text
            assert "pithnode_events_admitted_total 20.0" in metrics  # the gauges read the store when scraped:
            assert "pithnode_events_stored 20.0" in metrics and "pithnode_subjects 1.0" in metrics
            assert "pithnode" in (await client.get(url + "/")).text
            ring = KeyRing()
            for k in keys:
                ring.add_entries([k])
            cfg = load_config(cfg_path, env={})
            for batch in (evs[:20], evs):  # after a second push, the fronts serve the new state
                if batch is evs:
                    body = peer.encode({"v": 1, "events": [json.dumps(e).encode() for e in evs[20:]], "keys": keys})
                    assert msgpack.unpackb((await client.post(f"{url}/peer/v1/push", content=body)).content)[
                        "admitted"] == 10
                want = canonical_bytes(merge(pn, batch, cfg.trusted_ring().merged(ring), cfg.registry))
                with trio.fail_after(5):
                    while (await client.get(f"{url}/pith/{code}/state.json")).content != want:
                        await trio.sleep(0.05)
        # a peer syncs through the fronts: reconciliation passed to the node, events answered by a front
        async with nodes(tmp_path / "peer", 1) as (other,):
            assert (await other.peers.sync_with(url))[0] == 30
        # new connections land on both fronts: every one serves the same bundle, and it verifies
        tags, bundles = set(), set()
        for _ in range(20):
            async with httpx.AsyncClient() as client:
                r = await client.get(f"{url}/pith/{code}/bundle.json")
                tags.add(r.headers["etag"])
                bundles.add(r.content)
        assert len(tags) == 1 and len(bundles) == 1
        report = check_bundle(json.loads(bundles.pop()), trusted=cfg.trusted_ring(), registry=cfg.registry)
        assert report.signature_ok and report.state_matches and len(report.events) == 30, report.problems
        # the fronts outlive the node's idle threads (a front once died with the thread that forked it)
        await trio.sleep_until(up_at + 12)
        assert sorted(fronts_of(proc.pid)) == first
        # a front killed is replaced, and serving goes on
        victim = fronts_of(proc.pid)[0]
        os.kill(victim, signal.SIGKILL)
        with trio.fail_after(10):
            while len(set(fronts_of(proc.pid)) - {victim}) < 2:
                await trio.sleep(0.2)
        async with httpx.AsyncClient() as client:
            for _ in range(10):
                assert (await client.get(f"{url}/pith/{code}/state.json")).status_code == 200
        fronts = fronts_of(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert await trio.to_thread.run_sync(lambda: proc.wait(timeout=15)) == 0
        for pid in fronts:
            with trio.fail_after(5):
                while Path(f"/proc/{pid}").exists() and "Z" not in (Path(f"/proc/{pid}/stat").read_text().split()[2]):
                    await trio.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
