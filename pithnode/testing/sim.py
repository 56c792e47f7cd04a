"""A network of pithnode nodes simulated in one process: the shipped peer
logic over an in-memory network, in virtual time, deterministic per seed.

What runs is the node's code: the peer list, round and push choice and the
sync steps (node/gossip.py), the messages and their caps (node/peer.py:
encode, decode, events_request, parse_events), reconciliation
(core/reconcile.py), admission as the node's workers run it
(worker_jobs.admit_raw) and the merge with its equivocation detection
(core/merge.py). What is simulated: sockets (a call, with every message
encoded and counted), the store (a dict of event bodies and the
reconciliation set) and the clock (rounds of GOSSIP_INTERVAL virtual
seconds). Within a round nodes act one after another in a random order; in
lockstep (the default) what a node receives in a round is in its
reconciliation set at once (as a stored event is) but served by it only
from the next round on, as in the textbook round model (an event moves at
most one hop per round); without lockstep it is served at once, as with
the node's independent jittered timers, where exchanges take far less than
a round (docs/SCALE.md).

Every byte of every message is counted by kind (Network.wire): requests,
answers, garbage, and over-cap answers up to the cap at which the asker
stops reading. Every exchange has an honest side, so each byte is counted
once, as sent by one node and received by another.

Byzantine nodes answer with one of BYZANTINE_KINDS, gossip only among
themselves, list only each other as mirrors, and all of them are the whole
peer list of one honest node (an eclipse). The oversized kind plays along
in reconciliation until a message allows a large reply and over-caps
everything else (the most it can make an asker read); flooders push their
junk to random honest nodes.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..core import KeyRing, merge
from ..core.canonical import canonical_bytes, parse_json
from ..core.events import MAX_EVENT_BYTES
from ..core.reconcile import ReconcileError, Reconciler, ReconcileSet
from ..errors import ResourceError
from ..node.gossip import PeerTable, fetching, page, sync_steps
from ..node.peer import (
    ANSWER_BYTES,
    MAX_EVENTS,
    MAX_MESSAGE_BYTES,
    VERSION,
    Hostile,
    OverCap,
    PeerError,
    answer_cap,
    decode,
    encode,
    events_request,
    parse_events,
    push_answer,
    reply_cap,
)
from ..node.service import Budget
from ..store import unpack
from ..worker_jobs import admit_raw
from .synth import SynthMirror, SynthRegistry, _ts, synthetic_subject

GOSSIP_INTERVAL = 30.0  # Config.gossip_interval
DISCOVER_EVERY = 4  # rounds between discoveries (runner.discover runs every 4 gossip intervals)
NEW_KEYS_PER_HOUR = 2000  # Config.peer_new_keys_per_hour
WARMUP_ROUNDS = 6  # before the idle rounds: each node has drawn most of its 16 peers, hostile ones included
IDLE_ROUNDS = 2  # nothing new: what the rounds cost by themselves
BYZANTINE_KINDS = ("withhold", "lie", "garbage", "oversized", "flood")
OVERSIZED = object()  # an answer over its cap (sent without a length): the asker reads answer_cap + 1 bytes


class Unreachable(OSError, ResourceError):
    """The peer is offline or across a partition."""


PEER_FAULTS = (PeerError, ReconcileError, Unreachable)


@dataclass
class World:
    """The data every node starts from and the events the run injects."""

    registry: SynthRegistry
    base: list[tuple[bytes, dict[str, Any]]]  # (canonical bytes, event): every node holds these
    keys: list[dict[str, Any]]  # the base events' signers
    fork_subject: str
    mirrors: list[SynthMirror] = field(default_factory=list)

    @classmethod
    def make(cls, base_events: int) -> World:
        reg = SynthRegistry()
        mirrors = [SynthMirror(f"sim-mirror-{i}") for i in range(3)]
        _pn, events = synthetic_subject(reg, 1, base_events, mirrors)
        fork_pn, fork_rec = reg.record_created(2)
        events.append(fork_rec)
        return cls(reg, [(canonical_bytes(e), e) for e in events], [m.entry() for m in mirrors], fork_pn, mirrors)

    def new_event(self, i: int) -> dict[str, Any]:
        """A fresh, valid event (a witness anchor by mirror 0)."""
        pn, rec = self.base[0][1]["subject_pith_number"], self.base[0][1]
        return self.mirrors[0].witness(pn, rec["payload"]["canonical_sha256"], _ts(200, i))

    def fork(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Two valid events by one key for the same slot (target, prev_event): an equivocation."""
        forker = self.mirrors[1]
        return (forker.citation(self.fork_subject, _ts(201, 1), 1), forker.citation(self.fork_subject, _ts(201, 2), 2))

    def junk(self, n: int) -> list[tuple[bytes, dict[str, Any]]]:
        """Valid events each signed by a fresh key (a flood of new keys)."""
        out = []
        for i in range(n):
            m = SynthMirror(f"sim-fresh-key-{i}")
            ev = m.witness(self.base[0][1]["subject_pith_number"], "0" * 64, _ts(202, i))
            out.append((canonical_bytes(ev), {"event": ev, "key": m.entry()}))
        return out


