"""How documents and ids are stored: zstd-packed JSON (`pack`, `unpack`) and
the compact index key of an event id (`event_key`). Pure but for a per-thread
codec cache; no SQL."""

from __future__ import annotations

import threading
import zlib

import zstandard

from .rows import StoreError

_codecs = threading.local()  # zstandard's (de)compressors are not thread-safe; made once per thread
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # how every zstd frame starts


def _codec() -> tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor]:
    pair: tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor] | None = getattr(_codecs, "pair", None)
    if pair is None:
        pair = _codecs.pair = (zstandard.ZstdCompressor(level=1), zstandard.ZstdDecompressor())
    return pair


def pack(doc: bytes) -> bytes:
    """JSON documents are stored compressed (zstd: under half their size, and
    rows of ~1.5 KB otherwise leave a quarter of every page empty). A reused
    zstd compressor takes ~6 us for a 1.3 KB event where zlib took ~40 us, most
    of it zlib's stream set-up. The exact bytes come back out: canonical JSON
    starts with "{", a compressed document never does, so a document packed
    already (by an admission worker, off the main process) is kept as it is."""
    return _codec()[0].compress(doc) if doc[:1] == b"{" else doc


def unpack(stored: bytes) -> bytes:
    """A stored document: zstd (schema 8 on), zlib (rows written before schema 8
    are kept as they are) or plain canonical JSON (rows of the first versions)."""
    data = bytes(stored)
    if data[:1] == b"{":
        return data
    try:
        return _codec()[1].decompress(data) if data[:4] == _ZSTD_MAGIC else zlib.decompress(data)
    except (zstandard.ZstdError, zlib.error) as exc:
        raise StoreError(f"a stored document is corrupt ({exc}): the store file is damaged; move it aside (with "
                         "its -wal and -shm files) and re-sync; `pithnode doctor` checks a store") from None


def event_key(event_id: str) -> int | None:
    """The compact index key of an event id: its hash's first 8 bytes as a signed
    64-bit integer (SQLite's INTEGER). None for a string that is no event id: no
    stored event has it (admission checks every id is its event's hash)."""
    head = event_id[7:23]
    if len(event_id) != 71 or not event_id.startswith("sha256:") or not (head.isascii() and head.isalnum()):
        return None  # (int() alone would take "+", "_" and non-ASCII digits)
    try:
        return int(head, 16) - (1 << 63)
    except ValueError:
        return None
