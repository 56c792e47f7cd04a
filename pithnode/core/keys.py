"""Ed25519 keys, fingerprints and the key ring (fingerprint -> key).

A fingerprint names a key: a key is accepted for a fingerprint only if its raw
bytes hash to it, so a lying bundle cannot substitute a key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from .ids import is_hex64

# The real registry key (PROTOCOL.md part 1), trusted by default.
REGISTRY_KEY_ID = "pith-v1-2026-05"
REGISTRY_PUBLIC_KEY_B64 = "stVStoiQhXFxp4s2pdzPNoqVNBMojDU/fJ2db5S3CbM="
REGISTRY_FINGERPRINT = "8d4b5ee74e4693bcd1df2446408b0d54"


def fingerprint_hex(raw: bytes) -> str:
    """`fingerprint_sha256_hex`: first 32 hex characters of SHA-256(raw key)."""
    return hashlib.sha256(raw).hexdigest()[:32]


def fingerprint_b32(raw: bytes) -> str:
    """`fingerprint_sha256_b32_first128bits`: first 26 base32 characters of SHA-256(raw key)."""
    return base64.b32encode(hashlib.sha256(raw).digest()).decode("ascii")[:26]


# Strict base64 (PROTOCOL.md part 1), as a full-match ASCII pattern: the
# standard alphabet in groups of four, the last padded with exactly the `=` it
# needs. base64.b64decode(validate=True) also takes excess padding ("AAAA====").
_B64_RE = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?", re.ASCII)


def b64decode_strict(text: object) -> bytes | None:
    """The bytes of strict base64, or None for anything else. The unused low
    bits of the last character are not checked (the spec says so)."""
    if type(text) is not str or _B64_RE.fullmatch(text) is None:
        return None
    return binascii.a2b_base64(text)


def verify_signature(key: VerifyKey, message: bytes, signature_b64: object) -> bool:
    sig = b64decode_strict(signature_b64)
    if sig is None or len(sig) != 64:
        return False
    try:
        key.verify(message, sig)
        return True
    except (BadSignatureError, ValueError, TypeError):
        return False


def sign_b64(key: SigningKey, message: bytes) -> str:
    return base64.b64encode(key.sign(message).signature).decode("ascii")


def public_key_entry(raw: bytes, key_id: str, **extra: Any) -> dict[str, Any]:
    """A `public_keys` entry in the registry's shape."""
    entry = {
        "key_id": key_id,
        "algorithm": "ed25519",
        "format": "raw",
        "public_key_b64": base64.b64encode(raw).decode("ascii"),
        "public_key_hex": raw.hex(),
        "fingerprint_sha256_b32_first128bits": fingerprint_b32(raw),
        "fingerprint_sha256_hex": fingerprint_hex(raw),
    }
    entry.update(extra)
    return entry


def key_from_entry(entry: object) -> tuple[str, bytes] | None:
    """(fingerprint, raw) of a `public_keys` entry the spec's key ring rule
    uses (PROTOCOL.md part 1), else None: the key is strict base64
    `public_key_b64` or, when that is absent or not strict base64, 64
    lowercase hex `public_key_hex`; a claimed fingerprint must be the key's.
    An entry without a claimed fingerprint is named by its key's."""
    if type(entry) is not dict:
        return None
    if entry.get("algorithm", "ed25519") != "ed25519":
        return None
    raw = b64decode_strict(entry.get("public_key_b64"))
    if raw is None:
        hex_key = entry.get("public_key_hex")
        if is_hex64(hex_key):
            raw = bytes.fromhex(hex_key)  # type: ignore[arg-type]
    if raw is None or len(raw) != 32:
        return None
    fp = fingerprint_hex(raw)
    claimed = entry.get("fingerprint_sha256_hex", fp)
    if claimed != fp:
        return None
    return fp, raw


@dataclass
class KeyRing(Mapping[str, bytes]):
    """fingerprint_hex -> raw public key, every entry proven by its hash."""

    _raw: dict[str, bytes] = field(default_factory=dict)
    _ids: dict[str, str] = field(default_factory=dict)
    _verify: dict[str, VerifyKey] = field(default_factory=dict, repr=False)

    @classmethod
    def from_entries(cls, entries: Iterable[object]) -> KeyRing:
        ring = cls()
        ring.add_entries(entries)
        return ring

    def add_raw(self, raw: bytes, key_id: str | None = None) -> str:
        fp = fingerprint_hex(raw)
        self._raw.setdefault(fp, raw)
        if key_id and fp not in self._ids:
            self._ids[fp] = key_id
        return fp

    def add_entries(self, entries: Iterable[object]) -> list[object]:
        """Add every valid entry; return the entries refused (bad key or a
        fingerprint the key does not hash to)."""
        refused = []
        for entry in entries if isinstance(entries, list) else []:
            got = key_from_entry(entry)
            if got is None:
                refused.append(entry)
                continue
            key_id = entry.get("key_id") if isinstance(entry, dict) else None
            self.add_raw(got[1], key_id if isinstance(key_id, str) else None)
        return refused

    def merged(self, other: Mapping[str, bytes]) -> KeyRing:
        ring = KeyRing(dict(self._raw), dict(self._ids))
        for fp, raw in other.items():
            ring.add_raw(raw, other.key_id(fp) if isinstance(other, KeyRing) else None)
        return ring

    def key_id(self, fp: str) -> str | None:
        return self._ids.get(fp)

    def verify_key(self, fp: str) -> VerifyKey | None:
        vk = self._verify.get(fp)
        if vk is None:
            raw = self._raw.get(fp)
            if raw is None:
                return None
            vk = self._verify[fp] = VerifyKey(raw)
        return vk

    def verify(self, fp: str, message: bytes, signature_b64: object) -> bool:
        vk = self.verify_key(fp)
        return vk is not None and verify_signature(vk, message, signature_b64)

    def entries(self, fingerprints: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """`public_keys` entries for the given fingerprints (all by default), sorted."""
        fps = sorted(self._raw if fingerprints is None else {f for f in fingerprints if f in self._raw})
        return [public_key_entry(self._raw[fp], self._ids.get(fp) or f"key-{fp[:8]}") for fp in fps]

    def __getitem__(self, fp: str) -> bytes:
        return self._raw[fp]

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)


def default_registry_ring() -> KeyRing:
    ring = KeyRing()
    ring.add_raw(base64.b64decode(REGISTRY_PUBLIC_KEY_B64), REGISTRY_KEY_ID)
    return ring
