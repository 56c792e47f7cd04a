"""The pure core against the conformance vectors and real Pith data, byte for byte.

Hashes are also recomputed here with the spec's one-line canonical JSON
(`strategies.cj`), so the core is checked against an independent reading of
the spec, not only against itself.
"""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from helpers import DATA, REAL_BUNDLE, REAL_RECORD, REAL_STATE_SHA
from pithnode.core import (
    KeyRing,
    admit,
    canonical_bytes,
    canonical_hash,
    check_bundle,
    check_record_json,
    code_from_digest_hex,
    default_registry_ring,
    merge,
    merge_document,
    parse_json,
    parse_pith_ref,
    pith_number_for,
    short_pith_number,
    state_hash,
)
from pithnode.core.conformance import run_vector
from pithnode.core.events import malformed_reason
from pithnode.core.keys import REGISTRY_FINGERPRINT, REGISTRY_PUBLIC_KEY_B64, fingerprint_b32, fingerprint_hex
from strategies import cj, content, h

VECTORS = sorted((DATA / "conformance").glob("*.json"))
REGISTRY = frozenset({REGISTRY_FINGERPRINT})
REGISTRY_KEY = VerifyKey(base64.b64decode(REGISTRY_PUBLIC_KEY_B64))
ADMISSION_REASONS = {"malformed", "too_large", "hash_mismatch", "wrong_subject", "bad_signature", "unknown_key"}
INVALID_REASONS = {"unsupported_schema", "unknown_event_type", "target_mismatch", "unauthorized_signer",
                   "bad_record", "bad_payload", "bad_prev", "bad_supersedes"}


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load(path: Path) -> Any:
    return json.loads(path.read_text())


def verifies(key: VerifyKey, message: bytes, signature_b64: str) -> bool:
    try:
        key.verify(message, base64.b64decode(signature_b64))
        return True
    except BadSignatureError:
        return False


def flip_b64(signature_b64: str, byte: int = 0) -> str:
    raw = bytearray(base64.b64decode(signature_b64))
    raw[byte] ^= 1
    return base64.b64encode(bytes(raw)).decode()


# --- conformance vectors ---

def test_there_are_twenty_one_vectors():
    assert [p.name[:2] for p in VECTORS] == [f"{i:02d}" for i in range(1, 22)]


@pytest.mark.parametrize("path", VECTORS, ids=[p.stem for p in VECTORS])
def test_conformance_vector(path: Path) -> None:
    v = load(path)
    expected = v["expected"]
    subject = v["pith_number"]
    ring = KeyRing.from_entries(v["public_keys"])
    # admission, input by input, in order
    assert [a["index"] for a in expected["admission"]] == list(range(len(v["inputs"])))
    events, seen = [], set()
    for obj, want in zip(v["inputs"], expected["admission"]):
        adm = admit(obj, subject, ring)
        assert (adm.event_id, adm.reason) == (want["event_id"], want["rejected"]), want["index"]
        if adm.admitted:
            assert adm.body == cj(obj)  # the stored bytes are CJ(event)
            if adm.event_id not in seen:
                seen.add(adm.event_id)
                events.append(obj)
    # the state, byte for byte, and its hash exactly
    state = merge(subject, events, ring, v["registry_fingerprints"])
    assert cj(state) == cj(expected["state"])
    assert merge_document(subject, events, ring, v["registry_fingerprints"]) == (state, cj(expected["state"]))
    assert state["state_sha256"] == expected["state"]["state_sha256"] == h(
        {k: x for k, x in expected["state"].items() if k != "state_sha256"})
    assert state_hash(state) == state["state_sha256"]
    # arrival order makes no difference; nor does the core's own vector runner
    assert merge(subject, events[::-1], ring, v["registry_fingerprints"]) == state
    admission, state2 = run_vector(v)
    assert admission == expected["admission"] and state2 == state


