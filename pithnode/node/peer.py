"""The peer protocol (version 1): msgpack over HTTP POST.

  POST /peer/v1/reconcile  {v, msg}          -> {v, msg | None}   range-based set reconciliation
  POST /peer/v1/events     {v, ids, max_bytes} -> {v, events, keys, next?} fetch events by id
  POST /peer/v1/push       {v, from, events, keys} -> {v, admitted, known, rejected}

An events answer holds events up to `max_bytes` of event bytes (the asker's
budget, at most ANSWER_BYTES; at least one event) and says with `next` where
in `ids` it stopped: the asker asks again from there. Pushes are cut to
ANSWER_BYTES of events too, so every message stays within MAX_MESSAGE_BYTES
whatever the events' sizes (docs/PROTOCOL-NOTES.md, "Paged events").

Events travel as their canonical JSON bytes (msgpack bin) and are parsed with
the same caps as any JSON we read; keys as the registry's key entries.
Nothing a peer sends is trusted: every event goes through admission, unknown
fields are ignored, every message has a size cap, and a malformed message is
refused with 400 and logged. A node that agrees with a peer pays one small
round trip; d missing events cost O(d) (see core/reconcile.py).
"""

from __future__ import annotations

import ipaddress
import logging
import random
import time
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import httpx
import msgpack
import trio

from .. import __version__
from ..core import reconcile
from ..core.events import MAX_EVENT_BYTES
from ..core.reconcile import ReconcileError, Reconciler, ReconcileSet
from ..errors import InputError
from ..net.fetch import FetchError, check_url, trusted_origins
from ..store import Store, StoreError
from ..timeutil import utc_now
from .gossip import (  # noqa: F401
    MAX_IDLE_ROUNDS,
    MAX_NEED,
    MAX_PEERS_PER_SOURCE,
    MAX_URL,
    PEER_MAX_FAILURES,
    PeerState,
    PeerTable,
    fetching,
    page,
    sync_steps,
)
from .h1 import HttpError
from .service import Budget, Node

log = logging.getLogger("pithnode.peer")

VERSION = 1
CONTENT_TYPE = b"application/vnd.pithnode.peer+msgpack"
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MAX_IDS = 5_000  # per events request
MAX_EVENTS = 2_000  # per push or events answer
ANSWER_BYTES = 8 * 1024 * 1024  # event bytes per answer or push: with keys and framing, well under the message cap
MIN_ANSWER_BYTES = 1024 * 1024  # an asker's smaller budget is raised to this (an event is at most 262,144 bytes)
MAX_KEYS = 2_000
APPLY_BATCH = 5_000  # fetched events stored per commit (merged once, at the end of the sync)
SET_MAX_REWRITE = 100_000  # items an update of the reconciliation set may rewrite on the event loop (~0.12 s)
CPU_BURST = 20  # seconds of `peer_cpu_share` a client address may spend at once
FRAMING_BYTES = 64  # a message's envelope around its payload (msgpack map, field names, lengths)
KEY_ENTRY_BYTES = 4096  # a key entry in an answer, generously (a real one is ~400 bytes)


class PeerError(InputError):
    """A peer's message we refuse: the text says why."""


class Hostile(PeerError):
    """An answer no honest peer gives: its peer, if learned, is dropped at once and not taken back."""


class OverCap(Hostile):
    """An answer longer than any honest answer to what was asked (answer_cap)."""


# What a peer (or the network to it) can make an exchange fail with; our own
# store's faults (StoreError) are not among them.
PEER_FAULTS = (FetchError, PeerError, ReconcileError, httpx.HTTPError, trio.TooSlowError, OSError)


def source_of(address: str) -> str:
    """Whom a client address's budgets and peer places are charged to: the
    address, or for IPv6 its /64 (one host is commonly given a whole /64)."""
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return address[:100]
    return str(ipaddress.ip_network(f"{ip}/64", strict=False)) if ip.version == 6 else str(ip)


def encode(obj: Any) -> bytes:
    packed: bytes = msgpack.packb(obj, use_bin_type=True)  # msgpack ships no types
    return packed


