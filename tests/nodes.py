"""Real nodes for tests: each with its own SQLite file, key and HTTP
server on a 127.0.0.1 port picked by the OS, all in one trio process."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio

from helpers import REG
from pithnode.config import load_config
from pithnode.node import peer
from pithnode.node.admission import AdmissionWorkers
from pithnode.node.runner import Running, run_node
from pithnode.testing.procs import free_port, wait_up  # noqa: F401 (tests import them from here)


def node_config(tmp: Path, name: str, **extra: Any):  # type: ignore[no-untyped-def]
    e = REG.config_entry()
    settings = dict(data_dir=str(tmp / name), listen="127.0.0.1:0",
                    registry_fingerprints=["8d4b5ee74e4693bcd1df2446408b0d54", REG.fingerprint],
                    registry_keys=[e], allow_private_addresses=True, retries=0, total_timeout=5.0,
                    connect_timeout=2.0, mirrors=[], poll_interval=3600.0, gossip_interval=0.5)
    return load_config(None, env={}, **{**settings, **extra})


@asynccontextmanager
async def nodes(tmp: Path, n: int, *, workers: AdmissionWorkers | None = None,
                **extra: Any) -> AsyncIterator[list[Running]]:
    """Start `n` nodes (with `workers`: all admitting in those); stop them all on exit."""
    async with trio.open_nursery() as nursery:
        running: list[Running] = []
        for i in range(n):
            running.append(await nursery.start(partial(run_node, node_config(tmp, f"node{i}", **extra),
                                                       workers=workers)))
        try:
            yield running
        finally:
            for r in running:
                r.shutdown.set()


def connect(running: list[Running], edges: list[tuple[int, int]]) -> None:
    for a, b in edges:
        running[a].peers.add_peer(running[b].url, operator=True)
        running[b].peers.add_peer(running[a].url, operator=True)


async def get_json(url: str) -> Any:
    async with httpx.AsyncClient() as client:
        r = await client.get(url)
        return r.status_code, (r.json() if r.status_code == 200 else None)


async def states(running: list[Running], code: str) -> list[str | None]:
    out = []
    for r in running:
        status, doc = await get_json(f"{r.url}/pith/{code}/state.json")
        out.append(doc["state_sha256"] if doc else None)
    return out


async def wait_converged(running: list[Running], codes: list[str], timeout: float = 30.0) -> dict[str, str]:
    """Wait until every node serves one and the same state for every code."""
    with trio.fail_after(timeout):
        while True:
            got = {c: await states(running, c) for c in codes}
            if all(len(set(v)) == 1 and v[0] is not None for v in got.values()):
                return {c: v[0] for c, v in got.items()}  # type: ignore[misc]
            await trio.sleep(0.2)


async def push(url: str, events: list[dict[str, Any]], keys: list[dict[str, Any]]) -> httpx.Response:
    body = peer.encode({"v": peer.VERSION, "events": [json.dumps(e).encode() for e in events], "keys": keys})
    async with httpx.AsyncClient() as client:
        return await client.post(f"{url}/peer/v1/push", content=body)
