"""`pithnode sync` against real loopback servers playing the registry and mirrors."""

from __future__ import annotations

import json
from pathlib import Path

import trio

from helpers import MIRRORS, REAL_BUNDLE, REAL_STATE_SHA, REG, run_cli, write_config
from httpserver import Route, running_server
from pithnode.core import mirror_hint_entry
from pithnode.testing.synth import synthetic_subject

REAL_PN = "pith:2026:EL6A4QOTPLYS3LFEIZGOL5QVTM"
REAL_CODE = "EL6A4QOTPLYS3LFEIZGOL5QVTM"


async def sync(cfg: Path, *args: str):  # type: ignore[no-untyped-def]
    return await trio.to_thread.run_sync(lambda: run_cli("sync", *args, "--json", config_path=cfg, timeout=60))


async def test_sync_by_every_id_form(tmp_path: Path):
    async with running_server() as reg:
        reg.static(f"/pith/{REAL_CODE}/bundle.json", REAL_BUNDLE.read_bytes())
        reg.resolve["2606.26666"] = {"pith_number": REAL_PN}
        cfg = write_config(tmp_path, mirrors=[reg.url])
        # a short Pith number is refused plainly while nothing is held
        out = await sync(cfg, "pith:EL6A4QOT")
        assert out.returncode == 1 and "no record with a code starting EL6A4QOT" in json.loads(out.stdout)["error"]
        forms = [REAL_PN, REAL_CODE, "2606.26666", "2606.26666v1", "10.48550/arXiv.2606.26666",
                 f"{reg.url}/pith/{REAL_CODE}/bundle.json", "pith:EL6A4QOT"]
        for form in forms:
            out = await sync(cfg, form)
            rep = json.loads(out.stdout)
            assert out.returncode == 0, (form, rep)
            assert rep["pith_number"] == REAL_PN and rep["state_sha256"] == REAL_STATE_SHA, form
            own = next(s for s in rep["sources"] if s["url"].startswith(reg.url))
            assert own["bundle_signature_ok"] and own["agrees"], form
        # the mirror named by the bundle (pith.science) is unreachable here: reported, not fatal
        assert any(s["url"].startswith("https://pith.science") and not s["reachable"] for s in rep["sources"])
        out = await sync(cfg, "2999.00001")
        assert out.returncode == 1 and "did not resolve" in json.loads(out.stdout)["error"]
        out = await trio.to_thread.run_sync(lambda: run_cli("sync", "not an id", config_path=cfg))
        assert out.returncode == 2 and "cannot read" in out.stderr and "Traceback" not in out.stderr  # bad input: 2


async def test_conflicting_mirror_is_reported_with_evidence(tmp_path: Path):
    pn, events = synthetic_subject(REG, 7000, 16, MIRRORS)
    code = pn.rsplit(":", 1)[-1]
    graphs = [e for e in events if e["event_type"] == "graph_snapshot"]
    rival = REG.graph_snapshot(pn, "2026-05-05T00:00:00Z", prev=graphs[-2], n_claims=7)
    async with running_server() as reg, running_server() as other:
        hint = mirror_hint_entry("other", other.url, code)
        reg.static(f"/pith/{code}/bundle.json", json.dumps(REG.bundle(pn, events, keys=MIRRORS, base_url=reg.url, mirror_hints=[hint])).encode())
        other.static(f"/pith/{code}/bundle.json", json.dumps(REG.bundle(pn, [*events, rival], keys=MIRRORS, base_url=reg.url)).encode())
        cfg = write_config(tmp_path, mirrors=[reg.url])
        out = await sync(cfg, pn)
        rep = json.loads(out.stdout)
        assert out.returncode == 3, rep
        assert {s["url"] for s in rep["sources"]} == {f"{reg.url}/pith/{code}/bundle.json", hint["bundle_url"]}
        assert len(rep["equivocations"]) == 1 and rivals_in(rep["equivocations"][0], rival, graphs[-1])
        assert not rep["all_agree"]
        eq = json.loads((await trio.to_thread.run_sync(lambda: run_cli("equivocations", "--json", config_path=cfg))).stdout)
        evidence = eq["equivocations"][0]
        assert {e["event_id"] for e in evidence["events"]} == {rival["event_id"], graphs[-1]["event_id"]}
        assert evidence["public_keys"]  # anyone can verify the evidence offline


def rivals_in(eq: dict, a: dict, b: dict) -> bool:
    return set(eq["event_ids"]) == {a["event_id"], b["event_id"]}


