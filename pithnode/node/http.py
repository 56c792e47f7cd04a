"""The node's HTTP/1.1 server: a thin trio driver of `h1.Connection` (the
sans-IO protocol: parsing by httptools, llhttp, the parser of Node.js) over
non-blocking sockets, with the deadlines and connection caps.

It replaced hypercorn for a measured reason (docs/PERFORMANCE.md, "Serving"):
at 64 keep-alive clients hypercorn served ~1,400 requests/s on this machine
where nginx serves ~130,000; the same app behind this server serves ~30,000.
It does only what a mirror needs: GET, HEAD and POST with bodies in memory,
keep-alive and pipelining, no TLS (put a TLS proxy in front), no HTTP/2, no
upgrades. Every limit a hostile client could push on is explicit in `Limits`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import socket
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate

import trio

from .h1 import NEED_DATA, BodyBudget, Connection, HttpError, Limits, Request, Response, error_body, render_head

__all__ = ["Handler", "HttpError", "Limits", "Request", "Response", "serve", "open_listeners", "listener_urls",
           "split_listen"]

log = logging.getLogger("pithnode.http")

RECEIVE_BYTES = 64 * 1024
Handler = Callable[[Request], Awaitable[Response]]
_ACCEPT_CAPACITY = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_date: tuple[int, bytes] = (0, b"")


def _http_date() -> bytes:
    """The Date header, formatted once a second."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, formatdate(now, usegmt=True).encode())
    return _date[1]


class _Conn:
    """What the reaper needs to know of a connection."""

    __slots__ = ("scope", "expires", "waiting", "timed_out")

    def __init__(self, expires: float):
        self.scope = trio.CancelScope()
        self.expires = expires
        self.waiting = True  # between requests
        self.timed_out = False


