"""The sans-IO HTTP/1.1 connection (pithnode/node/h1.py) on bytes in memory:
one request in hand at a time, framing, keep-alive, every limit, errors."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings

import fuzzing
from fuzzing import h1_run as run
from pithnode.node.h1 import (
    CLOSED, NEED_DATA, PAUSED, BodyBudget, Connection, HttpError, Limits, Request, render_head,
)

DATE = b"Thu, 03 Dec 2026 08:00:00 GMT"


def conn(limits: Limits = Limits(), budget: BodyBudget | None = None) -> Connection:
    return Connection(limits, ("127.0.0.1", 5000), budget or BodyBudget(limits.max_body_in_flight))


def answer(c: Connection, req: Request, **kw) -> bytes:
    return b"".join(c.send(200, [(b"content-type", b"text/plain")], req.path.encode(), DATE, **kw))


def test_pipelined_requests_come_one_at_a_time_and_wait_for_their_response() -> None:
    c = conn()
    c.receive_data(b"".join(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i for i in range(500)))
    for i in range(500):
        req = c.next_event()
        assert isinstance(req, Request) and req.path == f"/{i}"
        assert c.next_event() is PAUSED and c.next_event() is PAUSED  # nothing parsed past it
        assert answer(c, req).endswith(b"\r\n\r\n/%d" % i)
    assert c.next_event() is NEED_DATA


def test_split_at_every_byte_gives_the_same_requests() -> None:
    data = (b"\r\nGET /a HTTP/1.1\r\nHost: h\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyz"
            b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\na\nc\r\n1\r\n\n\r\n0\r\n\r\n"
            b"GET /d HTTP/1.1\r\n\r\n")
    want = [("GET", "/a", b""), ("POST", "/b", b"xyz"), ("POST", "/c", b"a\nc\n"), ("GET", "/d", b"")]
    assert run(conn(), [data]) == want
    assert run(conn(), [bytes([b]) for b in data]) == want


def test_repeated_headers_are_joined_and_the_target_split() -> None:
    c = conn()
    c.receive_data(b"GET /a%20b?x=1#frag HTTP/1.1\r\nAccept-Encoding: br\r\naccept-encoding: gzip\r\n\r\n")
    req = c.next_event()
    assert isinstance(req, Request) and req.headers["accept-encoding"] == "br, gzip"
    assert (req.path, req.query, req.client) == ("/a b", b"x=1", ("127.0.0.1", 5000))


def test_the_parser_does_not_run_ahead_of_a_chunked_body() -> None:
    c = conn()
    c.receive_data(b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n"
                   b"GET /next HTTP/1.1\r\n\r\n")
    req = c.next_event()
    assert isinstance(req, Request) and req.body == b"ab" and not c.in_request  # /next not begun
    answer(c, req)
    assert isinstance(nxt := c.next_event(), Request) and nxt.path == "/next"


def test_blank_lines_between_requests_begin_no_request() -> None:
    c = conn()
    for _ in range(100):
        c.receive_data(b"\r\n")
        assert c.next_event() is NEED_DATA and not c.in_request
    c.receive_data(b"GET / HTTP/1.1\r\nHo")
    assert c.next_event() is NEED_DATA and c.in_request


def test_keep_alive_and_close() -> None:
    c = conn()
    c.receive_data(b"GET / HTTP/1.0\r\n\r\n")
    out = answer(c, c.next_event())  # type: ignore[arg-type]
    assert b"connection: close" in out and c.closed and c.next_event() is CLOSED
    c = conn()
    c.receive_data(b"GET / HTTP/1.1\r\n\r\nGET /x HTTP/1.1\r\n\r\n")
    answer(c, c.next_event(), close=True)  # type: ignore[arg-type]
    assert c.next_event() is CLOSED  # the server closes: the pipelined one is not taken


def test_head_and_304_have_no_body() -> None:
    c = conn()
    c.receive_data(b"HEAD /abc HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n")
    out = answer(c, c.next_event())  # type: ignore[arg-type]
    assert out.endswith(b"content-length: 4\r\n\r\n")
    c.next_event()
    out = b"".join(c.send(304, [(b"etag", b'"x"')], b"ignored", DATE))
    assert out.endswith(b'etag: "x"\r\n\r\n') and b"content-length" not in out


def test_limits_and_malformed_requests_are_http_errors() -> None:
    small = Limits(max_head_bytes=1024, max_body_bytes=100)
    assert run(conn(small), [b"GET / HTTP/1.1\r\nX: " + b"a" * 2000 + b"\r\n\r\n"]) == [431]
    # a header that never ends its line: refused when the head passes the cap, not held on to
    assert run(conn(small), [b"GET / HTTP/1.1\r\nX: "] + [b"a" * 500] * 10) == [431]
    assert run(conn(small), [b"POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n"]) == [413]
    assert run(conn(small), [b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n" + b"a" * 101]) == [413]
    for bad in [b"\x00\x01garbage\r\n\r\n", b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
                b"POST / HTTP/1.1\r\nContent-Length: \xc2\xb2\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n"]:
        c = conn()
        assert run(c, [bad]) == [400], bad
        assert c.closed


def test_an_upgrade_is_answered_then_the_connection_ends() -> None:
    c = conn()
    c.receive_data(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\x00\xff")
    assert b"connection: close" in answer(c, c.next_event())  # type: ignore[arg-type]
    assert c.next_event() is CLOSED


def test_expect_100_continue_is_owed_once() -> None:
    c = conn()
    c.receive_data(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
    assert c.next_event() is NEED_DATA
    assert c.data_to_send() == b"HTTP/1.1 100 Continue\r\n\r\n" and c.data_to_send() == b""
    c.receive_data(b"abc")
    assert isinstance(req := c.next_event(), Request) and req.body == b"abc"


def test_body_budget_is_shared_and_given_back() -> None:
    budget = BodyBudget(1000)
    a, b = conn(budget=budget), conn(budget=budget)
    a.receive_data(b"POST / HTTP/1.1\r\nContent-Length: 600\r\n\r\n")
    assert a.next_event() is NEED_DATA and budget.held == 600
    b.receive_data(b"POST / HTTP/1.1\r\nContent-Length: 600\r\n\r\n")
    with pytest.raises(HttpError) as refused:
        b.next_event()
    assert refused.value.status == 503 and (b"retry-after", b"1") in refused.value.headers
    assert b"retry-after: 1" in b"".join(b.send_error(refused.value, DATE))
    a.receive_data(b"x" * 600)
    answer(a, a.next_event())  # type: ignore[arg-type]
    assert budget.held == 0
    # chunked bodies are counted as they come; a connection that ends gives back what it held
    c = conn(budget=budget)
    c.receive_data(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n100\r\n" + b"a" * 256 + b"\r\n")
    assert c.next_event() is NEED_DATA and budget.held == 256
    c.release()
    assert budget.held == 0


def test_response_headers_that_could_split_the_response_are_refused() -> None:
    for name, value in [(b"x", b"a\r\nset-cookie: evil=1"), (b"x\r\ny", b"1"), (b"", b"1"), (b"x y", b"1"),
                        (b"x", b"a\nb"), (b"x", b"a\x00b")]:
        with pytest.raises(ValueError):
            render_head(200, [(name, value)], 0, DATE, False)
    c = conn()
    c.receive_data(b"GET / HTTP/1.1\r\n\r\n")
    req = c.next_event()
    with pytest.raises(ValueError):
        c.send(200, [(b"location", b"/\r\n\r\nHTTP/1.1 200 OK")], b"", DATE)
    assert isinstance(req, Request) and c.next_event() is PAUSED  # still in hand: a 500 can follow
    assert b"500 Internal Server Error" in b"".join(c.send(500, [], b"", DATE))


@settings(max_examples=300, deadline=None)
@given(fuzzing.http_streams())
def test_fuzz_bytes_in_any_split_give_the_same_events(stream: tuple[bytes, list[int]]) -> None:
    """Arbitrary bytes give requests or an HttpError (4xx, never another exception), the same
    whatever the reads they arrive in (also a target of scripts/fuzz: `--only h1`)."""
    fuzzing.target_h1(stream)


def test_status_lines_and_lengths() -> None:
    c = conn()
    c.receive_data(b"GET / HTTP/1.1\r\n\r\n")
    c.next_event()
    out = b"".join(c.send(404, [], b"nope", DATE))
    assert re.match(rb"HTTP/1\.1 404 Not Found\r\ndate: .+\r\nserver: pithnode\r\ncontent-length: 4\r\n\r\nnope$", out)
