"""HTTP/1.1 as a sans-IO connection: bytes in, requests out, responses in,
bytes out; no sockets, no trio, no clock. h11's `Connection` is the model
(`receive_data` -> `next_event` -> `send`, and a paused state after a whole
request until its response is sent); llhttp (Node.js's parser, via
httptools) does the parsing, for its speed.

Backpressure lives here: the parser is fed only up to the end of the request
in hand, so pipelined requests wait as unparsed bytes until the response
before them is sent, and the driver reads nothing while a request is in
hand. What one connection holds is bounded by `Limits` (docs/SECURITY.md).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import unquote

import httptools

from ..errors import PithnodeError

Header = tuple[bytes, bytes]
Response = tuple[int, list[Header], bytes]


class HttpError(PithnodeError):
    """The one error type of the HTTP layer: a status, a message for the client, extra headers."""

    def __init__(self, status: int, message: str, headers: Sequence[Header] = ()):
        super().__init__(message)
        self.status = status
        self.headers = list(headers)


@dataclass(frozen=True)
class Limits:
    max_head_bytes: int = 16 * 1024  # request line + headers
    max_body_bytes: int = 8 * 1024 * 1024
    max_body_in_flight: int = 64 * 1024 * 1024  # body bytes held by all connections together
    read_timeout: float = 30.0  # a started request must arrive whole within this (slowloris)
    write_timeout: float = 30.0  # a response must be taken by the client within this
    keep_alive_timeout: float = 15.0  # an idle connection is closed after this
    max_connections: int = 1024  # more are answered 503 and closed
    max_connections_per_address: int = 64
    # not capped per address: a TLS proxy in front holds many clients' connections (0 = no cap at all)
    uncapped_addresses: frozenset[str] = frozenset({"127.0.0.1", "::1", "unix"})
    grace: float = 3.0  # on shutdown, requests in flight get this long to finish


@dataclass
class Request:
    method: str
    path: str  # percent-decoded
    query: bytes
    headers: dict[str, str]  # lower-case names; repeated fields joined with ", "
    body: bytes
    client: tuple[str, int]


class BodyBudget:
    """Request body bytes held by all connections of a server, at most `cap`: a request that
    would go past it is refused 503 + Retry-After, so the worst case is `cap`, not
    connections x max_body_bytes."""

    def __init__(self, cap: int):
        self.cap, self.held = cap, 0

    def take(self, n: int) -> None:
        if self.held + n > self.cap:
            raise HttpError(503, "busy receiving other requests; try again", [(b"retry-after", b"1")])
        self.held += n

    def give(self, n: int) -> None:
        self.held -= n


class _Event:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA = _Event("NEED_DATA")  # feed more bytes (receive_data)
PAUSED = _Event("PAUSED")  # a request is in hand: send its response first
CLOSED = _Event("CLOSED")  # the client is gone or the connection must end

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch
_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*").fullmatch  # RFC 9110 field-value: no CR, LF, NUL


_CHECKED: set[Header] = set()  # headers found valid; most responses repeat the same few (~1 us a request)


def render_head(status: int, headers: list[Header], length: int | None, date: bytes, close: bool) -> bytes:
    """A response head. Raises ValueError for a header name or value that could split the response
    (handlers pass on headers from elsewhere: front.py forwards the node's)."""
    out = [b"HTTP/1.1 %d %s\r\ndate: %s\r\nserver: pithnode\r\n" % (status, _REASONS.get(status, b""), date)]
    for header in headers:
        if header not in _CHECKED:
            name, value = header
            if not _TOKEN(name) or not _VALUE(value):
                raise ValueError(f"invalid response header {name[:100]!r}: {value[:100]!r}")
            if len(_CHECKED) < 4096:
                _CHECKED.add(header)
        out.append(b"%s: %s\r\n" % header)
    if length is not None:
        out.append(b"content-length: %d\r\n" % length)
    if close:
        out.append(b"connection: close\r\n")
    out.append(b"\r\n")
    return b"".join(out)


def error_body(message: str) -> bytes:
    return b'{"error":"%s"}' % message.replace("\\", "\\\\").replace('"', '\\"').encode("ascii", "replace")


class Connection:
    """One client connection's HTTP/1.1 state. Use: `receive_data(bytes)` (b"" at EOF), then
    `next_event()` until NEED_DATA; a Request is answered with `send(...)`, whose bytes the
    driver writes; an HttpError raised by `next_event` is answered with `send_error` and ends
    the connection. `data_to_send()` holds a `100 Continue` the driver writes before reading."""

    def __init__(self, limits: Limits, client: tuple[str, int], budget: BodyBudget):
        self.limits, self.client, self.budget = limits, client, budget
        self._parser = httptools.HttpRequestParser(self)
        self._buf = b""  # received, not yet fed to the parser
        self._pos = 0
        self._head_fed = 0  # bytes fed since the last request ended: bounds a head that never ends a line
        self._eof = False
        self._current: Request | None = None  # in hand: no parsing until its response is sent
        self._keep_alive = True
        self._continue = b""
        self.closed = False
        self.held = 0  # body bytes taken from the budget
        self.in_request = False  # a request has begun (bytes beyond blank lines) and is not whole
        self._begin()

    def _begin(self) -> None:
        self._url = b""
        self._headers: list[Header] = []
        self._head = 0  # url and header bytes
        self._body: list[bytes] = []
        self._size = 0
        self._length: int | None = None  # declared Content-Length
        self._chunked = False
        self._in_body = False
        self._ready: Request | None = None
        self._error: HttpError | None = None

    # -- bytes in ----------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        if not data:
            self._eof = True
        elif self._pos < len(self._buf):
            self._buf, self._pos = self._buf[self._pos:] + data, 0
        else:
            self._buf, self._pos = data, 0

    def next_event(self) -> Request | _Event:
        if self.closed:
            return CLOSED
        if self._current is not None:
            return PAUSED
        while self._ready is None:
            end = self._piece_end()
            if end is None:
                return CLOSED if self._eof else NEED_DATA
            self._feed(end)
        self._current, self._ready = self._ready, None
        return self._current

    def _piece_end(self) -> int | None:
        """Where the next piece to parse ends: never past the end of the request begun, so the
        parser never runs ahead into the next pipelined one."""
        buf, pos = self._buf, self._pos
        if pos >= len(buf):
            return None
        if not self._in_body:  # a head ends at its blank line (leading blank lines are skipped by llhttp)
            i = buf.find(b"\r\n\r\n", pos)
            if i >= 0:
                return i + 4
            if len(buf) - pos > self.limits.max_head_bytes:
                return len(buf)  # the head counters refuse it
            return len(buf) - 3 if len(buf) - pos > 3 else None  # a terminator may straddle two reads
        if self._length is not None:
            return min(len(buf), pos + self._length - self._size)
        i = buf.find(b"\n", pos)  # chunked: a message ends on a line feed
        return len(buf) if i < 0 else i + 1

    def _feed(self, end: int) -> None:
        buf, pos = self._buf, self._pos
        self._pos = end
        if not self._in_body:
            self._head_fed += end - pos
        try:
            self._parser.feed_data(buf if pos == 0 and end == len(buf) else memoryview(buf)[pos:end])
        except httptools.HttpParserCallbackError:
            raise self._fail(self._error or HttpError(400, "malformed request")) from None
        except httptools.HttpParserUpgrade:  # the request itself was whole; what follows is not HTTP
            if self._ready is None:
                raise self._fail(HttpError(400, "protocol upgrades are not supported")) from None
            self._keep_alive = False
        except httptools.HttpParserError as exc:
            raise self._fail(HttpError(400, f"malformed request: {exc}")) from None
        if not self.in_request:
            self._head_fed = 0  # blank lines between requests
        elif not self._in_body and self._head_fed > self.limits.max_head_bytes:
            raise self._fail(HttpError(431, f"request head over {self.limits.max_head_bytes} bytes"))

    def _fail(self, exc: HttpError) -> HttpError:
        self._current = None
        self.closed = True
        return exc

    # -- httptools callbacks -------------------------------------------------------

    def _refuse(self, exc: HttpError) -> None:
        self._error = exc
        raise exc

    def on_message_begin(self) -> None:
        self._begin()
        self.in_request = True

    def on_url(self, url: bytes) -> None:
        self._head += len(url)
        if self._head > self.limits.max_head_bytes:
            self._too_long()
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head += len(name) + len(value) + 4
        if self._head > self.limits.max_head_bytes:
            self._too_long()
        self._headers.append((name.lower(), value))

    def _too_long(self) -> None:
        self._refuse(HttpError(431, f"request head over {self.limits.max_head_bytes} bytes"))

    def on_headers_complete(self) -> None:
        cap = self.limits.max_body_bytes
        for name, value in self._headers:
            if name == b"content-length":  # llhttp checked the digits and refused duplicates
                self._length = int(value)
                if self._length > cap:
                    self._refuse(HttpError(413, f"body over the cap of {cap} bytes"))
            elif name == b"transfer-encoding":
                self._chunked = True
            elif name == b"expect" and value.lower() == b"100-continue":
                self._continue = b"HTTP/1.1 100 Continue\r\n\r\n"
        if self._length:
            self._take(self._length)  # all of it now: a declared body is either held whole or refused
        self._in_body = bool(self._length) or self._chunked

    def _take(self, n: int) -> None:
        try:
            self.budget.take(n)
        except HttpError as exc:
            self._refuse(exc)
        self.held += n

    def on_body(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > self.limits.max_body_bytes:
            self._refuse(HttpError(413, f"body over the cap of {self.limits.max_body_bytes} bytes"))
        if self._length is None:
            self._take(len(chunk))
        self._body.append(chunk)

    def on_message_complete(self) -> None:
        path, _, query = self._url.partition(b"?")
        headers: dict[str, str] = {}
        for name, value in self._headers:
            key, text = name.decode("latin-1"), value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        self._ready = Request(self._parser.get_method().decode("ascii"), unquote(path.decode("latin-1")),
                              query.partition(b"#")[0], headers, b"".join(self._body), self.client)
        self._keep_alive = self._parser.should_keep_alive()
        self._in_body = self.in_request = False
        self._head_fed = 0
        self._continue = b""
        self._body = []

    # -- bytes out ---------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """A `100 Continue` owed to a client that waits for it before sending its body."""
        out, self._continue = self._continue, b""
        return out

    def send(self, status: int, headers: list[Header], body: bytes, date: bytes, *,
             close: bool = False) -> list[bytes]:
        """The response to the request in hand, as buffers to write in order; ends its cycle.
        Raises ValueError (nothing changes) for headers that must not be sent."""
        request = self._current
        assert request is not None, "send() without a request in hand"
        close = close or not self._keep_alive
        bodyless = status == 304 or status == 204 or status < 200
        head = render_head(status, headers, None if bodyless else len(body), date, close)
        self._done(close)
        return [head] if bodyless or request.method == "HEAD" or not body else [head, body]

    def send_error(self, exc: HttpError, date: bytes) -> list[bytes]:
        """The answer to a request refused (by the parser or the handler): the connection ends."""
        body = error_body(str(exc))
        head = render_head(exc.status, [(b"content-type", b"application/json"), *exc.headers], len(body),
                           date, True)
        self._done(True)
        return [head, body]

    def _done(self, close: bool) -> None:
        self._current = None
        self.release()
        if close:
            self.closed = True

    def release(self) -> None:
        """Give the body budget back (the response is sent, or the connection is gone)."""
        self.budget.give(self.held)
        self.held = 0
