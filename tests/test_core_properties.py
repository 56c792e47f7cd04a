"""Properties of admission and merge (PROTOCOL.md part 2) over really signed
events drawn by `strategies`: the state ignores arrival order, duplicates and
`signed_at`; its `state_sha256` is always the hash of the rest; every changed
signed byte is caught at admission; equivocations are exactly the slots held
twice; garbage is rejected, never raised on; admission keeps exactly CJ(event);
the piecewise hash of a large state is the canonical hash."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pithnode.core import CanonicalError, admit, canonical_hash, merge, merge_document
from strategies import (
    TARGETS,
    cast,
    cj,
    content,
    deep,
    garbage,
    h,
    histories,
    rehash,
    scaled,
    signed_event,
)

SIGNED_SIGNATURE_FIELDS = ("key_id", "public_key_fingerprint", "signature_b64")
EVENT_FIELDS = ["event_type", "subject_pith_number", "target", "payload", "signer", "created_at", "supersedes",
                "prev_event", "schema_version", "signature", "content_sha256", "event_id"]


def order(e: dict[str, Any]) -> tuple[str, str]:
    return (e["created_at"], e["event_id"])


def merge_of(events: list[dict[str, Any]]) -> dict[str, Any]:
    c = cast()
    return merge(c.subject, events, c.ring, c.registry_fps)


def admitted(objs: list[Any]) -> list[dict[str, Any]]:
    """Every admitted object, copies included (merge must deduplicate).
    What admission keeps of each is CJ(object), byte for byte."""
    c = cast()
    out = []
    for o in objs:
        adm = admit(o, c.subject, c.ring)
        if adm.admitted:
            assert adm.body == cj(o) and adm.event_id == o["event_id"]
            out.append(o)
    return out


def check_state(state: dict[str, Any], events: list[dict[str, Any]]) -> None:
    """What holds for every state, whatever the events."""
    rest = {k: v for k, v in state.items() if k != "state_sha256"}
    assert state["state_sha256"] == h(rest)  # H(state without state_sha256), by the spec's CJ
    ids = {e["event_id"] for e in events}
    by_id = {e["event_id"]: e for e in events}
    invalid = [x["event_id"] for x in state["invalid_events"]]
    equivocating = [i for eq in state["equivocations"] for i in eq["event_ids"]]
    applied = state["applied_event_ids"]
    assert state["event_count"] == len(ids)
    assert state["invalid_event_count"] == len(invalid)
    assert state["valid_event_count"] == state["event_count"] - state["invalid_event_count"]
    assert state["equivocation_count"] == len(state["equivocations"])
    # every admitted event is exactly one of: invalid, equivocating, applied
    assert len(invalid) + len(equivocating) + len(applied) == len(ids)
    assert set(invalid) | set(equivocating) | set(applied) == ids
    for seq in (invalid, applied):
        assert seq == sorted(seq, key=lambda i: order(by_id[i]))


def _nodes(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
    out = [(path, value)]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _nodes(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _nodes(v, path + (i,))
    return out


def _different(value: Any) -> Any:
    """A value whose canonical bytes differ from `value`'s (one bit, where it can)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value ^ 1
    if isinstance(value, str):
        return value[:-1] + chr(ord(value[-1]) ^ 1) if value else "x"
    if value is None:
        return 0
    if isinstance(value, list):
        return [] if value else [0]
    return {} if value else {"x": 0}


def _operations(event: dict[str, Any]) -> list[tuple[str, tuple[Any, ...]]]:
    """Every way to change the signed bytes: each node of the hashed content
    replaced, each object gaining or losing a member, each array growing; and
    the signature's own signed fields, content_sha256, event_id."""
    ops: list[tuple[str, tuple[Any, ...]]] = []
    for path, value in _nodes(content(event)):
        if path:
            ops.append(("replace", path))
            if isinstance(path[-1], str):
                ops.append(("drop", path))
        if isinstance(value, dict):
            ops.append(("add", path))
        if isinstance(value, list):
            ops.append(("append", path))
    ops += [("replace", ("signature", f)) for f in SIGNED_SIGNATURE_FIELDS]
    ops += [("replace", ("content_sha256",)), ("replace", ("event_id",))]
    return ops


