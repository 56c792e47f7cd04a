"""The `pithnode` command line: a thin layer over the core, store and shell.

Exit codes (every command): 0 success; 1 verification found a problem or the
work could not be done; 2 bad usage or unusable input; 3 done, but
equivocations or disagreements were found (sync).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from .. import __version__
from ..config import Config, ConfigError, load_config
from ..identity import KeyFileError
from ..store import StoreError

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, EXIT_CONFLICT = 0, 1, 2, 3


class UsageError(Exception):
    """Bad input or usage: one line on stderr, exit 2."""


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def config_from(args: argparse.Namespace) -> Config:
    return load_config(getattr(args, "config", None), data_dir=getattr(args, "data_dir", None))


def _parser() -> argparse.ArgumentParser:
    from . import doctor_cmd, node_cmds, store_cmds, sync_cmd, verify_cmds

    p = argparse.ArgumentParser(
        prog="pithnode",
        description="A mirror node for the Pith open graph: replicate, verify, merge and re-serve signed events.",
        epilog="Exit codes: 0 ok, 1 problem found / could not do it, 2 bad usage or input, 3 conflicts found (sync).",
    )
    p.add_argument("--version", action="version", version=f"pithnode {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", help="TOML config (default: $PITHNODE_CONFIG or the user config dir)")
    common.add_argument("--data-dir", metavar="DIR", help="store directory (default: $PITHNODE_DATA_DIR or the user data dir)")
    common.add_argument("--json", action="store_true", help="print machine-readable JSON")
    for module in (verify_cmds, sync_cmd, store_cmds, node_cmds, doctor_cmd):
        module.register(sub, common)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except (UsageError, ConfigError, KeyFileError) as exc:
        print(f"pithnode {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StoreError as exc:
        print(f"pithnode {args.command}: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK


def entry() -> None:
    sys.exit(main())
