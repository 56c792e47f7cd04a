"""`pithnode run`: the long-lived node. One nursery owns every task: the HTTP
server, polling, gossip, own attestations, discovery and the report hook.
Serving starts only once the store is open; a shutdown (SIGTERM/SIGINT, or
the `shutdown` event in tests) stops the server gracefully, then cancels the
rest. Every write is one committed transaction, so nothing committed is lost
and a restart resumes from the store.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial

import trio

from ..config import Config
from ..core import parse_json
from ..ingest import IngestError
from ..lock import DataDirLock
from ..net.fetch import FetchError, HttpFetcher
from ..store import StoreError
from . import peer
from .admission import AdmissionWorkers
from .attest import attest_all
from .front import from_fronts, node_socket, run_fronts
from .http import listener_urls, open_listeners
from .poller import Poller, mirror_base_urls
from .server import App, serve_http
from .service import Node

log = logging.getLogger("pithnode.node")

OFFER_MAX = 50_000  # events another process stored that are pushed to peers at once (more: reconciled)


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
    """A few peers drawn at random from the mirror_hint events and from one
    peer's /pith-mirrors.json (PeerTable.lister and .learn; docs/PROTOCOL-NOTES.md, "Peer choice")."""
    peers = running.peers
    peers.learn(list(mirror_base_urls(running.node)), None)
    url = peers.peers.lister(peers._rng)
    if url is None:
        return
    try:
        res = await running.poller.fetcher.get(f"{url}/pith-mirrors.json", max_bytes=1024 * 1024)
        doc = parse_json(res.body)
    except (FetchError, ValueError):
        return
    listed = (doc.get("mirrors") or [])[:1000] if isinstance(doc, dict) else []
    peers.learn([m["base_url"] for m in listed if isinstance(m, dict) and isinstance(m.get("base_url"), str)], url)


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
        with trio.move_on_after(3600):
            await node.wait_changed()
        await trio.sleep(0.05)  # let a burst of changes settle


async def notice_other_writers(node: Node, interval: float = 1.0) -> None:
    """Another process writing our store (`pithnode import` / `sync`; SQLite's
    data_version changes only for other connections' commits): within
    `interval`, what it stored is offered to peers and attested. A bulk import
    of more than OFFER_MAX events is left to the next reconciliation."""
    store = node.store
    version, seen = store.data_version(), store.event_count()
    while True:
        await trio.sleep(interval)
        newest = store.event_count()  # read before data_version: a commit in between is seen next time
        if (v := store.data_version()) == version:
            seen = newest  # every event since is our own, queued already
            continue
        version, ids, last = v, [], seen
        for chunk in store.event_keys_since(seen):
            ids += [event_id for _seq, _at, event_id in chunk]
            last = chunk[-1][0]
            if len(ids) > OFFER_MAX:  # not read further on the event loop
                break
        bulk = len(ids) > OFFER_MAX
        seen = store.event_count() if bulk else last
        if ids:
            log.info("another process stored %s events: %s", f"over {OFFER_MAX}" if bulk else len(ids),
                     "peers get them by reconciliation" if bulk else "offering them to peers")
        node.other_writer_committed([] if bulk else ids)


async def run_node(cfg: Config, shutdown: trio.Event | None = None, *, workers: AdmissionWorkers | None = None,
                   task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED) -> None:
    """Raises DataDirBusy when another process runs a node on this data dir. `workers`: see `Node`."""
    if shutdown is None:
        shutdown = trio.Event()
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    lock = DataDirLock(cfg.data_dir)
    lock.acquire()  # before the key is read: one process signs with it
    try:
        await _run_locked(cfg, shutdown, lock, task_status, workers)
    finally:
        lock.release()


async def _run_locked(cfg: Config, shutdown: trio.Event, lock: DataDirLock, task_status: trio.TaskStatus[Running],
                      workers: AdmissionWorkers | None = None) -> None:
    node = Node(cfg, workers=workers)  # opens the store first: nothing is served before it is open
    try:
        async with HttpFetcher(
            max_bytes=cfg.max_bundle_bytes, connect_timeout=cfg.connect_timeout, total_timeout=cfg.total_timeout,
            retries=cfg.retries, allow_private=cfg.allow_private_addresses, trusted=cfg.operator_urls,
        ) as fetcher, peer.new_client(cfg.connect_timeout) as client:
            peers = peer.PeerService(node, client, timeout=cfg.total_timeout)
            for p in cfg.peers:
                peers.add_peer(p, operator=True)
            poller = Poller(node, fetcher)
            async with trio.open_nursery() as nursery:
                # the server stops by itself (gracefully) once `shutdown` is set
                app = App(node, peers)
                try:
                    if cfg.http_workers:  # front processes serve the public port; we serve them
                        public = await open_listeners(cfg.listen)
                        binds = listener_urls(public)
                        await nursery.start(partial(serve_http, app, f"unix:{node_socket(cfg)}", shutdown,
                                                    wrap=from_fronts))
                    else:
                        binds = await nursery.start(serve_http, app, cfg.listen, shutdown)
                except OSError as exc:  # in use, not ours to bind: one line for the operator
                    raise OSError(exc.errno, f"cannot listen on {cfg.listen}: {exc.strerror or exc}") from None
                if not cfg.public_url:
                    node.set_public_url(binds[0])
                lock.note(url=binds[0], public_url=node.public_url)
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
                    tasks.start_soon(notice_other_writers, node)
                    task_status.started(running)
                    await shutdown.wait()
                    log.info("shutting down")
                    tasks.cancel_scope.cancel()
    finally:
        node.close()