class Server:
    """Connections of one listening socket set, each a `h1.Connection` driven over its socket,
    one request at a time, by `handler`.

    Deadlines are kept by one reaper task rather than a cancel scope per read:
    that halves the server's cost per request (docs/PERFORMANCE.md, "Serving")."""

    def __init__(self, handler: Handler, limits: Limits):
        self.handler, self.limits = handler, limits
        self.budget = BodyBudget(limits.max_body_in_flight)
        self.live: set[_Conn] = set()
        self.per_address: dict[str, int] = {}
        self.busy = 0  # connections with a request in hand
        self.closing = False
        self.drained = trio.Event()

    async def reap(self) -> None:
        """Close connections past their deadline: idle past keep-alive, a request begun and not
        whole within `read_timeout` (slowloris: the clock is not reset by each byte, nor by blank
        lines), or a response not taken within `write_timeout` (a client that does not read)."""
        every = min(1.0, max(0.05, min(self.limits.read_timeout, self.limits.keep_alive_timeout,
                                       self.limits.write_timeout) / 4))
        while True:
            await trio.sleep(every)
            now = trio.current_time()
            for conn in self.live:
                if conn.expires < now:
                    conn.timed_out = True
                    conn.scope.cancel()

    async def accept(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        """Accept connections; out of file descriptors (EMFILE...), wait and try again with a
        growing pause, and say so once (trio's serve_listeners logs a traceback every 0.1 s)."""
        pause = 0.0
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _ACCEPT_CAPACITY:
                    raise
                if not pause:
                    log.error("cannot accept connections: %s; retrying until some close "
                              "(raise the open-file limit, LimitNOFILE)", os.strerror(exc.errno))
                pause = min(1.0, max(0.01, pause * 2))
                await trio.sleep(pause)
                continue
            if pause:
                log.warning("accepting connections again")
                pause = 0.0
            nursery.start_soon(self.connection, stream)

    async def connection(self, stream: trio.SocketStream) -> None:
        conn = _Conn(trio.current_time() + self.limits.keep_alive_timeout)
        address = "?"
        self.live.add(conn)
        try:
            try:
                peer = stream.socket.getpeername()
            except OSError:
                return
            client = ("unix", 0) if isinstance(peer, str) else (str(peer[0]), int(peer[1]))
            address = client[0]
            count = self.per_address[address] = self.per_address.get(address, 0) + 1
            cap = self.limits.max_connections_per_address
            refused = "too many connections" if len(self.live) > self.limits.max_connections or self.closing \
                else "too many connections from this address" \
                if cap and count > cap and address not in self.limits.uncapped_addresses else None
            if refused:
                body = error_body(refused)
                with trio.move_on_after(1):
                    await stream.send_all(render_head(503, [(b"content-type", b"application/json"),
                                                            (b"retry-after", b"5")], len(body), _http_date(),
                                                      True) + body)
                return
            h = Connection(self.limits, client, self.budget)
            try:
                with conn.scope:
                    await self._serve(stream, h, conn)
                if conn.timed_out and h.in_request:
                    with trio.move_on_after(1):
                        await _send(stream.socket.fileno(), h.send_error(
                            HttpError(408, "request not received in time"), _http_date()))
            finally:
                h.release()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            self.live.discard(conn)
            if address in self.per_address:
                self.per_address[address] -= 1
                if not self.per_address[address]:
                    del self.per_address[address]
            await _linger_close(stream)

    async def _serve(self, stream: trio.SocketStream, h: Connection, conn: _Conn) -> None:
        fd = stream.socket.fileno()
        limits = self.limits
        while True:
            try:
                event = h.next_event()
            except HttpError as exc:
                conn.expires = trio.current_time() + limits.write_timeout
                await _send(fd, h.send_error(exc, _http_date()))
                return
            if event is NEED_DATA:
                if h.in_request:
                    if conn.waiting:  # a request began in the last bytes read: its clock starts now
                        conn.waiting, conn.expires = False, trio.current_time() + limits.read_timeout
                elif self.closing:
                    return
                if cont := h.data_to_send():
                    await _send(fd, [cont])
                h.receive_data(await _receive(fd))
                continue
            if not isinstance(event, Request):  # CLOSED
                return
            conn.waiting, conn.expires = False, math.inf  # a handler is never cut short by the reaper
            self.busy += 1
            try:
                try:
                    status, headers, body = await self.handler(event)
                    out = h.send(status, headers, body, _http_date(), close=self.closing)
                except HttpError as exc:
                    out = h.send_error(exc, _http_date())
                except Exception:  # a bug must cost one request, never the server
                    log.exception("handler failed on %s %s", event.method, event.path[:200])
                    out = h.send(500, [(b"content-type", b"application/json")], error_body("internal error"),
                                 _http_date(), close=self.closing)
            finally:
                self.busy -= 1
                if self.closing and not self.busy:
                    self.drained.set()
            conn.expires = trio.current_time() + limits.write_timeout  # a client that never reads
            await _send(fd, out)
            if h.closed:
                return
            conn.waiting, conn.expires = True, trio.current_time() + limits.keep_alive_timeout

    def close(self) -> None:
        """Stop taking requests: idle connections end now, busy ones after their response."""
        self.closing = True
        for conn in self.live:
            if conn.waiting:
                conn.scope.cancel()
        if not self.busy:
            self.drained.set()


async def _receive(fd: int) -> bytes:
    """`SocketStream.receive_some` without its layers (a third of the server's time per request,
    docs/PERFORMANCE.md); still a checkpoint, so a client with data always ready cannot starve others."""
    try:
        data = os.read(fd, RECEIVE_BYTES)
    except BlockingIOError:
        while True:
            await trio.lowlevel.wait_readable(fd)
            try:
                return os.read(fd, RECEIVE_BYTES)
            except BlockingIOError:
                continue
    await trio.lowlevel.checkpoint()
    return data


async def _send(fd: int, buffers: list[bytes]) -> None:
    """Write `buffers` in order with one writev where the socket takes them all (a document's
    bytes are written from the cache, not copied into a response buffer)."""
    views = [memoryview(b) for b in buffers if b]
    while views:
        try:
            n = os.writev(fd, views)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(fd)
            continue
        while views and n >= len(views[0]):
            n -= len(views.pop(0))
        if views:
            views[0] = views[0][n:]


async def _linger_close(stream: trio.SocketStream) -> None:
    """Close after the client has read our last response: closing with its unread request
    bytes still queued would send a reset that can destroy the response in flight."""
    with trio.move_on_after(1):
        try:
            await stream.send_eof()
            for _ in range(64):  # a bounded amount of discarded input
                if not await stream.receive_some(RECEIVE_BYTES):
                    break
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
    await trio.aclose_forcefully(stream)


def split_listen(listen: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or not host:
        raise ValueError(f"listen address must be host:port, got {listen!r}")
    return host.strip("[]"), int(port)


async def open_listeners(listen: str) -> list[trio.SocketListener]:
    """`host:port`, or `unix:PATH` (a socket only its owner may connect to)."""
    if listen.startswith("unix:"):
        path = listen.removeprefix("unix:")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # left by an earlier run
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await sock.bind(path)
        os.chmod(path, 0o600)
        sock.listen(128)
        return [trio.SocketListener(sock)]
    host, port = split_listen(listen)
    return await trio.open_tcp_listeners(port, host=host)


def listener_urls(listeners: list[trio.SocketListener]) -> list[str]:
    urls = []
    for listener in listeners:
        addr = listener.socket.getsockname()
        if isinstance(addr, str):
            urls.append(f"unix:{addr}")
        else:
            urls.append(f"http://[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"http://{addr[0]}:{addr[1]}")
    return urls


async def serve(handler: Handler, listen: str | list[trio.SocketListener], shutdown: trio.Event,
                limits: Limits = Limits(), *,
                task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve until `shutdown` is set, then let requests in flight finish (within `limits.grace`).
    Reports the bound URLs once listening."""
    listeners = await open_listeners(listen) if isinstance(listen, str) else listen
    server = Server(handler, limits)
    async with trio.open_nursery() as connections:
        async with trio.open_nursery() as accepting:
            accepting.start_soon(server.reap)
            for listener in listeners:
                accepting.start_soon(server.accept, listener, connections)
            task_status.started(listener_urls(listeners))
            await shutdown.wait()
            accepting.cancel_scope.cancel()
        for listener in listeners:
            await listener.aclose()
        server.close()
        with trio.move_on_after(limits.grace):
            await server.drained.wait()
        connections.cancel_scope.cancel()
