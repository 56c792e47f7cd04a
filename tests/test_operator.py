"""What an operator meets: the data-dir lock, operator-named peers and
mirrors, the one-off sync's deadline, `pithnode status` and /status.json,
logging options, exit codes and one-line errors, the systemd unit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from helpers import MIRRORS, REG, run_cli, write_config
from nodes import connect, free_port, nodes, wait_up
from pithnode import __version__
from pithnode.testing.synth import synthetic_subject
from pithnode.views import events_of


async def test_status_json_says_what_the_node_is_doing(tmp_path: Path):
    from httpserver import running_server

    pn, evs = synthetic_subject(REG, 7100, 8, MIRRORS)
    code = pn.rsplit(":", 1)[-1]
    async with running_server() as registry:
        path = f"/pith/{code}/bundle.json"
        registry.static(path, json.dumps(REG.bundle(pn, evs, keys=MIRRORS, base_url=registry.url)).encode())
        async with nodes(tmp_path, 2, mirrors=[registry.url], follow=[pn], poll_interval=0.3) as (a, b):
            connect([a, b], [(0, 1)])
            with trio.fail_after(20):
                while not (a.node.store.subject(pn) and a.peers.peers[b.url].last_ok):
                    await trio.sleep(0.05)
            async with httpx.AsyncClient() as client:
                r = await client.get(f"{a.url}/status.json")
                health = (await client.get(f"{a.url}/healthz")).json()
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    doc = r.json()
    assert doc["version"] == __version__ and doc["pid"] == os.getpid()
    assert doc["public_url"] == a.url and doc["key_fingerprint"] == a.node.identity.fingerprint
    assert len(evs) <= doc["events"] <= health["events"] and doc["records"] == 1  # (own attestations may land between)
    assert doc["followed"] == [pn] and doc["unmerged_records"] == 0
    source = next(s for s in doc["sources"] if s["url"] == registry.url + path)
    assert source["failures"] == 0 and source["record"] == pn and source["error"] is None and source["last_success"]
    assert [(p["url"], p["healthy"]) for p in doc["peers"]] == [(b.url, True)]
    assert doc["uptime_seconds"] >= 0 and doc["started_at"].endswith("Z")


def start(cfg_path: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PITHNODE_")}
    return subprocess.Popen([sys.executable, "-m", "pithnode", "run", "--config", str(cfg_path),
                             "--listen", f"127.0.0.1:{port}", *extra], env=env, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.stderr.read() if proc.stderr else ""


async def test_one_node_per_data_dir_and_status_finds_it(tmp_path: Path):
    cfg = write_config(tmp_path, mirrors=[], gossip_interval=3600.0, poll_interval=3600.0)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    first = start(cfg, port, "--log-format", "json")
    try:
        await wait_up(url)
        async with httpx.AsyncClient() as client:
            key = (await client.get(f"{url}/pith-signing-key.json")).json()
        # a second node on the same data dir refuses at once, naming the first; it signs nothing
        second = await trio.to_thread.run_sync(lambda: run_cli("run", "--listen", f"127.0.0.1:{free_port()}",
                                                               config_path=cfg, timeout=30))
        assert second.returncode == 1 and "Traceback" not in second.stderr
        assert f"pid {first.pid}" in second.stderr and url in second.stderr
        assert first.poll() is None
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{url}/pith-signing-key.json")).json() == key
        # `pithnode status` finds it through the data dir
        r = await trio.to_thread.run_sync(lambda: run_cli("status", "--json", config_path=cfg))
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc["pid"] == first.pid and doc["public_url"] == url and doc["key_fingerprint"] == key["signer"][
            "public_key_fingerprint"]
        r = await trio.to_thread.run_sync(lambda: run_cli("status", "--url", url))
        assert r.returncode == 0 and f"pid {first.pid}" in r.stdout
    finally:
        log = stop(first)
    assert first.returncode == 0
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]  # --log-format json: every line
    assert any(d["level"] == "info" and d["message"].startswith(f"serving {url}") for d in lines)
    # gone: the lock went with it, a new node may start, and status says nobody runs there
    r = run_cli("status", config_path=cfg)
    assert r.returncode == 1 and "no node runs on data dir" in r.stderr
    again = start(cfg, port)
    try:
        await wait_up(url)
    finally:
        stop(again)


async def test_an_import_into_a_running_nodes_data_dir_is_attested_and_offered_within_seconds(tmp_path: Path):
    pn, evs = synthetic_subject(REG, 7200, 10, MIRRORS)
    bundle = tmp_path / "b.json"
    bundle.write_text(json.dumps(REG.bundle(pn, evs, keys=MIRRORS)))
    # gossip rounds an hour apart: only the node's reaction to the import can carry it within the test
    async with nodes(tmp_path, 2, gossip_interval=3600.0) as (a, b):
        connect([a, b], [(0, 1)])
        cfg = write_config(tmp_path, data_dir=str(a.node.cfg.data_dir))
        r = await trio.to_thread.run_sync(lambda: run_cli("import", str(bundle), config_path=cfg))
        assert r.returncode == 0, r.stderr
        with trio.fail_after(20):
            while True:  # node b holds every imported event and a's own events for the record, pushed by a
                subject = b.node.store.subject(pn)
                held = events_of(b.node.store, subject) if subject else []
                types_by_a = {e["event_type"] for e in held if e["signer"]["signer_id"] == a.url}
                if {e["event_id"] for e in evs} <= {e["event_id"] for e in held} and "storage_attestation" in types_by_a:
                    break
                await trio.sleep(0.1)


async def test_peers_and_mirrors_the_operator_names_are_used_on_loopback_learned_ones_are_not(tmp_path: Path):
    from httpserver import running_server

    from nodes import node_config
    from pithnode.node.runner import run_node

    pn, evs = synthetic_subject(REG, 7300, 8, MIRRORS)
    code = pn.rsplit(":", 1)[-1]
    pn2, evs2 = synthetic_subject(REG, 7301, 6, MIRRORS)
    async with running_server() as registry, trio.open_nursery() as nursery:
        registry.static(f"/pith/{code}/bundle.json",
                        json.dumps(REG.bundle(pn, evs, keys=MIRRORS, base_url=registry.url)).encode())
        guarded = dict(allow_private_addresses=False, gossip_interval=0.3)
        b = await nursery.start(run_node, node_config(tmp_path, "b", **guarded))
        await b.node.ingest_bundle(REG.bundle(pn2, evs2, keys=MIRRORS), source="test")
        # a names b (a peer) and the registry (a mirror) on 127.0.0.1, as an operator would
        a = await nursery.start(run_node, node_config(tmp_path, "a", peers=[b.url], mirrors=[registry.url],
                                                      follow=[pn], poll_interval=0.3, **guarded))
        with trio.fail_after(20):
            while not (a.node.store.subject(pn) and a.node.store.subject(pn2)):
                await trio.sleep(0.05)
            # b learned a from a's pushes (`from`): not named by b's operator, so b's guard refuses it
            while not (a.url in b.peers.peers and b.peers.peers[a.url].last_error):
                await trio.sleep(0.05)
        assert "--peer" in b.peers.peers[a.url].last_error and "private or local" in b.peers.peers[a.url].last_error
        assert a.peers.peers[b.url].healthy and a.peers.peers[b.url].last_error is None
        a.shutdown.set()
        b.shutdown.set()
    # the one-off sync: a loopback --mirror is used as given
    cfg = write_config(tmp_path, data_dir=str(tmp_path / "c"), allow_private_addresses=False)
    async with running_server() as registry:
        registry.static(f"/pith/{code}/bundle.json",
                        json.dumps(REG.bundle(pn, evs, keys=MIRRORS, base_url=registry.url)).encode())
        r = await trio.to_thread.run_sync(lambda: run_cli("sync", pn, "--mirror", registry.url, "--json",
                                                          config_path=cfg))
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["sources"][0]["events_new"] == len(evs)


async def test_sync_gives_up_on_a_stalled_mirror_in_time_and_says_so(tmp_path: Path):
    from httpserver import Route, running_server

    pn, evs = synthetic_subject(REG, 7400, 8, MIRRORS)
    code = pn.rsplit(":", 1)[-1]
    # the fetcher's own patience: 60 s an attempt, 3 retries (four minutes on a stalled mirror)
    cfg = write_config(tmp_path, retries=3, total_timeout=60.0, connect_timeout=10.0)
    async with running_server() as srv:
        srv.routes[f"/stalled/pith/{code}/bundle.json"] = Route(mode="hang")
        srv.static(f"/pith/{code}/bundle.json", json.dumps(REG.bundle(pn, evs, keys=MIRRORS, base_url=srv.url)).encode())
        r = await trio.to_thread.run_sync(lambda: run_cli(
            "sync", pn, "--mirror", f"{srv.url}/stalled", "--mirror", srv.url, "--timeout", "3", "--json",
            config_path=cfg, timeout=45))
    assert r.returncode == 0, r.stdout + r.stderr  # replicated from the mirror that answered
    rep = json.loads(r.stdout)
    by_url = {s["url"]: s for s in rep["sources"]}
    stalled = by_url[f"{srv.url}/stalled/pith/{code}/bundle.json"]
    assert not stalled["reachable"] and "deadline of 3 s" in stalled["error"]
    assert by_url[f"{srv.url}/pith/{code}/bundle.json"]["events_new"] == len(evs)
    assert rep["replicated"] and rep["event_count"] == len(evs)


async def test_a_named_origin_is_trusted_and_a_redirect_off_it_is_guarded():
    from httpserver import Route, running_server

    from pithnode.net.fetch import FetchError, HttpFetcher

    async with running_server() as named, running_server() as other:
        named.static("/doc.json", b'{"a":1}')
        other.static("/doc.json", b'{"b":2}')
        named.routes["/away"] = Route(status=302, headers={"location": f"{other.url}/doc.json"})
        named.routes["/home"] = Route(status=302, headers={"location": f"{named.url}/doc.json"})
        async with HttpFetcher(retries=0, total_timeout=5.0, allow_private=False, trusted=[named.url]) as f:
            assert (await f.get(f"{named.url}/doc.json")).body == b'{"a":1}'
            assert (await f.get(f"{named.url}/home")).body == b'{"a":1}'  # same origin: still the named one
            for url in (f"{other.url}/doc.json", f"{named.url}/away"):  # learned (a hint, a redirect): guarded
                with pytest.raises(FetchError, match="private or local"):
                    await f.get(url)
        assert other.hits["/doc.json"] == 0


async def test_an_arxiv_id_resolves_while_one_resolver_stalls(tmp_path: Path):
    from httpserver import TestServer, running_server

    class Stalled(TestServer):
        async def app(self, scope, receive, send):  # type: ignore[no-untyped-def]
            if scope["type"] == "http" and scope["path"] == "/api/pith-number/resolve":
                await trio.sleep_forever()
            await super().app(scope, receive, send)

    pn, evs = synthetic_subject(REG, 7500, 6, MIRRORS)
    code = pn.rsplit(":", 1)[-1]
    cfg = write_config(tmp_path, retries=3, total_timeout=60.0)
    async with running_server(Stalled()) as stalled, running_server() as good:
        good.resolve["2612.01234"] = {"pith_number": pn}
        bundle = json.dumps(REG.bundle(pn, evs, keys=MIRRORS, base_url=good.url)).encode()
        good.static(f"/pith/{code}/bundle.json", bundle)
        stalled.static(f"/pith/{code}/bundle.json", bundle)
        r = await trio.to_thread.run_sync(lambda: run_cli(
            "sync", "2612.01234", "--mirror", stalled.url, "--mirror", good.url, "--timeout", "20", "--json",
            config_path=cfg, timeout=60))
    rep = json.loads(r.stdout)
    assert r.returncode == 0, rep
    assert rep["pith_number"] == pn and rep["resolved_by"] == f"arXiv 2612.01234 via {good.url}"
    assert {s["url"] for s in rep["sources"] if s["reachable"]} == {f"{stalled.url}/pith/{code}/bundle.json",
                                                                     f"{good.url}/pith/{code}/bundle.json"}
