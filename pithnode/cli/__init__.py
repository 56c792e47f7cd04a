"""The `pithnode` command line: a thin layer over the core, store and shell.

Exit codes (every command): 0 success; 1 verification found a problem or the
work could not be done; 2 bad usage or unusable input (found before any
network work); 3 done, but equivocations or disagreements were found (sync,
and `equivocations --exit-code`). Every error is one line on stderr,
`pithnode COMMAND: error: ...`, the form argparse uses for usage errors.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from .. import __version__
from ..errors import EXIT_PROBLEM, PithnodeError, outcome
from .common import EXAMPLE_CONFIG, EXIT_OK

LOG_LEVELS = ("debug", "info", "warning", "error")


class JsonFormatter(logging.Formatter):
    """One JSON object a line (for journald / log shippers): time (UTC), level, logger, message."""

    converter = staticmethod(time.gmtime)

    def format(self, record: logging.LogRecord) -> str:
        doc = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
               "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def _add_logging_options(p: argparse.ArgumentParser, top: bool) -> None:
    """On the top parser, and on every subcommand with SUPPRESS (so that a
    subcommand's defaults do not undo `pithnode -v run`)."""
    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    p.add_argument("-v", "--verbose", action="count", default=default(0), help="more logging (-vv for debug)")
    p.add_argument("--log-level", choices=LOG_LEVELS, default=default(None),
                   help="log threshold (default: info for run, warning otherwise)")
    p.add_argument("--log-format", choices=("text", "json"), default=default("text"),
                   help="log lines as text, or as one JSON object each")


def _parser() -> argparse.ArgumentParser:
    from . import doctor_cmd, node_cmds, store_cmds, sync_cmd, verify_cmds

    p = argparse.ArgumentParser(
        prog="pithnode",
        description="A mirror node for the Pith open graph: replicate, verify, merge and re-serve signed events.",
        epilog="Exit codes: 0 ok, 1 problem found / could not do it, 2 bad usage or input, 3 conflicts found\n"
               f"(sync, equivocations --exit-code).\nEvery setting: {EXAMPLE_CONFIG}",
        formatter_class=argparse.RawDescriptionHelpFormatter,  # the path on a line of its own, never broken at a '-'
    )
    p.add_argument("--version", action="version", version=f"pithnode {__version__}")
    _add_logging_options(p, top=True)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE",
                        help="TOML config (default: $PITHNODE_CONFIG or the user config dir)")
    common.add_argument("--data-dir", metavar="DIR",
                        help="store directory (default: $PITHNODE_DATA_DIR or the user data dir)")
    common.add_argument("--json", action="store_true", help="print machine-readable JSON")
    _add_logging_options(common, top=False)
    for module in (verify_cmds, sync_cmd, store_cmds, node_cmds, doctor_cmd):
        module.register(sub, common)
    return p


def _setup_logging(args: argparse.Namespace) -> None:
    if args.log_level:
        level = getattr(logging, args.log_level.upper())
    elif args.verbose:
        level = logging.DEBUG if args.verbose > 1 else logging.INFO
    else:
        level = logging.INFO if args.command == "run" else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if args.log_format == "json"
                         else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    if level > logging.DEBUG:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise


def single_error(exc: BaseException) -> BaseException:
    """The one error inside nested exception groups (trio wraps what a nursery raised)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _setup_logging(args)
    handler: Callable[[argparse.Namespace], int] = args.handler

    def fail(message: object, code: int) -> int:
        print(f"pithnode {args.command}: error: {message}", file=sys.stderr)
        return code

    try:
        try:
            return handler(args)
        except BaseExceptionGroup as group:
            raise single_error(group) from None
    except PithnodeError as exc:
        return fail(exc, outcome(exc).exit_code)
    except KeyboardInterrupt:
        print(f"pithnode {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except OSError as exc:  # the system refused something (a file, a socket): say what, no traceback
        where = f": {exc.filename}" if exc.filename else ""
        return fail(f"{exc.strerror or exc}{where}", EXIT_PROBLEM)


def entry() -> None:
    sys.exit(main())
