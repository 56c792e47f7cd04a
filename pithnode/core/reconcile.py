"""Range-based set reconciliation of event ids, in the manner of negentropy.

Pure: no I/O, no clock. Two nodes find which events one holds and the other
lacks. Items are `(created_at, event_id)`, in canonical order. The initiator
sends the fingerprint of its whole set; the responder answers ranges whose
fingerprints differ by splitting them into `BRANCH` sub-ranges (or, when it
holds few items there, by listing its ids); the initiator does the same, and
so on, each message going one level deeper, until every range is settled.
Two sets that agree settle in one round trip of a few dozen bytes; d
differences among n items cost about d * BRANCH * log_BRANCH(n / SMALL)
fingerprints.

Only the initiator learns the outcome: `have` (ids it holds that the
responder lacks: to push) and `need` (ids the responder holds that it lacks:
to fetch). The responder keeps no state between messages.

Fingerprint of a range: the first 12 bytes of SHA-256 over (the sums mod
2^64 of the first and of the second 8 bytes of its ids, and its count): 128
bits of sum, kept in flat arrays of prefix sums. A prefix-sum array makes
any range's fingerprint O(log n). Event ids are SHA-256 of signed content,
so honest sets never collide by chance; a peer who grinds ids to collide can
only make one round miss a difference, which it could cause anyway by
withholding, and the next round (other boundaries) or a push carries it.

Ids in small ranges travel as 8-byte prefixes from the initiator; the
responder answers with the full ids the initiator lacks and the indices of
the prefixes it lacks. A message from a peer is untrusted: `decode` checks
every length, count and ordering, and raises `ReconcileError` on anything
malformed, never another exception, and never works more than the message's
size allows.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from ..errors import InputError

VERSION: Final = 1
BRANCH: Final = 16  # sub-ranges per split
SMALL: Final = 4  # ranges with at most this many items are listed, not split
FP_BYTES: Final = 12
PREFIX_BYTES: Final = 8
MAX_MESSAGE_BYTES: Final = 4 * 1024 * 1024
MAX_RANGES: Final = 100_000
MAX_REPLY_IDS: Final = 50_000  # full ids one reply may carry; the rest wait for the next round
LIST_MAX: Final = 64  # full ids a reply lists for one range; more are split (a reply is bounded by its request)
_MASK64: Final = (1 << 64) - 1
_INF: Final = (1 << 62, b"")

SKIP, FINGERPRINT, IDLIST, FULL, REPLY = 0, 1, 2, 3, 4

Bound = tuple[int, bytes]  # (seconds since the epoch, id prefix); items >= bound are above it


class ReconcileError(ValueError, InputError):
    """A malformed or over-large reconciliation message."""


def timestamp_seconds(created_at: str) -> int:
    """`YYYY-MM-DDTHH:MM:SSZ` as seconds since 1970 (days-from-civil; no datetime, it is hot)."""
    y, m, d = int(created_at[0:4]), int(created_at[5:7]), int(created_at[8:10])
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
    return days * 86400 + int(created_at[11:13]) * 3600 + int(created_at[14:16]) * 60 + int(created_at[17:19])


class ReconcileSet:
    """The items of one side in canonical order, packed flat (about 56 bytes
    per event: a million events fit in ~56 MB), with prefix sums that give
    any range's fingerprint in O(1) and bounds found by binary search."""

    def __init__(self, items: Iterable[tuple[str, str]], *, presorted: bool = False):
        """`items`: (created_at, event_id) pairs; `presorted` when they come in
        canonical order without duplicates (as the store yields them)."""
        if not presorted:
            items = sorted(set(items))
        self._ts = array("q")
        self._ids = bytearray()  # not bytes: a copy was 32 MB of peak memory at 1M events
        self._lo, self._hi = array("Q", [0]), array("Q", [0])  # prefix sums of the ids' two halves
        self._append((timestamp_seconds(c), bytes.fromhex(e[7:])) for c, e in items)

    def _append(self, items: Iterable[tuple[int, bytes]]) -> None:
        """(seconds, raw id) pairs that sort after every held item, in order."""
        acc_lo, acc_hi = self._lo[-1], self._hi[-1]
        for ts, raw in items:
            self._ts.append(ts)
            self._ids += raw
            acc_lo = (acc_lo + int.from_bytes(raw[:8], "big")) & _MASK64
            acc_hi = (acc_hi + int.from_bytes(raw[8:16], "big")) & _MASK64
            self._lo.append(acc_lo)
            self._hi.append(acc_hi)

    def __len__(self) -> int:
        return len(self._ts)

    def add(self, items: Iterable[tuple[str, str]], max_rewrite: int | None = None) -> int | None:
        """Add (created_at, event_id) pairs in place (ones held already are
        skipped); returns how many were new. Only the items from the first new
        one on are rewritten: new events are mostly recent, so that tail is
        short, where building the set again costs ~3 s of CPU at 1M events.
        Items before the first new one keep their positions, and a Reconciler
        finds its ranges by bound at every message, so one working on this set
        stays consistent while it grows. None, and nothing changed, when more
        than `max_rewrite` held items would have to be rewritten (old events:
        the caller may rather build the set anew, elsewhere)."""
        new = sorted({(timestamp_seconds(c), bytes.fromhex(e[7:])) for c, e in items})
        new = [(ts, raw) for ts, raw in new if not self._holds(ts, raw)]
        if not new:
            return 0
        start = self.index(new[0])
        if max_rewrite is not None and len(self._ts) - start > max_rewrite:
            return None
        tail_ts, tail_ids = self._ts[start:], self._ids[32 * start :]  # ~40 bytes per item, not a tuple each
        old = ((tail_ts[k], bytes(tail_ids[32 * k : 32 * k + 32])) for k in range(len(tail_ts)))
        del self._ts[start:], self._ids[32 * start :], self._lo[start + 1 :], self._hi[start + 1 :]
        self._append(heapq.merge(old, new))
        return len(new)

    def _holds(self, ts: int, raw: bytes) -> bool:
        i = self.index((ts, raw))
        return i < len(self._ts) and self._ts[i] == ts and self._id(i) == raw

    def _id(self, i: int) -> bytes:
        return bytes(self._ids[32 * i : 32 * i + 32])

    def index(self, bound: Bound) -> int:
        """The first item >= bound."""
        if bound == _INF:
            return len(self._ts)
        ts, prefix = bound
        lo, hi = bisect.bisect_left(self._ts, ts), bisect.bisect_right(self._ts, ts)
        while lo < hi:  # among equal timestamps, by id
            mid = (lo + hi) // 2
            if self._id(mid) < prefix:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def fingerprint(self, lo: int, hi: int) -> bytes:
        a = (self._lo[hi] - self._lo[lo]) & _MASK64
        b = (self._hi[hi] - self._hi[lo]) & _MASK64
        packed = a.to_bytes(8, "big") + b.to_bytes(8, "big") + (hi - lo).to_bytes(8, "big")
        return hashlib.sha256(packed).digest()[:FP_BYTES]

    def ids(self, lo: int, hi: int) -> list[bytes]:
        return [bytes(self._ids[i : i + 32]) for i in range(32 * lo, 32 * hi, 32)]

    def bound_before(self, i: int) -> Bound:
        """The shortest bound separating item i-1 from item i (negentropy's trick)."""
        ts, ident = self._ts[i], self._id(i)
        if i == 0 or self._ts[i - 1] != ts:
            return (ts, b"")
        prev = self._id(i - 1)
        n = 0
        while n < 32 and prev[n] == ident[n]:
            n += 1
        return (ts, ident[: n + 1])


