"""A real HTTP server on 127.0.0.1 for tests (hypercorn, trio worker), with a
route table tests fill in: static documents with ETags, failures, hangs,
endless and trickling bodies, and a fake registry's resolve endpoint."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import trio
from hypercorn.config import Config
from hypercorn.trio import serve


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    fail_first: int = 0  # answer `fail_status` this many times first
    fail_status: int = 500
    retry_after: str | None = None
    mode: str = "static"  # static | hang | endless | trickle


class TestServer:
    __test__ = False

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.resolve: dict[str, dict[str, Any]] = {}  # arXiv id -> record JSON
        self.hits: Counter[str] = Counter()
        self.requests: list[dict[str, str]] = []
        self.url = ""

    def static(self, path: str, body: bytes, **kw: Any) -> None:
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        self.routes[path] = Route(body, headers={"etag": etag, "last-modified": "Mon, 02 Nov 2026 10:00:00 GMT"}, **kw)

    async def app(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                  send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope["path"]
        self.hits[path] += 1
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.requests.append({"path": path, **headers})

        async def reply(status: int, body: bytes = b"", hdrs: dict[str, str] | None = None, more: bool = False) -> None:
            h = [(k.encode(), v.encode()) for k, v in (hdrs or {}).items()]
            await send({"type": "http.response.start", "status": status, "headers": h})
            await send({"type": "http.response.body", "body": body, "more_body": more})

        if path == "/api/pith-number/resolve":
            arxiv = (parse_qs(scope["query_string"].decode()).get("arxiv") or [""])[0]
            doc = self.resolve.get(arxiv) or self.resolve.get(arxiv.split("v")[0])
            return await reply(200, json.dumps(doc).encode()) if doc else await reply(404, b'{"error":"unknown"}')
        route = self.routes.get(path)
        if route is None:
            return await reply(404, b"not found")
        if self.hits[path] <= route.fail_first:
            return await reply(route.fail_status, b"failing", {"retry-after": route.retry_after} if route.retry_after else {})
        if route.mode == "hang":
            await trio.sleep_forever()
        if route.mode == "endless":
            await reply(200, b"{" * 65536, {"content-type": "application/json"}, more=True)
            while True:
                await send({"type": "http.response.body", "body": b" " * 65536, "more_body": True})
                await trio.sleep(0)
        if route.mode == "trickle":
            await reply(200, b"{", {"content-length": str(len(route.body) + 1000)}, more=True)
            while True:
                await trio.sleep(0.2)
                await send({"type": "http.response.body", "body": b" ", "more_body": True})
        etag = route.headers.get("etag")
        if etag and headers.get("if-none-match") == etag:
            return await reply(304, b"", route.headers)
        await reply(route.status, route.body, route.headers)


@asynccontextmanager
async def running_server(server: TestServer | None = None) -> AsyncIterator[TestServer]:
    server = server or TestServer()
    cfg = Config()
    cfg.bind = ["127.0.0.1:0"]
    cfg.accesslog = None
    cfg.graceful_timeout = 0.1
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(lambda task_status: serve(server.app, cfg, shutdown_trigger=stop.wait,  # type: ignore[arg-type]
                                                              task_status=task_status))
        server.url = binds[0]
        try:
            yield server
        finally:
            stop.set()
            nursery.cancel_scope.cancel()
