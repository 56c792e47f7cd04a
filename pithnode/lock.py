"""One writer per data dir: `pithnode run` holds an exclusive flock on
<data_dir>/node.lock for its whole life; the kernel releases it when the
process dies, however it dies, so a stale file never blocks a restart. Two
nodes on one data dir would sign with one key under two URLs: the lock makes
the second refuse at once, naming the first.

The file also says who holds it (pid, the URL it serves at), for
`pithnode status` and for that refusal. `import` and `sync` take no lock:
they write through SQLite transactions, which a running node sees (node/runner.py)."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from .errors import ResourceError

LOCK_NAME = "node.lock"


class DataDirBusy(ResourceError):
    """Another process holds the data dir; the message names it."""


class DataDirLock:
    def __init__(self, data_dir: Path):
        self.path = data_dir / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise DataDirBusy (never waits)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)  # not inherited by exec'd children (PEP 446)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            info = read_info(self.path)
            who = f"pid {info.get('pid', '?')}" + (f", serving {info['url']}" if info.get("url") else "")
            raise DataDirBusy(f"data dir {self.path.parent} is in use by another pithnode run ({who}): one process "
                              "writes a data dir; stop that one, or give this one its own --data-dir") from None
        self.fd = fd
        self.note()

    def note(self, **info: Any) -> None:
        """Say who holds it (the pid, and whatever the node knows once it serves)."""
        assert self.fd is not None
        data = json.dumps({"pid": os.getpid(), **info}).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # the file stays: unlinking a lock file races with the next taker
            self.fd = None


def read_info(path: Path) -> dict[str, Any]:
    try:
        info = json.loads(path.read_bytes() or b"{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def holder(data_dir: Path) -> dict[str, Any] | None:
    """Who runs a node on this data dir (the lock file's note), or None when nobody does."""
    path = data_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return read_info(path)
    finally:
        os.close(fd)
    return None