# -- wire format: one bytes blob of varints, carried in msgpack by the peer layer --

def _varint(n: int, out: bytearray) -> None:
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def done(self) -> bool:
        return self.pos >= len(self.data)

    def varint(self) -> int:
        n = shift = 0
        while True:
            if self.pos >= len(self.data) or shift > 63:
                raise ReconcileError("truncated or over-long varint")
            byte = self.data[self.pos]
            self.pos += 1
            n |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return n
            shift += 7

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ReconcileError("truncated message")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk


@dataclass
class Range:
    upper: Bound
    mode: int
    fingerprint: bytes = b""
    ids: list[bytes] | None = None  # IDLIST: prefixes; FULL / REPLY: full ids
    indices: list[int] | None = None  # REPLY: which of the initiator's prefixes the responder lacks


def encode(ranges: list[Range]) -> bytes:
    out = bytearray([VERSION])
    last_ts = 0
    for r in ranges:
        ts, prefix = r.upper
        if r.upper == _INF:
            _varint(0, out)
        else:
            _varint(ts - last_ts + 1, out)
            last_ts = ts
        _varint(len(prefix), out)
        out += prefix
        _varint(r.mode, out)
        if r.mode == FINGERPRINT:
            out += r.fingerprint
        elif r.mode in (IDLIST, FULL, REPLY):
            ids = r.ids or []
            _varint(len(ids), out)
            for i in ids:
                out += i
            if r.mode == REPLY:
                idx = r.indices or []
                _varint(len(idx), out)
                for n in idx:
                    _varint(n, out)
    return bytes(out)