def test_vectors_cover_every_rejection_and_invalidity_reason_and_equivocation():
    rejected, invalid, equivocations = set(), set(), 0
    for path in VECTORS:
        e = load(path)["expected"]
        rejected |= {a["rejected"] for a in e["admission"] if a["rejected"]}
        invalid |= {x["reason"] for x in e["state"]["invalid_events"]}
        equivocations += e["state"]["equivocation_count"]
    assert rejected == ADMISSION_REASONS
    assert invalid == INVALID_REASONS
    assert equivocations >= 3


# --- the real bundle ---

@pytest.fixture(scope="module")
def bundle() -> dict[str, Any]:
    return load(REAL_BUNDLE)


def test_real_bundle_signature_verifies_with_the_registry_key(bundle: dict[str, Any]) -> None:
    sig = bundle["bundle_signature"]
    digest = h({k: v for k, v in bundle.items() if k != "bundle_signature"})
    assert digest == sig["bundle_sha256"]
    assert sig["public_key_fingerprint"] == REGISTRY_FINGERPRINT == fingerprint_hex(bytes(REGISTRY_KEY))
    assert verifies(REGISTRY_KEY, bytes.fromhex(digest), sig["signature_b64"])
    assert not verifies(REGISTRY_KEY, bytes.fromhex(digest), flip_b64(sig["signature_b64"], 17))
    report = check_bundle(bundle, default_registry_ring(), REGISTRY)
    assert report.problems == []
    assert report.signature_ok and report.signer_is_registry and report.bundle_sha256 == digest


def test_real_bundle_events_are_each_admitted(bundle: dict[str, Any]) -> None:
    ring = default_registry_ring()
    assert ring.add_entries(bundle["public_keys"]) == []
    assert bundle["events"]
    for e in bundle["events"]:
        assert e["content_sha256"] == h(content(e)) and e["event_id"] == "sha256:" + e["content_sha256"]
        adm = admit(e, bundle["pith_number"], ring)
        assert adm.admitted and adm.event_id == e["event_id"], adm


def test_our_merge_reproduces_the_real_state_byte_for_byte(bundle: dict[str, Any]) -> None:
    ring = default_registry_ring()
    state = merge(bundle["pith_number"], bundle["events"], ring, REGISTRY)
    assert state["state_sha256"] == REAL_STATE_SHA == bundle["state"]["state_sha256"]
    assert cj(state) == cj(bundle["state"])
    assert h({k: v for k, v in state.items() if k != "state_sha256"}) == REAL_STATE_SHA
    assert merge(bundle["pith_number"], bundle["events"][::-1] * 2, ring, REGISTRY) == state
    report = check_bundle(bundle, default_registry_ring(), REGISTRY)
    assert report.state == state and report.state_matches and report.published_state_consistent


def test_real_bundle_header_derives_from_its_record(bundle: dict[str, Any]) -> None:
    code = bundle["pith_number"].rsplit(":", 1)[1]
    assert REAL_BUNDLE.name.startswith(code)
    assert h(bundle["canonical_record"]) == bundle["canonical_sha256"]
    assert pith_number_for(bundle["canonical_record"]) == bundle["pith_number"]
    assert short_pith_number(code) == bundle["short_pith_number"]
    assert bundle["source_aliases"] == bundle["state"]["current"]["source_aliases"]


@pytest.mark.parametrize("change", ["built_at", "event_payload", "state", "signature"])
def test_a_changed_real_bundle_fails_its_signature(bundle: dict[str, Any], change: str) -> None:
    bad = copy.deepcopy(bundle)
    if change == "built_at":
        bad["built_at"] = bad["built_at"].replace("2026", "2027")
    elif change == "event_payload":
        bad["events"][0]["payload"]["extra"] = 1
    elif change == "state":
        bad["state"]["event_count"] += 1
    else:
        bad["bundle_signature"]["signature_b64"] = flip_b64(bad["bundle_signature"]["signature_b64"], 40)
    report = check_bundle(bad, default_registry_ring(), REGISTRY)
    assert not report.signature_ok and report.problems


# --- the real record JSON ---

