"""The node's HTTP/1.1 server: trio sockets, requests parsed by httptools
(llhttp, the parser of Node.js).

It replaced hypercorn for a measured reason (docs/PERFORMANCE.md, "Serving"):
at 64 keep-alive clients hypercorn served ~1,400 requests/s on this machine
where nginx serves ~130,000; the same app behind this server serves ~30,000.
It does only what a mirror needs: GET, HEAD and POST with bodies in memory,
keep-alive and pipelining, no TLS (put a TLS proxy in front), no HTTP/2, no
upgrades. Every limit a hostile client could push on is explicit in `Limits`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import formatdate
from functools import partial
from http import HTTPStatus
from urllib.parse import unquote

import httptools
import trio

log = logging.getLogger("pithnode.http")

RECEIVE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Limits:
    max_head_bytes: int = 16 * 1024  # request line + headers
    max_body_bytes: int = 8 * 1024 * 1024
    read_timeout: float = 30.0  # a started request must arrive whole within this (slowloris)
    keep_alive_timeout: float = 15.0  # an idle connection is closed after this
    max_connections: int = 1024  # more are answered 503 and closed
    grace: float = 3.0  # on shutdown, requests in flight get this long to finish


@dataclass
class Request:
    method: str
    path: str  # percent-decoded
    query: bytes
    headers: dict[str, str]  # lower-case names; repeated fields joined with ", "
    body: bytes
    client: tuple[str, int]


Response = tuple[int, list[tuple[bytes, bytes]], bytes]
Handler = Callable[[Request], Awaitable[Response]]


class Refused(Exception):
    """A request the server answers itself, then closes the connection."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class _Parser:
    """httptools callbacks gathered into whole requests (pipelined ones queue up)."""

    def __init__(self, limits: Limits, client: tuple[str, int]):
        self.limits, self.client = limits, client
        self.parser = httptools.HttpRequestParser(self)
        self.ready: list[tuple[Request, bool]] = []  # (request, keep-alive)
        self.in_message = False
        self.wants_continue = False
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head = 0
        self.body: list[bytes] = []
        self.size = 0

    def feed(self, data: bytes) -> None:
        """Parse `data`; raises Refused for anything this server does not take."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, Refused):
                raise exc.__context__ from None
            raise Refused(400, "malformed request") from None
        except httptools.HttpParserUpgrade:  # the request itself was whole; what follows is not HTTP
            if self.ready:
                self.ready[-1] = (self.ready[-1][0], False)
            else:
                raise Refused(400, "protocol upgrades are not supported") from None
        except httptools.HttpParserError as exc:
            raise Refused(400, f"malformed request: {exc}") from None

    # -- httptools callbacks ---------------------------------------------------

    def on_message_begin(self) -> None:
        self._reset()
        self.in_message = True

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        self.headers.append((name.lower(), value))

    def _count(self, n: int) -> None:
        self.head += n
        if self.head > self.limits.max_head_bytes:
            raise Refused(431, f"request head over {self.limits.max_head_bytes} bytes")

    def on_headers_complete(self) -> None:
        for name, value in self.headers:
            if name == b"content-length" and int(value) > self.limits.max_body_bytes:  # llhttp checked the digits
                raise Refused(413, f"body over the cap of {self.limits.max_body_bytes} bytes")
            if name == b"expect" and value.lower() == b"100-continue":
                self.wants_continue = True

    def on_body(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limits.max_body_bytes:
            raise Refused(413, f"body over the cap of {self.limits.max_body_bytes} bytes")
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        path, _, query = self.url.partition(b"?")
        headers: dict[str, str] = {}
        for name, value in self.headers:
            key, text = name.decode("latin-1"), value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        request = Request(self.parser.get_method().decode("ascii"), unquote(path.decode("latin-1")),
                          query.partition(b"#")[0], headers, b"".join(self.body), self.client)
        self.ready.append((request, self.parser.should_keep_alive()))
        self.in_message = self.wants_continue = False
        self._reset()


_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_date: tuple[int, bytes] = (0, b"")


def _http_date() -> bytes:
    """The Date header, formatted once a second."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, formatdate(now, usegmt=True).encode())
    return _date[1]


def render(status: int, headers: list[tuple[bytes, bytes]], body: bytes, *, head_only: bool = False,
           close: bool = False) -> bytes:
    """A response's bytes. Header names and values come from this program, never from a client."""
    out = [b"HTTP/1.1 %d %s\r\ndate: %s\r\nserver: pithnode\r\n" % (status, _REASONS.get(status, b""), _http_date())]
    out.extend(b"%s: %s\r\n" % kv for kv in headers)
    if status != 304 and status >= 200 and status != 204:
        out.append(b"content-length: %d\r\n" % len(body))
    if close:
        out.append(b"connection: close\r\n")
    out.append(b"\r\n")
    if not head_only and status != 304:
        out.append(body)
    return b"".join(out)