def decode(data: object) -> list[Range]:
    """Parse and check a peer's message; ReconcileError on anything malformed."""
    if not isinstance(data, bytes) or not data:
        raise ReconcileError("a reconciliation message is a non-empty byte string")
    if len(data) > MAX_MESSAGE_BYTES:
        raise ReconcileError(f"message of {len(data)} bytes is over the cap of {MAX_MESSAGE_BYTES}")
    if data[0] != VERSION:
        raise ReconcileError(f"unsupported reconciliation version {data[0]}")
    rd = _Reader(data[1:])
    ranges: list[Range] = []
    last_ts, prev = 0, None
    while not rd.done():
        if len(ranges) >= MAX_RANGES:
            raise ReconcileError(f"more than {MAX_RANGES} ranges")
        delta = rd.varint()
        plen = rd.varint()
        if plen > 32:
            raise ReconcileError("bound prefix longer than an id")
        prefix = rd.take(plen)
        if delta == 0:
            if plen:
                raise ReconcileError("the infinite bound has no prefix")
            upper: Bound = _INF
        else:
            last_ts += delta - 1
            if last_ts >= _INF[0]:
                raise ReconcileError("timestamp out of range")
            upper = (last_ts, prefix)
        if prev is not None and (prev == _INF or upper <= prev):
            raise ReconcileError("range bounds must strictly increase")
        prev = upper
        mode = rd.varint()
        r = Range(upper, mode)
        if mode == FINGERPRINT:
            r.fingerprint = rd.take(FP_BYTES)
        elif mode in (IDLIST, FULL, REPLY):
            count = rd.varint()
            width = PREFIX_BYTES if mode == IDLIST else 32
            if count * width > len(data):
                raise ReconcileError("id count larger than the message")
            r.ids = [rd.take(width) for _ in range(count)]
            if mode == REPLY:
                n = rd.varint()
                if n > len(data):
                    raise ReconcileError("index count larger than the message")
                r.indices = [rd.varint() for _ in range(n)]
        elif mode != SKIP:
            raise ReconcileError(f"unknown range mode {mode}")
        ranges.append(r)
    if not ranges or ranges[-1].upper != _INF:
        raise ReconcileError("the last range must reach the end (infinite bound)")
    return ranges


