"""The pages a person watches a node with, server-rendered (no script at all):
the status page `/`, a record's page `/pith/<CODE>` (the registry's page URL),
an evidence page per equivocation or disagreeing source with its download,
and the Atom feed `/equivocations.atom`.

Every value read from an event, a source or a peer is attacker-written: it is
escaped (`_e`), linked only when it is an HTTP URL by the spec's own pattern,
and the Content-Security-Policy forbids scripts, inline styles, frames and
foreign resources, so a value that got through unescaped would still do
nothing.
"""

from __future__ import annotations

import html
import json
import re
import time
from collections import deque
from datetime import UTC, datetime
from itertools import pairwise
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import trio

from .. import __version__
from ..core import KeyRing, check_bundle
from ..store import BundleCheck, Subject
from ..views import events_of, evidence_doc, evidence_reports, find_evidence, known_mirror_hints, state_of

if TYPE_CHECKING:
    from .peer import PeerService
    from .service import Node

CODE = r"(?P<code>[A-Z2-7]{26})"
EID = r"(?P<eid>[0-9a-f]{24})"
ROUTES = [
    ("page_record", rf"/pith/{CODE}"),
    ("page_evidence", rf"/pith/{CODE}/evidence/{EID}"),
    ("evidence_json", rf"/pith/{CODE}/evidence/{EID}\.json"),
    ("feed", r"/equivocations\.atom"),
    ("css", r"/pithnode\.css"),
    ("icon", r"/favicon\.(?:svg|ico)"),
    ("status", r"/"),
]
NAMES = frozenset(name for name, _ in ROUTES)

CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")
REFRESH = 30  # seconds between the status page's reloads
PAGE_TTL = 2.0  # a page is rendered at most this often (a client hammering one costs a render per PAGE_TTL)
PEER_GONE = 24 * 3600  # a peer silent this long is shown as gone
PEER_GONE_FAILURES = 10  # ...and one that never answered, after this many tries in a row
SAMPLE_EVERY = 60.0
LISTED = 20  # equivocations, rejections and sources listed on the status page
MAX_ROWS = 400  # rows of a side-by-side comparison
FEED_ENTRIES = 100
TIMELINE = 2000  # events on a record's page, the newest (all of them: events.json)
ATTESTATIONS = (("storage_attestations", "storage_attestation"), ("timestamp_anchors", "timestamp_anchor"))
NO_CHECKS = "No bundle fetched from a source yet (events came by gossip)."

Response = tuple[int, list[tuple[bytes, bytes]], bytes]

# the spec's HTTP URL pattern (PROTOCOL.md 2.2), whole: only such values are made links
_HTTP_URL = re.compile(r"https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~-]+)(:[0-9]{1,5})?([/?#][^\x00-\x20\x7f]*)?")
# not allowed in XML 1.0 (and lone surrogates do not encode): replaced, so a hostile value cannot break a page
_UNSAFE_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _clean(value: Any) -> str:
    return _UNSAFE_CHARS.sub("\ufffd", value if isinstance(value, str) else str(value))


def _e(value: Any) -> str:
    return html.escape(_clean(value), quote=True)


def _link(url: Any, text: Any = None) -> str:
    """An outside URL as a link when it is an HTTP URL, else as plain text (never `javascript:`)."""
    label = _e(url if text is None else text)
    if isinstance(url, str) and _HTTP_URL.fullmatch(url):
        return f'<a href="{_e(url)}" rel="nofollow noopener noreferrer">{label}</a>'
    return f"<span class=unlinked>{label}</span>"


def _short(value: Any, n: int = 16) -> str:
    s = _clean(value or "")
    return _e(s if len(s) <= n else s[:n] + "\u2026")


def _instant(text: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError, OSError):  # not an instant, or one out of range
        return None


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def _when(text: Any, now: float) -> str:
    """An instant with its age: `<time>` for machines, "5 min ago" for people."""
    if not text:
        return "never"
    at = _instant(text)
    ago = f" ({_age(now - at)} ago)" if at is not None else ""
    return f'<time datetime="{_e(text)}">{_e(text)}</time>{ago}'


