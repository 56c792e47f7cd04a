"""The pages a monitor watches a node with, loaded in headless Chromium from a
real node: the status page, a record's page, evidence pages and their
downloads (checked by the real `pithnode verify`), the Atom feed. Events are
attacker-written: the hostile values below must come out as text, never as
markup, scripts or `javascript:` links."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
import trio

from browser import Browser
from helpers import MIRRORS, REG, run_cli, write_config
from nodes import nodes, push
from pithnode.core import merge, state_hash
from pithnode.node.peer import PeerState
from pithnode.testing.synth import SynthMirror, synthetic_subject

ATOM = "{http://www.w3.org/2005/Atom}"
# what an attacker writes into a signed event: markup, quotes, script URLs, a control character
HOSTILE_TITLE = "<script>window.pwned=1</script>\"'><img src=x onerror=\"window.pwned=2\"> & \x01 done"
HOSTILE_SOURCE = "https://evil.test/pith/\"><script>window.pwned=3</script>/bundle.json"
EVIL = SynthMirror("evil-mirror", "https://evil.test")
PWNED = "return [window.pwned === undefined, document.querySelectorAll('script,[onerror],[onload]').length, " \
        "[...document.querySelectorAll('a[href]')].filter(a => !/^https?:$/.test(a.protocol)).length]"


@asynccontextmanager
async def browser(**size: int) -> AsyncIterator[Browser]:
    b = await trio.to_thread.run_sync(lambda: Browser(**size))
    try:
        yield b
    finally:
        await trio.to_thread.run_sync(b.close)


async def hostile_record(running) -> dict:  # type: ignore[no-untyped-def]
    """A record with a hostile title, an invalid event, an equivocation by a hostile mirror
    (its payloads full of markup and `javascript:` URLs) and a source whose state lies."""
    pn, evs = synthetic_subject(REG, 21, 10, MIRRORS)
    await running.node.ingest_bundle(REG.bundle(pn, evs, keys=MIRRORS), source="https://registry.test/b.json")
    last_graph = [e for e in evs if e["event_type"] == "graph_snapshot"][-1]
    titled = REG.graph_snapshot(pn, "2026-03-01T00:00:00Z", prev=last_graph, title=HOSTILE_TITLE)
    one = EVIL.event(pn, "citation_signature", "citation", {"citing": HOSTILE_TITLE, "url": "javascript:window.pwned=4"},
                     "2026-03-02T00:00:00Z")
    two = EVIL.event(pn, "citation_signature", "citation", {"citing": "pith:2026:X", "url": "https://ok.test/"},
                     "2026-03-02T00:00:01Z")
    bad = EVIL.event(pn, "storage_attestation", "storage", {"stored": {"kind": "canonical_record", "sha256": "0" * 64},
                                                            "location": "javascript:window.pwned=5"}, "2026-03-03T00:00:00Z")
    r = await push(running.url, [titled, one, two, bad], [EVIL.entry()])
    assert r.status_code == 200
    # a source whose published state is not the merge of the events it serves
    honest = merge(pn, evs, REG.ring().merged(_ring(MIRRORS)), {REG.fingerprint})
    lie = json.loads(json.dumps(honest))
    lie["current"]["graph_snapshots"] = []
    lie["state_sha256"] = state_hash(lie)
    await running.node.ingest_bundle(REG.bundle(pn, evs, keys=MIRRORS, state=lie), source=HOSTILE_SOURCE)
    return {"pn": pn, "code": pn.rsplit(":", 1)[1], "equivocating": {one["event_id"], two["event_id"]},
            "invalid": bad["event_id"], "events": len(evs) + 4, "lie": lie["state_sha256"]}


def _ring(signers):  # type: ignore[no-untyped-def]
    from pithnode.core import KeyRing
    ring = KeyRing()
    for s in signers:
        ring.add_raw(s.raw, s.key_id)
    return ring


async def get(url: str) -> httpx.Response:
    with trio.fail_after(20):
        async with httpx.AsyncClient() as client:
            return await client.get(url)


async def assert_links_resolve(page_url: str, hrefs: list[str]) -> None:
    """Every link to this node answers 200 (outside links are not followed: there is no network)."""
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(page_url))
    local = sorted({urljoin(page_url, h).split("#")[0] for h in hrefs if urljoin(page_url, h).startswith(origin)})
    assert local
    for url in local:
        assert (await get(url)).status_code == 200, url


async def test_status_page_to_evidence_in_one_click_and_the_download_verifies(tmp_path: Path):
    async with nodes(tmp_path, 1) as (a,), browser() as b:
        rec = await hostile_record(a)
        r = await get(a.url + "/")
        assert r.headers["cache-control"] == "no-cache"
        assert "script-src" not in r.headers["content-security-policy"]  # default-src 'none': no script at all
        assert "default-src 'none'" in r.headers["content-security-policy"]
        page = await b.load(a.url + "/")
        assert page.errors == [], page.errors
        assert await b.js(PWNED) == [True, 0, 0]
        assert await b.js("return document.querySelector('meta[http-equiv=refresh]').content") == "30"
        text = await b.js("return document.body.innerText")
        for fact in ("pithnode 0.1.0", a.node.identity.key_id, "records held", "events held", "unmerged"):
            assert fact in text, fact
        assert "<svg" in r.text and "events admitted" in text and "requests served" in text
        await b.screenshot(tmp_path / "status.png")
        hrefs = await b.js("return [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href'))")
        await assert_links_resolve(page.url, hrefs)

        # one click from the status page to the equivocation's evidence
        ev = await b.click("a[href*='/evidence/']")
        assert ev.errors == [] and "/evidence/" in ev.url, ev
        kind = await b.js("return document.querySelector('h1').innerText")
        if kind != "Equivocation":  # the newest report first: the disagreement came last
            await b.load(a.url + "/")
            ev = await b.click(f"tbody tr:nth-child(2) a[href*='/evidence/']")
            assert await b.js("return document.querySelector('h1').innerText") == "Equivocation"
        assert await b.js(PWNED) == [True, 0, 0]
        assert await b.js("return document.querySelectorAll('tr.diff').length") >= 1
        hrefs = await b.js("return [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href'))")
        await assert_links_resolve(ev.url, hrefs)
        await b.screenshot(tmp_path / "evidence.png")
        made_up = ev.url.rsplit("/", 1)[0] + "/" + "0" * len(ev.url.rsplit("/", 1)[1])
        assert (await get(made_up)).status_code == 404  # an id no report has
        command = await b.js("return document.querySelector('.verify pre').innerText")
        href = await b.js("return document.querySelector('a[download]').href")
        download = await get(href)
        assert download.status_code == 200 and "attachment" in download.headers["content-disposition"]
        name = command.split()[-1]
        (tmp_path / name).write_bytes(download.content)
        assert command == f"pithnode verify {name}"

        # `pithnode verify` checks the download offline and shows the equivocation
        out = run_cli("verify", "--json", str(tmp_path / name), config_path=write_config(tmp_path))
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        assert report["problems"] == [] and all(not a["rejected"] for a in report["admission"])
        assert [set(e["event_ids"]) for e in report["equivocations"]] == [rec["equivocating"]]


async def test_record_page_shows_the_record_and_escapes_what_events_say(tmp_path: Path):
    async with nodes(tmp_path, 1) as (a,), browser() as b:
        rec = await hostile_record(a)
        url = f"{a.url}/pith/{rec['code']}"
        r = await get(url)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in r.headers["content-security-policy"]
        page = await b.load(url)
        assert page.errors == [], page.errors
        assert await b.js(PWNED) == [True, 0, 0]
        shown = HOSTILE_TITLE.replace("\x01", "\ufffd")
        assert await b.js("return document.querySelector('h1').textContent") == shown  # text, not markup
        assert page.title.startswith(shown)
        text = await b.js("return document.body.innerText")
        assert rec["pn"] in text and f"pith:{rec['code'][:8]}" in text
        rows = await b.js("return [...document.querySelectorAll('tbody tr[id^=e-]')].map(r => r.innerText)")
        events = (await get(f"{a.url}/api/pith-number/{rec['code']}/events.json")).json()["events"]
        assert len(rows) == len(events) >= rec["events"]  # and the node's own attestations
        assert sum("equivocating" in r for r in rows) == 2
        assert sum("invalid: bad_payload" in r for r in rows) == 1
        assert sum("superseded" in r for r in rows) >= 1
        assert "disagrees" in text and "same as ours" not in text.split("Sources seen")[0]
        # the bundle's resolver link is this page, and every JSON document is linked from it
        bundle = (await get(f"{a.url}/pith/{rec['code']}/bundle.json")).json()
        assert bundle["links"]["resolver"] == url
        hrefs = await b.js("return [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href'))")
        for doc in (".json", "/bundle.json", "/state.json", "/events.json", "/graph.json"):
            assert any(h.endswith(doc) and rec["code"] in h for h in hrefs), doc
        await assert_links_resolve(page.url, hrefs)
        assert await b.js("return document.querySelector('link[rel=alternate]').type") == "application/atom+xml"
        await b.screenshot(tmp_path / "record.png")
        # a phone's width: nothing wider than the screen (wide tables scroll inside their box)
        await b.resize(390, 844)
        await b.load(url)
        assert await b.js("return document.documentElement.scrollWidth <= window.innerWidth")
        await b.screenshot(tmp_path / "record-phone.png")
        await b.load(a.url + "/")
        assert await b.js("return document.documentElement.scrollWidth <= window.innerWidth")
        # the way to the evidence is on the screen, not in a column scrolled away
        assert await b.js("return document.querySelector(\"a[href*='/evidence/']\").getBoundingClientRect().right"
                          " <= window.innerWidth")
        await b.screenshot(tmp_path / "status-phone.png")
        assert (await b.load(f"{a.url}/pith/{'A' * 26}")).title == "Not found"


async def test_disagreement_evidence_is_the_sources_signed_bundle(tmp_path: Path):
    async with nodes(tmp_path, 1) as (a,), browser() as b:
        rec = await hostile_record(a)
        feed = ET.fromstring((await get(a.url + "/equivocations.atom")).content)
        (entry,) = [e for e in feed.iter(ATOM + "entry") if e.find(ATOM + "category").get("term") == "disagreement"]
        page_url = entry.find(f"{ATOM}link[@rel='alternate']").get("href")
        page = await b.load(page_url)
        assert page.errors == [] and await b.js(PWNED) == [True, 0, 0]
        assert await b.js("return document.querySelector('h1').innerText") == "Disagreeing source"
        text = await b.js("return document.body.innerText")
        assert HOSTILE_SOURCE in text and rec["lie"] in text
        assert await b.js("return document.querySelectorAll('tr.diff').length") >= 1
        await b.screenshot(tmp_path / "disagreement.png")
        download = await get(await b.js("return document.querySelector('a[download]').href"))
        path = tmp_path / "disagreement.json"
        path.write_bytes(download.content)
        out = run_cli("verify", "--json", str(path), config_path=write_config(tmp_path))
        report = json.loads(out.stdout)
        assert out.returncode == 1 and report["kind"] == "bundle" and report["bundle_signature_ok"]
        assert report["published_state_sha256"] == rec["lie"] and report["state_matches"] is False


async def test_atom_feed_has_an_entry_per_conflict_with_ids_stable_across_restarts(tmp_path: Path):
    async with nodes(tmp_path, 1) as (a,), browser() as b:
        rec = await hostile_record(a)
        r = await get(a.url + "/equivocations.atom")
        assert r.headers["content-type"].startswith("application/atom+xml")
        feed = ET.fromstring(r.content)  # well-formed XML (the control character was replaced)
        assert feed.tag == ATOM + "feed"
        for required in ("id", "title", "updated", "author"):
            assert feed.find(ATOM + required) is not None, required
        entries = feed.findall(ATOM + "entry")
        assert sorted(e.find(ATOM + "category").get("term") for e in entries) == ["disagreement", "equivocation"]
        for e in entries:
            for required in ("id", "title", "updated", "summary"):
                assert (e.find(ATOM + required).text or "").strip(), required
            assert (await get(e.find(f"{ATOM}link[@rel='alternate']").get("href"))).status_code == 200
        (eq,) = [e for e in entries if e.find(ATOM + "category").get("term") == "equivocation"]
        assert {x.text for x in eq.iter("{urn:pithnode:atom}event_id")} == rec["equivocating"]
        assert all(i in eq.find(ATOM + "summary").text for i in rec["equivocating"])
        ids = sorted(e.find(ATOM + "id").text for e in entries)
        # Chromium's XML parser reads it too (it shows a feed as text: the text is parsed)
        loaded = await b.load(a.url + "/equivocations.atom")
        assert loaded.errors == []
        parsed = await b.js("const d = new DOMParser().parseFromString(document.body.innerText, 'application/xml');"
                            "return [d.getElementsByTagName('parsererror').length, d.documentElement.namespaceURI,"
                            " d.getElementsByTagNameNS('http://www.w3.org/2005/Atom', 'entry').length]")
        assert parsed == [0, "http://www.w3.org/2005/Atom", 2]
    async with nodes(tmp_path, 1) as (again,):  # the same data dir, restarted
        feed = ET.fromstring((await get(again.url + "/equivocations.atom")).content)
        assert sorted(e.find(ATOM + "id").text for e in feed.findall(ATOM + "entry")) == ids


async def test_peers_gone_for_long_are_marked_and_rates_are_charted(tmp_path: Path):
    async with nodes(tmp_path, 1) as (a,):
        dead = "http://127.0.0.1:9"
        a.peers.peers[dead] = PeerState(dead, healthy=False, last_ok="2026-01-01T00:00:00Z", failures=3,
                                        last_error="connection refused")
        a.peers.peers[dead + "1"] = PeerState(dead + "1", healthy=False, failures=2, last_error="timeout")
        pn, evs = synthetic_subject(REG, 22, 30, MIRRORS)
        await a.node.ingest_bundle(REG.bundle(pn, evs, keys=MIRRORS), source="https://registry.test/x.json")
        for _ in range(3):
            assert (await get(a.url + "/healthz")).status_code == 200
        text = (await get(a.url + "/")).text
        row = next(line for line in text.split("<tr>") if "127.0.0.1:9<" in line)
        assert "gone" in row
        row = next(line for line in text.split("<tr>") if "127.0.0.1:91<" in line)
        assert "down" in row and "gone" not in row
        admitted = re.search(r"events admitted: (\d+) events this minute", text)
        assert admitted and int(admitted.group(1)) >= len(evs)  # and the node's own attestations
        assert "requests served: 3 requests this minute" in text
        assert text.count('fill="#2b6cb0"') == 2  # a bar in each chart: this minute's


async def test_the_console_check_sees_a_csp_violation(tmp_path: Path):
    """The page tests' console check is real: a page breaking our CSP is caught."""
    from pithnode.node import pages
    from pithnode.node.http import Limits, serve

    async def handler(req):  # type: ignore[no-untyped-def]
        return 200, [(b"content-type", b"text/html"), (b"content-security-policy", pages.CSP.encode())], \
            b"<!doctype html><title>t</title><p style='color:red'>x</p><script>window.ran=1</script>"

    shutdown = trio.Event()
    async with trio.open_nursery() as nursery, browser() as b:
        (url,) = await nursery.start(serve, handler, "127.0.0.1:0", shutdown, Limits())
        page = await b.load(url + "/")
        shutdown.set()
    assert any("Content Security Policy" in e for e in page.errors), page.errors


