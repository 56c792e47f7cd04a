"""The peer logic without I/O: the peer list, whom a round talks to, whom a
push goes to, and the steps of one sync. PeerService (node/peer.py) drives
these over HTTP; the simulator (pithnode/testing/sim.py) over an in-memory network.
No sockets, no store, no clock: callers pass `now` and a random generator.

Peer choice (docs/PROTOCOL-NOTES.md, "Peer choice"): a node may learn of
thousands of mirrors but keeps at most MAX_PEERS learned ones. Each round it
reconciles with every operator peer and with ROUND_PEERS learned ones:
KEPT_PEERS that most recently taught it something new (long-lived links to
useful peers), the rest drawn at random among the others (fresh links, so
no fixed set of peers, hostile ones included, can hold a node's view).
New events a node took in from outside the peer protocol are pushed at once
to its operator peers and the round's learned peers; events it got from a
peer are pushed on to operator peers only, and reach the rest by the
reconciliation rounds, which fetch each missing event once (pushing relays
to every peer made each node receive every event once per peer).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Collection, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ..core.reconcile import Reconciler

MAX_URL = 300  # a peer's URL (`from`), longer ones refused
MAX_PEERS = 64  # learned peers (operator-named ones are not counted and never displaced)
MAX_PEERS_PER_SOURCE = 4  # learned peers one client address (or discovery) may have in the list
PEER_MAX_FAILURES = 8  # a learned peer failing this many exchanges in a row is dropped (~8 min of back-off)
ROUND_PEERS = 4  # learned peers reconciled with per round (operator peers come on top)
KEPT_PEERS = 2  # of them, those that most recently brought news
MAX_ROUNDS = 1_000  # a reply lists at most 50k ids (core/reconcile.py): enough for 50M events apart
MAX_IDLE_ROUNDS = 32  # rounds in a row that teach nothing: a real descent takes ~log16(n) of them
MAX_NEED = 50_000  # ids learned before they are fetched or pushed (bounded memory)
PUSHED_MEMORY = 1_024  # ids pushed to a peer that are not pushed to it again (then forgotten, all at once)
DISCOVER_PICKS = 2  # mirrors a discovery adds from the hints, and from one peer's list
MAX_BANNED = 4_096  # learned peers dropped for an answer no honest peer gives, not taken back when listed again


@dataclass
class PeerState:
    url: str
    healthy: bool = False
    is_peer: bool = True  # False once it answered 404 to the peer protocol (a plain mirror)
    last_ok: str | None = None
    last_error: str | None = None
    failures: int = 0
    next_try: float = 0.0
    operator: bool = False  # named by the operator: always kept, exempt from the stranger budgets
    via: str | None = None  # who made us learn it (a client address, "discovery")
    order: int = 0  # when it was added, in order
    last_news: float | None = None  # when a sync with it last fetched events new to us
    pushed: set[str] = field(default_factory=set)  # ids pushed to it, or being pushed (PeerTable.unpushed)

    def merit(self) -> tuple[bool, str, int, int]:
        """Learned peers compete on this (the least is displaced first): answering
        now, then the last time it did, then fewer failures, then age."""
        return (self.healthy, self.last_ok or "", -self.failures, self.order)


class PeerTable(dict[str, PeerState]):
    """The peers by URL, and the policy of who gets a place."""

    def __init__(self, own_url: str | None = None, *, max_peers: int = MAX_PEERS, fanout: int = ROUND_PEERS):
        super().__init__()
        self.own_url, self.max_peers, self.fanout = own_url, max_peers, fanout
        self._order = itertools.count()
        self.banned: dict[str, None] = {}  # dropped at once (failed(drop=True)), oldest first

    def add(self, url: str, *, operator: bool = False, via: str | None = None) -> tuple[bool, str | None]:
        """Add a peer: (whether it is now in the list, the URL of the learned peer
        it displaced). The operator's peers always are. A learned one takes a free
        place, else the place of the least merited learned peer of the same
        source (once that source has MAX_PEERS_PER_SOURCE), else of the least
        merited one not answering now: peers that answer are never displaced by
        newcomers, and strangers cannot push the operator's out."""
        url = url.rstrip("/")
        if not url.startswith(("http://", "https://")) or len(url) > MAX_URL or url == self.own_url:
            return False, None
        if url in self:
            self[url].operator |= operator
            return True, None
        if url in self.banned and not operator:
            return False, None
        victim: PeerState | None = None
        if not operator:
            learned = [st for st in self.values() if not st.operator]
            same = [st for st in learned if st.via == via]
            if len(same) >= MAX_PEERS_PER_SOURCE:
                victim = min(same, key=PeerState.merit)
            elif len(learned) >= self.max_peers:
                victim = min((st for st in learned if not st.healthy), key=PeerState.merit, default=None)
                if victim is None:
                    return False, None
            if victim is not None:
                del self[victim.url]
        self[url] = PeerState(url, operator=operator, via=via, order=next(self._order))
        return True, victim.url if victim else None

    def succeeded(self, state: PeerState, stamp: str, *, news_at: float | None = None) -> None:
        state.healthy, state.failures, state.last_ok, state.last_error = True, 0, stamp, None
        if news_at is not None:
            state.last_news = news_at

    def failed(self, state: PeerState, error: str, now: float, rng: random.Random, *, not_peer: bool = False,
               drop: bool = False) -> bool:
        """Record a failed exchange: back off exponentially (with jitter). True if
        the peer was dropped: a learned one failing PEER_MAX_FAILURES in a row, or
        at once with `drop` (an answer no honest peer gives, peer.Hostile)."""
        state.healthy = False
        state.failures += 1
        state.last_error = error[:300]
        state.is_peer &= not not_peer
        state.next_try = now + min(600.0, 2.0 ** min(state.failures, 10)) * (0.5 + rng.random())
        if not state.operator and (drop or state.failures >= PEER_MAX_FAILURES) and self.get(state.url) is state:
            del self[state.url]
            if drop:  # else it is learned again from the next list naming it, and pays the cap again
                self.banned[state.url] = None
                if len(self.banned) > MAX_BANNED:
                    del self.banned[next(iter(self.banned))]
            return True
        return False

    def unpushed(self, url: str, ids: list[str], held: Collection[str]) -> list[str]:
        """Of these ids, those we hold and have not pushed to this peer, which
        count as pushed from now on (a sync and the push loop pushing to it at
        once do not both send them); `unpush` what then fails to go. A peer's
        sync says what it lacks; a lying one lacks the same events at every
        sync (and in a round, peers that just received an event may not serve
        it yet): each is pushed to a peer once, so it can fetch what it still lacks."""
        state = self.get(url)
        mine = [i for i in ids if i in held and (state is None or i not in state.pushed)]
        if state is not None:
            if len(state.pushed) + len(mine) > PUSHED_MEMORY:
                state.pushed.clear()
            state.pushed.update(mine[-PUSHED_MEMORY:])
        return mine

    def unpush(self, url: str, ids: list[str]) -> None:
        """These ids did not reach the peer after all."""
        if (state := self.get(url)) is not None:
            state.pushed.difference_update(ids)

    def lister(self, rng: random.Random) -> str | None:
        """Whose mirror list discovery reads: a peer that brought news (a
        withholder never does), else one answering; one at random."""
        useful = [st.url for st in self.values() if st.last_news is not None and st.healthy]
        return rng.choice(useful or [st.url for st in self.values() if st.healthy] or [None])

    def learn(self, urls: list[str], via: str | None, rng: random.Random, k: int = DISCOVER_PICKS) -> list[str]:
        """Add `k` of these mirrors, drawn at random among those not yet known,
        learned from `via` (None: mirror hints, each its own source). Whoever
        wrote thousands of hints or a long list does not choose which get
        places; hints all charged to one source had 4 places in all, taken in
        turn by the last ones read. Returns the ones now in the list."""
        fresh = sorted({u.rstrip("/") for u in urls} - set(self) - set(self.banned))
        return [u for u in rng.sample(fresh, min(k, len(fresh))) if self.add(u, via=via or f"mirror hint {u}")[0]]

    def round_peers(self, now: float, rng: random.Random) -> list[str]:
        """Whom to reconcile with this round: every operator peer due, then of the
        learned ones due, the KEPT_PEERS that brought news most recently and
        random others up to `fanout` (ROUND_PEERS)."""
        due = [st for st in self.values() if st.is_peer and st.next_try <= now]
        chosen = [st.url for st in due if st.operator]
        learned = [st for st in due if not st.operator]
        kept = sorted((st for st in learned if st.last_news is not None),
                      key=lambda st: (-st.last_news, st.order))[:KEPT_PEERS]  # type: ignore[operator]
        others = [st for st in learned if st not in kept]
        return chosen + [st.url for st in kept] + [
            st.url for st in rng.sample(others, min(len(others), self.fanout - len(kept)))]

    def push_targets(self, items: list[tuple[str, str | None]], now: float, rng: random.Random
                     ) -> dict[str, list[str]]:
        """Which of the new events (id, the peer it came from or None) go to whom:
        all to every operator peer (but not back where they came from); those
        from outside the peer protocol also to the round's learned peers."""
        own = [e for e, origin in items if origin is None]
        out = {url: [e for e, origin in items if origin != url]
               for url, st in self.items() if st.operator and st.is_peer}
        if own:
            for url in self.round_peers(now, rng):
                if not self[url].operator:
                    out[url] = own
        return {url: ids for url, ids in out.items() if ids}


