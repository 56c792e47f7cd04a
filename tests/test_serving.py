"""Serving through real nodes: a pipelining flood cannot grow a `pithnode run`
process, and the HTTP semantics caches and proxies rely on (conditional
requests, content codings and their ETags)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import trio

from helpers import MIRRORS, REAL_BUNDLE, REG, run_cli, write_config
from nodes import nodes
from pithnode.testing.synth import synthetic_subject

FLOOD_CONNECTIONS = 20
FLOOD_REQUESTS = 250  # per connection, in one write: ~68 KB answers, 340 MB if answered into memory
RSS_BOUND_MB = 40


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_a_pipelining_flood_from_many_connections_cannot_grow_the_node(tmp_path: Path):
    """20 connections each write 250 pipelined GETs of a 68 KB bundle and never read. Each
    connection has one request in hand at a time, so the node grows by less than 40 MB (it
    grew by the answers: 340 MB here, 2.1 GB with 60 x 1,000), and /healthz is answered meanwhile."""
    pn, evs = synthetic_subject(REG, 7, 35, MIRRORS)
    bundle = tmp_path / "b.json"
    bundle.write_text(json.dumps(REG.bundle(pn, evs, keys=MIRRORS)))
    cfg = write_config(tmp_path, mirrors=[], attest=False, gossip_interval=3600.0, poll_interval=3600.0)
    assert run_cli("import", "--no-progress", str(bundle), config_path=cfg).returncode == 0
    port = free_port()
    url, path = f"http://127.0.0.1:{port}", f"/pith/{pn.rsplit(':', 1)[1]}/bundle.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PITHNODE_")}
    proc = subprocess.Popen([sys.executable, "-m", "pithnode", "run", "--config", str(cfg),
                             "--listen", f"127.0.0.1:{port}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    streams: list[trio.SocketStream] = []
    try:
        async with httpx.AsyncClient() as client:
            with trio.fail_after(30):
                while True:
                    try:
                        r = await client.get(url + path)
                        if r.status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    await trio.sleep(0.1)
            assert len(r.content) > 60_000
            for _ in range(20):  # warm: the document cached, the allocator settled
                await client.get(url + path)
            base = rss_mb(proc.pid)
            flood = b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode() * FLOOD_REQUESTS
            for _ in range(FLOOD_CONNECTIONS):
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                streams.append(stream)
                with trio.fail_after(10):
                    await stream.send_all(flood)
            peak = base
            with trio.fail_after(20):
                for _ in range(20):
                    await trio.sleep(0.1)
                    peak = max(peak, rss_mb(proc.pid))
                health = await client.get(url + "/healthz")
                peak = max(peak, rss_mb(proc.pid))
            assert health.status_code == 200
        assert peak - base < RSS_BOUND_MB, (base, peak)
    finally:
        for stream in streams:
            await stream.aclose()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_conditional_requests_and_content_codings(tmp_path: Path):
    async with nodes(tmp_path, 1, attest=False) as (a,):
        await a.node.ingest_bundle(json.loads(REAL_BUNDLE.read_text()), source="file")
        doc = f"{a.url}/pith/EL6A4QOTPLYS3LFEIZGOL5QVTM/bundle.json"
        async with httpx.AsyncClient() as client:

            async def get(**headers: str) -> httpx.Response:
                return await client.get(doc, headers={"accept-encoding": "identity", **headers})

            plain = await get()
            tag = plain.headers["etag"]
            assert plain.status_code == 200 and plain.headers["vary"].lower() == "accept-encoding"
            for field in (tag, f"W/{tag}", f'"nope", {tag}', f'W/"nope",W/{tag}', "*"):
                r = await get(**{"if-none-match": field})
                assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == tag, field
            for field in ('"nope"', tag[:-2] + '"', f'"{tag}"'):
                assert (await get(**{"if-none-match": field})).status_code == 200, field

            # gzip only where its q-value is above 0; its own ETag, validated on its own
            for field, gzip in [("gzip", True), ("br, gzip;q=0.5", True), ("*", True), ("deflate, *;q=0.1", True),
                                ("gzip;q=0", False), ("gzip;q=0.000, *", False), ("*;q=0", False),
                                ("identity", False), ("gzip;q=nonsense", False)]:
                r = await client.get(doc, headers={"accept-encoding": field})
                assert (r.headers.get("content-encoding") == "gzip") is gzip, field
                assert r.json() == plain.json() and r.headers["vary"].lower() == "accept-encoding"
                assert (r.headers["etag"] != tag) is gzip, field
            zipped = await client.get(doc, headers={"accept-encoding": "gzip"})
            gtag = zipped.headers["etag"]
            r = await client.get(doc, headers={"accept-encoding": "gzip", "if-none-match": gtag})
            assert r.status_code == 304 and r.headers["etag"] == gtag
            r = await client.get(doc, headers={"accept-encoding": "gzip", "if-none-match": tag})
            assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"  # another representation
            assert (await get(**{"if-none-match": gtag})).status_code == 200
