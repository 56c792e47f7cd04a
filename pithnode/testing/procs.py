"""Helpers for tests and benchmarks that run nodes as processes on loopback."""

from __future__ import annotations

import socket

import httpx
import trio


def free_port() -> int:
    """A loopback port free now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def wait_up(url: str, path: str = "/healthz", *, timeout: float = 30.0,  # noqa: ASYNC109 (fail, never hang)
                  poll: float = 0.1) -> None:
    """Until `url + path` answers 200 (a node process's health check by default)."""
    with trio.fail_after(timeout):
        async with httpx.AsyncClient() as client:
            while True:
                try:
                    if (await client.get(url + path)).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await trio.sleep(poll)