def _headers(content_type: str, cache: str) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", content_type.encode()), (b"cache-control", cache.encode()),
            (b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer")]


def _html(body: bytes) -> Response:
    return 200, _headers("text/html; charset=utf-8", "public, max-age=60"), body


def _page(title: str, node_url: str, body: str, *, refresh: int | None = None) -> str:
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">{meta}
<title>{_e(title)}</title>
<link rel="stylesheet" href="/pithnode.css"><link rel="icon" type="image/svg+xml" href="/favicon.svg">
<link rel="alternate" type="application/atom+xml" title="Equivocations and disagreements" href="/equivocations.atom">
</head><body>
<header><a href="/" class=home>pithnode</a> <span class=muted>{_e(node_url)}</span>
<nav aria-label="node documents"><a href="/equivocations.atom">Atom feed</a>
<a href="/equivocations.json">equivocations.json</a>
<a href="/pith-mirrors.json">mirrors</a> <a href="/metrics">metrics</a></nav></header>
<main>{body}</main></body></html>
"""


def _table(head: list[str], rows: list[str], empty: str = "none") -> str:
    if not rows:
        return f"<p class=muted>{_e(empty)}</p>"
    ths = "".join(f"<th scope=col>{h}</th>" for h in head)
    return f"<div class=scroll><table><thead><tr>{ths}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"


def _signer(signer: Any) -> str:
    if not isinstance(signer, dict):
        return _e(signer)
    return (f"{_e(signer.get('signer_id', '?'))} <span class=muted>({_e(signer.get('signer_type', '?'))}, key "
            f"<code>{_e(signer.get('key_id', '?'))}</code>)</span>")


def _summary(event: dict[str, Any]) -> str:
    """What a person wants to see of an event's payload, escaped."""
    p = event.get("payload")
    if not isinstance(p, dict):
        return _short(json.dumps(p, ensure_ascii=False), 120)
    kind = event.get("event_type")
    if kind == "graph_snapshot" and isinstance(p.get("graph_snapshot"), dict):
        g = p["graph_snapshot"]
        paper = g.get("paper") if isinstance(g.get("paper"), dict) else {}
        claims = g.get("claims") if isinstance(g.get("claims"), dict) else {}
        return f"{_short(paper.get('title', ''), 120)} <span class=muted>({_e(claims.get('count', 0))} claims)</span>"
    if kind == "storage_attestation":
        return f"stored at {_link(p.get('location'))}"
    if kind == "mirror_hint":
        return f"mirror {_link(p.get('base_url'))}"
    if kind == "timestamp_anchor":
        return f"{_e(p.get('anchor_type', ''))} anchor"
    if kind == "record_created":
        return f"record of {_e(p.get('source_kind'))} {_e(p.get('source_id'))} v{_e(p.get('source_version'))}"
    return _short(json.dumps(p, ensure_ascii=False, sort_keys=True), 160)


def _flatten(value: Any, prefix: str = "", depth: int = 0) -> list[tuple[str, str]]:
    """(path, JSON of the value) rows of a document, for a side-by-side comparison."""
    if depth < 8 and isinstance(value, dict) and value:
        return [row for k in value for row in _flatten(value[k], f"{prefix}.{k}" if prefix else str(k), depth + 1)]
    if depth < 8 and isinstance(value, list) and value:
        return [row for i, v in enumerate(value) for row in _flatten(v, f"{prefix}[{i}]", depth + 1)]
    return [(prefix, json.dumps(value, ensure_ascii=False, sort_keys=True))]


def _side_by_side(titles: list[str], docs: list[Any], *, only_diff: bool = False) -> str:
    """Columns of documents, one row per field; rows where they differ are marked
    (`only_diff`: the only ones shown, for large documents that mostly agree)."""
    columns = [dict(_flatten(d)) for d in docs]
    paths = list(dict.fromkeys(p for c in columns for p in c))
    diff = [p for p in paths if len({c.get(p) for c in columns}) > 1]
    differing = set(diff)
    rows = []
    for p in (diff if only_diff else paths)[:MAX_ROWS]:
        differs = p in differing
        cells = "".join(f"<td>{_e(c[p]) if p in c else '<span class=muted>(absent)</span>'}</td>" for c in columns)
        rows.append(f"<tr{' class=diff' if differs else ''}><th scope=row><code>{_e(p)}</code>"
                    f"{' <strong>differs</strong>' if differs else ''}</th>{cells}</tr>")
    listed = len(diff) if only_diff else len(paths)
    more = f"<p class=muted>{listed - MAX_ROWS} more rows not shown: see the download.</p>" \
        if listed > MAX_ROWS else ""
    ths = "".join(f"<th scope=col>{t}</th>" for t in titles)
    said = "shown; the others are the same" if only_diff else "marked"
    return (f"<p>{len(diff)} of {len(paths)} fields differ ({said}).</p><div class=scroll><table class=compare>"
            f"<thead><tr><th scope=col>field</th>{ths}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>{more}")


def _chart(label: str, values: list[float], unit: str) -> str:
    """Bars of per-minute counts over the last hour, newest on the right, as inline SVG
    (presentation attributes only: the CSP allows no inline style)."""
    slots, w, h = 60, 300, 60
    top = max(values, default=0)
    shown = values[-slots:]
    bars = "".join(
        f'<rect x="{(slots - len(shown) + i) * w / slots:.1f}" y="{h - v / top * (h - 2):.1f}" '
        f'width="{w / slots - 1:.1f}" height="{v / top * (h - 2):.1f}" fill="#2b6cb0"/>'
        for i, v in enumerate(shown) if v > 0)
    last = values[-1] if values else 0
    return (f'<figure><figcaption>{_e(label)}: {last:.0f} {unit} this minute, at most {top:.0f} a minute'
            f'</figcaption><svg viewBox="0 0 {w} {h}" width="100%" height="{h}" preserveAspectRatio="none" role="img" '
            f'aria-label="{_e(label)} per minute over the last hour"><rect width="{w}" height="{h}" fill="#f4f6f8"/>'
            f'{bars}</svg><div class="axis muted"><span>1 h ago</span><span>now</span></div></figure>')


class Rates:
    """Two counters sampled once a minute over the last hour, for the status page's charts."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, float]] = deque(maxlen=61)  # (admitted, served) totals

    def add(self, admitted: float, served: float) -> None:
        self.samples.append((admitted, served))

    def per_minute(self, admitted: float, served: float) -> tuple[list[float], list[float]]:
        """What each minute added, the current one (so far) last."""
        points = [*self.samples, (admitted, served)]
        return ([a1 - a0 for (a0, _), (a1, _) in pairwise(points)],
                [s1 - s0 for (_, s0), (_, s1) in pairwise(points)])


class Pages:
    """The pages of one node. In a front process `peers` is that process's (empty) view: fronts
    pass `/` to the node process, so the status page always shows the node's peers."""

    def __init__(self, node: Node, peers: PeerService):
        self.node, self.peers = node, peers
        self.started = time.time()
        self.rates = Rates()
        self._status: tuple[float, bytes] = (0.0, b"")

    def _totals(self) -> tuple[float, float]:
        m = self.node.metrics
        admitted = m.registry.get_sample_value("pithnode_events_admitted_total") or 0.0
        served = sum(s.value for metric in m.http.collect() for s in metric.samples if s.name.endswith("_total"))
        return admitted, served

    async def sample(self) -> None:
        """Feed the rate charts, a sample a minute, until cancelled."""
        while True:
            self.rates.add(*self._totals())
            await trio.sleep(SAMPLE_EVERY)

    def respond(self, route: str, m: re.Match[str]) -> Response:
        if route in ("css", "icon"):
            kind, text = (b"text/css; charset=utf-8", STYLE) if route == "css" else (b"image/svg+xml", ICON)
            return 200, [(b"content-type", kind), (b"cache-control", b"public, max-age=3600")], text.encode()
        if route == "status":
            at, body = self._status
            if time.monotonic() - at > PAGE_TTL:
                body = self.status_page().encode()
                self._status = (time.monotonic(), body)
            return 200, _headers("text/html; charset=utf-8", "no-cache"), body
        node = self.node
        if route == "feed":
            body = node.cached("*", "feed", lambda: self.feed().encode(), "application/atom+xml").body
            return 200, [(b"content-type", b"application/atom+xml; charset=utf-8"),
                         (b"cache-control", b"no-cache"), (b"x-content-type-options", b"nosniff")], body
        subject = node.store.subject(m.group("code"))
        if subject is None or subject.state_sha256 is None:
            return self._not_found(f"Record {m.group('code')} is not held by this node.")
        # a record's pages are rendered again when it changes, and at most every PAGE_TTL seconds (their ages move)
        version = (subject.state_sha256, subject.event_count, subject.updated_at, node.store.data_version(),
                   int(time.monotonic() // PAGE_TTL))
        if route == "page_record":
            return _html(node.cached(subject.pith_number, "page", lambda: self.record_page(subject).encode(),
                                     "text/html", version=version).body)
        report = find_evidence(node.store, subject.pith_number, m.group("eid"))
        if report is None:
            return self._not_found("No such equivocation or disagreement on this record.")
        if route == "evidence_json":
            doc = evidence_doc(node.store, report)
            if doc is None:
                return self._not_found("The source's bundle was not kept for this disagreement.")
            return 200, [(b"content-type", b"application/json"), (b"cache-control", b"public, max-age=60"),
                         (b"content-disposition", f'attachment; filename="{_download_name(report)}"'.encode())], \
                json.dumps(doc, ensure_ascii=False, sort_keys=True, indent=1).encode()
        return _html(node.cached(subject.pith_number, f"evidence {report['id']}",
                                 lambda: self.evidence_page(subject, report).encode(), "text/html",
                                 version=version).body)

    def _not_found(self, why: str) -> Response:
        body = _page("Not found", self.node.public_url, f"<h1>Not found</h1><p>{_e(why)}</p>"
                     '<p><a href="/">Back to the status page</a></p>')
        return 404, _headers("text/html; charset=utf-8", "no-cache"), body.encode()

    # -- the status page -----------------------------------------------------------

    def status_doc(self) -> dict[str, Any]:
        """The node's state as plain data: the facts, sources and peers the status page shows."""
        node, store, ident = self.node, self.node.store, self.node.identity
        return {
            "version": __version__, "started_at": _iso(self.started), "uptime_seconds": time.time() - self.started,
            "key_id": ident.key_id, "key_fingerprint": ident.fingerprint, "records": store.subject_count(),
            "events": store.event_count(), "unmerged_records": len(node.unmerged),
            "followed": [s.pith_number for s in store.subjects(followed_only=True, limit=LISTED)],
            "sources": [{"url": s.url, "record": s.subject, "last_attempt": s.last_attempt,
                         "last_success": s.last_success, "failures": s.failures, "error": s.last_error}
                        for s in store.recent_sources(LISTED)],
            "peers": [{"url": url, "healthy": p.healthy, "last_ok": p.last_ok, "failures": p.failures,
                       "error": p.last_error} for url, p in sorted(self.peers.peers.items())],
        }

    def status_page(self) -> str:
        node, store = self.node, self.node.store
        doc, now = self.status_doc(), time.time()
        facts = [
            ("version", f"pithnode {_e(doc['version'])}"),
            ("up", f"{_age(doc['uptime_seconds'])} (since {_e(doc['started_at'])})"),
            ("key", f"<code>{_e(doc['key_id'])}</code> <span class=muted>{_e(doc['key_fingerprint'])}</span> "
                    '<a href="/pith-signing-key.json">key document</a>'),
            ("records held", f"{doc['records']:,}"), ("records followed", f"{len(doc['followed']):,}"),
            ("events held", f"{doc['events']:,}"),
            ("unmerged records", f"{doc['unmerged_records']:,}"
                                 + (" (a bulk sync is merging)" if doc["unmerged_records"] else "")),
        ]
        dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
        admitted, served = self._totals()
        ingest, serve = self.rates.per_minute(admitted, served)
        charts = (_chart("events admitted", ingest, "events") + _chart("requests served", serve, "requests")
                  + "<p class=muted>Per minute over the last hour. With front processes, the requests they "
                    "answer themselves are counted by them (see /metrics), not here.</p>")
        evidence = [  # the link first: on a phone the other columns may be scrolled to
            f"<tr><td><a href=\"/pith/{_code(r['subject'])}/evidence/{r['id']}\">{_e(r['kind'])}: evidence</a></td>"
            f"<td>{_report_who(r)}</td><td>{_record_link(r['subject'])}</td><td>{_when(r['first_seen'], now)}</td></tr>"
            for r in evidence_reports(store, limit=LISTED)]
        rejections = [
            f"<tr><td>{_when(r.at, now)}</td><td>{_e(r.reason)}</td>"
            f"<td>{_record_link(r.subject)}</td><td><code>{_short(r.event_id or '', 24)}</code></td>"
            f"<td>{_link(r.source or '?')}</td><td>{_short(r.detail or '', 80)}</td></tr>"
            for r in store.rejections(limit=LISTED)]
        polls = [
            f"<tr><td>{_link(s['url'])}</td><td>{_record_link(s['record'])}</td>"
            f"<td>{_when(s['last_attempt'], now)}</td><td>{_poll_result(s)}</td>"
            f"<td>{_when(s['last_success'], now)}</td></tr>"
            for s in doc["sources"][:LISTED]]
        peers = [_peer_row(p, now) for p in doc["peers"]]
        held = [s for pn in doc["followed"][:LISTED] if (s := store.subject(pn))] or store.subjects(limit=LISTED)
        records = [
            f"<tr><td>{_record_link(s.pith_number)}</td><td>{_short(s.title or '', 80)}</td><td>{s.event_count}</td>"
            f"<td>{s.equivocation_count}</td><td>{s.invalid_event_count}</td>"
            f"<td><code>{_short(s.state_sha256, 16)}</code></td></tr>" for s in held]
        body = f"""<h1>Node status</h1><dl class=facts>{dl}</dl>
<section><h2>Equivocations and disagreements</h2>
{_table(["what", "who", "record", "first seen"], evidence, "None seen.")}
<p><a href="/equivocations.atom">Follow them in a feed reader</a> (Atom).</p></section>
<section><h2>{"Followed records" if doc["followed"] else "Records"}</h2>
{_table(["Pith number", "title", "events", "equivocations", "invalid", "state"], records, "No records held yet.")}
{f'<p class=muted>The first {LISTED} of {doc["records"]:,} shown.</p>' if len(held) == LISTED else ""}</section>
<section><h2>Activity</h2><div class=charts>{charts}</div></section>
<section><h2>Peers (gossip)</h2>
{_table(["peer", "state", "last success", "last error"], peers, "No peers.")}</section>
<section><h2>Polls, latest first</h2>
{_table(["source", "record", "last poll", "result", "last success"], polls, "No polls yet.")}</section>
<section><h2>Latest rejections</h2>
{_table(["at", "reason", "record", "event", "source", "detail"], rejections, "None.")}</section>
<p class=muted>This page reloads itself every {REFRESH} s.</p>"""
        return _page(f"pithnode {node.public_url}", node.public_url, body, refresh=REFRESH)

    # -- the record page ---------------------------------------------------------------

    def record_page(self, subject: Subject) -> str:
        store, base = self.node.store, self.node.public_url
        state = state_of(store, subject) or {}
        cur = state.get("current") or {}
        now = time.time()
        rc = cur.get("record_created") or {}
        record = cur.get("canonical_record") or {}
        source: dict[str, Any] = record["source"] if isinstance(record.get("source"), dict) else {}
        paper = _paper(cur)
        title = paper.get("title") or subject.title or subject.pith_number
        code = subject.code

        # each event's fate in the merge
        applied = set(state.get("applied_event_ids") or [])
        shown = {p.get("event_id") for v in cur.values() if isinstance(v, list) for p in v if isinstance(p, dict)}
        if rc:
            shown.add(rc.get("event_id"))
        invalid = {i["event_id"]: i.get("reason") for i in state.get("invalid_events") or []}
        reports = evidence_reports(store, subject=subject.pith_number, limit=1000)
        eq_page = {eid: r["id"] for r in reports if r["kind"] == "equivocation" for eid in r["detail"]["event_ids"]}

        def fate(eid: str) -> str:
            if eid in invalid:
                return f"<span class=bad>invalid</span>: {_e(invalid[eid])}"
            if eid in eq_page:
                return (f'<span class=bad>equivocating</span> '
                        f'(<a href="/pith/{code}/evidence/{eq_page[eid]}">evidence</a>)')
            if eid in applied:
                return "<span class=ok>applied</span>" if eid in shown else "applied, superseded"
            return "<span class=muted>not merged yet</span>"

        timeline = [
            f"<tr id=\"e-{_e(ev['event_id'][7:19])}\"><td>{_e(ev.get('created_at'))}</td>"
            f"<td>{_e(ev.get('event_type'))}</td>"
            f"<td>{_signer(ev.get('signer'))}</td><td>{fate(ev['event_id'])}</td><td>{_summary(ev)}</td>"
            f"<td><code title=\"{_e(ev['event_id'])}\">{_short(ev['event_id'][7:], 12)}</code></td></tr>"
            for ev in events_of(store, subject)[-TIMELINE:]]

        ours = subject.state_sha256
        checks = [
            f"<tr><td>{_link(c.source or 'imported file')}</td><td>{_when(c.at, now)}</td>"
            f"<td><code>{_short(c.published_state_sha256, 16)}</code></td>"
            f"<td>{_agreement(c, ours)}</td></tr>"
            for c in store.latest_bundle_checks(subject.pith_number)]
        conflicts = [
            f"<li>{_e(r['kind'])} by {_report_who(r)}, first seen {_when(r['first_seen'], now)}: "
            f"<a href=\"/pith/{code}/evidence/{r['id']}\">evidence</a></li>" for r in reports]
        mirrors = [
            f"<tr><td>{_e(h.get('name'))}</td><td>{_link(h.get('base_url'))}</td>"
            f"<td>{_e(h.get('status', ''))}</td></tr>"
            for h in known_mirror_hints(store, subject, base)]
        attests = [
            f"<tr><td>{_e(kind)}</td><td>{_signer(p.get('signer'))}</td><td>{_e(p.get('created_at'))}</td>"
            f"<td>{_summary({'event_type': kind, 'payload': p.get('payload')})}</td></tr>"
            for key, kind in ATTESTATIONS for p in cur.get(key) or [] if isinstance(p, dict)]
        aliases = ", ".join(f"{_e(a.get('alias_kind'))} <code>{_e(a.get('alias_value'))}</code>"
                            for a in cur.get("source_aliases") or [] if isinstance(a, dict))
        docs = [("record JSON", f"/pith/{code}.json"), ("bundle (signed by this node)", f"/pith/{code}/bundle.json"),
                ("state", f"/pith/{code}/state.json"), ("events", f"/api/pith-number/{code}/events.json"),
                ("graph", f"/api/pith-number/{code}/graph.json"),
                ("well-known bundle", f"/.well-known/pith/{code}/bundle.json")]
        src_text = f"{_e(source.get('kind', '?'))} {_e(source.get('id', '?'))} v{_e(source.get('version', '?'))}"
        if source.get("kind") == "arxiv" and isinstance(source.get("id"), str):
            src_text = _link(f"https://arxiv.org/abs/{quote(source['id'], safe='./')}", src_text)
        newest = (f"<p class=muted>The newest {TIMELINE} of {subject.event_count} events; all of them: events.json "
                  "below.</p>" if subject.event_count > TIMELINE else "")
        doc_list = "".join(f'<li><a href="{u}">{_e(n)}</a> <code>{_e(base + u)}</code></li>' for n, u in docs)
        body = f"""<h1>{_e(title)}</h1>
<p class=authors>{_e(paper.get('authors_text') or '')}</p>
<dl class=facts>
<dt>Pith number</dt><dd><code>{_e(subject.pith_number)}</code></dd>
<dt>short forms</dt><dd><code>pith:{code[:8]}</code> <code>pith:{code[:12]}</code> <code>pith:{code[:16]}</code></dd>
<dt>source</dt><dd>{src_text}</dd>
<dt>aliases</dt><dd>{aliases or '<span class=muted>none</span>'}</dd>
<dt>registered</dt><dd>{_e(rc.get('created_at') or 'no record_created event held yet')}</dd>
<dt>state_sha256</dt><dd><code>{_e(ours)}</code></dd>
<dt>events</dt><dd>{state.get('event_count', 0)} admitted, {state.get('invalid_event_count', 0)} invalid,
{state.get('equivocation_count', 0)} equivocations</dd>
</dl>
<section><h2>Equivocations and disagreements</h2>
{('<ul>' + ''.join(conflicts) + '</ul>') if conflicts else '<p class=muted>None seen.</p>'}</section>
<section><h2>Sources seen</h2>
<p>Each source's published state against ours (a source's own events merged by it must give its published state).</p>
{_table(["source", "last fetched", "published state", "agreement"], checks, NO_CHECKS)}</section>
<section><h2>Timeline</h2>
{newest}
{_table(["created_at", "type", "signer", "in the merge", "what", "event id"], timeline, "No events.")}</section>
<section><h2>Mirrors and attestations</h2>
{_table(["name", "base URL", "status"], mirrors)}
{_table(["attestation", "signer", "created_at", "what"], attests, "No attestations.")}</section>
<section><h2>JSON documents</h2><ul>{doc_list}</ul>
</section>"""
        return _page(f"{title} ({subject.pith_number})", base, body)

    # -- evidence pages ----------------------------------------------------------------

    def evidence_page(self, subject: Subject, report: dict[str, Any]) -> str:
        store, base, code = self.node.store, self.node.public_url, subject.code
        d, now = report["detail"], time.time()
        download = f"/pith/{code}/evidence/{report['id']}.json"
        name = _download_name(report)
        head = (f'<p>Record <a href="/pith/{code}">{_e(subject.pith_number)}</a>; '
                f'first seen {_when(report["first_seen"], now)}, last seen {_when(report["last_seen"], now)}, '
                f'reported from {_link(report["source"] or "?")}.</p>')
        if report["kind"] == "equivocation":
            doc = evidence_doc(store, report) or {}
            events = doc.get("events") or []
            keys = "".join(f"<li><code>{_e(k.get('key_id'))}</code> fingerprint "
                           f"<code>{_e(k.get('fingerprint_sha256_hex'))}</code><br>public key (Ed25519, base64) "
                           f"<code>{_e(k.get('public_key_b64'))}</code></li>"
                           for k in doc.get("public_keys") or [])
            who = _signer(events[0].get("signer")) if events else ""
            body = f"""<h1>Equivocation</h1>{head}
<p>The signer <strong>{_e(d['identity'])}</strong> {who} signed {len(events)} different successors of one position
(target <code>{_e(d['target'])}</code>, after <code>{_e(d['prev_event'] or 'nothing: the first event')}</code>).
Each is authentic; together they prove the signer equivocated, so none of them is applied.</p>
{_verify_box(download, name, "pithnode verify " + name,
             "It checks each event's hash and signature with the key below and merges them: the output lists "
             "the equivocation (the same event ids) and ends OK.")}
<h2>The key that verifies them</h2><ul>{keys or '<li>not held</li>'}</ul>
<h2>The conflicting events</h2>
{_side_by_side([f"<code>{_short(ev['event_id'][7:], 12)}</code>" for ev in events], events)}"""
            return _page(f"Equivocation on {subject.pith_number}", base, body)
        bundle = evidence_doc(store, report)
        check, compare = "", ("<p class=muted>The source's bundle was not kept (a source keeps at most a few as "
                              "evidence).</p>")
        if isinstance(bundle, dict):
            node_ring = self.node.ring().merged(KeyRing.from_entries(bundle.get("public_keys") or []))
            ours = check_bundle(bundle, node_ring, self.node.registry).state
            compare = _side_by_side(["published by the source", "merge of the events it served"],
                                    [bundle.get("state"), ours], only_diff=True)
            check = _verify_box(download, name, "pithnode verify " + name,
                                "It checks the bundle's signature and every event, merges the events and prints "
                                "both hashes: `DIFFERS`, and exit status 1.")
        body = f"""<h1>Disagreeing source</h1>{head}
<p>The source {_link(d.get('source') or '?')} published a state that is not the merge of the events it served
itself.</p>
<dl class=facts><dt>its published state_sha256</dt><dd><code>{_e(d.get('published_state_sha256'))}</code></dd>
<dt>merge of its events</dt><dd><code>{_e(d.get('merge_of_its_events_sha256'))}</code></dd>
<dt>its bundle_sha256</dt><dd><code>{_e(d.get('bundle_sha256'))}</code></dd></dl>
{check}
<h2>Published state against the merge</h2>{compare}"""
        return _page(f"Disagreement on {subject.pith_number}", base, body)

    # -- the feed ------------------------------------------------------------------------

    def feed(self) -> str:
        """Atom 1.0 (RFC 4287): an entry per equivocation or disagreement. Ids are content hashes, the
        same across restarts (and on every node that saw the same conflict)."""
        node, x = self.node, _e
        base = node.public_url
        reports = evidence_reports(node.store, limit=FEED_ENTRIES)
        # an entry is dated when first seen: a report is seen again at every merge of its record, which
        # would make readers announce it again
        updated = max((r["first_seen"] for r in reports), default=None) or "1970-01-01T00:00:00Z"
        entries = []
        for r in reports:
            d, page = r["detail"], f"{base}/pith/{_code(r['subject'])}/evidence/{r['id']}"
            if r["kind"] == "equivocation":
                title = f"Equivocation by {d['identity']} on {r['subject']} ({d['target']})"
                text = f"Conflicting signed events: {', '.join(d['event_ids'])}. Evidence: {page}"
                ids = "".join(f"<pith:event_id>{x(e)}</pith:event_id>" for e in d["event_ids"])
            else:
                title = f"Disagreeing source {d.get('source')} on {r['subject']}"
                text = (f"Published state {d.get('published_state_sha256')} is not the merge of its own events "
                        f"({d.get('merge_of_its_events_sha256')}). Evidence: {page}")
                ids = ""
            entries.append(f"""<entry><id>urn:pithnode:evidence:{r['id']}</id><title>{x(title)}</title>
<published>{x(r['first_seen'])}</published><updated>{x(r['first_seen'])}</updated>
<link rel="alternate" type="text/html" href="{x(page)}"/>
<link rel="related" type="application/json" href="{x(page)}.json"/>
<category term="{x(r['kind'])}"/><summary type="text">{x(text)}</summary>{ids}</entry>""")
        return f"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:pith="urn:pithnode:atom">
<id>urn:pithnode:{x(node.identity.fingerprint)}:equivocations</id>
<title>pithnode {x(base)}: equivocations and disagreements</title>
<updated>{x(updated)}</updated>
<author><name>pithnode {x(node.identity.key_id)}</name><uri>{x(base)}</uri></author>
<generator version="{x(__version__)}">pithnode</generator>
<link rel="self" type="application/atom+xml" href="{x(base)}/equivocations.atom"/>
<link rel="alternate" type="text/html" href="{x(base)}/"/>
{''.join(entries)}
</feed>
"""


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _code(pith_number: str) -> str:
    return _e(pith_number.rsplit(":", 1)[-1])


def _record_link(pith_number: str | None) -> str:
    return f'<a href="/pith/{_code(pith_number)}">{_e(pith_number)}</a>' if pith_number else "?"


def _report_who(r: dict[str, Any]) -> str:
    if r["kind"] == "equivocation":
        return _signer(r["signer"]) if r.get("signer") else _e(r["detail"].get("identity"))
    return _link(r["detail"].get("source") or "?")


def _paper(cur: dict[str, Any]) -> dict[str, Any]:
    snaps = cur.get("graph_snapshots") or []
    g = (snaps[-1].get("payload") or {}).get("graph_snapshot") if snaps and isinstance(snaps[-1], dict) else None
    paper = g.get("paper") if isinstance(g, dict) else None
    return paper if isinstance(paper, dict) else {}


def _poll_result(source: dict[str, Any]) -> str:
    if not source["failures"]:
        return "<span class=ok>ok</span>" if source["last_attempt"] else "not tried yet"
    return f"<span class=bad>failed</span> ({source['failures']} in a row): {_short(source['error'], 120)}"


def _peer_row(p: dict[str, Any], now: float) -> str:
    last = _instant(p["last_ok"]) if p["last_ok"] else None
    if p["healthy"]:
        state = "<span class=ok>up</span>"
    elif (last is not None and now - last > PEER_GONE) or (last is None and p["failures"] >= PEER_GONE_FAILURES):
        state = f"<span class=bad>gone</span> ({p['failures']} failed tries)"
    else:
        state = f"<span class=warn>down</span> ({p['failures']} failed tries)"
    return (f"<tr><td>{_link(p['url'])}</td><td>{state}</td><td>{_when(p['last_ok'], now)}</td>"
            f"<td>{_short(p['error'] or '', 120)}</td></tr>")


def _agreement(check: BundleCheck, ours: str | None) -> str:
    if not check.signature_ok:
        return "<span class=bad>bundle signature fails</span>"
    if not check.source_state_matches:
        return "<span class=bad>disagrees</span>: its state is not the merge of its own events"
    if check.published_state_sha256 == ours:
        return "<span class=ok>same as ours</span>"
    return "consistent, but holds other events than we do (it will catch up, or we will)"


def _download_name(report: dict[str, Any]) -> str:
    return f"{report['kind']}-{report['id']}.json"


def _verify_box(href: str, name: str, command: str, what: str) -> str:
    return f"""<section class=verify><h2>Check it yourself, offline</h2>
<p><a href="{href}" download="{_e(name)}">Download the evidence</a> ({_e(name)}, self-contained: the signed
documents and the keys to verify them), then run:</p>
<pre><code>{_e(command)}</code></pre><p>{_e(what)}</p></section>"""


ICON = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><circle cx="8" cy="8" r="7" fill="#2b6cb0"/>'
        '<circle cx="8" cy="8" r="3" fill="#fff"/></svg>')
STYLE = """
:root{color-scheme:light;--fg:#1a202c;--muted:#5a6472;--line:#d9dee5;--bad:#b42318;--ok:#1c7c3a;--warn:#9a6700}
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:var(--fg);margin:0;background:#fff}
header{display:flex;flex-wrap:wrap;gap:.3em 1em;align-items:baseline;padding:.6em 1em;
border-bottom:1px solid var(--line);background:#f7f8fa}
header nav{display:flex;flex-wrap:wrap;gap:.2em 1em;margin-left:auto}
.home{font-weight:700;text-decoration:none;color:var(--fg)}
main{max-width:72em;margin:0 auto;padding:0 1em 2em;overflow-wrap:anywhere}
h1{font-size:1.5em;margin:.8em 0 .2em;overflow-wrap:anywhere}
h2{font-size:1.15em;margin:1.4em 0 .4em;border-bottom:1px solid var(--line);padding-bottom:.2em}
a{color:#1d4ed8}
code,pre{font:13px/1.4 ui-monospace,"DejaVu Sans Mono",monospace;overflow-wrap:anywhere}
pre{background:#f4f6f8;padding:.6em;border-radius:4px;white-space:pre-wrap}
.muted{color:var(--muted)}
.ok{color:var(--ok);font-weight:600}.bad{color:var(--bad);font-weight:600}.warn{color:var(--warn);font-weight:600}
.facts{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1em;margin:.6em 0}
.facts dt{color:var(--muted)}.facts dd{margin:0;overflow-wrap:anywhere}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{text-align:left;vertical-align:top;padding:.3em .5em;border-bottom:1px solid var(--line);overflow-wrap:break-word}
thead th{background:#f7f8fa}
.compare td{font:12px/1.35 ui-monospace,"DejaVu Sans Mono",monospace;min-width:12em;max-width:40em;
overflow-wrap:anywhere}
.compare th[scope=row]{font-weight:400;min-width:10em}
tr.diff{background:#fff1c2}tr.diff td{background:#fff1c2}
.charts{display:flex;flex-wrap:wrap;gap:1em}.charts figure{margin:0;flex:1 1 18em}
figcaption,.axis{font-size:13px}.axis{display:flex;justify-content:space-between}
.verify{border:1px solid var(--line);border-radius:6px;padding:0 1em .5em;margin:1em 0;background:#f9fbff}
@media (max-width:600px){body{font-size:14px}.facts{grid-template-columns:1fr}.facts dt{margin-top:.4em}}
"""