def decode(body: bytes, cap: int = MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """A peer message, or PeerError. Checked for size before unpacking at all."""
    if len(body) > cap:
        raise PeerError(f"message of {len(body)} bytes is over the cap of {cap}")
    try:
        # A fresh Unpacker per message (never reused after an error); its
        # per-type length limits derive from max_buffer_size.
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=True, max_buffer_size=max(cap, 1), use_list=True)
        unpacker.feed(body)
        obj = unpacker.unpack()
        if unpacker.tell() != len(body):
            raise ValueError("extra data after the message")
    except Exception as exc:  # msgpack raises many types on garbage (ValueError, ExtraData, StackError...)
        raise PeerError(f"not a msgpack message: {type(exc).__name__}: {str(exc)[:100]}") from None
    if not isinstance(obj, dict) or obj.get("v") != VERSION:
        raise PeerError(f"not a version {VERSION} peer message")
    return obj


def _list(msg: dict[str, Any], name: str, cap: int, kind: type) -> list[Any]:
    value = msg.get(name, [])
    if not isinstance(value, list) or len(value) > cap or not all(isinstance(v, kind) for v in value):
        raise PeerError(f"{name} must be a list of at most {cap} {kind.__name__}")
    return value


def parse_events(msg: dict[str, Any]) -> tuple[list[bytes], list[Any]]:
    """The events (JSON bytes, parsed later by admission) and keys of a push or events answer."""
    return _list(msg, "events", MAX_EVENTS, bytes), _list(msg, "keys", MAX_KEYS, dict)


def answer_cap(kind: str, msg: dict[str, Any]) -> int:
    """The longest answer an honest peer can give to this request: a
    reconciliation reply as reply_cap says; an events
    answer at most one max-size event per id asked (within the byte budget plus
    the event that may overrun it) and a key per event; a push answer is a few
    counts. Reading up to MAX_MESSAGE_BYTES whatever was asked let a hostile
    peer make every asker read 16 MiB per exchange."""
    if kind == "reconcile":
        cap = reply_cap(msg.get("msg")) + FRAMING_BYTES
    elif kind == "events":
        asked = len(msg.get("ids") or [])
        event_bytes = min(asked * (MAX_EVENT_BYTES + 5), ANSWER_BYTES + MAX_EVENT_BYTES + 5)  # 5: a bin header
        cap = event_bytes + min(asked, MAX_KEYS) * KEY_ENTRY_BYTES + FRAMING_BYTES
    else:
        cap = 1024
    return min(cap, MAX_MESSAGE_BYTES)


RANGE_BYTES = 56  # a range's bound (timestamp varint, prefix) and fingerprint, at most
LISTED_BYTES = RANGE_BYTES + 2 * 3  # a FULL or REPLY range's header and counts (without its ids and indices)


def reply_cap(request: object) -> int:
    """The longest reply Reconciler.respond gives to our message `request`: per
    range we fingerprinted, BRANCH sub-ranges or SMALL full ids; per range we
    listed, BRANCH sub-ranges or LIST_MAX full ids and the indices of ours it
    lacks; one closing range. A first message (one fingerprint) gets under
    1 KB back, a usual second one ~35 KB: a hostile peer is caught there, not
    after reading 16 MiB."""
    try:
        ranges = reconcile.decode(request)
    except ReconcileError:
        return reconcile.MAX_MESSAGE_BYTES
    cap = 1 + RANGE_BYTES
    for r in ranges:
        if r.mode == reconcile.FINGERPRINT:
            cap += max(reconcile.BRANCH * RANGE_BYTES, LISTED_BYTES + reconcile.SMALL * 32)
        elif r.mode == reconcile.IDLIST:
            cap += max(reconcile.BRANCH * RANGE_BYTES, LISTED_BYTES + reconcile.LIST_MAX * 32 + 3 * len(r.ids or []))
        else:
            cap += RANGE_BYTES
    return min(cap, reconcile.MAX_MESSAGE_BYTES)


