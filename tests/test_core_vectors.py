"""The pure core against real data and the conformance vectors, byte for byte."""

from __future__ import annotations

import base64
import copy
import json

import pytest
from nacl.signing import VerifyKey

from helpers import DATA, REAL_BUNDLE, REAL_RECORD, REAL_STATE_SHA
from pithnode.core import (
    admit,
    canonical_bytes,
    canonical_hash,
    check_bundle,
    check_record_json,
    code_from_digest_hex,
    default_registry_ring,
    merge,
    parse_json,
    parse_pith_ref,
    pith_number_for,
    state_hash,
)
from pithnode.core.conformance import run_vector
from pithnode.core.events import malformed_reason
from pithnode.core.keys import REGISTRY_FINGERPRINT

VECTORS = sorted((DATA / "conformance").glob("*.json"))
REGISTRY = frozenset({REGISTRY_FINGERPRINT})


def jsonl(path):  # type: ignore[no-untyped-def]
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("path", VECTORS, ids=[p.stem for p in VECTORS])
def test_conformance_vector(path):  # type: ignore[no-untyped-def]
    vector = json.loads(path.read_text())
    admission, state = run_vector(vector)
    assert admission == vector["expected"]["admission"]
    assert canonical_bytes(state) == canonical_bytes(vector["expected"]["state"])
    assert state["state_sha256"] == state_hash(state)


def test_vectors_cover_every_rejection_reason_and_invalidity():
    reasons, invalid = set(), set()
    for path in VECTORS:
        v = json.loads(path.read_text())
        reasons |= {a["rejected"] for a in v["expected"]["admission"] if a["rejected"]}
        invalid |= {i["reason"] for i in v["expected"]["state"]["invalid_events"]}
    assert len(reasons) >= 4 and len(invalid) >= 4


def test_real_bundle_verifies_and_reproduces_its_state():
    bundle = json.loads(REAL_BUNDLE.read_text())
    report = check_bundle(bundle, default_registry_ring(), REGISTRY)
    assert report.signature_ok and report.signer_is_registry
    assert all(a.admitted for a in report.admission) and len(report.events) == len(bundle["events"])
    assert report.state["state_sha256"] == REAL_STATE_SHA
    assert canonical_bytes(report.state) == canonical_bytes(bundle["state"])
    # the Pith number derives from the canonical record
    assert pith_number_for(bundle["canonical_record"]) == bundle["pith_number"]


def test_real_bundle_events_each_admitted_and_merge_is_order_free():
    bundle = json.loads(REAL_BUNDLE.read_text())
    ring = default_registry_ring()
    ring.add_entries(bundle["public_keys"])
    for e in bundle["events"]:
        assert admit(e, bundle["pith_number"], ring).admitted
    state = merge(bundle["pith_number"], list(reversed(bundle["events"])), ring, REGISTRY)
    assert state["state_sha256"] == REAL_STATE_SHA


def test_real_record_receipt_verifies_and_a_flipped_byte_fails():
    record = json.loads(REAL_RECORD.read_text())
    ring = default_registry_ring()
    assert check_record_json(record, ring, REGISTRY) is None
    bad = copy.deepcopy(record)
    bad["canonical_record"]["metadata"]["submitted_at"] = bad["canonical_record"]["metadata"]["submitted_at"][:-2] + "01"
    assert check_record_json(bad, ring, REGISTRY) is not None
    sig = bytearray(base64.b64decode(record["receipt"]["signature_b64"]))
    sig[0] ^= 1
    bad = copy.deepcopy(record)
    bad["receipt"]["signature_b64"] = base64.b64encode(bytes(sig)).decode()
    assert check_record_json(bad, ring, REGISTRY) is not None


@pytest.mark.parametrize("name", ["canonical-vectors.jsonl", "canonical-vectors-from-state.jsonl"])
def test_canonical_hash_vectors_from_real_pages(name):  # type: ignore[no-untyped-def]
    vectors = jsonl(DATA / "pith-pages" / name)
    assert len(vectors) >= 10
    for v in vectors:
        digest = canonical_hash(v["canonical_record"])
        assert digest == (v.get("canonical_sha256") or v["computed_canonical_sha256"]), v["pith_number"]
        assert code_from_digest_hex(digest) == v["pith_number"].rsplit(":", 1)[1]
        assert pith_number_for(v["canonical_record"]) == v["pith_number"]


