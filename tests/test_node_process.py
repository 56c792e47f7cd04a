"""`pithnode run` as a real process: SIGTERM during ingest stops it within
10 s and loses nothing it acknowledged; a restart serves the same data."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import msgpack
import trio

from helpers import MIRRORS, REG, write_config
from pithnode.core import canonical_bytes, merge
from pithnode.config import load_config
from pithnode.node import peer
from pithnode.store import Store
from pithnode.synth import synthetic_subject
from pithnode.views import events_of


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cfg_path: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PITHNODE_")}
    return subprocess.Popen([sys.executable, "-m", "pithnode", "run", "--config", str(cfg_path),
                             "--listen", f"127.0.0.1:{port}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def wait_up(url: str) -> None:
    with trio.fail_after(20):
        async with httpx.AsyncClient() as client:
            while True:
                try:
                    if (await client.get(url + "/healthz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await trio.sleep(0.1)


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