def test_real_record_receipt_verifies() -> None:
    record = load(REAL_RECORD)
    receipt = record["receipt"]
    assert h(record["canonical_record"]) == record["canonical_sha256"] == receipt["canonical_sha256"]
    assert receipt["public_key_fingerprint"] == REGISTRY_FINGERPRINT
    assert verifies(REGISTRY_KEY, bytes.fromhex(record["canonical_sha256"]), receipt["signature_b64"])
    assert check_record_json(record, default_registry_ring(), REGISTRY) is None
    code = record["pith_number"].rsplit(":", 1)[1]
    assert REAL_RECORD.name.startswith(code) and pith_number_for(record["canonical_record"]) == record["pith_number"]
    assert short_pith_number(code) == record["short_pith_number"]


@pytest.mark.parametrize("byte", [0, 31, 63])
def test_real_record_with_a_flipped_signature_byte_fails(byte: int) -> None:
    record = load(REAL_RECORD)
    record["receipt"]["signature_b64"] = flip_b64(record["receipt"]["signature_b64"], byte)
    assert check_record_json(record, default_registry_ring(), REGISTRY) == "receipt signature does not verify"


def test_real_record_with_a_changed_record_or_digest_fails() -> None:
    ring = default_registry_ring()
    record = load(REAL_RECORD)
    bad = copy.deepcopy(record)
    bad["canonical_record"]["metadata"]["primary_cat"] += "x"
    assert check_record_json(bad, ring, REGISTRY) is not None
    bad = copy.deepcopy(record)
    digest = bad["canonical_sha256"]
    bad["canonical_sha256"] = bad["receipt"]["canonical_sha256"] = digest[:-1] + ("0" if digest[-1] != "0" else "1")
    assert check_record_json(bad, ring, REGISTRY) is not None
    # signed by a key that is not a trusted registry key: refused even when it verifies
    assert check_record_json(record, ring, frozenset()) is not None


# --- real page excerpts: canonical hashes, embedded records, signatures ---

@pytest.mark.parametrize("name,count", [("canonical-vectors.jsonl", 46), ("canonical-vectors-from-state.jsonl", 13)])
def test_canonical_hash_vectors_from_real_pages(name: str, count: int) -> None:
    vectors = jsonl(DATA / "pith-pages" / name)
    assert len(vectors) == count
    for v in vectors:
        record, pn = v["canonical_record"], v["pith_number"]
        digest = v.get("canonical_sha256") or v["computed_canonical_sha256"]
        assert canonical_hash(record) == h(record) == digest, pn
        assert code_from_digest_hex(digest) == pn.rsplit(":", 1)[1]
        assert pith_number_for(record) == pn
        assert pn.split(":")[1] == record["metadata"]["submitted_at"][:4]


def test_every_page_vector_names_its_page() -> None:
    pages = {p.name for p in (DATA / "pith-pages").glob("*.txt")}
    for name in ("canonical-vectors.jsonl", "canonical-vectors-from-state.jsonl"):
        for v in jsonl(DATA / "pith-pages" / name):
            code = v["pith_number"].rsplit(":", 1)[1]
            assert code in v["url"] and any(p.startswith(code) for p in pages), v["url"]


PITH_JSON_RECORDS = sorted((DATA / "pith-json").glob("*.canonical_record.json"))


@pytest.mark.parametrize("path", PITH_JSON_RECORDS, ids=[p.name.split(".canonical")[0] for p in PITH_JSON_RECORDS])
def test_embedded_canonical_record_hashes_to_its_file_code(path: Path) -> None:
    record = load(path)
    code = path.name.split(".")[0]
    assert code_from_digest_hex(h(record)) == code
    assert pith_number_for(record) == f"pith:{record['metadata']['submitted_at'][:4]}:{code}"


def test_embedded_records_agree_with_the_page_vectors() -> None:
    by_code = {v["pith_number"].rsplit(":", 1)[1]: v["canonical_record"]
               for name in ("canonical-vectors.jsonl", "canonical-vectors-from-state.jsonl")
               for v in jsonl(DATA / "pith-pages" / name)}
    shared = [p for p in PITH_JSON_RECORDS if p.name.split(".")[0] in by_code]
    assert len(PITH_JSON_RECORDS) >= 50 and shared
    for p in shared:
        assert cj(load(p)) == cj(by_code[p.name.split(".")[0]]), p.name