def _apply(event: dict[str, Any], op: str, path: tuple[Any, ...]) -> dict[str, Any]:
    event = copy.deepcopy(event)
    parent: Any = event
    for k in path[:-1] if op in ("replace", "drop") else path:
        parent = parent[k]
    if op == "replace":
        parent[path[-1]] = _different(parent[path[-1]])
    elif op == "drop":
        del parent[path[-1]]
    elif op == "add":
        parent["\x00added"] = 1
    else:
        parent.append(1)
    return event


@given(histories(), st.data())
def test_state_ignores_arrival_order_duplicates_and_signed_at(events, data):  # type: ignore[no-untyped-def]
    dups = data.draw(st.lists(st.sampled_from(range(len(events))), max_size=len(events)), label="duplicated")
    copies = [{**events[i], "signature": {**events[i]["signature"], "signed_at": f"2027-01-01T00:00:{k:02d}.5Z"}}
              for k, i in enumerate(dups)]
    arrival = data.draw(st.permutations(events + copies), label="arrival")
    reference = merge_of(admitted(events))
    snapshot = copy.deepcopy(arrival)
    state = merge_of(admitted(arrival))
    assert arrival == snapshot  # admission and merge leave their inputs alone
    assert cj(state) == cj(reference)
    check_state(state, admitted(events))


@given(histories(max_size=16))
def test_equivocations_are_exactly_the_slots_held_twice(events):  # type: ignore[no-untyped-def]
    c = cast()
    ok = admitted(events)
    state = merge_of(ok)
    check_state(state, ok)
    by_id = {e["event_id"]: e for e in ok}
    invalid = {x["event_id"] for x in state["invalid_events"]}
    valid = sorted((e for e in by_id.values() if e["event_id"] not in invalid), key=order)
    slots: dict[tuple[str, str, str | None], list[str]] = {}
    for e in valid:  # §2.3, from scratch: slot = (identity, target, prev_event)
        slots.setdefault((c.identity(e), e["target"], e["prev_event"]), []).append(e["event_id"])
    expected = [{"identity": i, "target": t, "prev_event": p, "event_ids": ids}
                for (i, t, p), ids in slots.items() if len(ids) > 1]
    assert state["equivocations"] == expected
    for eq in state["equivocations"]:  # and each entry is evidence anyone can check
        members = [by_id[i] for i in eq["event_ids"]]
        assert len(members) >= 2 and len(set(eq["event_ids"])) == len(members)
        assert {(c.identity(e), e["target"], e["prev_event"]) for e in members} == {
            (eq["identity"], eq["target"], eq["prev_event"])}
        assert all(TARGETS.get(e["event_type"]) == e["target"] for e in members)
        assert not set(eq["event_ids"]) & set(state["applied_event_ids"])
    equivocating = {i for eq in expected for i in eq["event_ids"]}
    assert state["applied_event_ids"] == [e["event_id"] for e in valid if e["event_id"] not in equivocating]


@settings(max_examples=scaled(3))
@given(histories(max_size=4, wild=False), st.data())
def test_changing_any_signed_byte_makes_admission_reject(events, data):  # type: ignore[no-untyped-def]
    c = cast()
    event = events[-1]
    assert admit(event, c.subject, c.ring).admitted
    op, path = data.draw(st.sampled_from(_operations(event)), label="change")
    changed = _apply(event, op, path)
    adm = admit(changed, c.subject, c.ring)
    assert not adm.admitted, (op, path)
    if path[:1] in (("signature",), ("content_sha256",), ("event_id",)):
        return
    # Recompute the hashes for the changed content: the signature must still catch it.
    adm = admit(rehash(changed), c.subject, c.ring)
    assert not adm.admitted, (op, path)
    assert adm.reason in ("malformed", "wrong_subject", "bad_signature", "unknown_key"), (op, path, adm)
    if len(path) > 1 and path[0] == "payload":  # inside the payload: well formed, only the signature can tell
        assert adm.reason == "bad_signature", (op, path, adm)


@given(signed_event([], wild=False), st.integers(0, 63), st.integers(0, 7))
def test_any_flipped_signature_bit_is_a_bad_signature(event, byte, bit):  # type: ignore[no-untyped-def]
    c = cast()
    sig = bytearray(base64.b64decode(event["signature"]["signature_b64"]))
    sig[byte] ^= 1 << bit
    bad = {**event, "signature": {**event["signature"], "signature_b64": base64.b64encode(bytes(sig)).decode()}}
    assert admit(bad, c.subject, c.ring).reason == "bad_signature"