def test_a_source_lying_again_and_again_keeps_only_its_first_bundles_as_evidence(tmp_path: Path):
    from helpers import config
    from pithnode.core.ingest_plan import MAX_KEPT_BUNDLES
    from pithnode.ingest import ingest_bundle
    from pithnode.store import Store
    from pithnode.views import evidence_doc, evidence_reports

    cfg = config(tmp_path)
    pn, evs = synthetic_subject(REG, 23, 6, MIRRORS)
    honest = merge(pn, evs, REG.ring().merged(_ring(MIRRORS)), {REG.fingerprint})
    bundles = []
    for i in range(MAX_KEPT_BUNDLES + 2):  # a new lie on every poll
        lie = json.loads(json.dumps(honest))
        lie["current"]["graph_snapshots"], lie["event_count"] = [], 100 + i
        lie["state_sha256"] = state_hash(lie)
        bundles.append(REG.bundle(pn, evs, keys=MIRRORS, state=lie))
    with Store(cfg.db_path) as store:
        for bundle in [*bundles, bundles[1]]:  # the second lie served again: it keeps its bundle
            ingest_bundle(store, bundle, source="https://liar.test/b.json", trusted=cfg.trusted_ring(),
                          registry=cfg.registry, now="2026-11-23T00:00:00Z")
        reports = evidence_reports(store)
        assert all("bundle" not in r["detail"] for r in reports)  # listings never carry (or parse) a bundle
        kept = {r["detail"]["published_state_sha256"]: evidence_doc(store, r) for r in reports}
        assert len(kept) == len(bundles)
        assert [kept[b["state"]["state_sha256"]] == b for b in bundles] == \
            [True] * MAX_KEPT_BUNDLES + [False] * (len(bundles) - MAX_KEPT_BUNDLES)
        assert all(kept[b["state"]["state_sha256"]] is None for b in bundles[MAX_KEPT_BUNDLES:])