def test_manifest_key_is_the_registry_key() -> None:
    manifest = load(DATA / "pith-json" / "pith-mirrors.manifest.json")
    key = manifest["mirrors"][0]["public_key"]
    raw = base64.b64decode(key["public_key_b64"])
    assert raw.hex() == key["public_key_hex"] and key["public_key_b64"] == REGISTRY_PUBLIC_KEY_B64
    assert fingerprint_hex(raw) == key["fingerprint_sha256_hex"] == REGISTRY_FINGERPRINT
    assert fingerprint_b32(raw) == key["fingerprint_sha256_b32_first128bits"]
    assert key["key_id"] == "pith-v1-2026-05"


SIGNATURE_VECTORS = jsonl(DATA / "pith-json" / "signature-vectors.jsonl")


@pytest.mark.parametrize("v", SIGNATURE_VECTORS, ids=[f"{v['kind']}-{i}" for i, v in enumerate(SIGNATURE_VECTORS)])
def test_signature_vector(v: dict[str, Any]) -> None:
    msg = bytes.fromhex(v["message_hex"])
    assert len(msg) == 32 and v["key_id"] == "pith-v1-2026-05" and v["ed25519_verifies"] is True
    assert verifies(REGISTRY_KEY, msg, v["signature_b64"])
    assert not verifies(REGISTRY_KEY, bytes([msg[0] ^ 1]) + msg[1:], v["signature_b64"])
    assert not verifies(REGISTRY_KEY, msg, flip_b64(v["signature_b64"], 63))
    assert not verifies(REGISTRY_KEY, v["message_hex"].encode(), v["signature_b64"])  # the raw bytes, not the hex text
    if v["kind"] == "pith_receipt":  # the signed digest is the record's canonical_sha256: it derives the code
        assert code_from_digest_hex(v["message_hex"]) == v["pith_number"].rsplit(":", 1)[1]
        ring = default_registry_ring()
        assert ring.verify(REGISTRY_FINGERPRINT, msg, v["signature_b64"])


def test_signature_vectors_hold_receipts_and_integrity_events() -> None:
    kinds = [v["kind"] for v in SIGNATURE_VECTORS]
    assert kinds.count("pith_receipt") == 7 and kinds.count("pith.integrity.v1 event") == 2


# --- Pith number forms ---

FULL = "pith:2026:CNPMIFD42NONUMCBYNP4XLPY53"
CODE = "CNPMIFD42NONUMCBYNP4XLPY53"


@pytest.mark.parametrize("text,code,prefix,year", [
    (FULL, CODE, None, "2026"),
    ("PITH:2026:" + CODE.lower(), CODE, None, "2026"),
    (" " + FULL + "\n", CODE, None, "2026"),
    (CODE, CODE, None, None),
    (CODE.lower(), CODE, None, None),
    ("pith:CNPMIFD4", None, "CNPMIFD4", None),
    ("pith:cnpmifd4", None, "CNPMIFD4", None),
    ("pith:CNPMIFD42NON", None, "CNPMIFD42NON", None),
    ("pith:C", None, "C", None),
])
def test_parse_pith_ref(text: str, code: str | None, prefix: str | None, year: str | None) -> None:
    ref = parse_pith_ref(text)
    assert (ref.code, ref.prefix, ref.year) == (code, prefix, year)
    assert ref.pith_number == (f"pith:{year}:{code}" if year else None)


@pytest.mark.parametrize("text", [
    "", "   ", "pith:", "pith:2026:", "pith:2026:SHORT", "pith:1:" + CODE, "pith:20266:" + CODE,
    CODE[:-1] + "!", CODE + "A", CODE[:-1], "pith:CNPMIFD1", "pith:2026:CNPMIFD4", "2604.21197",
    "sha256:" + "a" * 64, "pith:" + CODE + "A", "urn:2026:" + CODE,
])
def test_parse_pith_ref_refuses_other_forms_naming_the_accepted_ones(text: str) -> None:
    with pytest.raises(ValueError, match="expected pith:YYYY:CODE, pith:XXXXXXXX or a 26-character code"):
        parse_pith_ref(text)


