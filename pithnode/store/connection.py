"""The one connection every job of the store shares: opening the file (read-write,
read-only, or immutable where we may not write its directory), durability, the
schema check, apsw errors translated into StoreError, and `transaction()`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote

import apsw

from .codecs import event_key
from .rows import StoreError
from .schema import migrate


def translate(exc: apsw.Error, path: str) -> StoreError:
    """An apsw error as a StoreError that says what to do."""
    if isinstance(exc, apsw.FullError):
        return StoreError(f"disk full writing {path}: nothing from this batch was stored; free space and retry")
    if isinstance(exc, (apsw.CorruptError, apsw.NotADBError)):
        return StoreError(
            f"{path} is not a valid pithnode database ({exc}). Nothing was changed. "
            "Move it aside (with its -wal and -shm files) and re-sync; `pithnode doctor` checks a store"
        )
    if isinstance(exc, apsw.BusyError):
        return StoreError(f"{path} is locked by another process")
    if isinstance(exc, (apsw.CantOpenError, apsw.PermissionsError, apsw.ReadOnlyError)):
        return StoreError(f"cannot open {path} for writing: {exc}")
    return StoreError(f"store error on {path}: {exc}")


def _open_readonly(path: str) -> apsw.Connection:
    """A read-only connection, also where we may not create the WAL's -shm file
    (a store in a directory we cannot write): then, if no writer has it open
    (a writer's -wal file would be there), the file is read as it is."""
    db = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        db.execute("PRAGMA user_version").fetchone()
        return db
    except (apsw.ReadOnlyError, apsw.CantOpenError):
        db.close()
        if os.path.exists(path + "-wal") or not os.path.exists(path):
            raise
    return apsw.Connection("file:" + quote(os.path.abspath(path)) + "?immutable=1",
                           flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)


def _event_key(*args: apsw.SQLiteValue) -> int | None:  # as SQL's event_key(text)
    return event_key(args[0]) if isinstance(args[0], str) else None


class StoreConnection:
    """One connection to the store file. Not shared between threads at once.

    Durability is `synchronous=FULL` by default (a commit survives power loss
    once `transaction()` returns); `normal` survives a process crash only."""

    def __init__(self, path: str | os.PathLike[str], *, durability: str = "full", readonly: bool = False):
        self.path = str(path)
        flags = apsw.SQLITE_OPEN_READONLY if readonly else apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
        try:
            if not readonly:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self.db = _open_readonly(self.path) if readonly else apsw.Connection(self.path, flags=flags)
            self.db.set_busy_timeout(10_000)
            if not readonly:
                self.db.execute("PRAGMA page_size=16384")  # takes effect on a new file only
                self.db.execute("PRAGMA journal_mode=WAL")
            sync = {"full": "FULL", "normal": "NORMAL"}[durability]
            self.db.execute(f"PRAGMA synchronous={sync}")
            self.db.execute("PRAGMA foreign_keys=ON")
            # page cache per connection: 16 MiB for the node, 8 MiB for a read-only one (a front
            # answers most requests from its document cache); the OS caches the file anyway.
            # Measured at 200k events: 32 -> 16 MiB took 14 MB off a syncing node, sync time +5%.
            self.db.execute(f"PRAGMA cache_size={-8192 if readonly else -16384}")
            self.db.create_scalar_function("event_key", _event_key, 1, deterministic=True)  # for migration 6
            migrate(self.db, self.path, readonly)
        except apsw.Error as exc:
            raise translate(exc, self.path) from exc
        self._in_tx = False

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _rolled_back(self) -> None:
        """Called after a rollback: a job drops what it cached of rows that are gone."""

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic write: everything inside commits together or not at all.
        Nested, it is a savepoint: an inner failure undoes only the inner part."""
        if self._in_tx:
            self.db.execute("SAVEPOINT inner")
            try:
                yield
            except BaseException:
                try:
                    self.db.execute("ROLLBACK TO inner")
                    self.db.execute("RELEASE inner")
                except apsw.Error:
                    pass  # SQLite already rolled the whole transaction back (e.g. SQLITE_FULL)
                self._rolled_back()
                raise
            self.db.execute("RELEASE inner")
            return
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except apsw.Error as exc:
            raise translate(exc, self.path) from exc
        self._in_tx = True
        try:
            yield
            self.db.execute("COMMIT")
        except BaseException as exc:
            try:
                self.db.execute("ROLLBACK")
            except apsw.Error:
                pass  # SQLite may already have rolled back (e.g. on SQLITE_FULL)
            self._rolled_back()
            if isinstance(exc, apsw.Error):
                raise translate(exc, self.path) from exc
            raise
        finally:
            self._in_tx = False

    def _write(self) -> None:
        if not self._in_tx:
            raise RuntimeError("store writes must happen inside transaction()")

    def integrity_check(self) -> list[str]:
        return [str(r[0]) for r in self.db.execute("PRAGMA integrity_check")]

    def _scalar(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        """The one value of a query that always returns one row (a count, a max, a PRAGMA)."""
        row = self.db.execute(sql, params).fetchone()
        assert row is not None, sql
        return row[0]

    def data_version(self) -> int:
        """Changes when another connection (another process) commits; not on our own commits."""
        return int(self._scalar("PRAGMA data_version"))

    def size_bytes(self) -> int:
        return int(self._scalar("PRAGMA page_count")) * int(self._scalar("PRAGMA page_size"))
