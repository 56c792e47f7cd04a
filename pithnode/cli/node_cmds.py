"""`pithnode run`: the long-lived mirror node."""

from __future__ import annotations

import argparse
import logging
import signal

from . import EXIT_OK, config_from

log = logging.getLogger("pithnode")

RUN_HELP = """\
Run a mirror node: serve every record held at the registry's URLs, poll the
followed records from their mirrors, gossip events with peers, sign this
node's own timestamp and storage attestations, and report equivocations.

Settings come from the TOML config (see config/pithnode.example.toml), then
PITHNODE_* environment variables, then these flags. SIGTERM or Ctrl-C stops
the node cleanly; everything committed stays, and a restart resumes.
"""


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("run", parents=[common], help="run the long-lived mirror node",
                       description=RUN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", metavar="HOST:PORT", help="address to serve on (default 127.0.0.1:8780)")
    p.add_argument("--public-url", metavar="URL", help="the URL others reach this node at (signs as it)")
    p.add_argument("--peer", action="append", metavar="URL", help="a peer node's base URL (repeatable)")
    p.add_argument("--follow", action="append", metavar="ID", help="a record to follow, any id form (repeatable)")
    p.add_argument("--allow-private", action="store_true",
                   help="allow fetching learned URLs on private or loopback addresses")
    p.set_defaults(handler=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    import trio

    from ..config import load_config
    from ..node.runner import run_node

    base = config_from(args)
    cfg = load_config(
        getattr(args, "config", None), data_dir=args.data_dir, listen=args.listen, public_url=args.public_url,
        peers=[*base.peers, *(args.peer or [])] or None, follow=[*base.follow, *(args.follow or [])] or None,
        allow_private_addresses=True if args.allow_private else None,
    )
    if args.verbose == 0:
        logging.getLogger().setLevel(logging.INFO)
        logging.getLogger("httpx").setLevel(logging.WARNING)

    async def main() -> None:
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            async def stop_on_signal() -> None:
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for signum in signals:
                        log.info("%s: stopping", signal.Signals(signum).name)
                        shutdown.set()
                        break
                await trio.sleep(10)  # a clean stop takes far less; never hang on the way out
                log.error("did not stop within 10 s: cancelling")
                nursery.cancel_scope.cancel()

            nursery.start_soon(stop_on_signal)
            await run_node(cfg, shutdown)
            nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    except BaseExceptionGroup as group:  # surface a single operator-facing error plainly
        error: BaseException = group
        while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
            error = error.exceptions[0]
        raise error from None
    return EXIT_OK