async def test_front_processes_serve_the_pages_and_pass_the_status_page_to_the_node(tmp_path: Path):
    """http_workers = 1: the pages that read the store come from the front; `/` (peers, rates: the
    node's memory) from the node process, through the front, with its headers."""
    from test_node_process import free_port, start, wait_up

    cfg_path = write_config(tmp_path, mirrors=[], gossip_interval=3600.0, poll_interval=3600.0, http_workers=1,
                            attest=False)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start(cfg_path, port)
    try:
        await wait_up(url)
        pn, evs = synthetic_subject(REG, 24, 8, MIRRORS)
        one = EVIL.event(pn, "citation_signature", "citation", {"citing": HOSTILE_TITLE}, "2026-03-02T00:00:00Z")
        two = EVIL.event(pn, "citation_signature", "citation", {"citing": "x"}, "2026-03-02T00:00:01Z")
        keys = [REG.entry(), EVIL.entry(), *(m.entry() for m in MIRRORS)]
        assert (await push(url, [*evs, one, two], keys)).status_code == 200
        async with browser() as b:
            with trio.fail_after(20):
                while "evidence/" not in (status := await get(url + "/")).text:
                    await trio.sleep(0.1)
            assert status.headers["cache-control"] == "no-cache" and "default-src 'none'" in \
                status.headers["content-security-policy"]
            page = await b.load(url + "/")
            assert page.errors == [] and "Node status" in page.title + await b.js("return document.body.innerText")
            hrefs = await b.js("return [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href'))")
            await assert_links_resolve(page.url, hrefs)
            evidence = await b.click("a[href*='/evidence/']")
            assert evidence.errors == [] and await b.js(PWNED) == [True, 0, 0]
            assert await b.js("return document.querySelector('h1').innerText") == "Equivocation"
    finally:
        proc.terminate()
        with trio.fail_after(20):
            await trio.to_thread.run_sync(proc.wait)