@given(signed_event([], wild=False), st.sampled_from(["signed_at", "signature_status", "signed_message"]),
       st.text(max_size=12))
def test_the_unsigned_signature_fields_do_not_change_the_event(event, field, value):  # type: ignore[no-untyped-def]
    c = cast()
    copy_ = {**event, "signature": {**event["signature"], field: value}}
    adm = admit(copy_, c.subject, c.ring)
    assert adm.admitted and adm.event_id == event["event_id"]


@settings(max_examples=scaled(4))
@given(garbage)
def test_admission_rejects_garbage_without_raising(obj):  # type: ignore[no-untyped-def]
    c = cast()
    adm = admit(obj, c.subject, c.ring)
    assert not adm.admitted and adm.reason == "malformed" and adm.detail


@settings(max_examples=scaled(2))
@given(signed_event([], wild=False), st.data())
def test_an_event_with_a_garbage_part_is_rejected_without_raising(event, data):  # type: ignore[no-untyped-def]
    c = cast()
    paths = [p for p, _ in _nodes(event) if p and (p[0] != "signature" or p[-1] in (*SIGNED_SIGNATURE_FIELDS, "algorithm"))]
    path = data.draw(st.sampled_from(paths), label="path")
    value = data.draw(garbage | st.just(deep(70)) | st.just("x" * 300_000) | st.just(2**60), label="value")
    event = copy.deepcopy(event)
    parent: Any = event
    for k in path[:-1]:
        parent = parent[k]
    old = parent[path[-1]]
    assume(not (type(value) is type(old) and value == old))
    parent[path[-1]] = value
    adm = admit(event, c.subject, c.ring)
    assert not adm.admitted


@given(histories(max_size=8), st.lists(garbage, max_size=6), st.randoms(use_true_random=False))
def test_merge_of_what_admission_lets_through_never_raises(events, junk, rnd):  # type: ignore[no-untyped-def]
    inputs: list[Any] = events + junk
    rnd.shuffle(inputs)
    ok = admitted(inputs)
    state = merge_of(ok)
    check_state(state, ok)
    assert {e["event_id"] for e in ok} <= {e["event_id"] for e in events}


@given(signed_event([], wild=False), st.sampled_from(EVENT_FIELDS))
def test_an_event_missing_any_field_is_malformed_naming_it(event, field):  # type: ignore[no-untyped-def]
    c = cast()
    adm = admit({k: v for k, v in event.items() if k != field}, c.subject, c.ring)
    assert adm.reason == "malformed" and field in adm.detail


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda kids: st.lists(kids, max_size=6) | st.dictionaries(st.text(max_size=4), kids, max_size=5),
    max_leaves=40,
)


@settings(max_examples=scaled(3))
@given(_json)
def test_the_canonical_hash_is_the_spec_hash(value):  # type: ignore[no-untyped-def]
    assert canonical_hash(value) == h(value)


@given(histories(max_size=8), st.lists(garbage, max_size=3))
def test_the_merge_document_is_the_state_serialized_once(events, junk):  # type: ignore[no-untyped-def]
    """What a node stores and serves is CJ(state): merge_document splices the hash
    into the bytes it hashed instead of serializing the state a second time."""
    c = cast()
    ok = admitted(events + junk)
    state, document = merge_document(c.subject, ok, c.ring, c.registry_fps)
    assert state == merge_of(ok) and document == cj(state)


def test_the_canonical_hash_refuses_what_has_no_canonical_form():
    for bad in ({"a": ["\ud800"] * 3}, ["x", "\udfff"], "\ud800"):
        with pytest.raises(CanonicalError):
            canonical_hash(bad)


def test_a_large_state_is_hashed_exactly():
    from pithnode.testing.synth import synthetic_subject

    c = cast()
    pn, events = synthetic_subject(c.registry, 77, 700, list(c.mirrors))
    state = merge(pn, events, c.ring, c.registry_fps)
    assert state["event_count"] == 700 and len(state["current"]["citation_signatures"]) > 64
    assert state["state_sha256"] == h({k: v for k, v in state.items() if k != "state_sha256"})
    assert merge_document(pn, events, c.ring, c.registry_fps) == (state, cj(state))