def page(state: PeerState | None, done: int, full: int) -> int:
    """Ids per events request to, or push message for, this peer: `full`, but
    the first one holds a single event while a learned peer has neither
    brought us news nor taken a push. An answer is capped by what was asked
    (peer.answer_cap: a max-size event per id), so a stranger naming ids it
    answers with junk or over the cap costs one event's worth; one that
    "lacks" everything and does not take pushes, one event."""
    proven = state is None or state.operator or state.last_news is not None or bool(state.pushed)
    return full if done or proven else 1


@contextmanager
def fetching(in_flight: set[str], ids: list[str], held: set[str]) -> Iterator[list[str]]:
    """The ids a sync is to fetch: those neither held nor being fetched by another
    sync of the node (the syncs of a round run at once and learn the same new
    events: each fetched them all, ~4x an event's size per node). They count as
    being fetched until the block ends; held ones are skipped for good."""
    mine = [i for i in ids if i not in held and i not in in_flight]
    in_flight.update(mine)
    try:
        yield mine
    finally:
        in_flight.difference_update(mine)


Step = tuple[str, Any]  # ("reconcile", msg) -> the reply's msg; ("compute", reply) -> our next msg;
# ("fetch", ids) -> how many were new (None: none asked); ("push", ids) -> how many were sent


