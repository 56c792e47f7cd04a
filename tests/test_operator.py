"""What an operator meets: the data-dir lock, operator-named peers and
mirrors, the one-off sync's deadline, `pithnode status` and /status.json,
logging options, exit codes and one-line errors, the systemd unit."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import trio

from helpers import MIRRORS, REG
from nodes import connect, nodes
from pithnode import __version__
from pithnode.synth import synthetic_subject


async def test_status_json_says_what_the_node_is_doing(tmp_path: Path):
    from httpserver import running_server

    pn, evs = synthetic_subject(REG, 7100, 8, MIRRORS)
    code = pn.rsplit(":", 1)[-1]
    async with running_server() as registry:
        path = f"/pith/{code}/bundle.json"
        registry.static(path, json.dumps(REG.bundle(pn, evs, keys=MIRRORS, base_url=registry.url)).encode())
        async with nodes(tmp_path, 2, mirrors=[registry.url], follow=[pn], poll_interval=0.3) as (a, b):
            connect([a, b], [(0, 1)])
            with trio.fail_after(20):
                while not (a.node.store.subject(pn) and a.peers.peers[b.url].last_ok):
                    await trio.sleep(0.05)
            async with httpx.AsyncClient() as client:
                r = await client.get(f"{a.url}/status.json")
                health = (await client.get(f"{a.url}/healthz")).json()
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    doc = r.json()
    assert doc["version"] == __version__ and doc["pid"] == os.getpid()
    assert doc["public_url"] == a.url and doc["key_fingerprint"] == a.node.identity.fingerprint
    assert len(evs) <= doc["events"] <= health["events"] and doc["records"] == 1  # (own attestations may land between)
    assert doc["followed"] == [pn] and doc["unmerged_records"] == 0
    source = next(s for s in doc["sources"] if s["url"] == registry.url + path)
    assert source["failures"] == 0 and source["record"] == pn and source["error"] is None and source["last_success"]
    assert [(p["url"], p["healthy"]) for p in doc["peers"]] == [(b.url, True)]
    assert doc["uptime_seconds"] >= 0 and doc["started_at"].endswith("Z")
