"""The served documents kept in memory: one LRU cache, found by record and kind or by request path.

A document is kept while what it was built from (its `version`: a record's
state, the store's data version) holds, within MAX_BYTES. The server also finds
a record's documents by their request path, without routing or a store query,
while the store's generation is the one they were served at: that index points
into the cache, so a document dropped from it (changed, or least recently used)
is gone for both.
"""

from __future__ import annotations

import gzip
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core import sha256_hex

MAX_BYTES = 32 * 1024 * 1024  # served documents kept in memory, least recently used dropped first
MAX_PATHS = 4096  # request paths indexed; all forgotten when full (a client cannot grow the index)

Key = tuple[str, str]  # (pith number, or "*" for the node-wide documents; kind)


@dataclass
class Cached:
    """One served document: its bytes, gzip bytes (made on first ask) and ETag."""

    body: bytes
    etag: str
    content_type: str = "application/json"
    version: Any = None  # what it was built from (a subject's state hash, the store's data version)
    _gz: bytes | None = None
    key: Key | None = None  # where the cache holds it (None: not cached)

    @property
    def gzip_etag(self) -> str:
        """The gzip variant is another representation: its own ETag (RFC 9110 8.8.3)."""
        return self.etag[:-1] + '-gzip"'

    def gzipped(self) -> bytes:
        if self._gz is None:
            self._gz = gzip.compress(self.body, 5)
        return self._gz


class DocumentCache:
    def __init__(self, max_bytes: int = MAX_BYTES, max_paths: int = MAX_PATHS):
        self.max_bytes, self.max_paths = max_bytes, max_paths
        self._docs: OrderedDict[Key, Cached] = OrderedDict()  # least recently used first
        self._bytes = 0
        self._paths: dict[str, tuple[int, str, Key]] = {}  # path -> (generation served at, route, key)

    def get(self, key: Key, build: Callable[[], bytes], content_type: str = "application/json", *,
            version: Any = None) -> Cached:
        """The document `build` makes for `key`, built again unless the one held has `version`."""
        hit = self._docs.get(key)
        if hit is not None and hit.version == version:
            self._docs.move_to_end(key)
            return hit
        body = build()
        self._drop(key)
        hit = self._docs[key] = Cached(body, '"' + sha256_hex(body)[:32] + '"', content_type, version, key=key)
        self._bytes += len(body)
        while self._bytes > self.max_bytes and len(self._docs) > 1:
            self._drop(next(iter(self._docs)))
        return hit

    def at_path(self, path: str, generation: int) -> tuple[str, Cached] | None:
        """(route, document) served at `path` in this `generation` of the store, if still held."""
        found = self._paths.get(path)
        if found is None or found[0] != generation:
            return None
        doc = self._docs.get(found[2])
        if doc is None:
            return None
        self._docs.move_to_end(found[2])
        return found[1], doc

    def served_at(self, path: str, generation: int, route: str, doc: Cached) -> None:
        """Index `doc` (a cached one) under the path it was served at."""
        if doc.key is None:
            return
        if len(self._paths) >= self.max_paths:
            self._paths.clear()
        self._paths[path] = (generation, route, doc.key)

    def forget(self, pith_numbers: set[str]) -> None:
        """Drop the documents of these records, and the node-wide ones (they list records)."""
        for key in [k for k in self._docs if k[0] in pith_numbers or k[0] == "*"]:
            self._drop(key)

    def _drop(self, key: Key) -> None:
        if (old := self._docs.pop(key, None)) is not None:
            self._bytes -= len(old.body)
