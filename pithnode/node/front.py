"""Front processes: with `http_workers = N`, N processes of their own serve
the public port, and the node process serves only its private unix socket.

Why (measured, docs/PERFORMANCE.md "Serving"): one trio process serves ~12,000
documents/s where nginx on the same two cores serves ~100,000, and a reader
served by the process that is merging a batch waits for the batch. Fronts open
the store read-only (WAL: readers never wait for the writer) and serve the
resolver documents themselves; a document is rebuilt only when the record's
row says its state changed, and the bundle is a function of the store, so
every front serves the same bytes and ETag; so are the peer protocol's
`events` answers. What needs the node's memory or writes (reconciliation,
pushes, metrics, health, the status page) they pass to the node over its
socket, with the client's address in a header only that socket trusts.
"""

from __future__ import annotations

import logging
import pickle
import signal
import socket
import subprocess
import sys

import httpx
import trio

from ..config import Config
from ..workers import die_with_parent
from .http import Handler, Limits, Request, Response
from .server import App, serve_http

log = logging.getLogger("pithnode.front")

# What needs the node's memory or writes. The peer protocol's `events` answers (the big ones) are
# reads of the store: fronts answer them, so they are not copied through the node's socket.
PROXIED_PATHS = frozenset({"/peer/v1/reconcile", "/peer/v1/push", "/metrics", "/healthz", "/status.json", "/"})
CLIENT_HEADER = "x-pithnode-client"
# not passed on: framing is per hop; compression is for the last hop only
_NOT_FORWARDED = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "host", "date",
                            "server", "te", "upgrade", "accept-encoding", "content-encoding", CLIENT_HEADER})
RESTART_PAUSE = 1.0


def node_socket(cfg: Config) -> str:
    return str(cfg.data_dir / "node.sock")


def from_fronts(handle: Handler) -> Handler:
    """The node's handler on its private socket: the client is the one the front saw."""

    async def handler(req: Request) -> Response:
        seen = req.headers.pop(CLIENT_HEADER, "")
        host, _, port = seen.rpartition(":")
        req.client = (host or "?", int(port) if port.isascii() and port.isdigit() else 0)
        return await handle(req)

    return handler


class Front:
    """One front process's handler: documents from the store (`local`), the rest through the node."""

    def __init__(self, local: Handler, client: httpx.AsyncClient):
        self.local, self.client = local, client

    async def handle(self, req: Request) -> Response:
        if req.path not in PROXIED_PATHS:
            return await self.local(req)
        headers = [(k, v) for k, v in req.headers.items() if k not in _NOT_FORWARDED]
        headers.append((CLIENT_HEADER, f"{req.client[0]}:{req.client[1]}"))
        try:
            url = httpx.URL(path=req.path, query=req.query) if req.query else httpx.URL(path=req.path)
            r = await self.client.request(req.method, url,
                                          headers=headers, content=req.body)
        except httpx.HTTPError as exc:
            log.warning("node process unreachable: %s", exc)
            return 503, [(b"content-type", b"application/json"), (b"retry-after", b"5")], \
                b'{"error":"the node process is not answering; try again"}'
        kept = [(k, v) for k, v in r.headers.raw if k.decode("latin-1").lower() not in _NOT_FORWARDED]
        return r.status_code, kept, r.content


async def _front(cfg: Config, sockets: list[socket.socket], public_url: str) -> None:
    from .peer import PeerService
    from .service import Node

    node = Node(cfg, readonly=True)
    node.set_public_url(public_url)
    app = App(node, PeerService(node))
    transport = httpx.AsyncHTTPTransport(uds=node_socket(cfg))
    shutdown = trio.Event()
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://node",
                                     timeout=cfg.total_timeout) as client, trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for _ in signals:
                        shutdown.set()
                        return

            nursery.start_soon(stop_on_signal)
            listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(s)) for s in sockets]
            await serve_http(app, listeners, shutdown, wrap=lambda local: Front(local, client).handle)
            nursery.cancel_scope.cancel()
    finally:
        node.close()


def main() -> None:
    """`python -m pithnode.node.front`: the node process writes (config, fds, public URL) on stdin."""
    die_with_parent()
    cfg, fds, public_url, level = pickle.load(sys.stdin.buffer)
    logging.basicConfig(level=level, format="%(asctime)s front[%(process)d] %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per passed-on request otherwise
    sockets = [socket.socket(fileno=fd) for fd in fds]
    trio.run(_front, cfg, sockets, public_url)


async def run_fronts(cfg: Config, listeners: list[trio.SocketListener], public_url: str, shutdown: trio.Event, *,
                     task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Keep `cfg.http_workers` front processes serving `listeners` until `shutdown`;
    one that dies is started again (after a pause), so a crash does not halve capacity."""
    fds = [listener.socket.fileno() for listener in listeners]
    payload = pickle.dumps((cfg, fds, public_url, logging.getLogger().getEffectiveLevel()))

    def start() -> subprocess.Popen[bytes]:
        # From this (the trio) thread, not trio's process helper: that forks from a worker thread, and
        # PR_SET_PDEATHSIG (die_with_parent) fires when the forking *thread* exits, ten idle seconds on.
        proc = subprocess.Popen([sys.executable, "-m", "pithnode.node.front"], stdin=subprocess.PIPE, pass_fds=fds)
        assert proc.stdin is not None
        with proc.stdin:
            proc.stdin.write(payload)
        return proc

    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(cfg.http_workers):
            procs.append(start())
        log.info("%d front processes serve the public port (pids %s)", len(procs), [p.pid for p in procs])
        task_status.started()
        while not shutdown.is_set():
            with trio.move_on_after(RESTART_PAUSE):
                await shutdown.wait()
            for i, proc in enumerate(procs):
                if proc.poll() is not None and not shutdown.is_set():
                    log.warning("front process %d exited (%s); starting another", proc.pid, proc.returncode)
                    procs[i] = start()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        with trio.CancelScope(shield=True), trio.move_on_after(Limits.grace + 2):
            while any(proc.poll() is None for proc in procs):  # noqa: ASYNC110 (a Popen's exit sets no trio Event)
                await trio.sleep(0.05)
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    main()