class SimNode:
    """One node: the shipped peer logic over a light store (event bodies by id,
    their signers, the reconciliation set)."""

    def __init__(self, net: Network, idx: int, kind: str | None):
        self.net, self.idx, self.kind = net, idx, kind
        self.url = f"https://n{idx}.sim"
        self.peers = PeerTable(self.url, max_peers=net.degree, fanout=net.fanout)
        w = net.world
        self.bodies: dict[str, bytes] = dict(net.base_bodies)
        self.signer: dict[str, str] = dict(net.base_signers)
        self.set = ReconcileSet(net.base_items, presorted=True)
        self.keys: dict[str, dict[str, Any]] = dict(net.base_keys)
        self.fork_events: list[dict[str, Any]] = [w.base[-1][1]]
        self.knows_fork = False
        self.online = True
        self.new_keys = Budget(NEW_KEYS_PER_HOUR / 3600, NEW_KEYS_PER_HOUR)
        self.outbox: list[tuple[str, str | None]] = []
        self.pending: dict[str, tuple[bytes, str, dict[str, Any], str | None]] = {}  # lockstep: got this round
        self.fetching: set[str] = set()  # PeerService._fetching

    # -- the light store ------------------------------------------------------------

    def bodies_within(self, ids: list[str], max_bytes: int) -> tuple[list[bytes], set[str], int]:
        """Store.bodies_within over the dict."""
        bodies: list[bytes] = []
        signers: set[str] = set()
        size = 0
        for n, eid in enumerate(ids):
            body = self.bodies.get(eid)
            if body is None:
                continue
            if bodies and size + len(body) > max_bytes:
                return bodies, signers, n
            size += len(body)
            bodies.append(body)
            signers.add(self.signer[eid])
        return bodies, signers, len(ids)

    def events_payload(self, ids: list[str], max_bytes: int = ANSWER_BYTES) -> tuple[dict[str, Any], int]:
        bodies, fps, used = self.bodies_within(ids, max_bytes)
        return {"events": bodies, "keys": [self.keys[fp] for fp in sorted(fps) if fp in self.keys]}, used

    def ingest(self, raw: list[bytes], keys: list[Any], origin: str | None, stranger: str | None) -> int:
        """Admit and store what a peer sent; new keys from a learned peer are
        charged to it as the node does. Returns how many events were new."""
        fresh = [b for b in raw if len(b) <= MAX_EVENT_BYTES]
        entries = self.net.base_key_list + [k for k in keys if isinstance(k, dict)]  # honest answers carry their keys
        new = 0
        for _subject, adm, _light in admit_raw(fresh, entries, MAX_EVENT_BYTES):
            eid = adm.event_id
            if not adm.admitted or eid is None or adm.body is None or eid in self.bodies or eid in self.pending:
                continue  # refused, or held
            body = unpack(adm.body)
            ev = parse_json(body)
            fp = ev["signer"]["public_key_fingerprint"]
            if fp not in self.keys:
                entry = next((k for k in keys if isinstance(k, dict) and k.get("fingerprint_sha256_hex") == fp), None)
                if entry is None or stranger is not None and not self.new_keys.take(stranger, self.net.now):
                    continue
                self.keys[fp] = entry
            if self.net.lockstep:  # listed in its reconciliation at once (as stored), served from the next round on
                self.pending[eid] = (body, fp, ev, origin)
                self.set.add([(ev["created_at"], eid)])
            else:
                self.store(eid, body, fp, ev, origin)
            new += 1
        return new

    def store(self, eid: str, body: bytes, fp: str, ev: dict[str, Any], origin: str | None) -> None:
        self.bodies[eid] = body
        self.signer[eid] = fp
        self.set.add([(ev["created_at"], eid)])
        self.outbox.append((eid, origin))
        self.net.holders[eid] = self.net.holders.get(eid, 0) + (self.kind is None)
        if ev["subject_pith_number"] == self.net.world.fork_subject:
            self.fork_events.append(ev)
            w = self.net.world
            self.knows_fork = merge(w.fork_subject, self.fork_events, self.net.fork_ring, {w.registry.fingerprint}
                                    )["equivocation_count"] > 0

    # -- server side (PeerService.handle) ---------------------------------------------

    def handle(self, kind: str, body: bytes, client: SimNode) -> bytes | object:
        if self.kind is not None:
            return self.byzantine_answer(kind, body)
        msg = decode(body)  # PeerError: a 400 to the asker
        if kind == "reconcile":
            out: dict[str, Any] = {"v": VERSION, "msg": Reconciler(self.set).respond(msg.get("msg"))}
        elif kind == "events":
            ids, budget = events_request(msg)
            payload, used = self.events_payload(ids, budget)
            out = {"v": VERSION, **payload, **({"next": used} if used < len(ids) else {})}
        else:
            raw, keys = parse_events(msg)
            origin = msg.get("from")
            admitted = self.ingest(raw, keys, origin, client.url)
            if origin and admitted:
                self.peers.add(origin, via=client.url)
            out = {"v": VERSION, "admitted": admitted, "known": len(raw) - admitted, "rejected": 0}
        return encode(out)

    def byzantine_answer(self, kind: str, body: bytes) -> bytes | object:
        net = self.net
        if self.kind == "garbage":
            return net.rng.randbytes(64)
        if kind == "reconcile":
            msg = decode(body).get("msg")
            if self.kind == "oversized" and reply_cap(msg) < MAX_MESSAGE_BYTES // 4:  # plays along up to a big cap
                return encode({"v": VERSION, "msg": Reconciler(net.liar_set).respond(msg)})
        if self.kind == "oversized":
            return OVERSIZED
        if kind == "reconcile":
            if self.kind == "withhold":
                return encode({"v": VERSION, "msg": None})  # "we agree": it holds back what it has
            fake = net.liar_set if self.kind == "lie" else net.flood_set
            return encode({"v": VERSION, "msg": Reconciler(fake).respond(msg)})
        if kind == "events" and self.kind == "flood":
            ids, _budget = events_request(decode(body))
            junk = [net.junk_by_id[i] for i in ids if i in net.junk_by_id]
            return encode({"v": VERSION, "events": [b for b, _ in junk], "keys": [j["key"] for _, j in junk]})
        return encode({"v": VERSION, "events": [], "keys": []} if kind == "events" else {"v": VERSION})

    # -- client side (PeerService.sync_with, _fetch, push_to, _guarded) ------------

    def sync_with(self, peer: SimNode) -> tuple[int, int]:
        rec = Reconciler(self.set)
        steps = sync_steps(rec)
        answer: Any = None
        try:
            while True:
                kind, arg = steps.send(answer)
                if kind == "reconcile":
                    answer = self.net.post(self, peer, "reconcile", {"msg": arg}).get("msg")
                elif kind == "compute":
                    answer = rec.reconcile(arg)
                elif kind == "fetch":
                    held = {i for i in arg if i in self.bodies or i in self.pending}
                    with fetching(self.fetching, arg, held) as mine:
                        answer = self.fetch(peer, mine) if mine else None
                else:
                    answer = self.push_to(peer, arg)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    def fetch(self, peer: SimNode, ids: list[str]) -> int:
        new = i = 0
        while i < len(ids):
            asked = ids[i : i + page(self.peers.get(peer.url), i, MAX_EVENTS)]
            answer = self.net.post(self, peer, "events", {"ids": asked, "max_bytes": ANSWER_BYTES})
            raw, keys = parse_events(answer)
            used = answer.get("next")
            i += used if type(used) is int and 0 < used <= len(asked) else len(asked)
            new += self.ingest(raw, keys, peer.url, peer.url)
        return new

    def push_to(self, peer: SimNode, ids: list[str]) -> int:
        first = page(self.peers.get(peer.url), 0, MAX_EVENTS)
        ids = self.peers.unpushed(peer.url, ids, self.bodies.keys())
        sent = i = 0
        try:
            while i < len(ids):
                payload, used = self.events_payload(ids[i : i + (MAX_EVENTS if i else first)])
                if payload["events"]:
                    push_answer(self.net.post(self, peer, "push", {"from": self.url, **payload}))
                    sent += len(payload["events"])
                i += used
        except BaseException:
            self.peers.unpush(peer.url, ids[i:])
            raise
        return sent

    def guarded(self, url: str, fn: Any, *args: Any) -> None:
        state = self.peers.get(url)
        if state is None:
            return
        try:
            result = fn(self.net.nodes[self.net.index[url]], *args)
        except PEER_FAULTS as exc:
            self.peers.failed(state, str(exc) or type(exc).__name__, self.net.now, self.net.rng,
                              drop=isinstance(exc, Hostile))
        else:
            news = isinstance(result, tuple) and result[0] > 0
            self.peers.succeeded(state, f"{self.net.now:012.1f}", news_at=self.net.now if news else None)

    def run_round(self) -> None:
        """PeerService.run's round and _push_loop's pushes; Byzantine nodes only
        talk among themselves, and flooders push their junk to honest peers."""
        net = self.net
        if self.kind is not None:
            if self.kind == "flood":  # to any nodes: mirrors' URLs are public
                for target in net.rng.sample(net.honest, min(2, len(net.honest))):
                    if target.online:
                        raw = [b for b, _ in net.rng.sample(net.junk, min(3, len(net.junk)))]
                        keys = [net.junk_by_id_key[b] for b in raw]
                        try:
                            net.post(self, target, "push", {"from": self.url, "events": raw, "keys": keys})
                        except PEER_FAULTS:
                            pass
            return
        items, self.outbox = self.outbox, []
        for url, ids in self.peers.push_targets(items, net.now, net.rng).items():
            self.guarded(url, self.push_to, ids)
        for url in self.peers.round_peers(net.now, net.rng):
            self.guarded(url, self.sync_with)