def push_answer(msg: dict[str, Any]) -> tuple[int, int, int]:
    """(admitted, known, rejected) of a push answer. A peer that does not say
    what became of the events it was sent is dropped (Hostile): one whose
    reconciliation always "lacks" them was pushed them at every sync."""
    counts = tuple(msg.get(k) for k in ("admitted", "known", "rejected"))
    if not all(type(c) is int and c >= 0 for c in counts) or not sum(counts):  # type: ignore[arg-type]
        raise Hostile("a push answer must count the events it was sent (admitted, known, rejected)")
    return counts  # type: ignore[return-value]


def events_request(msg: dict[str, Any]) -> tuple[list[str], int]:
    """The ids an events request asks for (at most MAX_EVENTS: the asker asks
    again for the rest) and the event bytes its answer may hold."""
    budget = msg.get("max_bytes")
    return (_list(msg, "ids", MAX_IDS, str)[:MAX_EVENTS],
            min(ANSWER_BYTES, max(MIN_ANSWER_BYTES, budget if type(budget) is int else ANSWER_BYTES)))


class PeerService:
    """Both sides of the peer protocol for one node."""

    max_message_bytes = MAX_MESSAGE_BYTES

    def __init__(self, node: Node, client: httpx.AsyncClient | None = None, *, timeout: float = 20.0):
        self.node = node
        self.peers = PeerTable(node.public_url)
        self.client = client
        self.timeout = timeout
        self._set: tuple[int, ReconcileSet] | None = None  # (the store's newest seq it holds, the set)
        self._set_lock = trio.Lock()
        self.wire = {"requests": 0, "bytes_out": 0, "bytes_in": 0}  # what this node's client sent and got
        self._rng = random.Random()
        self._fetching: set[str] = set()  # event ids a sync of ours is fetching now (gossip.fetching)
        self._work_lock = trio.Lock()  # one reconciliation computed at a time, off the event loop
        cfg = node.cfg
        self.cpu = Budget(cfg.peer_cpu_share, cfg.peer_cpu_share * CPU_BURST)  # reconciliation CPU per address

    # -- peers -------------------------------------------------------------------

    def add_peer(self, url: str, *, operator: bool = False, via: str | None = None) -> bool:
        """Add a peer (the policy: PeerTable.add); True if it is (now) in the list."""
        self.peers.own_url = self.node.public_url  # known once the listener is bound
        known = url.rstrip("/") in self.peers
        added, victim = self.peers.add(url, operator=operator, via=via)
        if victim is not None:
            log.info("peer dropped for a newcomer: %s", victim)
        if added and not known:
            log.info("peer added: %s%s", url, " (operator)" if operator else f" (learned from {via})")
        return added

    def learn(self, urls: list[str], via: str | None) -> None:
        """Add a few of these mirrors, drawn at random (PeerTable.learn)."""
        self.peers.own_url = self.node.public_url
        for url in self.peers.learn(urls, via, self._rng):
            log.info("peer added: %s (learned from %s)", url, via or "a mirror hint")

    async def _reconcile_work(self, fn: Any, arg: Any) -> tuple[Any, float]:
        """`fn(arg)` over our reconciliation set, on a thread (the event loop stays
        free), one at a time (the set is updated only between them); returns its
        result and the CPU seconds it took."""
        def timed() -> tuple[Any, float]:
            start = time.thread_time()
            return fn(arg), time.thread_time() - start

        async with self._work_lock:
            return await trio.to_thread.run_sync(timed)

    async def reconcile_set(self) -> ReconcileSet:
        """Our events as a reconciliation set: built from the store once, then
        kept up to date in place with the events stored since (by any process:
        found by seq), at a cost that grows with what is new, not with what is
        held. It is built anew when more is new than held (a node's first sync)
        or when new events land so far back that adding them would rewrite more
        than SET_MAX_REWRITE items on the event loop (old-dated events). A build
        (~4 s at 1M events) runs on a thread with its own read-only connection,
        so readers are still served meanwhile; one at a time (two sets at once
        would double that memory)."""
        async with self._set_lock:
            store = self.node.store
            newest = store.event_count()  # the newest seq (never deleted, so also how many)
            if self._set is not None and newest - self._set[0] <= len(self._set[1]):
                seq, items = self._set
                async with self._work_lock:  # not while a thread reads it
                    for chunk in store.event_keys_since(seq):
                        if items.add(((c, e) for _seq, c, e in chunk), max_rewrite=SET_MAX_REWRITE) is None:
                            break  # built anew below
                        seq = chunk[-1][0]
                    else:
                        self._set = (seq, items)
                        return items
            self._set = None  # freed first (a sync under way may still hold it)
            # events stored after `newest` was read come again at the next call, skipped as held
            newest = store.event_count()
            self._set = (newest, await trio.to_thread.run_sync(_build_set, store.path))
            return self._set[1]

    # -- server side ---------------------------------------------------------------

    async def handle(self, kind: str, body: bytes, client: str) -> bytes:
        m = self.node.metrics
        address = source_of(client.rsplit(":", 1)[0])
        try:
            msg = decode(body, self.max_message_bytes)
            if kind == "reconcile":
                if self.cpu.left(address, trio.current_time()) <= 0:
                    m.gossip.labels(kind=kind, direction="in", outcome="rate_limited").inc()
                    raise HttpError(429, "reconciliation CPU budget of this address spent: retry later",
                                    [(b"retry-after", b"1")])
                reply, cpu = await self._reconcile_work(Reconciler(await self.reconcile_set()).respond, msg.get("msg"))
                self.cpu.spend(address, cpu, trio.current_time())
                out: dict[str, Any] = {"v": VERSION, "msg": reply}
            elif kind == "events":
                ids, budget = events_request(msg)
                payload, used = self.events_payload(ids, budget)
                out = {"v": VERSION, **payload, **({"next": used} if used < len(ids) else {})}
            else:
                out = {"v": VERSION, **await self.accept_push(msg, address)}
        except (PeerError, ReconcileError) as exc:
            m.gossip.labels(kind=kind, direction="in", outcome="refused").inc()
            log.warning("refused %s message from %s: %s", kind, client, exc)
            raise HttpError(400, str(exc)) from None
        m.gossip.labels(kind=kind, direction="in", outcome="ok").inc()
        return encode(out)

    def events_payload(self, ids: list[str], max_bytes: int = ANSWER_BYTES) -> tuple[dict[str, Any], int]:
        """The held events among `ids`, in order, up to `max_bytes` of them, with
        their keys; and how many of `ids` that covered."""
        bodies, fps, used = self.node.store.bodies_within(ids, max_bytes)
        ring = self.node.ring()
        return {"events": bodies, "keys": ring.entries(fps & set(ring))}, used

    async def accept_push(self, msg: dict[str, Any], address: str) -> dict[str, Any]:
        """Admit a push, charged to the client's address (`from` is only a claim)."""
        origin = msg.get("from")
        if origin is not None and not (isinstance(origin, str) and len(origin) <= MAX_URL
                                       and origin.startswith(("http://", "https://"))):
            raise PeerError(f"from must be an http(s) URL of at most {MAX_URL} characters")
        raw, keys = parse_events(msg)
        admitted = known = 0
        results, rejected = await self.node.ingest_raw(raw, keys, source=f"peer {origin or address}",
                                                       origin_peer=origin.rstrip("/") if origin else None,
                                                       stranger=address)
        for res in results:
            admitted += len(res.new_event_ids)
            known += res.known
            rejected += len(res.rejected) + res.quota_refused
        if origin and admitted:  # a node that brings us news is a peer we can push back to
            self.add_peer(origin, via=address)
        return {"admitted": admitted, "known": known, "rejected": rejected}

    # -- client side ---------------------------------------------------------------

    async def post(self, url: str, kind: str, msg: dict[str, Any]) -> dict[str, Any]:
        """One request to a peer, with a total deadline and a cap on the answer by
        what was asked (answer_cap): OverCap past it, unread when declared."""
        assert self.client is not None
        cfg = self.node.cfg
        await check_url(url, cfg.allow_private_addresses, trusted_origins(cfg.operator_urls))  # --peer: as given
        cap = min(self.max_message_bytes, answer_cap(kind, msg))
        body = encode({"v": VERSION, **msg})
        self.wire["requests"] += 1
        self.wire["bytes_out"] += len(body)
        with trio.fail_after(self.timeout):
            async with self.client.stream("POST", f"{url}/peer/v1/{kind}", content=body,
                                          headers={"content-type": CONTENT_TYPE.decode()}) as resp:
                if resp.status_code != 200:
                    raise FetchError(f"{url}: peer {kind} answered HTTP {resp.status_code}", url=url,
                                     status=resp.status_code)
                declared = resp.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > cap:
                    raise OverCap(f"{url}: {kind} answer of {declared} bytes is over the cap of {cap}")
                chunks, size = [], 0
                try:
                    async for chunk in resp.aiter_bytes():
                        size += len(chunk)
                        if size > cap:
                            raise OverCap(f"{url}: {kind} answer over the cap of {cap} bytes")
                        chunks.append(chunk)
                finally:
                    self.wire["bytes_in"] += size
        self.node.metrics.gossip.labels(kind=kind, direction="out", outcome="ok").inc()
        return decode(b"".join(chunks), cap)

    async def sync_with(self, url: str) -> tuple[int, int]:
        """Reconcile with one peer: fetch what we lack, push what it lacks.

        One reconciliation over our set (which may grow meanwhile: ranges are
        found by bound at every message), however far apart the two sides
        are: whenever MAX_NEED ids are learned they are fetched (or
        pushed) before it goes on, so memory stays bounded and nothing is
        rebuilt (rebuilding the set per batch made a 1M-event sync quadratic).
        Fetched events are stored as they come and each touched subject is
        merged once, at the end (readers see them then). Returns (fetched, pushed)."""
        rec = Reconciler(await self.reconcile_set())
        steps = sync_steps(rec)
        answer: Any = None
        try:
            while True:
                kind, arg = steps.send(answer)
                if kind == "reconcile":
                    answer = (await self.post(url, "reconcile", {"msg": arg})).get("msg")
                elif kind == "compute":
                    answer, _cpu = await self._reconcile_work(rec.reconcile, arg)
                elif kind == "fetch":
                    with fetching(self._fetching, arg, self.node.store.known_event_ids(arg)) as mine:
                        answer = await self._fetch(url, mine) if mine else None
                else:
                    answer = await self.push_to(url, arg)
        except StopIteration as done:
            fetched, pushed = done.value
        await self.node.merge_pending(f"peer {url}")
        return fetched, pushed

    async def _fetch(self, url: str, ids: list[str]) -> int:
        """Fetch these events from the peer and store them, unmerged. Admission
        of each answer starts in the worker processes at once while the next is
        fetched; one commit per APPLY_BATCH events. A batch is committed only once
        the next one's admission has started, so the workers are not idle while
        this process stores; if the peer fails, what it sent is still stored.
        Returns how many were new."""
        fetched = 0
        batches: list[tuple[list[Any], dict[str, Any]]] = []  # admissions started, keys they came with
        started_n = 0
        state = self.peers.get(url)
        stranger = url if state is not None and not state.operator else None  # a learned peer: charged

        async def apply(futures: list[Any], keys: dict[str, Any]) -> int:
            results, _unreadable = await self.node.apply_admitted(futures, list(keys.values()), source=f"peer {url}",
                                                                  origin_peer=url, merge=False, stranger=stranger)
            return sum(len(r.new_event_ids) for r in results)

        i = 0
        while i < len(ids):
            asked = ids[i : i + page(state, i, MAX_EVENTS)]
            try:
                answer = await self.post(url, "events", {"ids": asked, "max_bytes": ANSWER_BYTES})
                raw, keys = parse_events(answer)
            except PEER_FAULTS:
                for batch in batches:  # the peer failed: keep what it had already sent
                    await apply(*batch)
                raise
            # the answer covers `next` of the ids asked (a peer without paging: all of them)
            used = answer.get("next")
            i += used if type(used) is int and 0 < used <= len(asked) else len(asked)
            if not batches or started_n >= APPLY_BATCH:
                batches.append(([], {}))
                started_n = 0
            futures, all_keys = batches[-1]
            all_keys.update((str(k.get("fingerprint_sha256_hex")), k) for k in keys)
            futures += self.node.start_admission(raw, keys)
            started_n += len(raw)
            if len(batches) > 1 and started_n >= APPLY_BATCH:
                fetched += await apply(*batches.pop(0))
        for batch in batches:
            fetched += await apply(*batch)
        return fetched

    async def push_to(self, url: str, event_ids: list[str]) -> int:
        """Push these events (those not pushed to it before), ANSWER_BYTES of them per message."""
        first = page(self.peers.get(url), 0, MAX_EVENTS)
        event_ids = self.peers.unpushed(url, event_ids, self.node.store.known_event_ids(event_ids))
        sent = i = 0
        try:
            while i < len(event_ids):
                payload, used = self.events_payload(event_ids[i : i + (MAX_EVENTS if i else first)])
                if payload["events"]:
                    push_answer(await self.post(url, "push", {"from": self.node.public_url, **payload}))
                    sent += len(payload["events"])
                i += used
        except BaseException:
            self.peers.unpush(url, event_ids[i:])
            raise
        return sent

    async def _guarded_merge(self) -> None:
        try:
            await self.node.merge_pending("gossip")
        except StoreError as exc:
            self.node.metrics.store_errors.inc()
            log.error("store: %s (merge deferred to the next round)", exc)
        except BrokenProcessPool as exc:  # a worker was killed: new ones merge in the next round
            log.error("worker processes died while merging (%s): merge deferred to the next round", exc)

    async def _guarded(self, url: str, fn: Any, *args: Any) -> None:
        """Run one exchange with a peer, recording its health; never raises for the peer's faults.
        A learned peer failing PEER_MAX_FAILURES exchanges in a row is dropped."""
        state = self.peers.get(url)
        if state is None:  # displaced meanwhile
            return
        try:
            result = await fn(url, *args)
        except StoreError as exc:  # our disk, not the peer: no back-off for it, just say so
            self.node.metrics.store_errors.inc()
            log.error("store: %s (exchange with %s abandoned; nothing half-stored)", exc, url)
        except BrokenProcessPool as exc:  # our workers (killed: the OOM killer?), not the peer: no back-off
            log.error("worker processes died (%s): exchange with %s abandoned, nothing half-stored; "
                      "new workers take the next round", exc, url)
        except PEER_FAULTS as exc:
            self.node.metrics.gossip.labels(kind="exchange", direction="out", outcome="failed").inc()
            dropped = self.peers.failed(state, str(exc) or type(exc).__name__, trio.current_time(), self._rng,
                                        not_peer=isinstance(exc, FetchError) and exc.status == 404,
                                        drop=isinstance(exc, Hostile))
            log.log(logging.WARNING if getattr(exc, "refused", False) else logging.INFO, "peer %s: %s", url,
                    state.last_error)
            if dropped:
                log.info("peer dropped after %d failure(s) in a row: %s", state.failures, url)
        else:
            news = isinstance(result, tuple) and result[0] > 0  # a sync that fetched something new
            self.peers.succeeded(state, utc_now(), news_at=trio.current_time() if news else None)

    async def run(self, interval: float) -> None:
        """Forever: push new events as they arrive, and every `interval` seconds
        (with jitter) reconcile with the round's peers (PeerTable.round_peers)
        to heal what pushes missed."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._push_loop)
            while True:
                async with trio.open_nursery() as round_:
                    for url in self.peers.round_peers(trio.current_time(), self._rng):
                        round_.start_soon(self._guarded, url, self.sync_with)
                if self.node.unmerged:  # a sync that failed half-way (or a crash before start) left them
                    await self._guarded_merge()
                await trio.sleep(interval * (0.75 + 0.5 * self._rng.random()))

    async def _push_loop(self) -> None:
        outbox = self.node.outbox
        while True:
            await outbox.wakeup.wait()
            targets = self.peers.push_targets(outbox.take(), trio.current_time(), self._rng)
            async with trio.open_nursery() as nursery:
                for url, ids in targets.items():
                    nursery.start_soon(self._guarded, url, self.push_to, ids)


def _build_set(path: str) -> ReconcileSet:
    with Store(path, readonly=True) as store:
        return ReconcileSet(store.event_keys(), presorted=True)


def new_client(connect_timeout: float = 10.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=connect_timeout), follow_redirects=False,
                             headers={"user-agent": f"pithnode/{__version__} (+https://pith.science)"},
                             limits=httpx.Limits(max_connections=64, max_keepalive_connections=32))
