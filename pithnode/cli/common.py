"""What the subcommands share: exit codes, the CLI's error types, output and
data-dir helpers. Apart from `cli/__init__.py` (the parser and `main`), so the
subcommand modules import it without importing the package that imports them."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..config import Config, load_config
from ..errors import InputError, ResourceError

EXIT_OK, EXIT_CONFLICT = 0, 3
EXAMPLE_CONFIG = Path(__file__).resolve().parent.parent / "data" / "pithnode.example.toml"


class UsageError(InputError):
    """Bad input or usage: one line on stderr, exit 2."""


class CommandError(ResourceError):
    """The work could not be done (a port in use, a data dir held by another
    process): one line on stderr, exit 1."""


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def equivocation_line(eq: dict[str, Any]) -> str:
    """One equivocation in words (its first events have no previous event: no "None")."""
    after = f"after {eq['prev_event']}" if eq.get("prev_event") else "with no previous event (both start the chain)"
    return f"{eq['identity']} on {eq['target']} {after}: {', '.join(eq['event_ids'])}"


def config_from(args: argparse.Namespace) -> Config:
    return load_config(getattr(args, "config", None), data_dir=getattr(args, "data_dir", None))


def unwritable(d: Path) -> str | None:
    """Why files cannot be made in directory `d`, or None. A real write: the mode
    bits do not tell (root, read-only mounts, ACLs)."""
    probe = d / f".pithnode-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return str(exc.strerror or exc)
    return None


def writable_data_dir(cfg: Config) -> Path:
    """The data dir, created if needed; UsageError when it cannot be (a file in
    the way, no permission) or cannot be written."""
    d = cfg.data_dir
    try:
        d.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UsageError(f"data dir {d} is a file, not a directory") from None
    except OSError as exc:
        raise UsageError(f"cannot create data dir {d}: {exc.strerror or exc}") from None
    if why := unwritable(d):
        raise UsageError(f"data dir {d} is not writable: {why}")
    return d