class Network:
    def __init__(self, *, nodes: int, degree: int = 16, fanout: int = 4, byzantine: float = 0.0, churn: float = 0.0,
                 seed: int = 1, base_events: int = 60, world: World | None = None, lockstep: bool = True):
        self.rng = random.Random(seed)
        self.lockstep = lockstep
        self.world = world or World.make(base_events)
        self.degree, self.fanout, self.churn = degree, fanout, churn
        self.now = 0.0
        self.round = 0
        self.partition: set[int] | None = None  # the nodes on one side, while partitioned
        self.wire: dict[str, int] = {}  # bytes on the wire by message kind ("events answer", "over-cap answer")
        self.messages = 0
        self.holders: dict[str, int] = {}  # event id -> honest nodes holding it (injected events only)
        w = self.world
        self.base_bodies = {e["event_id"]: b for b, e in w.base}
        self.base_signers = {e["event_id"]: e["signer"]["public_key_fingerprint"] for _b, e in w.base}
        self.base_items = sorted((e["created_at"], e["event_id"]) for _b, e in w.base)
        self.base_keys = {k["fingerprint_sha256_hex"]: k for k in [*w.keys, w.registry.entry()]}
        self.base_key_list = list(self.base_keys.values())
        self.fork_ring = KeyRing.from_entries(self.base_key_list)  # the fork's signers are among them
        self.junk = w.junk(20) if byzantine else []
        self.junk_by_id = {parse_json(b)["event_id"]: (b, j) for b, j in self.junk}
        self.junk_by_id_key = {b: j["key"] for b, j in self.junk}
        fake = [(e["created_at"], e["event_id"]) for _b, e in w.base]
        r = random.Random(seed + 1)
        self.liar_set = ReconcileSet(fake + [("2026-07-01T00:00:00Z", "sha256:" + r.randbytes(32).hex())
                                             for _ in range(8)])
        self.flood_set = ReconcileSet(fake + [(j["event"]["created_at"], j["event"]["event_id"])
                                              for _b, j in self.junk])
        n_byz = int(nodes * byzantine)
        kinds = [BYZANTINE_KINDS[i % len(BYZANTINE_KINDS)] for i in range(n_byz)] + [None] * (nodes - n_byz)
        self.rng.shuffle(kinds)
        self.nodes = [SimNode(self, i, k) for i, k in enumerate(kinds)]
        self.index = {n.url: n.idx for n in self.nodes}
        self.honest = [n for n in self.nodes if n.kind is None]
        self.byz = [n for n in self.nodes if n.kind is not None]
        for n in self.nodes:  # the mirror hints a node starts from, each learned from some peer's list
            pool = self.byz if n.kind is not None and self.byz else self.nodes
            for m in self.rng.sample(pool, min(degree + 1, len(pool))):
                n.peers.add(m.url, via=f"https://n{self.rng.randrange(nodes)}.sim")
        self.eclipsed: SimNode | None = None
        if self.byz:  # one honest node whose peers are all Byzantine
            self.eclipsed = self.honest[0]
            self.eclipsed.peers.clear()
            for m in self.rng.sample(self.byz, min(degree, len(self.byz))):
                self.eclipsed.peers.add(m.url, via=m.url)
        if churn:
            for n in self.rng.sample(self.honest, int(len(self.honest) * churn)):
                n.online = False

    def post(self, src: SimNode, dst: SimNode, kind: str, msg: dict[str, Any]) -> dict[str, Any]:
        """One request and its answer, both encoded and counted."""
        cut = self.partition is not None and (src.idx in self.partition) != (dst.idx in self.partition)
        if not dst.online or cut:
            raise Unreachable(f"{dst.url} unreachable")
        body = encode({"v": VERSION, **msg})
        self.messages += 1
        side = "from Byzantine: " if src.kind else "with Byzantine: " if dst.kind else ""
        self.count(f"{side}{kind} request", len(body))
        try:
            answer = dst.handle(kind, body, src)
        except (PeerError, ReconcileError) as exc:
            raise PeerError(f"{dst.url}: peer {kind} answered HTTP 400") from exc
        cap = answer_cap(kind, msg)
        if answer is OVERSIZED:
            self.count(f"{side}{kind} answer over its cap", cap + 1)
            raise OverCap(f"{dst.url}: {kind} answer over the cap of {cap} bytes")
        assert isinstance(answer, bytes)
        self.count(f"{side}{kind} answer", len(answer))
        return decode(answer, cap)

    def count(self, kind: str, size: int) -> None:
        self.wire[kind] = self.wire.get(kind, 0) + size

    @property
    def wire_bytes(self) -> int:
        """Every byte of every message an honest node sent or received, each counted once (every
        exchange has an honest side): requests, answers, garbage, over-cap answers up to where reading stopped."""
        return sum(self.wire.values())

    def inject(self, node: SimNode, ev: dict[str, Any]) -> str:
        """An event taken in from outside the peer protocol (a poll, a client): pushed at once."""
        body = canonical_bytes(ev)
        fp = ev["signer"]["public_key_fingerprint"]
        node.store(ev["event_id"], body, fp, ev, None)
        items, node.outbox = node.outbox, []
        for url, ids in node.peers.push_targets(items, self.now, self.rng).items():
            node.guarded(url, node.push_to, ids)
        return str(ev["event_id"])

    def step(self) -> None:
        """One round: every online node runs its round, in a random order, at its own time in it."""
        order = [n for n in self.nodes if n.online]
        self.rng.shuffle(order)
        for i, n in enumerate(order):
            self.now = (self.round + i / len(order)) * GOSSIP_INTERVAL
            n.run_round()
        for n in self.nodes:
            pending, n.pending = n.pending, {}
            for eid, (body, fp, ev, origin) in pending.items():
                n.store(eid, body, fp, ev, origin)
        self.round += 1
        self.now = self.round * GOSSIP_INTERVAL
        if self.round % DISCOVER_EVERY == 0:
            self.discover()
        if self.churn:
            back = 0.25  # an offline node comes back after 4 rounds on average
            leave = back * self.churn / (1 - self.churn)
            for n in self.honest:
                if self.rng.random() < (back if not n.online else leave) and n is not self.eclipsed:
                    n.online = not n.online

    def discover(self) -> None:
        """runner.discover: a few mirrors from one peer's list (PeerTable.lister,
        .learn); a Byzantine peer lists only Byzantine mirrors, an honest one
        a random sample of all (hints: the peer lists each node starts from)."""
        for n in self.honest:
            via = n.peers.lister(self.rng)
            if via is not None:
                pool = self.byz if self.nodes[self.index[via]].kind is not None else self.nodes
                n.peers.learn([m.url for m in self.rng.sample(pool, min(100, len(pool)))], via, self.rng)

    def online_honest(self) -> list[SimNode]:
        return [n for n in self.honest if n.online]

    def all_hold(self, eid: str) -> bool:
        return all(eid in n.bodies for n in self.online_honest())

    def run_until(self, done: Any, max_rounds: int) -> int | None:
        """Rounds until `done()` holds (None if not within max_rounds)."""
        for r in range(1, max_rounds + 1):
            self.step()
            if done():
                return r
        return None

    def far_apart(self, a: SimNode) -> SimNode:
        """The online honest node farthest from `a` in the peer graph (breadth-first)."""
        dist = {a.idx: 0}
        queue = deque([a])
        last = a
        while queue:
            n = queue.popleft()
            last = n
            for url in n.peers:
                m = self.nodes[self.index[url]]
                if m.idx not in dist and m.kind is None and m.online:
                    dist[m.idx] = dist[n.idx] + 1
                    queue.append(m)
        return last