def sync_steps(rec: Reconciler) -> Generator[Step, Any, tuple[int, int]]:
    """One sync with a peer as the steps to take, each answered by the driver:
    one reconciliation however far apart the two sides are; whenever MAX_NEED
    ids are learned they are fetched (or pushed) before it goes on, so memory
    stays bounded. Returns (fetched, pushed)."""
    msg: bytes | None = rec.initiate()
    fetched = pushed = idle = unfetched = 0
    for _round in range(MAX_ROUNDS):
        reply = yield ("reconcile", msg)
        if reply is None:
            break
        learned = len(rec.need) + len(rec.have)
        msg = yield ("compute", reply)
        idle = idle + 1 if len(rec.need) + len(rec.have) == learned else 0
        unfetched = unfetched + 1 if rec.need else 0
        if msg is None or idle > MAX_IDLE_ROUNDS:
            break
        # Progress is what gets stored, not what the peer says: ids it names are
        # fetched at the latest MAX_IDLE_ROUNDS rounds after, and the sync stops
        # at the first fetch that stores nothing new (a peer teaching one fake id
        # per round kept a sync going for MAX_ROUNDS rounds).
        if len(rec.need) >= MAX_NEED or unfetched > MAX_IDLE_ROUNDS:
            need, rec.need = rec.need, set()
            unfetched = 0
            got = yield ("fetch", sorted(need))
            if got == 0:  # the peer names events it will not serve (or only bad ones): stop here
                break
            fetched += got or 0  # None: nothing was asked (held, or another sync is fetching them)
        if len(rec.have) >= MAX_NEED:
            have, rec.have = rec.have, set()
            pushed += yield ("push", sorted(have))
    if rec.need:
        fetched += (yield ("fetch", sorted(rec.need))) or 0
    if rec.have:
        pushed += yield ("push", sorted(rec.have))
    return fetched, pushed
