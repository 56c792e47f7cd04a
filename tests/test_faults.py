"""Storage faults: a full disk, a corrupt store, and `kill -9` of a running
node under gossip load. Nothing acknowledged is lost, nothing is corrupt, and
the node says plainly what happened."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
from pathlib import Path

import httpx
import msgpack
import trio

from helpers import MIRRORS, REG, run_cli, write_config
from nodes import get_json, nodes, push
from pithnode.config import load_config
from pithnode.core import canonical_bytes, merge
from pithnode.node import peer
from pithnode.store import Store
from pithnode.testing.synth import synthetic_subject
from pithnode.views import events_of
from test_node_process import free_port, start, wait_up


async def test_disk_full_refuses_the_write_keeps_serving_and_resumes(tmp_path: Path):
    async with nodes(tmp_path, 1) as (a,):
        pn, evs = synthetic_subject(REG, 8000, 10, MIRRORS)
        code = pn.rsplit(":", 1)[-1]
        await a.node.ingest_bundle(REG.bundle(pn, evs, keys=MIRRORS), source="test")
        await trio.sleep(0.3)  # let the node's own attestations land first
        db = a.node.store.db
        (pages,) = db.execute("PRAGMA page_count").fetchone()
        db.execute(f"PRAGMA max_page_count={pages}")  # the disk is now full, as far as SQLite can tell
        more = synthetic_subject(REG, 8001, 200, MIRRORS)[1]
        keys = [REG.entry(), *(m.entry() for m in MIRRORS)]
        r = await push(a.url, more, keys)
        assert r.status_code == 503 and "disk full" in r.json()["error"]
        assert not a.node.store.known_event_ids(e["event_id"] for e in more)
        status, state = await get_json(f"{a.url}/pith/{code}/state.json")
        assert status == 200  # still serving what it holds
        metrics = (await httpx.AsyncClient().get(a.url + "/metrics")).text
        assert "pithnode_store_errors_total 1.0" in metrics
        db.execute("PRAGMA max_page_count=1073741823")  # space returns
        r = await push(a.url, more, keys)
        assert r.status_code == 200 and msgpack.unpackb(r.content)["admitted"] == len(more)
        assert a.node.store.integrity_check() == ["ok"]


def test_corrupt_store_gives_a_clear_error_and_is_never_wiped(tmp_path: Path):
    cfg = write_config(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    db = data / "pithnode.sqlite3"
    db.write_bytes(b"this is not a database, but it might be someone's evidence" * 100)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    for args in (("list",), ("run", "--listen", f"127.0.0.1:{free_port()}"), ("doctor", "--offline")):
        out = run_cli(*args, config_path=cfg, timeout=30)
        assert out.returncode == 1, (args, out.stderr)
        text = out.stderr + out.stdout  # what to do, in the message itself (a pip install has no docs/)
        assert "not a valid pithnode database" in text and "move" in text.lower() and "docs/" not in text
        assert "Traceback" not in out.stderr
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


KILLS = 50


async def test_kill_9_under_gossip_load_loses_nothing_acknowledged(tmp_path: Path):
    cfg_path = write_config(tmp_path, mirrors=[], gossip_interval=3600.0, poll_interval=3600.0, durability="full")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    rng = random.Random(9)
    keys = [REG.entry(), *(m.entry() for m in MIRRORS)]
    batches = [synthetic_subject(REG, 9000 + n, 20, MIRRORS)[1] for n in range(KILLS * 4)]
    acknowledged: set[str] = set()
    landed_mid_load = 0
    for k in range(KILLS):
        proc = start(cfg_path, port)
        try:
            await wait_up(url)
            mine = batches[k * 4:(k + 1) * 4]

            async def pusher(evs: list[dict]) -> None:
                body = peer.encode({"v": 1, "events": [json.dumps(e).encode() for e in evs], "keys": keys})
                async with httpx.AsyncClient(timeout=10) as client:
                    try:
                        r = await client.post(f"{url}/peer/v1/push", content=body)
                    except httpx.HTTPError:
                        return
                    if r.status_code == 200 and msgpack.unpackb(r.content)["rejected"] == 0:
                        acknowledged.update(e["event_id"] for e in evs)

            async with trio.open_nursery() as nursery:
                for evs in mine:
                    nursery.start_soon(pusher, evs)
                await trio.sleep(rng.uniform(0.0, 0.15))
                if proc.poll() is None:
                    landed_mid_load += any(e["event_id"] not in acknowledged for evs in mine for e in evs)
                    os.kill(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
    assert landed_mid_load >= KILLS // 4, landed_mid_load
    cfg = load_config(cfg_path, env={})
    with Store(cfg.db_path) as store:
        assert store.integrity_check() == ["ok"]
        assert not acknowledged - store.known_event_ids(acknowledged), "an acknowledged event was lost"
        ring = cfg.trusted_ring().merged(store.key_ring())
        for s in store.subjects():
            assert store.state_bytes(s.pith_number) == canonical_bytes(
                merge(s.pith_number, events_of(store, s), ring, cfg.registry))