def _error(status: int, message: str) -> bytes:
    body = b'{"error":"%s"}' % message.replace("\\", "\\\\").replace('"', '\\"').encode("ascii", "replace")
    return render(status, [(b"content-type", b"application/json")], body, close=True)


class _Conn:
    """What the reaper needs to know of a connection."""

    __slots__ = ("scope", "expires", "waiting", "timed_out")

    def __init__(self, expires: float):
        self.scope = trio.CancelScope()
        self.expires = expires
        self.waiting = True  # between requests
        self.timed_out = False


class Server:
    """Connections of one listening socket set, each served in order by `handler`.

    Deadlines are kept by one reaper task rather than a cancel scope per read:
    that halves the server's cost per request (docs/PERFORMANCE.md, "Serving")."""

    def __init__(self, handler: Handler, limits: Limits):
        self.handler, self.limits = handler, limits
        self.live: set[_Conn] = set()
        self.busy = 0  # connections with a request in hand
        self.closing = False
        self.drained = trio.Event()

    async def reap(self) -> None:
        """Close connections past their deadline: idle past keep-alive, or a request begun and
        not whole within `read_timeout` (slowloris: the clock is not reset by each byte)."""
        every = min(1.0, max(0.05, min(self.limits.read_timeout, self.limits.keep_alive_timeout) / 4))
        while True:
            await trio.sleep(every)
            now = trio.current_time()
            for conn in self.live:
                if conn.expires < now:
                    conn.timed_out = True
                    conn.scope.cancel()

    async def connection(self, stream: trio.SocketStream) -> None:
        conn = _Conn(trio.current_time() + self.limits.keep_alive_timeout)
        self.live.add(conn)
        try:
            if len(self.live) > self.limits.max_connections or self.closing:
                with trio.move_on_after(1):
                    await stream.send_all(_error(503, "too many connections"))
                return
            try:
                peer = stream.socket.getpeername()
            except OSError:
                return
            p = _Parser(self.limits, ("unix", 0) if isinstance(peer, str) else (str(peer[0]), int(peer[1])))
            with conn.scope:
                await self._serve(stream, p, conn)
            if conn.timed_out and p.in_message:
                with trio.move_on_after(1):
                    await stream.send_all(_error(408, "request not received in time"))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            self.live.discard(conn)
            await _linger_close(stream)

    async def _serve(self, stream: trio.SocketStream, p: _Parser, conn: _Conn) -> None:
        fd = stream.socket.fileno()
        while True:
            if not p.in_message:
                if self.closing:
                    return
                conn.waiting, conn.expires = True, trio.current_time() + self.limits.keep_alive_timeout
            elif conn.waiting:  # a request began in the last bytes read: its clock starts now
                conn.waiting, conn.expires = False, trio.current_time() + self.limits.read_timeout
            data = await _receive(fd)
            if not data:
                return
            refused = None
            try:
                p.feed(data)
            except Refused as exc:
                refused = exc
            out, close = [], False
            if p.ready:
                conn.waiting, conn.expires = False, math.inf  # a handler is never cut short by the reaper
                self.busy += 1
                try:
                    for request, keep_alive in p.ready:
                        try:
                            status, headers, body = await self.handler(request)
                        except Exception:  # a bug must cost one request, never the server
                            log.exception("handler failed on %s %s", request.method, request.path[:200])
                            status, headers, body = 500, [(b"content-type", b"application/json")], \
                                b'{"error":"internal error"}'
                        close = not keep_alive or self.closing
                        out.append(render(status, headers, body, head_only=request.method == "HEAD", close=close))
                        if close:
                            break
                    p.ready.clear()
                finally:
                    self.busy -= 1
                    if self.closing and not self.busy:
                        self.drained.set()
            if refused is not None and not close:
                out.append(_error(refused.status, str(refused)))
                close = True
            elif p.wants_continue and not close:
                out.append(b"HTTP/1.1 100 Continue\r\n\r\n")
                p.wants_continue = False
            if out:
                conn.expires = trio.current_time() + self.limits.read_timeout  # a client that never reads
                await _send(fd, b"".join(out))
            if close:
                return

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


async def _send(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            await trio.lowlevel.wait_writable(fd)


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
            accepting.start_soon(partial(trio.serve_listeners, server.connection, listeners,
                                         handler_nursery=connections))
            task_status.started(listener_urls(listeners))
            await shutdown.wait()
            accepting.cancel_scope.cancel()
        for listener in listeners:
            await listener.aclose()
        server.close()
        with trio.move_on_after(limits.grace):
            await server.drained.wait()
        connections.cancel_scope.cancel()
