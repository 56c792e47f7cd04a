"""Hypothesis strategies for the protocol core: real events, really signed.

Every event drawn here is signed with an Ed25519 key of a `pithnode.testing.synth`
signer (keys derive from names and are built once per process). Hashing and
signing use this module's own canonical JSON (`cj`, written from the spec's
one-line definition), not the core's, so admission is checked against an
independent implementation.

Settings profiles are registered here (the project has no shared conftest for
them) and one is loaded on import: `HYPOTHESIS_PROFILE` names it, default "ci"
(small enough for the core property tests to run in well under a minute on two
cores); "dev" and "thorough" search harder.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from pithnode.core import KeyRing
from pithnode.testing.synth import Signer, SynthMirror, SynthRegistry

_COMMON = dict(deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=100, **_COMMON)  # type: ignore[arg-type]
settings.register_profile("dev", max_examples=200, **_COMMON)  # type: ignore[arg-type]
settings.register_profile("thorough", max_examples=2000, **_COMMON)  # type: ignore[arg-type]
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def scaled(factor: float) -> int:
    """`factor` times the loaded profile's example count (cheap tests run more)."""
    return max(1, int(settings.default.max_examples * factor))


# --- canonical JSON, from the spec's definition (independent of pithnode.core) ---

def cj(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def h(value: Any) -> str:
    return hashlib.sha256(cj(value)).hexdigest()


UNHASHED = ("signature", "content_sha256", "event_id")


def content(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k not in UNHASHED}


# --- the cast: signers, key ring, subject (built once) ---

TARGETS = {
    "record_created": "record", "graph_snapshot": "graph", "author_attestation": "author",
    "timestamp_anchor": "timestamp", "storage_attestation": "storage", "citation_signature": "citation",
    "replication_record": "replication", "correction": "correction", "mirror_hint": "mirror",
}
SUBJECT_N = 4242


@dataclass(frozen=True)
class Cast:
    registry: SynthRegistry  # trusted
    registry2: SynthRegistry  # trusted too (a rotated registry key: the same identity)
    mirrors: tuple[SynthMirror, ...]
    stranger: SynthMirror  # its key is in no ring: unknown_key
    ring: KeyRing
    registry_fps: frozenset[str]
    subject: str
    other_subject: str
    record_payload: dict[str, Any]  # a valid record_created payload for `subject`
    digest: str  # its canonical_sha256

    @property
    def signers(self) -> tuple[Signer, ...]:
        """Signers whose keys the ring holds."""
        return (self.registry, self.registry2, *self.mirrors)

    def identity(self, event: dict[str, Any]) -> str:
        fp = event["signer"]["public_key_fingerprint"]
        return "registry" if fp in self.registry_fps else fp


@lru_cache(maxsize=None)
def cast() -> Cast:
    reg, reg2 = SynthRegistry("prop-registry"), SynthRegistry("prop-registry-2", "registry2.test")
    mirrors = (SynthMirror("prop-mirror-a"), SynthMirror("prop-mirror-b"))
    ring = KeyRing()
    for s in (reg, reg2, *mirrors):
        ring.add_raw(s.raw, s.key_id)
    pn, rec = reg.record_created(SUBJECT_N)
    other, _ = reg.record_created(SUBJECT_N + 1)
    return Cast(reg, reg2, mirrors, SynthMirror("prop-stranger"), ring, frozenset({reg.fingerprint, reg2.fingerprint}),
                pn, other, rec["payload"], rec["payload"]["canonical_sha256"])


def sign_event(signer: Signer, body: dict[str, Any], *, signed_at: str = "2026-03-01T00:00:00.000000Z") -> dict[str, Any]:
    """Sign `body` (the hashed fields) as `signer`: content_sha256 = H(body),
    Ed25519 over its 32 raw bytes."""
    digest = h(body)
    return {
        **body,
        "signature": {
            "signature_status": "signed_v1", "algorithm": "ed25519",
            "key_id": signer.key_id, "public_key_fingerprint": signer.fingerprint,
            "signature_b64": base64.b64encode(signer.key.sign(bytes.fromhex(digest)).signature).decode(),
            "signed_message": "open_graph_event_sha256_bytes", "signed_at": signed_at,
        },
        "content_sha256": digest,
        "event_id": "sha256:" + digest,
    }


def rehash(event: dict[str, Any]) -> dict[str, Any]:
    """`event` with content_sha256/event_id recomputed for its (changed) content, signature kept."""
    digest = h(content(event))
    return {**event, "content_sha256": digest, "event_id": "sha256:" + digest}


# --- strategies ---

TIMES = [f"2026-03-01T00:00:{s:02d}Z" for s in range(8)]  # few instants: ties broken by event_id
absent_ids = st.binary(min_size=32, max_size=32).map(lambda b: "sha256:" + b.hex())  # events that never arrive
_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=8)
# keys that also name event members: the event's canonical bytes must not be fooled by them
_keys = st.sampled_from(["signer", "key_id", "signature", "event_id", "created_at", "content_sha256"]) | _text
signable = st.recursive(  # JSON values a signed event may hold (no floats, no lone surrogates)
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | _text | st.just(',"signer":{"key_id":"'),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(_keys, kids, max_size=3),
    max_leaves=8,
)


def _good_payload(draw: st.DrawFn, c: Cast, etype: str) -> dict[str, Any]:
    n = draw(st.integers(0, 3))  # distinguishes otherwise equal events (or not: equal content is one event)
    if etype == "record_created":
        return c.record_payload
    if etype == "graph_snapshot":
        return {"graph_snapshot": {"claims": n}}
    if etype == "timestamp_anchor":
        return {"anchor_type": "witness", "anchored": {"kind": "canonical_record", "sha256": c.digest}, "proof_b64": None}
    if etype == "storage_attestation":
        return {"stored": {"kind": "canonical_record", "sha256": c.digest}, "location": f"https://m{n}.test/b.json"}
    if etype == "mirror_hint":
        return {"mirror_type": "https", "base_url": f"https://m{n}.test"}
    return {"n": n}


