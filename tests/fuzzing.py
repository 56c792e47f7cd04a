"""Fuzz targets and hypothesis strategies, shared by tests/test_fuzz.py (a
small CI profile) and scripts/fuzz (hundreds of thousands of examples).

Each target takes one generated input and must neither raise (beyond the
documented refusal) nor hang: every input is refused or handled.
"""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path
from typing import Any

import msgpack
import trio
from hypothesis import strategies as st

from helpers import MIRRORS, REG
from pithnode.core import admit, check_bundle, parse_json
from pithnode.core.reconcile import ReconcileError, Reconciler, ReconcileSet
from pithnode.testing.synth import synthetic_subject

PN, EVENTS = synthetic_subject(REG, 4242, 12, MIRRORS)
BUNDLE = REG.bundle(PN, EVENTS, keys=MIRRORS)
RING = REG.ring()
for _m in MIRRORS:
    RING.add_raw(_m.raw, _m.key_id)
REGISTRY = frozenset({REG.fingerprint})

json_leaf = st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.floats() | st.text(max_size=20)
json_value = st.recursive(json_leaf, lambda kids: st.lists(kids, max_size=5)
                          | st.dictionaries(st.text(max_size=10), kids, max_size=5), max_leaves=25)


def _set_path(obj: Any, path: list[Any], value: Any) -> Any:
    target = obj
    for k in path[:-1]:
        target = target[k]
    if path:
        target[path[-1]] = value
    return obj


def _paths(obj: Any, prefix: tuple = ()) -> list[list[Any]]:  # type: ignore[type-arg]
    out = [list(prefix)]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:6]):
            out += _paths(v, prefix + (i,))
    return out


