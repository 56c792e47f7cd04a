"""The store: one SQLite file (apsw, WAL). This package owns the schema, the
migrations and every SQL statement; nothing else in pithnode writes SQL.

Writes happen inside `transaction()`: a bundle or a gossip batch is committed
whole or not at all, together with the re-merged states of the subjects it
touched, so a crash never leaves a stored state that disagrees with the stored
events. Durability is `synchronous=FULL` by default (a commit survives power
loss once `transaction()` returns); `normal` survives a process crash only.

Its modules, by job:
- `rows`: the typed rows the store returns, and StoreError;
- `codecs`: stored documents packed and unpacked (zstd), `event_key`;
- `schema`: the DDL as migrations, SCHEMA_VERSION, `migrate`;
- `connection`: opening the file, durability, apsw errors as StoreError, `transaction()`;
- `eventlog`: keys, records, merged states, aliases, events and signers;
- `journal`: rejections, reports, bundle checks, sources, node metadata.

`Store` is the jobs as mixins over one `StoreConnection`: every caller holds one
object and calls `store.add_events(...)`, `store.rejections()` as it always did,
and every job shares the one connection and its `transaction()` (a bundle's
events, reports and rejections commit together). Composition would have needed
a delegating method per call or a `store.journal.` prefix at every call site.
"""

from __future__ import annotations

from .codecs import event_key, pack, unpack
from .eventlog import EventLog
from .journal import Journal
from .rows import (
    BundleCheck,
    ChainEvent,
    HeldEvent,
    NewEvent,
    Rejection,
    RejectionTally,
    Report,
    Source,
    StoredKey,
    StoreError,
    Subject,
)
from .schema import SCHEMA_VERSION

__all__ = [
    "SCHEMA_VERSION", "BundleCheck", "ChainEvent", "HeldEvent", "NewEvent", "Rejection", "RejectionTally", "Report",
    "Source", "Store", "StoreError", "StoredKey", "Subject", "event_key", "pack", "unpack",
]


class Store(EventLog, Journal):
    """One connection to the store file, with every job's methods. Not shared between threads at once."""
