"""The HTTP/1.1 server (pithnode/node/http.py) on real sockets: keep-alive,
pipelining and backpressure, deadlines, connection caps, every limit a
hostile client pushes on, errors, graceful shutdown. The protocol itself is
tested on bytes in memory in test_h1.py."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pithnode.node.http import Limits, Request, Response, serve, split_listen


async def echo(req: Request) -> Response:
    if req.path == "/boom":
        raise RuntimeError("a bug")
    if req.path == "/slow":
        await trio.sleep(0.5)
    body = json.dumps({"method": req.method, "path": req.path, "query": req.query.decode("latin-1"),
                       "headers": req.headers, "body": len(req.body), "client": req.client[0]}).encode()
    return 200, [(b"content-type", b"application/json")], body


@asynccontextmanager
async def server(limits: Limits = Limits()) -> AsyncIterator[tuple[str, int, trio.Event]]:
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(serve, echo, "127.0.0.1:0", shutdown, limits)
        host, port = split_listen(urls[0].removeprefix("http://"))
        yield host, port, shutdown
        shutdown.set()


async def exchange(port: int, data: bytes, *, read_until_close: bool = True, timeout: float = 5) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(data)
        out = b""
        with trio.move_on_after(timeout):
            while True:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                out += chunk
                if not read_until_close and out.count(b"\r\n\r\n") >= 1:
                    break
        return out


def statuses(raw: bytes) -> list[int]:
    return [int(m) for m in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]


async def test_keep_alive_and_pipelining_answer_in_order() -> None:
    async with server() as (_, port, _s):
        raw = await exchange(port, b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\n\r\nGET /b%20c HTTP/1.1\r\nHost: h\r\n\r\n"
                                   b"HEAD /c HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        assert statuses(raw) == [200, 200, 200]
        parts = raw.split(b"HTTP/1.1 200 OK\r\n")[1:]
        bodies = [json.loads(p.split(b"\r\n\r\n", 1)[1]) for p in parts[:2]]
        assert [(b["path"], b["query"]) for b in bodies] == [("/a", "x=1"), ("/b c", "")]
        assert parts[2].endswith(b"\r\n\r\n") and b"content-length: " in parts[2]  # HEAD: length, no body
        assert b"connection: close" in parts[2]


async def test_httpx_client_and_headers() -> None:
    async with server() as (host, port, _s), httpx.AsyncClient() as client:
        for _ in range(3):  # one connection, reused
            r = await client.post(f"http://{host}:{port}/p", content=b"x" * 5000,
                                  headers={"X-A": "1", "If-None-Match": '"a"'})
            assert r.status_code == 200 and r.headers["date"]
            got = r.json()
            assert got["body"] == 5000 and got["headers"]["x-a"] == "1" and got["headers"]["if-none-match"] == '"a"'


async def test_oversized_head_is_refused_431() -> None:
    async with server(Limits(max_head_bytes=1024)) as (_, port, _s):
        raw = await exchange(port, b"GET / HTTP/1.1\r\nX: " + b"a" * 5000 + b"\r\n\r\n")
        assert statuses(raw) == [431]


async def test_declared_body_over_cap_is_refused_before_it_is_read() -> None:
    async with server(Limits(max_body_bytes=1000)) as (_, port, _s):
        raw = await exchange(port, b"POST / HTTP/1.1\r\nContent-Length: 10000000000\r\n\r\n")
        assert statuses(raw) == [413]
        chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + b"200\r\n" + b"a" * 512 + b"\r\n" * 1
        raw = await exchange(port, chunked + b"400\r\n" + b"a" * 1024 + b"\r\n0\r\n\r\n")
        assert statuses(raw) == [413]


async def test_malformed_requests_get_400_and_the_server_keeps_serving() -> None:
    """Including the non-ASCII digits scripts/fuzz once found ("²".isdigit() is True)."""
    async with server() as (_, port, _s):
        for bad in [b"POST / HTTP/1.1\r\nContent-Length: \xc2\xb2\r\n\r\n", b"\x00\x01\x02garbage\r\n\r\n",
                    b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
                    b"GET / HTTP/9.9\r\n\r\n", b"GET / HTTP/1.1\r\nX\r\n\r\n"]:
            assert statuses(await exchange(port, bad)) == [400], bad
        assert statuses(await exchange(port, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")) == [200]


async def test_a_failing_handler_costs_one_request() -> None:
    async with server() as (_, port, _s):
        raw = await exchange(port, b"GET /boom HTTP/1.1\r\n\r\nGET /ok HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert statuses(raw) == [500, 200]


async def test_upgrade_is_answered_then_closed() -> None:
    async with server() as (_, port, _s):
        raw = await exchange(port, b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\x00\xff")
        assert statuses(raw) == [200] and b"connection: close" in raw


async def test_expect_100_continue() -> None:
    async with server() as (_, port, _s):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
            with trio.fail_after(5):
                assert (await stream.receive_some(1000)).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
            await stream.send_all(b"abc")
            with trio.fail_after(5):
                assert b'"body": 3' in await stream.receive_some(10000)


async def test_slow_request_gets_408_and_idle_connection_is_closed() -> None:
    async with server(Limits(read_timeout=0.3, keep_alive_timeout=0.3)) as (_, port, _s):
        with trio.fail_after(5):
            raw = await exchange(port, b"GET / HTTP/1.1\r\nHost:")  # never finished
        assert statuses(raw) == [408]
        with trio.fail_after(5):  # a whole request, then silence: answered, then closed
            raw = await exchange(port, b"GET / HTTP/1.1\r\n\r\n")
        assert statuses(raw) == [200]


async def test_a_trickled_request_does_not_reset_the_clock() -> None:
    """Slowloris: one byte every 0.1 s would keep a per-read timeout alive forever."""
    async with server(Limits(read_timeout=0.5)) as (_, port, _s):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            got = b""
            with trio.fail_after(3):
                for byte in b"GET / HTTP/1.1\r\nX-Long: " + b"a" * 100:
                    try:
                        await stream.send_all(bytes([byte]))
                    except trio.BrokenResourceError:
                        break
                    with trio.move_on_after(0.1):
                        got += await stream.receive_some(1000)
                    if got:
                        break
            assert statuses(got) == [408]


async def test_a_client_that_never_reads_is_dropped() -> None:
    """Pipelined requests whose responses are never read: the server's send times out and it hangs up,
    so the client's own sends break (without the write deadline both would block forever)."""
    async with server(Limits(write_timeout=0.5)) as (_, port, _s):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        async with stream:
            with pytest.raises(trio.BrokenResourceError), trio.fail_after(15):
                while True:
                    await stream.send_all(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n" * 100)
        assert statuses(await exchange(port, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")) == [200]


async def test_connections_over_the_cap_get_503_others_are_served() -> None:
    async with server(Limits(max_connections=3)) as (_, port, _s):
        held = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(3)]
        try:
            await trio.sleep(0.1)
            assert statuses(await exchange(port, b"GET / HTTP/1.1\r\n\r\n")) == [503]
        finally:
            for s in held:
                await s.aclose()
        await trio.sleep(0.1)
        assert statuses(await exchange(port, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")) == [200]


async def test_shutdown_finishes_requests_in_flight_and_closes_idle() -> None:
    async with server() as (_, port, shutdown):
        idle = await trio.open_tcp_stream("127.0.0.1", port)
        busy = await trio.open_tcp_stream("127.0.0.1", port)
        await busy.send_all(b"GET /slow HTTP/1.1\r\n\r\n")
        await trio.sleep(0.1)
        shutdown.set()
        with trio.fail_after(5):
            assert await idle.receive_some(100) == b""  # closed at once
            raw = b""
            while chunk := await busy.receive_some(65536):
                raw += chunk
        assert statuses(raw) == [200] and b"connection: close" in raw
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", port)  # no longer listening


def test_split_listen() -> None:
    assert split_listen("127.0.0.1:80") == ("127.0.0.1", 80)
    assert split_listen("[::1]:8780") == ("::1", 8780)
    for bad in ["80", "host:", ":80", "h:x", "h:²"]:
        with pytest.raises(ValueError):
            split_listen(bad)


def test_fuzz_raw_bytes_never_break_the_server() -> None:
    """Arbitrary bytes on a connection get a 4xx or a close; the next client is served."""

    async def main() -> None:
        async with server(Limits(read_timeout=0.2, keep_alive_timeout=0.2)) as (_, port, _s):

            @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
            @given(st.one_of(st.binary(max_size=400),
                             st.builds(lambda m, p, h: m + b" " + p + b" HTTP/1.1\r\n" + h + b"\r\n\r\n",
                                       st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT", b"G\x00T"]),
                                       st.binary(max_size=40), st.binary(max_size=200))))
            def run(data: bytes) -> None:
                trio.from_thread.run(check, data)

            async def check(data: bytes) -> None:
                for status in statuses(await exchange(port, data, timeout=3)):
                    assert status < 500, (data, status)

            await trio.to_thread.run_sync(run)
            assert statuses(await exchange(port, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")) == [200]

    trio.run(main)


async def test_500_pipelined_requests_are_answered_in_order_one_at_a_time() -> None:
    """Backpressure: a client that sends 500 requests at once and does not read yet has only
    what the sockets buffer answered (the server answered all 500 into memory before); once it
    reads, it gets 500 responses, in order."""
    answered: list[int] = []

    async def handler(req: Request) -> Response:
        answered.append(int(req.path[1:]))
        return 200, [], req.path.encode().ljust(100_000)

    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(serve, handler, "127.0.0.1:0", shutdown)
        stream = await trio.open_tcp_stream("127.0.0.1", int(urls[0].rsplit(":", 1)[1]))
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        async with stream:
            await stream.send_all(b"".join(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i for i in range(499))
                                  + b"GET /499 HTTP/1.1\r\nConnection: close\r\n\r\n")
            await trio.sleep(0.5)
            assert 0 < len(answered) < 100  # what fits in the socket buffers, not the 500 (50 MB)
            chunks = []
            with trio.fail_after(20):
                while chunk := await stream.receive_some(1 << 20):
                    chunks.append(chunk)
            raw = b"".join(chunks)
        shutdown.set()
    assert statuses(raw) == [200] * 500 and answered == list(range(500))
    assert [int(m) for m in re.findall(rb"\r\n\r\n/(\d+) ", raw)] == list(range(500))


async def test_blank_lines_do_not_keep_an_idle_connection_open() -> None:
    """A bare CRLF starts no request: it must not reset the keep-alive clock (it did, forever)."""
    async with server(Limits(keep_alive_timeout=0.5, read_timeout=5)) as (_, port, _s):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            with trio.fail_after(5):
                with pytest.raises(trio.BrokenResourceError):
                    while True:
                        await stream.send_all(b"\r\n")
                        with trio.move_on_after(0.1):
                            if await stream.receive_some(100) == b"":
                                raise trio.BrokenResourceError  # closed by the server
            assert trio.current_time()  # reached: closed within keep-alive + a reaper tick


async def test_connections_per_address_are_capped_others_and_loopback_proxies_exempt() -> None:
    limits = Limits(max_connections_per_address=2, uncapped_addresses=frozenset())
    async with server(limits) as (_, port, _s):
        held = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(2)]
        try:
            await trio.sleep(0.1)
            raw = await exchange(port, b"GET / HTTP/1.1\r\n\r\n")
            assert statuses(raw) == [503] and b"from this address" in raw and b"retry-after: 5" in raw
        finally:
            for s in held:
                await s.aclose()
        await trio.sleep(0.1)
        assert statuses(await exchange(port, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")) == [200]
    async with server(Limits(max_connections_per_address=2)) as (_, port, _s):  # loopback: a proxy in front
        held = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(4)]
        try:
            assert statuses(await exchange(port, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")) == [200]
        finally:
            for s in held:
                await s.aclose()


async def test_body_bytes_in_flight_share_one_budget() -> None:
    """Two clients each sending a body of 600 bytes slowly; with 1,000 bytes for all, the second
    is refused 503 + Retry-After at once instead of being held (and the first is served)."""
    async with server(Limits(max_body_in_flight=1000)) as (_, port, _s):
        first = await trio.open_tcp_stream("127.0.0.1", port)
        async with first:
            await first.send_all(b"POST / HTTP/1.1\r\nContent-Length: 600\r\n\r\n" + b"a" * 100)
            await trio.sleep(0.1)
            raw = await exchange(port, b"POST / HTTP/1.1\r\nContent-Length: 600\r\n\r\n")
            assert statuses(raw) == [503] and b"retry-after: 1" in raw
            await first.send_all(b"a" * 500)
            with trio.fail_after(5):
                assert b'"body": 600' in await first.receive_some(10000)
        assert statuses(await exchange(port, b"POST / HTTP/1.1\r\nContent-Length: 600\r\nConnection: close\r\n\r\n"
                                       + b"a" * 600)) == [200]


async def test_a_response_header_that_would_split_the_response_is_never_sent() -> None:
    async def handler(req: Request) -> Response:
        return 200, [(b"location", req.path.encode("latin-1"))], b"ok"  # percent-decoded: may hold CR LF

    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(serve, handler, "127.0.0.1:0", shutdown)
        port = int(urls[0].rsplit(":", 1)[1])
        raw = await exchange(port, b"GET /a HTTP/1.1\r\n\r\nGET /b%0d%0aset-cookie:%20x=1 HTTP/1.1\r\n"
                                   b"Connection: close\r\n\r\n")
        assert statuses(raw) == [200, 500] and b"set-cookie" not in raw
        shutdown.set()


def test_accept_out_of_file_descriptors_backs_off_logs_once_and_recovers(tmp_path) -> None:
    """A server with few file descriptors: clients beyond them wait (no crash, no busy loop,
    one log line, not one every 0.1 s), and are served once others close."""
    script = tmp_path / "serve.py"
    script.write_text(
        "import logging, resource, sys, trio\n"
        "from pithnode.node.http import serve, Limits\n"
        "logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s %(message)s')\n"
        "async def ok(req): return 200, [], b'ok'\n"
        "async def main():\n"
        "    async with trio.open_nursery() as n:\n"
        "        urls = await n.start(serve, ok, '127.0.0.1:0', trio.Event(), Limits())\n"
        "        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "        import os; used = len(os.listdir('/proc/self/fd'))\n"
        "        resource.setrlimit(resource.RLIMIT_NOFILE, (used + 5, hard))\n"
        "        print(urls[0], flush=True)\n"
        "trio.run(main)\n")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        port = int(proc.stdout.readline().decode().rsplit(":", 1)[1])  # type: ignore[union-attr]
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(12)]  # past the limit
        time.sleep(1.5)  # trio's own accept loop logs a traceback every 0.1 s meanwhile
        assert proc.poll() is None
        for s in held:
            s.close()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            got = b""
            while chunk := s.recv(65536):
                got += chunk
        assert statuses(got) == [200]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    log = err.decode()
    assert log.count("cannot accept connections: Too many open files") == 1, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