async def test_pages_render_events_of_unexpected_shapes(tmp_path: Path):
    """Admission checks a payload's type only where the spec says: other fields may hold anything."""
    async with nodes(tmp_path, 1) as (a,):
        pn, evs = synthetic_subject(REG, 25, 6, MIRRORS)
        await a.node.ingest_bundle(REG.bundle(pn, evs, keys=MIRRORS), source="https://registry.test/b.json")
        last_graph = [e for e in evs if e["event_type"] == "graph_snapshot"][-1]
        odd = REG.event(pn, "graph_snapshot", "graph",
                        {"graph_snapshot": {"paper": {"title": ["a", {"b": None}], "authors_text": 7},
                                            "claims": "many"}}, "2026-03-01T00:00:00Z",
                        prev=last_graph["event_id"], supersedes=[last_graph["event_id"]])
        weird = EVIL.event(pn, "citation_signature", "citation", ["not", "an", "object"], "2026-03-02T00:00:00Z")
        deep = EVIL.event(pn, "correction", "correction", {"x": [[[[[[[[[[[["deep"]]]]]]]]]]]]}, "2026-03-02T00:00:00Z")
        assert (await push(a.url, [odd, weird, deep], [EVIL.entry()])).status_code == 200
        code = pn.rsplit(":", 1)[1]
        r = await get(f"{a.url}/pith/{code}")
        assert r.status_code == 200
        assert "<h1>[&#x27;a&#x27;, {&#x27;b&#x27;: None}]</h1>" in r.text and "invalid</span>: bad_payload" in r.text
        assert (await get(a.url + "/")).status_code == 200