class Reconciler:
    """One side of a reconciliation over a ReconcileSet.

    Initiator: `msg = r.initiate()`, then while a reply comes back,
    `msg = r.reconcile(reply)` until it returns None; the outcome is in
    `r.have` and `r.need` (event ids, "sha256:<hex>").
    Responder: `reply = Reconciler(set).respond(msg)` (None: nothing to say).
    """

    def __init__(self, items: ReconcileSet):
        self.set = items
        self.have: set[str] = set()
        self.need: set[str] = set()

    def initiate(self) -> bytes:
        return encode([self._open(0, len(self.set), _INF)])

    def respond(self, msg: object) -> bytes | None:
        out: list[Range] = []
        budget = MAX_REPLY_IDS
        lo = 0
        for r in decode(msg):
            if budget <= 0 or len(out) >= MAX_RANGES - BRANCH:
                # This reply is full: the rest of the set goes back as one
                # fingerprint, taken up again next round. A reply stays a few
                # MB however far apart the sets are (a new node, a million events).
                out.append(Range(_INF, FINGERPRINT, fingerprint=self.set.fingerprint(lo, len(self.set))))
                break
            hi = self.set.index(r.upper)
            if r.mode == FINGERPRINT:
                if self.set.fingerprint(lo, hi) == r.fingerprint:
                    out.append(Range(r.upper, SKIP))
                elif hi - lo <= SMALL:
                    out.append(Range(r.upper, FULL, ids=self.set.ids(lo, hi)))
                else:
                    out.extend(self._split(lo, hi, r.upper))
            elif r.mode == IDLIST:
                theirs = set(r.ids or [])
                mine = self.set.ids(lo, hi)
                if len(mine) > LIST_MAX:  # split: a reply stays within what its request allows (peer.reply_cap)
                    out.extend(self._split(lo, hi, r.upper))
                elif len(mine) > budget:  # too many to list in this reply: split, list them next round
                    out.extend(self._split(lo, hi, r.upper))
                    budget = 0 if budget < MAX_REPLY_IDS else budget  # split once, then close the reply
                else:
                    prefixes = {i[:PREFIX_BYTES] for i in mine}
                    missing = [i for i in mine if i[:PREFIX_BYTES] not in theirs]
                    budget -= len(missing)
                    lacks = [n for n, p in enumerate(r.ids or []) if p not in prefixes]
                    out.append(Range(r.upper, REPLY, ids=missing, indices=lacks) if missing or lacks
                               else Range(r.upper, SKIP))
            elif r.mode != SKIP:
                raise ReconcileError("only the initiator is sent FULL or REPLY ranges")
            else:
                out.append(Range(r.upper, SKIP))
            lo = hi
        return None if all(r.mode == SKIP for r in out) else encode(_merge_skips(out))

    def reconcile(self, reply: object) -> bytes | None:
        out: list[Range] = []
        lo = 0
        for r in decode(reply):
            hi = self.set.index(r.upper)
            if r.mode == FINGERPRINT:
                if self.set.fingerprint(lo, hi) == r.fingerprint:
                    out.append(Range(r.upper, SKIP))
                elif hi - lo <= SMALL:
                    out.append(self._open(lo, hi, r.upper))
                else:
                    out.extend(self._split(lo, hi, r.upper))
            elif r.mode == FULL:
                theirs = set(r.ids or [])
                mine = set(self.set.ids(lo, hi))
                self.have.update(_eid(i) for i in mine - theirs)
                self.need.update(_eid(i) for i in theirs - mine)
                out.append(Range(r.upper, SKIP))
            elif r.mode == REPLY:
                listed = self.set.ids(lo, hi)
                for n in r.indices or []:
                    if n >= len(listed):
                        raise ReconcileError("reply names an item we did not list")
                    self.have.add(_eid(listed[n]))
                held = set(listed)
                self.need.update(_eid(i) for i in r.ids or [] if i not in held)
                out.append(Range(r.upper, SKIP))
            elif r.mode == SKIP:
                out.append(Range(r.upper, SKIP))
            else:
                raise ReconcileError("the initiator is never sent an IDLIST")
            lo = hi
        return None if all(r.mode == SKIP for r in out) else encode(_merge_skips(out))

    def _open(self, lo: int, hi: int, upper: Bound) -> Range:
        """The initiator's first word on a range: its ids when few, else its fingerprint."""
        if hi - lo <= SMALL:
            return Range(upper, IDLIST, ids=[i[:PREFIX_BYTES] for i in self.set.ids(lo, hi)])
        return Range(upper, FINGERPRINT, fingerprint=self.set.fingerprint(lo, hi))

    def _split(self, lo: int, hi: int, upper: Bound) -> list[Range]:
        """BRANCH sub-ranges of [lo, hi) of about equal size, each with its fingerprint."""
        n = hi - lo
        out = []
        start = lo
        for k in range(1, BRANCH + 1):
            end = lo + n * k // BRANCH
            if end == start and k < BRANCH:
                continue
            bound = upper if k == BRANCH else self.set.bound_before(end)
            out.append(Range(bound, FINGERPRINT, fingerprint=self.set.fingerprint(start, end)))
            start = end
        return out


def _merge_skips(ranges: list[Range]) -> list[Range]:
    out: list[Range] = []
    for r in ranges:
        if out and out[-1].mode == SKIP and r.mode == SKIP:
            out[-1] = r
        else:
            out.append(r)
    return out


def _eid(ident: bytes) -> str:
    return "sha256:" + ident.hex()


def run_to_completion(a: ReconcileSet, b: ReconcileSet, max_rounds: int = 50) -> dict[str, Any]:
    """Reconcile in memory (tests, benchmarks): a initiates, b responds."""
    rec = Reconciler(a)
    msg: bytes | None = rec.initiate()
    rounds, sent, received = 0, 0, 0
    while msg is not None and rounds < max_rounds:
        rounds += 1
        sent += len(msg)
        reply = Reconciler(b).respond(msg)
        if reply is None:
            break
        received += len(reply)
        msg = rec.reconcile(reply)
    return {"have": rec.have, "need": rec.need, "round_trips": rounds, "bytes_sent": sent, "bytes_received": received}
