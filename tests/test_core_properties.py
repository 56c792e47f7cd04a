"""Properties of admission and merge over real signed events (hypothesis)."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import MIRRORS, REG
from pithnode.core import admit, canonical_hash, merge, state_hash
from pithnode.core.events import identity_of
from pithnode.synth import synthetic_subject

PN, BASE = synthetic_subject(REG, 9000, 24, MIRRORS)
GRAPHS = [e for e in BASE if e["event_type"] == "graph_snapshot"]
EXTRA = [
    REG.graph_snapshot(PN, "2026-02-01T00:00:00Z", prev=GRAPHS[1], n_claims=9),  # registry equivocation
    REG.graph_snapshot(PN, "2026-02-01T00:00:01Z", prev=GRAPHS[1], n_claims=10),
    MIRRORS[0].witness(PN, "a" * 64, "2026-02-02T00:00:00Z"),
    MIRRORS[0].witness(PN, "b" * 64, "2026-02-02T00:00:00Z"),  # mirror equivocation (two first witnesses)
    MIRRORS[1].event(PN, "graph_snapshot", "graph", {"graph_snapshot": {}}, "2026-02-03T00:00:00Z"),  # unauthorized
    MIRRORS[1].event(PN, "storage_attestation", "storage", {"stored": "nope"}, "2026-02-04T00:00:00Z"),  # bad payload
    MIRRORS[1].event(PN, "mirror_hint", "graph", {"mirror_type": "https", "base_url": "https://x"}, "2026-02-05T00:00:00Z"),
]
POOL = BASE + EXTRA
RING = REG.ring()
for m in MIRRORS:
    RING.add_raw(m.raw, m.key_id)
REGISTRY = frozenset({REG.fingerprint})

PROFILE = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def state_of(events: list[dict[str, Any]]) -> dict[str, Any]:
    return merge(PN, events, RING, REGISTRY)


@PROFILE
@given(st.lists(st.sampled_from(range(len(POOL))), min_size=1, max_size=40), st.randoms())
def test_state_is_independent_of_order_and_duplicates(indices, rnd):  # type: ignore[no-untyped-def]
    chosen = [POOL[i] for i in indices]
    unique = list({e["event_id"]: e for e in chosen}.values())
    shuffled = chosen + [copy.deepcopy(e) for e in chosen[: len(chosen) // 2]]
    rnd.shuffle(shuffled)
    a, b = state_of(unique), state_of(shuffled)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert a["state_sha256"] == state_hash(a) == canonical_hash({k: v for k, v in a.items() if k != "state_sha256"})


@PROFILE
@given(st.lists(st.sampled_from(range(len(POOL))), min_size=1, max_size=40, unique=True))
def test_equivocation_entries_really_share_a_slot(indices):  # type: ignore[no-untyped-def]
    events = [POOL[i] for i in indices]
    by_id = {e["event_id"]: e for e in events}
    state = state_of(events)
    assert state["equivocation_count"] == len(state["equivocations"])
    for eq in state["equivocations"]:
        members = [by_id[i] for i in eq["event_ids"]]
        assert len(members) >= 2
        slots = {(identity_of(e, REGISTRY), e["target"], e["prev_event"]) for e in members}
        assert slots == {(eq["identity"], eq["target"], eq["prev_event"])}
        assert not set(eq["event_ids"]) & set(state["applied_event_ids"])
    assert state["valid_event_count"] == state["event_count"] - state["invalid_event_count"]


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:  # type: ignore[type-arg]
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in _paths(v, prefix + (k,))]
    if isinstance(obj, list) and obj:
        return [p for i, v in enumerate(obj) for p in _paths(v, prefix + (i,))]
    return [prefix]


def _mutate(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        return value[:-1] + ("A" if not value.endswith("A") else "B") if value else "x"
    if value is None:
        return "x"
    return [1] if value == [] else {"x": 1}


@PROFILE
@given(st.sampled_from(range(len(POOL))), st.data())
def test_changing_any_signed_byte_makes_admission_reject(i, data):  # type: ignore[no-untyped-def]
    event = copy.deepcopy(POOL[i])
    assert admit(event, PN, RING).admitted
    paths = [p for p in _paths(event) if p[0] != "signature" or p[-1] in ("signature_b64", "key_id", "public_key_fingerprint")]
    path = data.draw(st.sampled_from(paths))
    target = event
    for k in path[:-1]:
        target = target[k]
    target[path[-1]] = _mutate(target[path[-1]])
    assert not admit(event, PN, RING).admitted, path


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=6),
                    max_leaves=30))
def test_admission_rejects_garbage_without_raising(obj):  # type: ignore[no-untyped-def]
    adm = admit(obj, PN, RING)
    assert not adm.admitted and adm.reason == "malformed"


@PROFILE
@given(st.sampled_from(range(len(POOL))), st.sampled_from(list(POOL[0])))
def test_an_event_missing_any_field_is_malformed(i, field):  # type: ignore[no-untyped-def]
    event = {k: v for k, v in POOL[i].items() if k != field}
    adm = admit(event, PN, RING)
    assert adm.reason == "malformed" and field in adm.detail
