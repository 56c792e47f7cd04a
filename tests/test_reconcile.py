"""Range-based set reconciliation: it finds exactly the symmetric difference,
settles equal sets in one round trip, and refuses malformed messages."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pithnode.core import reconcile
from pithnode.core.reconcile import ReconcileError, Reconciler, ReconcileSet, run_to_completion, timestamp_seconds


def item(i: int, ts: int) -> tuple[str, str]:
    day, sec = divmod(ts, 86400)
    return (f"2026-01-{1 + day % 28:02d}T{sec // 3600:02d}:{sec % 3600 // 60:02d}:{sec % 60:02d}Z",
            "sha256:" + hashlib.sha256(str(i).encode()).hexdigest())


@st.composite
def two_sets(draw):  # type: ignore[no-untyped-def]
    n = draw(st.integers(0, 400))
    spread = draw(st.sampled_from([1, 5, 1000, 86400 * 20]))  # many share a timestamp when small
    base = [item(i, draw(st.integers(0, spread))) if i < 3 else item(i, (i * 7919) % (spread + 1)) for i in range(n)]
    only_a = draw(st.sets(st.integers(0, max(0, n - 1)), max_size=n)) if n else set()
    only_b = draw(st.sets(st.integers(0, max(0, n - 1)), max_size=n)) if n else set()
    only_b -= only_a
    a = [x for i, x in enumerate(base) if i not in only_b]
    b = [x for i, x in enumerate(base) if i not in only_a]
    return a, b


@settings(max_examples=150, deadline=None)
@given(two_sets())
def test_finds_exactly_the_symmetric_difference(sets):  # type: ignore[no-untyped-def]
    a, b = sets
    out = run_to_completion(ReconcileSet(a), ReconcileSet(b))
    ids_a, ids_b = {e for _, e in a}, {e for _, e in b}
    assert out["have"] == ids_a - ids_b
    assert out["need"] == ids_b - ids_a
    assert out["round_trips"] <= 12


def packed(s: ReconcileSet) -> tuple:
    return (list(s._ts), bytes(s._ids), list(s._lo), list(s._hi))


@settings(max_examples=150, deadline=None)
@given(two_sets(), st.lists(st.integers(1, 3), max_size=3))
def test_a_set_grown_in_place_is_the_set_built_from_every_item(sets, cuts):  # type: ignore[no-untyped-def]
    """`add` (new events, the node's set kept up to date) ends where building
    the set from all the items would, held items and duplicates skipped,
    however the additions are split and wherever they fall (even first)."""
    held, more = sets
    grown = ReconcileSet(held)
    pieces, rest = [], list(more)
    for c in cuts:  # a few additions of different sizes, the last one all that is left
        pieces.append(rest[: len(rest) // c])
        rest = rest[len(rest) // c :]
    for piece in [*pieces, rest, rest[:2] * 2]:
        grown.add(piece)
    assert packed(grown) == packed(ReconcileSet(held + more))
    assert grown.add(more) == 0


def test_an_addition_that_would_rewrite_too_much_changes_nothing():
    items = [item(i, 1000 + i) for i in range(100)]
    s = ReconcileSet(items)
    before = packed(s)
    assert s.add([item(500, 1010)], max_rewrite=50) is None and packed(s) == before  # 90 held items after it
    assert s.add([item(501, 1095)], max_rewrite=50) == 1  # 5 after it
    assert s.add([item(502, 5000)], max_rewrite=0) == 1  # after them all
    assert packed(s) == packed(ReconcileSet(items + [item(501, 1095), item(502, 5000)]))


def test_a_reconciliation_under_way_stays_right_while_its_set_grows():
    """The initiator's set takes events (a sync stores them) between its messages:
    it still ends with exactly what the other side holds and it lacked."""
    rng = random.Random(8)
    theirs = [item(i, rng.randrange(86400 * 20)) for i in range(5_000)]
    mine = theirs[:1_000]
    s = ReconcileSet(mine)
    rec = Reconciler(s)
    msg, rounds = rec.initiate(), 0
    while msg is not None:
        reply = Reconciler(ReconcileSet(theirs)).respond(msg)
        if reply is None:
            break
        s.add(theirs[1_000 + 400 * rounds : 1_000 + 400 * (rounds + 1)])  # stored meanwhile
        msg, rounds = rec.reconcile(reply), rounds + 1
    assert not rec.have and rounds >= 2
    assert rec.need | {e for _, e in theirs[: 1_000 + 400 * rounds]} >= {e for _, e in theirs}


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 10**6), unique=True, max_size=3000))
def test_equal_sets_settle_in_one_small_round_trip(ids):  # type: ignore[no-untyped-def]
    items = [item(i, i % 5000) for i in ids]
    out = run_to_completion(ReconcileSet(items), ReconcileSet(list(reversed(items))))
    assert out["round_trips"] == 1 and out["bytes_received"] == 0 and out["bytes_sent"] < 200
    assert not out["have"] and not out["need"]


def test_large_sets_with_few_differences_stay_within_budget():
    rng = random.Random(5)
    base = [item(i, rng.randrange(86400 * 20)) for i in range(20_000)]
    missing = set(rng.sample(range(20_000), 50))
    a = ReconcileSet(base)
    b = ReconcileSet([x for i, x in enumerate(base) if i not in missing])
    out = run_to_completion(b, a)
    assert len(out["need"]) == 50 and not out["have"]
    assert out["round_trips"] <= 5
    assert out["bytes_sent"] + out["bytes_received"] < 50 * 600  # about d * BRANCH * levels fingerprints


GOOD = Reconciler(ReconcileSet([item(i, i) for i in range(100)])).initiate()


@pytest.mark.parametrize("msg", [
    None, b"", "text", 42, [1, 2], b"\x02" + GOOD[1:],  # wrong types, empty, wrong version
    GOOD[:-3],  # truncated
    b"\x01\x05\x00\x09",  # unknown mode
    b"\x01\x05\x00\x00",  # last range does not reach the end
    b"\x01\x05\x00\x00\x03\x00\x00\x00\x00",  # bounds not increasing
    b"\x01\x00\x00\x00\x00\x00\x00",  # a range after the infinite bound
    b"\x01" + b"\xff" * 20,  # over-long varint
    b"\x01\x00\x01\x41\x00",  # the infinite bound with a prefix
    b"\x01\x00\x21" + b"\x00" * 33 + b"\x00",  # prefix longer than an id
    b"\x01\x00\x00\x02\xff\xff\xff\x7f",  # absurd id count
    b"\x01\x00\x00\x03\x00",  # FULL is never sent to a responder
    b"\x01" + b"\x00" * (reconcile.MAX_MESSAGE_BYTES + 1),  # over the cap
])
def test_malformed_messages_raise_reconcile_error_only(msg):  # type: ignore[no-untyped-def]
    with pytest.raises(ReconcileError):
        Reconciler(ReconcileSet([item(i, i) for i in range(50)])).respond(msg)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise_anything_else(data):  # type: ignore[no-untyped-def]
    rec = Reconciler(ReconcileSet([item(i, i) for i in range(30)]))
    for fn in (rec.respond, rec.reconcile):
        try:
            fn(b"\x01" + data)
        except ReconcileError:
            pass


def test_reply_naming_items_we_never_listed_is_refused():
    rec = Reconciler(ReconcileSet([item(i, i) for i in range(3)]))
    rec.initiate()
    bad = reconcile.encode([reconcile.Range(reconcile._INF, reconcile.REPLY, ids=[], indices=[99])])
    with pytest.raises(ReconcileError):
        rec.reconcile(bad)


def test_timestamp_seconds_matches_the_calendar():
    from calendar import timegm
    from time import strptime

    for ts in ("1970-01-01T00:00:00Z", "2026-02-28T23:59:59Z", "2024-02-29T12:00:00Z", "2100-03-01T00:00:01Z"):
        assert timestamp_seconds(ts) == timegm(strptime(ts, "%Y-%m-%dT%H:%M:%SZ"))


def test_a_far_behind_initiator_gets_everything_in_bounded_replies():
    big = ReconcileSet([item(i, i % 5000) for i in range(120_000)])
    rec = Reconciler(ReconcileSet([]))
    msg, rounds, largest = rec.initiate(), 0, 0
    while msg is not None and rounds < 50:
        rounds += 1
        reply = Reconciler(big).respond(msg)
        if reply is None:
            break
        largest = max(largest, len(reply))
        msg = rec.reconcile(reply)
    assert len(rec.need) == 120_000
    assert largest <= reconcile.MAX_REPLY_IDS * 32 + 200_000  # never near the 4 MiB message cap