@st.composite
def mutated(draw: Any, base: Any) -> Any:
    """A real document with a few of its values replaced by arbitrary JSON (or removed)."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        if draw(st.booleans()):
            _set_path(doc, path, draw(json_value))
        else:
            parent = doc
            for k in path[:-1]:
                parent = parent[k]
            if isinstance(parent, dict):
                parent.pop(path[-1], None)
    return doc


events = mutated(EVENTS[3]) | mutated(EVENTS[0]) | json_value
bundles = mutated(BUNDLE) | json_value
raw_bytes = st.binary(max_size=400) | st.builds(lambda e: json.dumps(e).encode(), events)


def target_admit(obj: Any) -> None:
    adm = admit(obj, PN, RING)
    assert adm.admitted == (adm.reason is None)


def target_bundle(obj: Any) -> None:
    report = check_bundle(obj, RING, REGISTRY)
    assert report.pith_number is None or isinstance(report.pith_number, str)


def target_parse(data: bytes) -> None:
    try:
        parse_json(data)
    except ValueError:
        pass


_RSET = ReconcileSet([(e["created_at"], e["event_id"]) for e in EVENTS])


def target_reconcile(data: bytes) -> None:
    for fn in (Reconciler(_RSET).respond, Reconciler(_RSET).reconcile):
        try:
            fn(data)
        except ReconcileError:
            pass


def peer_messages() -> st.SearchStrategy[tuple[str, bytes]]:
    kinds = st.sampled_from(["reconcile", "events", "push"])
    fields = st.fixed_dictionaries({"v": st.sampled_from([1, 1, 1, 2, "1", None])}, optional={
        "msg": st.binary(max_size=200) | json_value,
        "ids": st.lists(st.text(max_size=80) | st.integers(), max_size=20) | json_value,
        "events": st.lists(st.binary(max_size=300) | raw_bytes, max_size=5) | json_value,
        "keys": st.lists(st.dictionaries(st.text(max_size=20), json_leaf, max_size=4), max_size=3) | json_value,
        "from": st.text(max_size=50) | json_value,
    })

    def pack(d: dict[str, Any]) -> bytes:
        try:
            return msgpack.packb(d, use_bin_type=True)
        except (TypeError, ValueError, OverflowError):
            return b"\xc1"

    body = st.builds(pack, fields) | st.binary(max_size=300)
    return st.tuples(kinds, body)


def http_requests() -> st.SearchStrategy[dict[str, Any]]:
    code = st.sampled_from([PN.rsplit(":", 1)[-1], "A" * 26, "..", "%2e%2e"])
    path = st.one_of(
        st.builds(lambda c, p: p.format(c), code, st.sampled_from([
            "/pith/{}/bundle.json", "/pith/{}/state.json", "/.well-known/pith/{}/bundle.json", "/pith/{}.json",
            "/api/pith-number/{}/events.json", "/api/pith-number/{}/graph.json"])),
        st.sampled_from(["/", "/healthz", "/metrics", "/pith-mirrors.json", "/equivocations.json",
                         "/pith-signing-key.json", "/api/pith-number/resolve", "/peer/v1/push", "/peer/v1/events",
                         "/peer/v1/reconcile", "/../etc/passwd"]),
        st.text(max_size=60).map(lambda t: "/" + t))
    return st.fixed_dictionaries({
        "method": st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"]),
        "path": path,
        "query": st.sampled_from([b"", b"arxiv=2606.26666&json=true", b"page=2", b"page=-1", b"page=x", b"arxiv=%ff"])
        | st.binary(max_size=40),
        "headers": st.lists(st.tuples(st.sampled_from([b"if-none-match", b"accept-encoding", b"content-length", b"x"]),
                                      st.binary(max_size=30)), max_size=3),
        "body": st.binary(max_size=200),
    })


def http_streams() -> st.SearchStrategy[tuple[bytes, list[int]]]:
    """Bytes a client sends on one connection (request-like or not) and where its reads cut them."""
    message = st.one_of(
        st.binary(max_size=200),
        st.builds(lambda m, p, h, b: m + b" /" + p + b" HTTP/1.1\r\n" + h + b"\r\n\r\n" + b,
                  st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT", b"G\x00T"]), st.binary(max_size=20),
                  st.sampled_from([b"", b"Content-Length: 3", b"Transfer-Encoding: chunked", b"Content-Length: x",
                                   b"Host: a", b"Expect: 100-continue\r\nContent-Length: 1"]),
                  st.sampled_from([b"", b"abc", b"3\r\nabc\r\n0\r\n\r\n", b"\r\n"])))
    return st.lists(message, max_size=6).map(b"".join).flatmap(
        lambda data: st.tuples(st.just(data), st.lists(st.integers(0, len(data)), max_size=8).map(sorted)))


def h1_run(c: Any, pieces: list[bytes]) -> list[tuple[str, str, bytes] | int]:
    """Feed `pieces` to an h1.Connection one by one, answering each request as it comes: the
    requests (method, path, body) and the status of a refusal, in order."""
    from pithnode.node.h1 import CLOSED, NEED_DATA, HttpError

    date = b"Thu, 03 Dec 2026 08:00:00 GMT"
    out: list[tuple[str, str, bytes] | int] = []
    pieces = list(pieces)
    while True:
        try:
            ev = c.next_event()
        except HttpError as exc:
            c.send_error(exc, date)
            out.append(exc.status)
            return out
        if ev is NEED_DATA:
            if not pieces:
                return out
            c.receive_data(pieces.pop(0))
        elif ev is CLOSED:
            return out
        else:
            out.append((ev.method, ev.path, ev.body))
            c.send(200, [(b"content-type", b"text/plain")], ev.path.encode(), date)


def target_h1(x: tuple[bytes, list[int]]) -> None:
    """The same requests (or refusal) whatever reads the bytes come in; refusals are 4xx."""
    from pithnode.node.h1 import BodyBudget, Connection, Limits

    data, cuts = x

    def conn() -> Any:
        return Connection(Limits(), ("127.0.0.1", 1), BodyBudget(Limits().max_body_in_flight))

    pieces = [data[i:j] for i, j in zip([0, *cuts], [*cuts, len(data)]) if j > i]
    whole = h1_run(conn(), [data] if data else [])
    assert h1_run(conn(), pieces) == whole, (data, cuts)
    assert all(isinstance(got, tuple) or 400 <= got < 500 for got in whole), whole


class AppHarness:
    """A real node's request handler over a real store, driven without sockets (fast)."""

    def __init__(self) -> None:
        from nodes import node_config
        from pithnode.node.peer import PeerService
        from pithnode.node.server import App
        from pithnode.node.service import Node

        self.tmp = tempfile.TemporaryDirectory()
        self.node = Node(node_config(Path(self.tmp.name), "fuzz", peer_rate_limit=0.0))
        self.app = App(self.node, PeerService(self.node))
        trio.run(lambda: self.node.ingest_bundle(BUNDLE, source="fuzz"))

    def request(self, req: dict[str, Any]) -> int:
        from pithnode.node.http import Request

        headers: dict[str, str] = {}
        for name, value in req["headers"]:
            headers[name.decode("latin-1")] = value.decode("latin-1")
        request = Request(req["method"], req["path"], req["query"], headers, req["body"], ("127.0.0.1", 1))

        async def run() -> int:
            with trio.fail_after(10):
                status, _, _ = await self.app.handle(request)
                return status

        status = trio.run(run)
        assert status < 500 or status == 503, (req, status)
        return status

    def peer(self, kind: str, body: bytes) -> int:
        return self.request({"method": "POST", "path": f"/peer/v1/{kind}", "query": b"", "headers": [], "body": body})

    def close(self) -> None:
        self.node.close()
        self.tmp.cleanup()
