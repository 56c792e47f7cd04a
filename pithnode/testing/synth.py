"""Synthetic Pith data signed with test keys: records with valid receipts,
graph snapshot chains, mirror attestations, forks, and registry-signed bundles.

For tests, benchmarks and the demo. Keys derive from names, so every run (and
every process) makes the same keys; a node trusts the synthetic registry when
configured with `SynthRegistry().config_entry()` in `registry_keys`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC
from typing import Any

from nacl.signing import SigningKey

from ..core import KeyRing, build_bundle, canonical_hash, make_event, merge, pith_number_for
from ..core.bundle import mirror_hint_entry
from ..core.keys import fingerprint_hex, public_key_entry, sign_b64


def named_key(name: str) -> SigningKey:
    """A deterministic test key: never use for anything real."""
    return SigningKey(hashlib.sha256(b"pithnode-test-key:" + name.encode()).digest())


def _ts(day: int, second: int = 0) -> str:
    """A valid instant `day` days and `second` seconds after 2026-01-01."""
    from datetime import datetime, timedelta

    t = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=day, seconds=second)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


class Signer:
    def __init__(self, name: str, signer_type: str, signer_id: str):
        self.key = named_key(name)
        self.raw = bytes(self.key.verify_key)
        self.fingerprint = fingerprint_hex(self.raw)
        self.key_id = name
        self.signer_type = signer_type
        self.signer_id = signer_id

    def entry(self) -> dict[str, Any]:
        return public_key_entry(self.raw, self.key_id)

    def event(self, subject: str, event_type: str, target: str, payload: dict[str, Any], created_at: str,
              prev: str | None = None, supersedes: list[str] | None = None) -> dict[str, Any]:
        return make_event(self.key, event_type=event_type, subject=subject, target=target, payload=payload,
                          signer_id=self.signer_id, signer_type=self.signer_type, key_id=self.key_id,
                          created_at=created_at, signed_at=created_at.replace("Z", ".000000Z"),
                          prev_event=prev, supersedes=supersedes)


class SynthRegistry(Signer):
    """A stand-in for the Pith registry, with its own (test) key."""

    def __init__(self, name: str = "test-registry", signer_id: str = "registry.test"):
        super().__init__(name, "pith_registry", signer_id)

    def config_entry(self) -> dict[str, Any]:
        return self.entry()

    def ring(self) -> KeyRing:
        return KeyRing.from_entries([self.entry()])

    def canonical_record(self, n: int, year: int = 2026) -> dict[str, Any]:
        return {
            "source": {"id": f"{year % 100:02d}01.{n:05d}", "kind": "arxiv", "version": 1},
            "metadata": {
                "license": "http://creativecommons.org/licenses/by/4.0/",
                "primary_cat": "cs.DC",
                "submitted_at": f"{year}-01-02T03:04:05Z",
                "cross_cats_sorted": [],
                "title_canon_sha256": hashlib.sha256(f"title {n}".encode()).hexdigest(),
                "abstract_canon_sha256": hashlib.sha256(f"abstract {n}".encode()).hexdigest(),
            },
            "schema_version": "1.0",
        }

    def record_created(self, n: int, created_at: str = _ts(1)) -> tuple[str, dict[str, Any]]:
        """(pith_number, record_created event) for synthetic record `n`, with a valid receipt."""
        record = self.canonical_record(n)
        digest = canonical_hash(record)
        pn = pith_number_for(record)
        receipt = {
            "kind": "pith_receipt", "key_id": self.key_id, "algorithm": "ed25519",
            "signature_b64": sign_b64(self.key, bytes.fromhex(digest)), "signed_message": "canonical_sha256_bytes",
            "canonical_sha256": digest, "public_key_fingerprint": self.fingerprint, "receipt_version": "0.3",
        }
        src = record["source"]
        payload = {"canonical_record": record, "canonical_sha256": digest, "receipt": receipt,
                   "source_kind": src["kind"], "source_id": src["id"], "source_version": src["version"],
                   "attestation_state": "computed"}
        return pn, self.event(pn, "record_created", "record", payload, created_at)

    def graph_snapshot(self, pn: str, created_at: str, *, n_claims: int = 3, prev: dict[str, Any] | None = None,
                       title: str | None = None) -> dict[str, Any]:
        claims = [{"id": f"c{i}", "text": f"claim {i} of {pn}: " + "lorem ipsum dolor sit amet " * 4}
                  for i in range(n_claims)]
        paper = {"title": title or f"Synthetic paper {pn[-8:]}", "authors_text": "A. Author, B. Author"}
        payload = {"graph_snapshot": {"builder_version": "synth", "paper": paper,
                                      "claims": {"count": n_claims, "items": claims}},
                   "verdict_id": None}
        pid = prev["event_id"] if prev else None
        return self.event(pn, "graph_snapshot", "graph", payload, created_at, prev=pid, supersedes=[pid] if pid else [])

    def bundle(self, pn: str, events: Iterable[dict[str, Any]], *, keys: Iterable[Signer] = (),
               base_url: str = "https://registry.test", built_at: str = _ts(300),
               state: dict[str, Any] | None = None, mirror_hints: Iterable[dict[str, Any]] = ()) -> dict[str, Any]:
        """A registry-signed bundle, shaped like the real ones. `state` overrides
        the honest merge (to make a lying bundle)."""
        events = list(events)
        ring = self.ring()
        for s in keys:
            ring.add_raw(s.raw, s.key_id)
        code = pn.rsplit(":", 1)[-1]
        st = state if state is not None else merge(pn, events, ring, {self.fingerprint})
        return build_bundle(pith_number=pn, events=events, state=st, keys=ring,
                            mirror_hints=[mirror_hint_entry("Synthetic registry", base_url, code, status="primary"),
                                          *mirror_hints],
                            links={}, built_at=built_at, signed_at=built_at, signing_key=self.key, key_id=self.key_id)


class SynthMirror(Signer):
    def __init__(self, name: str, base_url: str | None = None):
        self.base_url = base_url or f"https://{name}.test"
        super().__init__(name, "pith_mirror", self.base_url)

    def storage(self, pn: str, digest: str, created_at: str, prev: dict[str, Any] | None = None,
                location: str | None = None) -> dict[str, Any]:
        code = pn.rsplit(":", 1)[-1]
        payload = {"stored": {"kind": "canonical_record", "sha256": digest},
                   "location": location or f"{self.base_url}/pith/{code}/bundle.json"}
        pid = prev["event_id"] if prev else None
        return self.event(pn, "storage_attestation", "storage", payload, created_at, prev=pid,
                          supersedes=[pid] if pid else [])

    def witness(self, pn: str, digest: str, created_at: str) -> dict[str, Any]:
        payload = {"anchor_type": "witness", "anchored": {"kind": "canonical_record", "sha256": digest},
                   "proof_b64": None}
        return self.event(pn, "timestamp_anchor", "timestamp", payload, created_at)

    def citation(self, pn: str, created_at: str, i: int, prev: dict[str, Any] | None = None) -> dict[str, Any]:
        # A signer's events per target form one chain: each names the last as prev.
        return self.event(pn, "citation_signature", "citation",
                          {"citing": f"pith:2026:{'A' * 26}", "context": f"citation {i} " + "x" * 200}, created_at,
                          prev=prev["event_id"] if prev else None)


def synthetic_subject(reg: SynthRegistry, n: int, n_events: int,
                      mirrors: list[SynthMirror]) -> tuple[str, list[dict[str, Any]]]:
    """A subject with about `n_events` events: its record, a graph snapshot chain
    (each superseding the last), storage attestation chains and citations."""
    pn, rec = reg.record_created(n)
    digest = rec["payload"]["canonical_sha256"]
    events = [rec]
    prev_graph = None
    prev_store: dict[str, dict[str, Any] | None] = {m.key_id: None for m in mirrors}
    prev_cite: dict[str, dict[str, Any] | None] = {m.key_id: None for m in mirrors}
    i = 0
    while len(events) < n_events:
        kind = i % 4
        at = _ts(2 + i // 100, i % 86400)
        if kind == 0:
            prev_graph = reg.graph_snapshot(pn, at, prev=prev_graph)
            events.append(prev_graph)
        elif kind == 1 and mirrors:
            m = mirrors[i % len(mirrors)]
            ev = m.storage(pn, digest, at, prev=prev_store[m.key_id])
            prev_store[m.key_id] = ev
            events.append(ev)
        elif mirrors:
            m = mirrors[i % len(mirrors)]
            ev = m.citation(pn, at, i, prev=prev_cite[m.key_id])
            prev_cite[m.key_id] = ev
            events.append(ev)
        else:
            prev_graph = reg.graph_snapshot(pn, at, prev=prev_graph)
            events.append(prev_graph)
        i += 1
    return pn, events