def _bad_record_payload(draw: st.DrawFn, c: Cast) -> dict[str, Any]:
    p = dict(c.record_payload)
    how = draw(st.sampled_from(["version", "receipt", "digest", "source"]))
    if how == "version":
        p["source_version"] = str(p["source_version"])
    elif how == "receipt":
        sig = bytearray(base64.b64decode(p["receipt"]["signature_b64"]))
        sig[draw(st.integers(0, 63))] ^= 1
        p["receipt"] = {**p["receipt"], "signature_b64": base64.b64encode(bytes(sig)).decode()}
    elif how == "digest":
        p["canonical_sha256"] = "0" * 64
    else:
        p["source_id"] = p["source_id"] + "9"
    return p


def _rarely(draw: st.DrawFn, one_in: int) -> bool:
    # hypothesis favours 0 (it shrinks there): 0 is the common case
    return draw(st.integers(0, one_in - 1)) == one_in - 1


_by_key_id: dict[str, Signer] = {}


def _signer_of(event: dict[str, Any]) -> Signer:
    if not _by_key_id:
        c = cast()
        _by_key_id.update({s.key_id: s for s in (*c.signers, c.stranger)})
    return _by_key_id[event["signer"]["key_id"]]


@st.composite
def signed_event(draw: st.DrawFn, prior: list[dict[str, Any]], *, wild: bool = True,
                 fork_of: dict[str, Any] | None = None) -> dict[str, Any]:
    """One really signed event for the cast's subject. Its prev_event and
    supersedes name `prior` events, absent ones or nothing. With `wild`, it may
    also be invalid inside the state (wrong schema, unknown type, wrong
    target, bad payload) or be signed by a key no ring holds. A `fork_of`
    event gives its signer, type, target and prev_event: a second successor
    of the same position (an equivocation, when both are valid)."""
    c = cast()
    if fork_of is not None:
        etype, signer, target = fork_of["event_type"], _signer_of(fork_of), fork_of["target"]
    else:
        etype = draw(st.sampled_from([*TARGETS, "unknown_type"] if wild else list(TARGETS)))
        signer = draw(st.sampled_from([*c.signers, c.stranger] if wild else list(c.signers)))
        target = TARGETS.get(etype, "graph")
        if wild and _rarely(draw, 12):
            target = draw(st.sampled_from(sorted(set(TARGETS.values()))))
    payload_kind = "good" if not wild or not _rarely(draw, 4) else draw(st.sampled_from(["bad", "any"]))
    if payload_kind == "good":
        payload = _good_payload(draw, c, etype)
    elif payload_kind == "bad" and etype == "record_created":
        payload = _bad_record_payload(draw, c)
    else:
        payload = draw(st.dictionaries(_keys, signable, max_size=3))
    ids = [e["event_id"] for e in prior]
    refs = st.sampled_from(ids) | absent_ids if ids else absent_ids
    prev = draw(st.none() | refs)
    if etype == "record_created" and draw(st.booleans()):
        prev = None
    if fork_of is not None:
        prev = fork_of["prev_event"]
    supersedes = draw(st.lists(refs, max_size=2, unique=True)) if draw(st.booleans()) else []
    if etype == "record_created" and draw(st.booleans()):
        supersedes = []
    body = {
        "event_type": etype,
        "subject_pith_number": c.subject,
        "target": target,
        "payload": payload,
        "signer": {"signer_id": signer.signer_id, "signer_type": signer.signer_type, "key_id": signer.key_id,
                   "public_key_fingerprint": signer.fingerprint},
        "created_at": draw(st.sampled_from(TIMES)),
        "supersedes": supersedes,
        "prev_event": prev,
        "schema_version": "2.0" if wild and _rarely(draw, 16) else "1.0",
    }
    return sign_event(signer, body)


@st.composite
def histories(draw: st.DrawFn, min_size: int = 1, max_size: int = 12, wild: bool = True) -> list[dict[str, Any]]:
    """A list of signed events, each free to chain to (or supersede) earlier ones:
    chains, forks (equivocations), gaps, cross-identity links, duplicates."""
    n = draw(st.integers(min_size, max_size))
    events: list[dict[str, Any]] = []
    for _ in range(n):
        fork_of = draw(st.sampled_from(events)) if events and _rarely(draw, 3) else None
        events.append(draw(signed_event(events, wild=wild, fork_of=fork_of)))
    return events


def admitted_only(c: Cast, objs: list[Any]) -> list[dict[str, Any]]:
    """The first admitted copy of each event, in arrival order (what a node stores)."""
    from pithnode.core import admit

    out, seen = [], set()
    for obj in objs:
        adm = admit(obj, c.subject, c.ring)
        if adm.admitted and adm.event_id not in seen:
            seen.add(adm.event_id)
            out.append(obj)
    return out


# JSON-ish garbage: everything json.loads can produce and more (floats, NaN,
# huge integers, lone surrogates, deep nesting), as admission may meet it.
_wild_text = st.text(max_size=10) | st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=3)
_field_names = st.sampled_from(["event_type", "subject_pith_number", "target", "payload", "signer", "created_at",
                                "supersedes", "prev_event", "schema_version", "signature", "content_sha256",
                                "event_id"]) | _wild_text
garbage = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _wild_text,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(_field_names, kids, max_size=6),
    max_leaves=30,
)


def deep(n: int) -> Any:
    v: Any = {}
    for _ in range(n):
        v = [v]
    return v