async def test_tampered_bundle_is_rejected_event_by_event(tmp_path: Path):
    pn, events = synthetic_subject(REG, 7100, 10, MIRRORS)
    code = pn.rsplit(":", 1)[-1]
    bundle = REG.bundle(pn, events, keys=MIRRORS)
    bundle["events"][3] = dict(bundle["events"][3], payload={"forged": True})
    async with running_server() as reg:
        reg.static(f"/pith/{code}/bundle.json", json.dumps(bundle).encode())
        cfg = write_config(tmp_path, mirrors=[reg.url])
        out = await sync(cfg, pn)
        rep = json.loads(out.stdout)
        src = rep["sources"][0]
        assert not src["bundle_signature_ok"]
        assert src["events_rejected"] == 1 and src["rejected"][0]["reason"] == "hash_mismatch"
        assert src["events_new"] == 9
        assert out.returncode == 3  # its state is not the merge of what it serves: a disagreement
        rej = json.loads((await trio.to_thread.run_sync(lambda: run_cli("rejections", "--json", config_path=cfg))).stdout)
        assert rej["rejections"][0]["reason"] == "hash_mismatch"


async def test_bad_mirrors_are_reported_while_the_good_one_replicates(tmp_path: Path):
    pn, events = synthetic_subject(REG, 7200, 8, MIRRORS)
    code = pn.rsplit(":", 1)[-1]
    path = f"/pith/{code}/bundle.json"
    async with running_server() as good, running_server() as hang, running_server() as err, running_server() as endless:
        good.static(path, json.dumps(REG.bundle(pn, events, keys=MIRRORS)).encode())
        hang.routes[path] = Route(mode="hang")
        err.static(path, b"", fail_first=1000)
        endless.routes[path] = Route(mode="endless")
        cfg = write_config(tmp_path, mirrors=[good.url], max_bundle_bytes=1_000_000, total_timeout=2.0)
        t0 = trio.current_time()
        out = await sync(cfg, pn, "--mirror", good.url, "--mirror", hang.url, "--mirror", err.url,
                         "--mirror", endless.url)
        assert trio.current_time() - t0 < 20
        assert out.stdout, out.stderr[-3000:]
        rep = json.loads(out.stdout)
        assert out.returncode == 0, rep
        errors = {s["url"].split("/pith/")[0]: s["error"] for s in rep["sources"]}
        assert errors[good.url] is None
        assert "no complete answer" in errors[hang.url]
        assert "HTTP 500" in errors[err.url]
        assert "over the cap" in errors[endless.url]
        assert rep["event_count"] == 8


async def test_rollback_and_freeze_are_flagged_and_the_union_kept(tmp_path: Path):
    pn, events = synthetic_subject(REG, 7300, 12, MIRRORS)
    code = pn.rsplit(":", 1)[-1]
    path = f"/pith/{code}/bundle.json"
    async with running_server() as a, running_server() as b:
        a.static(path, json.dumps(REG.bundle(pn, events, keys=MIRRORS, base_url=a.url, built_at="2026-03-01T00:00:00Z")).encode())
        b.static(path, json.dumps(REG.bundle(pn, events, keys=MIRRORS, base_url=b.url, built_at="2026-03-01T00:00:00Z")).encode())
        cfg = write_config(tmp_path, mirrors=[a.url, b.url])
        first = json.loads((await sync(cfg, pn)).stdout)
        assert first["event_count"] == 12 and all(not s["flags"] for s in first["sources"])
        # a now withholds the last two events it served (re-signed: authentic, but a rollback);
        # b moves on while a's built_at stays behind by more than 48 hours
        a.static(path, json.dumps(REG.bundle(pn, events[:-2], keys=MIRRORS, base_url=a.url,
                                             built_at="2026-03-01T00:00:00Z")).encode())
        b.static(path, json.dumps(REG.bundle(pn, events, keys=MIRRORS, base_url=b.url,
                                             built_at="2026-03-09T00:00:00Z")).encode())
        await sync(cfg, pn)
        out = await sync(cfg, pn)
        rep = json.loads(out.stdout)
        flags = {s["url"].split("/pith/")[0]: s["flags"] for s in rep["sources"]}
        assert "rollback" in flags[a.url] and "stale" in flags[a.url] and not flags[b.url]
        assert rep["event_count"] == 12  # the union is kept
        assert out.returncode == 3  # a serves a different state: not all sources agree
        human = await trio.to_thread.run_sync(lambda: run_cli("sync", pn, config_path=cfg))
        assert "FLAGGED rollback" in human.stdout and "FLAGGED stale" in human.stdout