def test_embedded_canonical_records_hash_to_their_file_code():
    files = sorted((DATA / "pith-json").glob("*.canonical_record.json"))
    assert files
    for f in files:
        assert code_from_digest_hex(canonical_hash(json.loads(f.read_text()))) == f.name.split(".")[0], f.name


def test_signature_vectors_verify_under_the_manifest_key():
    manifest = json.loads((DATA / "pith-json" / "pith-mirrors.manifest.json").read_text())
    key = VerifyKey(base64.b64decode(manifest["mirrors"][0]["public_key"]["public_key_b64"]))
    vectors = jsonl(DATA / "pith-json" / "signature-vectors.jsonl")
    assert len(vectors) >= 9
    for v in vectors:
        msg = bytes.fromhex(v["message_hex"])
        key.verify(msg, base64.b64decode(v["signature_b64"]))  # raises if bad
        with pytest.raises(Exception):
            key.verify(bytes([msg[0] ^ 1]) + msg[1:], base64.b64decode(v["signature_b64"]))


@pytest.mark.parametrize("text,code,prefix,year", [
    ("pith:2026:CNPMIFD42NONUMCBYNP4XLPY53", "CNPMIFD42NONUMCBYNP4XLPY53", None, "2026"),
    ("CNPMIFD42NONUMCBYNP4XLPY53", "CNPMIFD42NONUMCBYNP4XLPY53", None, None),
    ("cnpmifd42nonumcbynp4xlpy53", "CNPMIFD42NONUMCBYNP4XLPY53", None, None),
    ("pith:CNPMIFD4", None, "CNPMIFD4", None),
    (" pith:2026:CNPMIFD42NONUMCBYNP4XLPY53 ", "CNPMIFD42NONUMCBYNP4XLPY53", None, "2026"),
])
def test_parse_pith_ref(text, code, prefix, year):  # type: ignore[no-untyped-def]
    ref = parse_pith_ref(text)
    assert (ref.code, ref.prefix, ref.year) == (code, prefix, year)


@pytest.mark.parametrize("text", ["", "pith:", "pith:2026:SHORT", "pith:1:CNPMIFD42NONUMCBYNP4XLPY53",
                                  "CNPMIFD42NONUMCBYNP4XLPY5!", "pith:CNPMIFD1", "2604.21197"])
def test_parse_pith_ref_refuses_with_the_accepted_forms(text):  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="expected pith:YYYY:CODE"):
        parse_pith_ref(text)


def test_malformed_reasons_name_the_field():
    event = json.loads(REAL_BUNDLE.read_text())["events"][0]
    assert malformed_reason(event) is None
    cases = {
        "created_at": "2026-06-26 01:15:56",
        "supersedes": "sha256:abc",
        "prev_event": "sha256:" + "A" * 64,
        "signer": {"signer_id": "x"},
    }
    for field, value in cases.items():
        assert field in (malformed_reason(dict(event, **{field: value})) or ""), field
    missing = {k: v for k, v in event.items() if k != "target"}
    assert "target" in (malformed_reason(missing) or "")
    assert "extra" in (malformed_reason(dict(event, extra=1)) or "")


def test_parse_json_refuses_non_json_constants_and_deep_nesting():
    for bad in (b"NaN", b'{"a": Infinity}', b"[" * 100_000 + b"]" * 100_000, b"\xff"):
        with pytest.raises(ValueError):
            parse_json(bad)
    assert parse_json(b'{"a": [1, "\\u00e9"]}') == {"a": [1, "é"]}


def test_spliced_canonical_bytes_equal_a_full_serialization():
    from pithnode.core.canonical import CanonicalError, canonical_bytes_spliced

    bundle = json.loads(REAL_BUNDLE.read_text())
    parts = [canonical_bytes(e) for e in bundle["events"]]
    assert canonical_bytes_spliced(bundle, "events", parts) == canonical_bytes(bundle)
    tricky = {"a": "\ud800hole\ud800", "events": [], "z": 1}  # the mark itself in the content: no canonical form
    with pytest.raises(CanonicalError):
        canonical_bytes_spliced(tricky, "events", [])
