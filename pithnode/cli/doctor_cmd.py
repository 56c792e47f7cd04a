"""`pithnode doctor`: check the config, key, store and sources; say what to fix."""

from __future__ import annotations

import argparse
import os
import stat
from pathlib import Path
from typing import Any

from ..config import ConfigError
from ..errors import EXIT_PROBLEM
from .common import EXAMPLE_CONFIG, EXIT_OK, config_from, print_json, unwritable

CORRUPT_FIX = "stop the node, move the store aside (with its -wal and -shm files) and re-sync or import an export"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("doctor", parents=[common], help="check config, key, store and sources; say what to fix",
                       description="Check the configuration, the node key, the store (PRAGMA integrity_check, "
                                   "states against a fresh merge with --deep) and the reachability of the "
                                   "configured mirrors and peers. Exit 0 when all is well, 1 otherwise.")
    p.add_argument("--deep", action="store_true", help="also re-merge every record and compare with its stored state")
    p.add_argument("--offline", action="store_true", help="do not contact mirrors or peers")
    p.set_defaults(handler=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    checks: list[dict[str, Any]] = []

    def check(name: str, ok: bool, detail: str, fix: str | None = None) -> None:
        checks.append({"check": name, "ok": ok, "detail": detail, "fix": None if ok else fix})

    try:
        cfg = config_from(args)
        ring = cfg.trusted_ring()
        check("config", True, f"data_dir {cfg.data_dir}; {len(ring)} trusted registry key(s); listen {cfg.listen}")
    except ConfigError as exc:
        check("config", False, str(exc), f"fix the config file (every setting: {EXAMPLE_CONFIG})")
        return _report(args, checks)
    if not cfg.listen.startswith(("127.", "localhost", "[::1]")):
        check("listen", True, f"serving on {cfg.listen}, not loopback: make sure that is intended")
    data_ok, detail, fix = _data_dir_state(cfg.data_dir)
    check("data dir", data_ok, detail, fix)
    if data_ok or cfg.data_dir.is_dir():  # (a data dir under a file holds no key or store to check)
        check("key", *_key_state(cfg.key_path))
        check("store", *_store_state(cfg, deep=args.deep))
    if not args.offline:
        import trio

        for url, ok, detail in trio.run(_reach, cfg):
            check(f"reach {url}", ok, detail, "check the URL, DNS and firewall; the node retries with back-off")
    return _report(args, checks)


def _data_dir_state(d: Path) -> tuple[bool, str, str | None]:
    """Whether the node can write its data dir (or create it: its nearest existing parent)."""
    existing = next(p for p in (d, *d.parents) if p.exists())
    if not existing.is_dir():
        return False, f"{existing} is a file, so {d} cannot be a directory", "set data_dir (or --data-dir) elsewhere"
    if why := unwritable(existing):
        who = d if existing == d else f"{existing} (to create {d})"
        return False, f"{who} is not writable: {why}", f"give the node's user write access to {existing}"
    return True, f"{d} is writable" if existing == d else f"{d} will be created in {existing}", None


def _key_state(path: Any) -> tuple[bool, str, str | None]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return True, f"no key yet at {path}: created (mode 0600) on first run", None
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        return False, f"{path} has mode {mode:04o}", f"chmod 600 {path}"
    from ..identity import KeyFileError, load_or_create_key

    try:
        load_or_create_key(path)
    except KeyFileError as exc:
        return False, str(exc), "restore the key file from backup, or move it aside to start a new identity"
    return True, f"{path} mode {mode:04o}", None


def _store_state(cfg: Any, *, deep: bool) -> tuple[bool, str, str | None]:
    from ..core import canonical_bytes, merge
    from ..store import Store, StoreError
    from ..views import events_of

    if not cfg.db_path.exists():
        return True, f"no store yet at {cfg.db_path}", None
    try:
        with Store(cfg.db_path, readonly=True) as store:
            result = store.integrity_check()
            if result != ["ok"]:
                return False, f"integrity_check: {'; '.join(result[:5])}", CORRUPT_FIX
            subjects = store.subjects()
            bad = []
            if deep:
                ring = cfg.trusted_ring().merged(store.key_ring())
                for s in subjects:
                    fresh = canonical_bytes(merge(s.pith_number, events_of(store, s), ring, cfg.registry))
                    if store.state_bytes(s.pith_number) != fresh:
                        bad.append(s.pith_number)
            detail = f"{len(subjects)} records, {store.event_count()} events, integrity ok"
            if bad:
                return False, f"{detail}; stored state differs from a fresh merge for {', '.join(bad[:5])}", \
                    "run `pithnode import` of an export, or re-sync those records"
            return True, detail + ("; every state equals a fresh merge" if deep else ""), None
    except StoreError as exc:
        if "schema upgrade" in str(exc):
            return False, str(exc), "run `pithnode run` (or any command that writes) once: it upgrades the schema"
        return False, str(exc), CORRUPT_FIX


async def _reach(cfg: Any) -> list[tuple[str, bool, str]]:
    from ..net.fetch import FetchError, HttpFetcher

    out = []
    async with HttpFetcher(max_bytes=1024 * 1024, connect_timeout=5, total_timeout=10, retries=0,
                           allow_private=cfg.allow_private_addresses, trusted=cfg.operator_urls) as f:
        for base in [*cfg.mirrors, *cfg.peers]:
            url = base.rstrip("/") + "/pith-mirrors.json"
            try:
                res = await f.get(url)
                out.append((base, True, f"answered {res.status}"))
            except FetchError as exc:
                out.append((base, False, str(exc)))
    return out


def _report(args: argparse.Namespace, checks: list[dict[str, Any]]) -> int:
    ok = all(c["ok"] for c in checks)
    if args.json:
        print_json({"ok": ok, "checks": checks})
    else:
        for c in checks:
            print(f"{'ok ' if c['ok'] else 'FIX'}  {c['check']}: {c['detail']}")
            if c["fix"]:
                print(f"     -> {c['fix']}")
    return EXIT_OK if ok else EXIT_PROBLEM
