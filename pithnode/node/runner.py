"""`pithnode run`: the long-lived node. One nursery owns every task: the HTTP
server, polling, gossip, own attestations, discovery and the report hook.
Serving starts only once the store is open; a shutdown (SIGTERM/SIGINT, or
the `shutdown` event in tests) stops the server gracefully, then cancels the
rest. Every write is one committed transaction, so nothing committed is lost
and a restart resumes from the store.
"""

from __future__ import annotations

import logging
from functools import partial
from dataclasses import dataclass

import trio

from ..config import Config
from ..net.fetch import FetchError, HttpFetcher
from ..core import parse_json
from ..ingest import IngestError
from ..store import StoreError
from . import peer
from .attest import attest_all
from .poller import Poller, mirror_base_urls
from .front import from_fronts, node_socket, run_fronts
from .http import listener_urls, open_listeners
from .server import App, serve_http
from .service import Node

log = logging.getLogger("pithnode.node")


@dataclass
class Running:
    """What a started node exposes to its owner (the CLI, tests, the demo)."""

    node: Node
    peers: peer.PeerService
    poller: Poller
    url: str
    shutdown: trio.Event


async def _every(interval: float, fn, *args) -> None:  # type: ignore[no-untyped-def]
    while True:
        try:
            await fn(*args)
        except (FetchError, IngestError, StoreError, OSError) as exc:
            log.warning("%s failed: %s", getattr(fn, "__name__", fn), exc)
        await trio.sleep(interval)


async def discover(running: Running) -> None:
    """Peers from mirror_hint events and from peers' /pith-mirrors.json."""
    for base in mirror_base_urls(running.node):
        running.peers.add_peer(base, via="mirror hints")
    for url, st in list(running.peers.peers.items()):
        if not st.healthy:
            continue
        try:
            res = await running.poller.fetcher.get(f"{url}/pith-mirrors.json", max_bytes=1024 * 1024)
            doc = parse_json(res.body)
        except (FetchError, ValueError):
            continue
        for m in (doc.get("mirrors") or [])[:100] if isinstance(doc, dict) else []:
            if isinstance(m, dict) and isinstance(m.get("base_url"), str):
                running.peers.add_peer(m["base_url"], via=url)


async def attest_loop(running: Running) -> None:
    """Sign what is due whenever the store changes (and at least hourly, for renewals)."""
    node = running.node
    while True:
        try:
            await attest_all(node)
        except IngestError as exc:
            log.error("own attestation refused: %s", exc)
        except StoreError as exc:  # nothing was signed into the store: retried on the next change
            node.metrics.store_errors.inc()
            log.error("store: %s (own attestations wait)", exc)
        await node.sleep_until_changed(3600)
        await trio.sleep(0.05)  # let a burst of changes settle


async def run_node(cfg: Config, shutdown: trio.Event | None = None, *,
                   task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED) -> None:
    if shutdown is None:
        shutdown = trio.Event()
    node = Node(cfg)  # opens the store first: nothing is served before it is open
    try:
        async with HttpFetcher(
            max_bytes=cfg.max_bundle_bytes, connect_timeout=cfg.connect_timeout, total_timeout=cfg.total_timeout,
            retries=cfg.retries, allow_private=cfg.allow_private_addresses,
        ) as fetcher, peer.new_client(cfg.connect_timeout) as client:
            peers = peer.PeerService(node, client, timeout=cfg.total_timeout)
            for p in cfg.peers:
                peers.add_peer(p, operator=True)
            poller = Poller(node, fetcher)
            async with trio.open_nursery() as nursery:
                # the server stops by itself (gracefully) once `shutdown` is set
                app = App(node, peers)
                if cfg.http_workers:  # front processes serve the public port; we serve them
                    public = await open_listeners(cfg.listen)
                    binds = listener_urls(public)
                    await nursery.start(partial(serve_http, app, f"unix:{node_socket(cfg)}", shutdown,
                                                wrap=from_fronts))
                else:
                    binds = await nursery.start(serve_http, app, cfg.listen, shutdown)
                if not cfg.public_url:
                    node.set_public_url(binds[0])
                if cfg.http_workers:
                    await nursery.start(run_fronts, cfg, public, node.public_url, shutdown)
                running = Running(node, peers, poller, node.public_url, shutdown)
                log.info("serving %s (key %s, %d events held)", node.public_url, node.identity.key_id,
                         node.store.event_count())
                async with trio.open_nursery() as tasks:
                    if cfg.attest:
                        tasks.start_soon(attest_loop, running)
                    tasks.start_soon(poller.run, cfg.poll_interval)
                    tasks.start_soon(peers.run, cfg.gossip_interval)
                    tasks.start_soon(_every, cfg.gossip_interval * 4, discover, running)
                    tasks.start_soon(node.run_hooks)
                    tasks.start_soon(app.pages.sample)
                    task_status.started(running)
                    await shutdown.wait()
                    log.info("shutting down")
                    tasks.cancel_scope.cancel()
    finally:
        node.close()
