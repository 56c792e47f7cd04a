"""Ingest's pure decision (core/ingest_plan.py) on plain values: no store, no clock.

What a batch of admitted events does (which are stored, refused over a quota,
known already; which state stands, is reused or merged) and what a bundle tells
of its source (rollback, freeze, disagreement, evidence kept)."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from pithnode.core import Admission, BundleReport
from pithnode.core.ingest_plan import (
    MAX_KEPT_BUNDLES,
    Admitted,
    Batch,
    BundleFacts,
    Quotas,
    Snapshot,
    decide,
    rejections,
)

PN = "pith:2026:" + "A" * 26
NOW = "2026-12-03T10:00:00Z"
REGISTRY = frozenset({"reg"})
SOURCE = "https://mirror.test/b.json"


def ev(n: int, signer: str = "m1", receipt: str | None = None) -> Admitted:
    eid = "sha256:" + hashlib.sha256(str(n).encode()).hexdigest()
    kind = "record_created" if receipt else "graph_snapshot"
    return Admitted(eid, NOW, kind, signer, b"{}", receipt)


def bundle(events: list[Admitted], *, state: dict | None = None, published: str | None = None,
           consistent: bool = True, signature_ok: bool = True, built_at: str | None = NOW,
           has_state: bool = True) -> BundleFacts:
    report = BundleReport(PN, bundle_sha256="b" * 64, signature_ok=signature_ok,
                          admission=[Admission(e.event_id) for e in events],
                          events=[{"event_id": e.event_id} for e in events], state=state,
                          published_state_sha256=published, published_state_consistent=consistent)
    return BundleFacts(report, built_at, has_state)


def test_nothing_admitted_for_an_unknown_subject_records_only_the_rejections():
    rejected = rejections([Admission(None, "bad_signature", "no")], [{"event_id": "sha256:x"}])
    plan = decide(Batch(PN, "peer", NOW, REGISTRY, [], rejected), Snapshot())
    assert plan.rejections == [("sha256:x", "bad_signature", "no")]
    assert not plan.store_subject and not plan.events and plan.keys == []


def test_a_held_state_stands_when_nothing_is_new_and_is_merged_again_when_something_is():
    events = [ev(1), ev(2)]
    held = Snapshot(subject_id=7, event_count=2, state_sha256="s1", known=frozenset(e.event_id for e in events))
    plan = decide(Batch(PN, "peer", NOW, REGISTRY, events), held)
    assert (plan.merge, plan.state_sha256, plan.events, plan.known) == ("keep", "s1", [], 2)
    plan = decide(Batch(PN, "peer", NOW, REGISTRY, [*events, ev(3)]), held)
    assert plan.merge == "merge" and plan.events == [ev(3)] and plan.known == 2


def test_a_bulk_sync_leaves_the_merge_pending_and_keeps_the_stored_state():
    plan = decide(Batch(PN, "peer", NOW, REGISTRY, [ev(1)], merge=False),
                  Snapshot(subject_id=7, event_count=1, state_sha256="s1"))
    assert (plan.merge, plan.state_sha256, [e.event_id for e in plan.events]) == ("pending", "s1", [ev(1).event_id])


def test_the_sources_merge_is_reused_only_when_the_store_held_nothing_and_takes_every_event():
    events = [ev(1), ev(2)]
    facts = bundle(events, state={"state_sha256": "m"}, published="m")
    assert decide(Batch(PN, SOURCE, NOW, REGISTRY, events, bundle=facts), Snapshot()).merge == "reuse"
    one_known = Snapshot(subject_id=7, known=frozenset({events[0].event_id}))
    assert decide(Batch(PN, SOURCE, NOW, REGISTRY, events, bundle=facts), one_known).merge == "merge"
    loose = decide(Batch(PN, SOURCE, NOW, REGISTRY, events), Snapshot())  # no bundle: no merge to reuse
    assert loose.merge == "merge"


def test_the_keys_stored_are_the_signers_and_the_registry_key_of_a_receipt():
    plan = decide(Batch(PN, "peer", NOW, REGISTRY, [ev(1, "m2", receipt="reg"), ev(2, "m1", receipt="other")]),
                  Snapshot())
    assert plan.keys == ["m1", "m2", "reg"]


def test_events_over_a_quota_are_refused_flagged_and_reported_as_a_flood():
    events = [ev(1, "m1"), ev(2, "m2"), ev(3, "m3"), ev(4, "reg")]
    snap = Snapshot(subject_id=7, event_count=1, state_sha256="s", signer_counts={"m1": 1})
    plan = decide(Batch(PN, "peer", NOW, REGISTRY, events, quotas=Quotas(2, 5)), snap)
    assert [e.signer_fp for e in plan.events] == ["m1", "m2", "reg"]
    assert plan.quota_refusals == [(ev(3).event_id, "quota", "over the quota for signer m3")]
    assert plan.flags == ["flood"] and plan.flood is not None
    assert plan.flood.dedupe == f"flood|{PN}|{NOW[:13]}" and plan.flood.detail["signers"] == ["m3"]
    assert plan.merge == "merge"


def _plain_rule(quotas: Quotas, counts: dict[str, int], signers: list[str]) -> list[bool]:
    """The rule as the spec of our quotas says it, applied event by event to everything stored."""
    counts, out = dict(counts), []
    for fp in signers:
        others = {f for f in counts if f not in REGISTRY}
        ok = fp in REGISTRY or (counts.get(fp, 0) < quotas.max_events_per_signer
                                and (fp in counts or len(others) < quotas.max_signers_per_subject))
        if ok:
            counts[fp] = counts.get(fp, 0) + 1
        out.append(not ok)
    return out


signer = st.sampled_from(["reg", "m1", "m2", "m3", "m4", "m5"])


@given(st.integers(1, 6), st.integers(1, 6), st.dictionaries(signer, st.integers(1, 8)),
       st.lists(signer, max_size=12))
def test_quotas_refuse_what_the_plain_rule_refuses_and_nothing_while_they_cannot_bind(
        max_signers: int, max_events: int, counts: dict[str, int], signers: list[str]) -> None:
    quotas = Quotas(max_signers, max_events)
    assert quotas.refused(counts, signers, REGISTRY) == _plain_rule(quotas, counts, signers)
    if not quotas.may_bind(sum(counts.values()), signers, REGISTRY):  # counts not read: none may be refused
        assert not any(_plain_rule(quotas, counts, signers))


@given(st.lists(st.integers(0, 30), max_size=20), st.sets(st.integers(0, 30), max_size=10))
def test_each_event_is_stored_once_known_or_new_never_both(numbers: list[int], held: set[int]) -> None:
    events = [ev(n) for n in numbers]
    snap = Snapshot(subject_id=1, event_count=len(held), state_sha256="s",
                    known=frozenset(ev(n).event_id for n in held))
    plan = decide(Batch(PN, "peer", NOW, REGISTRY, events), snap)
    stored = [e.event_id for e in plan.events]
    assert len(stored) == len(set(stored)) and not set(stored) & snap.known
    assert set(stored) == {e.event_id for e in events} - snap.known
    assert plan.known == len(events) - len(stored)
    assert plan.merge == ("keep" if not stored else "merge")


def test_a_source_withholding_what_it_served_before_is_flagged_as_a_rollback():
    served = [ev(1), ev(2)]
    facts = bundle(served, state={"state_sha256": "s"}, published="s")  # an honest state: no disagreement
    snap = Snapshot(subject_id=7, event_count=3, state_sha256="s", known=frozenset(e.event_id for e in served),
                    from_source=frozenset({ev(0).event_id, ev(1).event_id}))
    plan = decide(Batch(PN, SOURCE, NOW, REGISTRY, served, bundle=facts), snap)
    assert plan.flags == ["rollback"]
    (report,) = plan.source_reports
    assert report.kind == "rollback" and report.detail["missing"] == [ev(0).event_id]
    assert report.dedupe == f"rollback|{PN}|{SOURCE}|2|2"
    honest = Snapshot(subject_id=7, from_source=frozenset({ev(1).event_id}))
    assert decide(Batch(PN, SOURCE, NOW, REGISTRY, served, bundle=facts), honest).flags == []


def test_a_source_whose_bundle_stopped_two_days_behind_another_is_stale():
    events = [ev(1)]

    def flags(other_built: str) -> list[str]:
        snap = Snapshot(subject_id=7, other_sources=(("https://other.test/b.json", other_built),))
        facts = bundle(events, built_at="2026-12-01T00:00:00Z")
        return decide(Batch(PN, SOURCE, NOW, REGISTRY, events, bundle=facts), snap).flags

    assert flags("2026-12-03T00:00:01Z") == ["stale"]  # 48 h and a second later
    assert flags("2026-12-03T00:00:00Z") == []
    assert flags("not a time") == []


def test_a_disagreeing_bundle_is_reported_and_only_its_sources_first_few_are_kept_as_evidence():
    events = [ev(1)]
    lie = bundle(events, state={"state_sha256": "ours"}, published="theirs")
    for rank in range(MAX_KEPT_BUNDLES + 1):
        plan = decide(Batch(PN, SOURCE, NOW, REGISTRY, events, bundle=lie), Snapshot(evidence_kept=rank))
        (report,) = plan.source_reports
        assert report.kind == "disagreement" and report.detail["merge_of_its_events_sha256"] == "ours"
        assert report.dedupe == f"disagreement|{PN}|{SOURCE}|theirs"
        assert report.detail["bundle_kept"] == (rank < MAX_KEPT_BUNDLES)
        assert plan.evidence == (f"{report.dedupe}|bundle" if rank < MAX_KEPT_BUNDLES else None)
    unsigned = bundle(events, state={"state_sha256": "ours"}, published="theirs", signature_ok=False)
    assert decide(Batch(PN, SOURCE, NOW, REGISTRY, events, bundle=unsigned), Snapshot()).evidence is None
    honest = bundle(events, state={"state_sha256": "ours"}, published="ours")
    assert decide(Batch(PN, SOURCE, NOW, REGISTRY, events, bundle=honest), Snapshot()).source_reports == []