def simulate(*, nodes: int, degree: int = 16, fanout: int = 4, byzantine: float = 0.0, churn: float = 0.0,
             partition: float = 0.0, partition_rounds: int = 10, seed: int = 1, max_rounds: int = 60,
             steady_events: int = 8, world: World | None = None, lockstep: bool = True, warmup: int = WARMUP_ROUNDS,
             events_per_round: int = 1) -> dict[str, Any]:
    """One simulated run; its figures as one dict (scripts/simulate.py prints it).

    After `warmup` rounds and IDLE_ROUNDS that measure the idle cost, a new
    event is taken in at one honest node and the two events of a fork at two
    honest nodes far apart; rounds are counted until every online honest node
    holds the event, and reports the equivocation. Then `steady_events`
    rounds each take in `events_per_round` new events at random honest nodes
    (in the whole network), and every byte until all honest nodes hold them,
    per event a node took in, gives the bytes per event.
    With `partition`, that share of the nodes is cut off for
    `partition_rounds` rounds while one new event is taken in on each side;
    rounds are counted from the heal."""
    started = time.process_time()
    net = Network(nodes=nodes, degree=degree, fanout=fanout, byzantine=byzantine, churn=churn, seed=seed, world=world,
                  lockstep=lockstep)
    w = net.world
    for _ in range(warmup):  # peers have answered (or been dropped) before anything new happens
        net.step()
    bytes0 = net.wire_bytes
    for _ in range(IDLE_ROUNDS):
        net.step()
    idle = (net.wire_bytes - bytes0) / len(net.honest) / IDLE_ROUNDS
    out: dict[str, Any] = {
        "nodes": nodes, "degree": degree, "fanout": fanout, "byzantine": byzantine, "churn": churn,
        "partition": partition, "seed": seed, "lockstep": lockstep, "honest_nodes": len(net.honest),
        "events_per_round": events_per_round,
        "idle_bytes_per_node_per_round": round(idle),
    }
    online = net.online_honest
    origin = net.rng.choice([n for n in online() if n is not net.eclipsed])
    msgs0, round0 = net.messages, net.round
    eid = net.inject(origin, w.new_event(0))
    f1, f2 = w.fork()
    net.inject(origin, f1)
    net.inject(net.far_apart(origin), f2)
    got_event = got_fork = got_eclipsed = None
    for r in range(1, max_rounds + 1):
        net.step()
        if got_event is None and net.all_hold(eid):
            got_event = r
        if got_fork is None and all(n.knows_fork for n in online()):
            got_fork = r
        if got_eclipsed is None and net.eclipsed is not None and eid in net.eclipsed.bodies:
            got_eclipsed = r
        if got_event and got_fork and (got_eclipsed or net.eclipsed is None):
            break
    out.update(honest_reached_all=got_event is not None, rounds_to_all_honest=got_event,
               equivocation_known_by_all_honest_rounds=got_fork,
               messages_per_node_per_round=round((net.messages - msgs0) / len(net.nodes) / (net.round - round0), 2))
    if net.eclipsed is not None:
        out["eclipsed_node_rounds"] = got_eclipsed
    # steady state: one new event per round, then rounds until every honest node holds them all
    bytes0, wire0 = net.wire_bytes, dict(net.wire)
    held0 = sum(len(n.bodies) for n in net.honest)
    events = [w.new_event(1 + i) for i in range(steady_events * events_per_round)]
    ids = []
    for i, ev in enumerate(events, 1):
        ids.append(net.inject(net.rng.choice(online()), ev))
        if i % events_per_round == 0:
            net.step()
    net.run_until(lambda: all(net.all_hold(e) for e in ids), max_rounds)
    taken = sum(len(n.bodies) for n in net.honest) - held0  # events new to honest nodes (flooded ones too)
    out["event_bytes"] = event_bytes = round(sum(len(canonical_bytes(ev)) for ev in events) / len(events))
    out["bytes_per_node_per_event"] = per_event = round((net.wire_bytes - bytes0) / max(taken, 1))
    out["bytes_ratio_to_event"] = round(per_event / event_bytes, 2)

    def ratio(keep: Callable[[str], bool]) -> float:
        return round(sum(v - wire0.get(k, 0) for k, v in net.wire.items() if keep(k)) / max(taken, 1)
                     / event_bytes, 2)

    out["honest_exchanges_ratio_to_event"] = ratio(lambda k: "Byzantine" not in k)
    out["solicited_ratio_to_event"] = ratio(lambda k: not k.startswith("from Byzantine"))  # not pushed at us
    out["bytes_by_kind"] = {k: round((v - wire0.get(k, 0)) / max(taken, 1)) for k, v in sorted(net.wire.items())
                            if v > wire0.get(k, 0)}  # per event taken in, as bytes_per_node_per_event
    if partition:
        side = {n.idx for n in net.rng.sample(net.nodes, int(len(net.nodes) * partition))}
        net.partition = side
        e1 = net.inject(net.rng.choice([n for n in online() if n.idx not in side]), w.new_event(100))
        e2 = net.inject(net.rng.choice([n for n in online() if n.idx in side]), w.new_event(101))
        for _ in range(partition_rounds):
            net.step()
        net.partition = None
        bytes0, msgs0, round0 = net.wire_bytes, net.messages, net.round
        held0 = sum(len(n.bodies) for n in net.honest)
        healed = net.run_until(lambda: net.all_hold(e1) and net.all_hold(e2), max_rounds)
        taken = sum(len(n.bodies) for n in net.honest) - held0
        out["after_heal"] = {
            "honest_reached_all": healed is not None, "rounds_to_all_honest": healed,
            "messages_per_node_per_round": round((net.messages - msgs0) / len(net.nodes) / (net.round - round0), 2),
            "bytes_per_node_per_event": round((net.wire_bytes - bytes0) / max(taken, 1)),
        }
    out["over_cap_bytes_per_honest_node"] = round(sum(v for k, v in net.wire.items() if k.endswith("over its cap"))
                                                  / len(net.honest))
    out["cpu_seconds"] = round(time.process_time() - started, 1)
    return out