# --- malformed events: the reason names the field ---

@pytest.fixture(scope="module")
def event() -> dict[str, Any]:
    return load(REAL_BUNDLE)["events"][0]


def _with(event: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    e = copy.deepcopy(event)
    parent = e
    for k in path[:-1]:
        parent = parent[k]
    parent[path[-1]] = value
    return e


@pytest.mark.parametrize("path,value,named", [
    (("event_type",), 1, "event_type"),
    (("subject_pith_number",), None, "subject_pith_number"),
    (("target",), ["record"], "target"),
    (("schema_version",), 1.0, "schema_version"),
    (("content_sha256",), 0, "content_sha256"),
    (("event_id",), None, "event_id"),
    (("signer",), "registry", "signer"),
    (("signer",), {"signer_id": "x"}, "signer"),
    (("signer", "key_id"), 5, "signer.key_id"),
    (("created_at",), "2026-06-26 01:15:56", "created_at"),
    (("created_at",), "2026-02-30T01:15:56Z", "created_at"),
    (("created_at",), "2026-06-26T01:15:56.000Z", "created_at"),
    (("supersedes",), "sha256:abc", "supersedes"),
    (("supersedes",), ["sha256:" + "a" * 63], "supersedes"),
    (("prev_event",), "sha256:" + "A" * 64, "prev_event"),
    (("prev_event",), "", "prev_event"),
    (("signature",), None, "signature"),
    (("signature", "algorithm"), "rsa", "signature.algorithm"),
    (("signature", "signature_b64"), None, "signature.signature_b64"),
    (("signature", "key_id"), [], "signature.key_id"),
    (("payload", "canonical_sha256"), 1.5, "float"),
    (("payload", "n"), 2**53 + 1, "integer out of range"),
])
def test_malformed_reason_names_the_field(event: dict[str, Any], path: tuple[str, ...], value: Any, named: str) -> None:
    assert malformed_reason(event) is None
    bad = _with(event, path, value)
    why = malformed_reason(bad)
    assert why is not None and named in why, why
    adm = admit(bad, event["subject_pith_number"], default_registry_ring())
    assert adm.reason == "malformed" and adm.detail == why


def test_missing_and_extra_fields_are_named(event: dict[str, Any]) -> None:
    why = malformed_reason({k: v for k, v in event.items() if k != "target"}) or ""
    assert "missing ['target']" in why
    assert "unexpected ['extra']" in (malformed_reason({**event, "extra": 1}) or "")
    assert malformed_reason([event]) == "event is not an object"


def test_nesting_deeper_than_64_is_malformed_and_a_lone_surrogate_too(event: dict[str, Any]) -> None:
    def nest(n: int) -> Any:
        v: Any = "leaf"
        for _ in range(n):
            v = [v]
        return v

    ring = default_registry_ring()
    pn = event["subject_pith_number"]
    # the event is level 1 and its payload level 2: 62 more arrays reach 64, one more is too deep
    assert malformed_reason(_with(event, ("payload", "deep"), nest(62))) is None
    assert "nesting deeper than 64" in (malformed_reason(_with(event, ("payload", "deep"), nest(63))) or "")
    assert admit(_with(event, ("payload", "deep"), nest(10_000)), pn, ring).reason == "malformed"
    adm = admit(_with(event, ("payload", "note"), "\ud800"), pn, ring)
    assert adm.reason == "malformed" and "surrogate" in adm.detail


def test_too_large_is_counted_on_the_canonical_event(event: dict[str, Any]) -> None:
    ring = default_registry_ring()
    pn = event["subject_pith_number"]
    room = 262_144 - len(cj(_with(event, ("payload", "pad"), "")))
    assert admit(_with(event, ("payload", "pad"), "x" * room), pn, ring).reason == "hash_mismatch"  # exactly at the cap
    assert admit(_with(event, ("payload", "pad"), "x" * (room + 1)), pn, ring).reason == "too_large"


# --- parsing and canonical bytes ---

def test_parse_json_refuses_non_json_constants_and_deep_nesting() -> None:
    for bad in (b"NaN", b'{"a": Infinity}', b"[-Infinity]", b"[" * 100_000 + b"]" * 100_000, b"\xff", b"{"):
        with pytest.raises(ValueError):
            parse_json(bad)
    assert parse_json(b'{"a": [1, "\\u00e9"]}') == {"a": [1, "é"]}


def test_parse_json_reads_bytes_in_every_encoding_json_loads_reads() -> None:
    doc = {"a": [1, 2.5, "é\u2028", None], "b": {"c": "\U0001f600"}}  # a float survives parsing
    text = json.dumps(doc, ensure_ascii=False)
    for data in (text, text.encode("utf-8"), text.encode("utf-8-sig"), text.encode("utf-16"), text.encode("utf-32"),
                 text.encode("utf-16-le"), json.dumps(doc).encode("ascii")):
        assert parse_json(data) == json.loads(data) == doc
    assert parse_json(b'["\\ud800"]') == json.loads(b'["\\ud800"]') == ["\ud800"]  # admission refuses it later


def test_canonical_bytes_are_the_spec_serialization() -> None:
    value = {"é": ["ü", 1, True, None, {"b": 2, "a": "\u2028"}], "A": "\x7f", "z": -0}
    assert canonical_bytes(value) == cj(value) == '{"A":"\x7f","z":0,"é":["ü",1,true,null,{"a":"\u2028","b":2}]}'.encode()
    assert canonical_hash(value) == h(value)


def test_spliced_canonical_bytes_equal_a_full_serialization(bundle: dict[str, Any]) -> None:
    from pithnode.core.canonical import CanonicalError, canonical_bytes_spliced

    parts = [canonical_bytes(e) for e in bundle["events"]]
    assert canonical_bytes_spliced(bundle, "events", parts) == canonical_bytes(bundle)
    tricky = {"a": "\ud800hole\ud800", "events": [], "z": 1}  # the mark itself in the content: no canonical form
    with pytest.raises(CanonicalError):
        canonical_bytes_spliced(tricky, "events", [])


@pytest.mark.parametrize("payload", [
    {"signer": {"key_id": "nested"}},
    {"z": {"signer": {"key_id": ',"signer":{"key_id":"'}}, "signature": {"signer": {"key_id": 1}}},
    {"event_id": "x", "content_sha256": "y", "created_at": "z", "note": 'é ü \u2028 ☃ "quoted" \\ '},
    {},
])
def test_admission_keeps_exactly_the_canonical_bytes(payload: dict[str, Any]) -> None:
    from strategies import cast, sign_event

    c = cast()
    m = c.mirrors[0]
    body = {"event_type": "citation_signature", "subject_pith_number": c.subject, "target": "citation",
            "payload": payload, "signer": {"signer_id": 'a "quoted", id', "signer_type": "pith_mirror",
                                           "key_id": m.key_id, "public_key_fingerprint": m.fingerprint},
            "created_at": "2026-03-01T00:00:00Z", "supersedes": [], "prev_event": None, "schema_version": "1.0"}
    event = sign_event(m, body, signed_at='odd "signed_at" ü')
    adm = admit(event, c.subject, c.ring)
    assert adm.admitted and adm.body == cj(event) == canonical_bytes(event)


# --- the spec's pinned rules, each exactly as written ---

# Every example the spec gives (2.2, HTTP URL), and the edges of each part of its pattern.
URLS = [
    ("http://h.test", True), ("https://h.test/", True), ("http://[::1]:80/x", True), ("https://h.test:99999/ü", True),
    ("https://h.test?q=1#f", True), ("https://h.test#", True), ("http://a.b-c_d~e:1", True),
    ("https://[2001:DB8::1]/", True), ("https://h.test:12345", True),
    ("HTTPS://h.test", False), (" https://h.test", False), ("\x01https://h.test", False), ("https://h.test\t", False),
    ("https://h.\ttest/", False), ("https://h.test/\n", False), ("https://h.test\n", False), ("https://", False),
    ("https:///p", False), ("http://:80/", False), ("https://user@h.test", False), ("https://münchen.test/", False),
    ("https://h.test/a b", False), ("https://h.test/\x7f", False), ("https://h.test:123456", False),
    ("https://h.test:", False), ("ftp://h.test", False), ("https:h.test", False), ("https://h.test\\x", False),
    ("https://[]/", False), ("https://[::1", False), ("https://[::g]/", False), ("https://h.test/ü\u2028", True),
    ("https://h.test/\u00a0", True), ("https://h\u0661.test", False), ("https://h.test:\u0661\u0662", False), (None, False),
]


@pytest.mark.parametrize("url,ok", URLS, ids=[repr(u) for u, _ in URLS])
def test_http_url_rule_is_the_spec_pattern(url: Any, ok: bool) -> None:
    from pithnode.core.merge import _payload_ok

    assert _payload_ok("mirror_hint", {"mirror_type": "https", "base_url": url}) is ok
    stored = {"kind": "canonical_record", "sha256": "a" * 64}
    assert _payload_ok("storage_attestation", {"stored": stored, "location": url}) is ok


@pytest.mark.parametrize("text,raw", [
    ("AAAA", b"\0\0\0"), ("AA==", b"\0"), ("AB==", b"\0"), ("AAA=", b"\0\0"), ("", b""), ("+/+/", b"\xfb\xff\xbf"),
    ("AAAA====", None), ("AA=", None), ("AAA", None), ("AA==AA==", None), ("A===", None), ("AAAA\n", None),
    (" AAAA", None), ("AA-_", None), ("====", None), ("AA=A", None), ("\u0661AAA", None), (b"AAAA", None),
])
def test_strict_base64_is_the_spec_alphabet_and_padding(text: Any, raw: bytes | None) -> None:
    from pithnode.core.keys import b64decode_strict

    assert b64decode_strict(text) == raw


def _entry(raw: bytes, **members: Any) -> dict[str, Any]:
    return {"algorithm": "ed25519", "fingerprint_sha256_hex": fingerprint_hex(raw), **members}


def test_key_ring_entries_follow_the_spec_rule() -> None:
    from pithnode.core.keys import key_from_entry

    raw = bytes(range(32))
    b64 = base64.b64encode(raw).decode()
    fp = fingerprint_hex(raw)
    used = [
        _entry(raw, public_key_b64=b64),
        _entry(raw, public_key_hex=raw.hex()),
        _entry(raw, public_key_b64="!", public_key_hex=raw.hex()),  # not strict base64: the hex is read
        _entry(raw, public_key_b64=b64 + "=", public_key_hex=raw.hex()),  # excess padding is not strict base64
        {"public_key_b64": b64},  # no claimed fingerprint, no algorithm: named by its key
    ]
    for e in used:
        assert key_from_entry(e) == (fp, raw), e
    ignored = [
        _entry(raw, public_key_hex=raw.hex().upper()),
        _entry(raw, public_key_hex=" ".join(raw.hex()[i:i + 8] for i in range(0, 64, 8))),
        _entry(raw, public_key_hex=raw.hex() + "\n"),
        _entry(raw, public_key_b64=b64 + "=="),
        _entry(raw, public_key_b64=base64.urlsafe_b64encode(raw).decode().replace("A", "_")),
        _entry(raw, public_key_b64=base64.b64encode(raw[:16]).decode(), public_key_hex=raw.hex()),  # strict, not 32 bytes
        {**_entry(raw, public_key_b64=b64), "algorithm": "Ed25519"},
        {**_entry(raw, public_key_b64=b64), "fingerprint_sha256_hex": fp.upper()},
        {**_entry(raw, public_key_b64=b64), "fingerprint_sha256_hex": None},
        [b64], b64, None,
    ]
    for e in ignored:
        assert key_from_entry(e) is None, e
    ring = KeyRing.from_entries(ignored + used)
    assert list(ring) == [fp]

