"""`pithnode verify` and `pithnode conformance`: offline checks, core only."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..core import KeyRing, admit, canonical_bytes, check_bundle, check_record_json, merge, parse_json, state_hash
from ..core.conformance import run_vector
from ..errors import EXIT_PROBLEM
from .common import EXIT_OK, UsageError, config_from, equivocation_line, print_json

VERIFY_HELP = """\
Check Pith documents offline: a bundle (/pith/<CODE>/bundle.json), a record
JSON (/pith/<CODE>.json), a state (/pith/<CODE>/state.json) or a list of
events (or an object holding `events`, with the `public_keys` that verify
them). For a bundle: its signature, every event's admission, and its
published state against our merge of its own events. For a record: its
receipt (a registry signature over the canonical record's SHA-256). For a
state: that state_sha256 is the hash of the rest.
Trusted registry keys come from the config (default: the real registry key).
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("verify", parents=[common], help="verify bundles, records, states or event lists offline",
                       description=VERIFY_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", metavar="FILE", help="JSON file ('-' for standard input)")
    p.add_argument("--subject", metavar="PITH_NUMBER", help="subject for an events list (default: the first event's)")
    p.add_argument("--keys", metavar="FILE", action="append", default=[],
                   help="extra public keys: a bundle, or a JSON list of public_keys entries (repeatable)")
    p.set_defaults(handler=cmd_verify)

    c = sub.add_parser("conformance", parents=[common], help="run conformance vectors through the core",
                       description="Run each vector file in DIR through admission and merge, using only its inputs, "
                                   "and compare with its `expected`. Exit 1 if any disagree.")
    c.add_argument("dir", metavar="DIR", help="directory of *.json vectors (or one vector file)")
    c.set_defaults(handler=cmd_conformance)


def _load(path: str) -> Any:
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return parse_json(data)
    except ValueError as exc:
        raise UsageError(f"{path} is not JSON: {exc}") from exc


def kind_of(doc: Any) -> str:
    if isinstance(doc, list):
        return "events"
    if not isinstance(doc, dict):
        return "unknown"
    if doc.get("bundle_type") == "pith_open_graph_bundle" or ("bundle_signature" in doc and "events" in doc):
        return "bundle"
    if doc.get("state_type") == "pith_open_graph_state":
        return "state"
    if doc.get("record_type") == "pith_number_record" or ("receipt" in doc and "canonical_record" in doc):
        return "record"
    if isinstance(doc.get("events"), list):
        return "events"
    return "unknown"


def _admission_rows(admissions: list[Any]) -> list[dict[str, Any]]:
    return [{"index": i, "event_id": a.event_id, "rejected": a.reason, "detail": a.detail or None}
            for i, a in enumerate(admissions)]


def verify_doc(doc: Any, ring: KeyRing, registry: frozenset[str], subject: str | None = None) -> dict[str, Any]:
    """The verify report of one parsed document; `problems` empty when all verifies."""
    kind = kind_of(doc)
    rep: dict[str, Any] = {"kind": kind, "pith_number": None, "problems": []}
    if kind == "bundle":
        b = check_bundle(doc, ring, registry)
        ours = b.state["state_sha256"] if b.state else None
        rep.update(pith_number=b.pith_number, bundle_sha256=b.bundle_sha256, bundle_signature_ok=b.signature_ok,
                   bundle_signer=b.signer_fingerprint, bundle_signer_is_registry=b.signer_is_registry,
                   admission=_admission_rows(b.admission), state_sha256=ours,
                   published_state_sha256=b.published_state_sha256, state_matches=b.state_matches,
                   events=len(b.admission), problems=b.problems)
        if b.state:
            rep.update(equivocations=b.state["equivocations"], invalid_events=b.state["invalid_events"])
    elif kind == "record":
        problem = check_record_json(doc, ring, registry)
        rep.update(pith_number=doc.get("pith_number"), receipt_ok=problem is None)
        if problem:
            rep["problems"].append(f"receipt: {problem}")
        if isinstance(doc.get("events"), list) and doc["events"]:
            rep.update(_events_report(doc["events"], ring, registry, doc.get("pith_number")))
    elif kind == "state":
        ours = state_hash(doc)
        rep.update(pith_number=doc.get("pith_number"), state_sha256=ours,
                   published_state_sha256=doc.get("state_sha256"), state_matches=ours == doc.get("state_sha256"))
        if not rep["state_matches"]:
            rep["problems"].append("state_sha256 is not the hash of the state")
    elif kind == "events":
        events = doc if isinstance(doc, list) else doc["events"]
        subject = subject or (doc.get("pith_number") if isinstance(doc, dict) else None)
        if isinstance(doc, dict) and isinstance(doc.get("public_keys"), list):  # keys prove themselves (fingerprints)
            ring = ring.merged(KeyRing.from_entries(doc["public_keys"]))
        rep.update(_events_report(events, ring, registry, subject))
    else:
        rep["problems"].append("not a bundle, record, state or events list")
    return rep


def _events_report(events: list[Any], ring: KeyRing, registry: frozenset[str], subject: str | None) -> dict[str, Any]:
    if subject is None:
        first = next((e for e in events if isinstance(e, dict)), {})
        subject = first.get("subject_pith_number") if isinstance(first.get("subject_pith_number"), str) else None
    if subject is None:
        return {"problems": ["cannot tell the subject: pass --subject"]}
    adms = [admit(e, subject, ring) for e in events]
    admitted = [e for e, a in zip(events, adms, strict=True) if a.admitted]
    state = merge(subject, admitted, ring, registry)
    problems = [f"event {i}: {a.reason}: {a.detail}" for i, a in enumerate(adms) if not a.admitted]
    return {"pith_number": subject, "admission": _admission_rows(adms), "state_sha256": state["state_sha256"],
            "events": len(events), "equivocations": state["equivocations"],
            "invalid_events": state["invalid_events"], "problems": problems}


def _print_human(path: str, rep: dict[str, Any]) -> None:
    ok = not rep["problems"]
    print(f"{path}: {rep['kind']} {rep.get('pith_number') or ''} -- {'OK' if ok else 'PROBLEMS'}")
    if "bundle_signature_ok" in rep:
        who = "registry" if rep["bundle_signer_is_registry"] else rep["bundle_signer"]
        print(f"  bundle signature: {'verifies' if rep['bundle_signature_ok'] else 'FAILS'} (signer {who})")
    if "receipt_ok" in rep:
        print(f"  receipt: {'verifies' if rep['receipt_ok'] else 'FAILS'}")
    if "admission" in rep:
        rejected = [a for a in rep["admission"] if a["rejected"]]
        print(f"  events: {rep['events']}, admitted {rep['events'] - len(rejected)}, rejected {len(rejected)}")
        for a in rejected:
            print(f"    #{a['index']}: {a['rejected']} ({a['detail']})")
    if rep.get("equivocations"):
        print(f"  equivocations: {len(rep['equivocations'])}")
        for eq in rep["equivocations"]:
            print(f"    {equivocation_line(eq)}")
    if rep.get("invalid_events"):
        print(f"  invalid events: {len(rep['invalid_events'])}")
    if rep.get("state_sha256"):
        print(f"  state_sha256 (ours):      {rep['state_sha256']}")
    if rep.get("published_state_sha256"):
        print(f"  state_sha256 (published): {rep['published_state_sha256']}"
              f"  {'matches' if rep.get('state_matches') else 'DIFFERS'}")
    for problem in rep["problems"]:
        print(f"  problem: {problem}")


def cmd_verify(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    ring, registry = cfg.trusted_ring(), cfg.registry
    for extra in args.keys:
        doc = _load(extra)
        entries = doc.get("public_keys") if isinstance(doc, dict) else doc
        if not isinstance(entries, list):
            raise UsageError(f"{extra} holds no public_keys list")
        ring.add_entries(entries)
    reports = []
    for path in args.files:
        rep = verify_doc(_load(path), ring, registry, args.subject)
        rep["file"] = path
        reports.append(rep)
    if args.json:
        print_json(reports[0] if len(reports) == 1 else reports)
    else:
        for rep in reports:
            _print_human(rep["file"], rep)
    return EXIT_OK if all(not r["problems"] for r in reports) else EXIT_PROBLEM


def cmd_conformance(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    files = sorted(root.glob("*.json")) if root.is_dir() else [root]
    if not files:
        raise UsageError(f"no *.json vectors in {root}")
    results, failed = [], 0
    for f in files:
        vector = _load(str(f))
        if not isinstance(vector, dict) or not isinstance(vector.get("pith_number"), str):
            raise UsageError(f"{f} is not a conformance vector (no pith_number)")
        admission, state = run_vector(vector)
        expected = vector.get("expected") or {}
        adm_ok = admission == expected.get("admission")
        state_ok = "state" in expected and canonical_bytes(state) == canonical_bytes(expected["state"])
        failed += not (adm_ok and state_ok)
        results.append({"file": f.name, "state_sha256": state["state_sha256"], "admission": admission,
                        "admission_ok": adm_ok, "state_ok": state_ok})
        if not args.json:
            mark = "ok  " if adm_ok and state_ok else "FAIL"
            why = "" if adm_ok and state_ok else \
                f"  (admission {'ok' if adm_ok else 'differs'}, state {'ok' if state_ok else 'differs'})"
            print(f"{mark} {f.name}  state {state['state_sha256'][:16]}{why}")
    if args.json:
        print_json({"vectors": results})
    else:
        print(f"{len(files) - failed} of {len(files)} vectors agree")
    return EXIT_PROBLEM if failed else EXIT_OK

