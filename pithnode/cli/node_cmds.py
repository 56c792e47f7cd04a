"""`pithnode run`: the long-lived mirror node."""

from __future__ import annotations

import argparse
import logging
import signal
from typing import Any

from ..config import is_http_url
from ..lock import holder
from .common import EXAMPLE_CONFIG, EXIT_OK, CommandError, UsageError, config_from, print_json, writable_data_dir

log = logging.getLogger("pithnode")

RUN_HELP = f"""\
Run a mirror node: serve every record held at the registry's URLs, poll the
followed records from their mirrors, gossip events with peers, sign this
node's own timestamp and storage attestations, and report equivocations.

Settings come from the TOML config (every setting: {EXAMPLE_CONFIG}), then
PITHNODE_* environment variables, then these flags. SIGTERM or Ctrl-C stops
the node cleanly; everything committed stays, and a restart resumes. One
node per data dir: a second `run` on it refuses, naming the first.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("run", parents=[common], help="run the long-lived mirror node",
                       description=RUN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", metavar="HOST:PORT", help="address to serve on (default 127.0.0.1:8780)")
    p.add_argument("--public-url", metavar="URL", help="the URL others reach this node at (signs as it)")
    p.add_argument("--peer", action="append", metavar="URL",
                   help="a peer node's base URL, trusted as given (LAN and loopback too; repeatable)")
    p.add_argument("--follow", action="append", metavar="ID", help="a record to follow, any id form (repeatable)")
    p.add_argument("--allow-private", action="store_true",
                   help="also fetch URLs learned from the network (mirror hints, peers' peers) on private or "
                        "loopback addresses")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("status", parents=[common], help="ask a running node what it is doing",
                       description="Ask the node running on this data dir (found by its lock file) or at --url "
                                   "what it is doing: uptime, counts, followed records, the last poll of each "
                                   "source, the health of each peer (its /status.json). Exit 0 when it answered, "
                                   "1 when no node runs there or it did not answer.")
    p.add_argument("--url", metavar="URL", help="the node's base URL (default: the one running on the data dir)")
    p.set_defaults(handler=cmd_status)


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
    writable_data_dir(cfg)

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

    trio.run(main)  # DataDirBusy, OSError (cannot listen): one line, exit 1 (cli/__init__.py)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    import httpx

    cfg = config_from(args)
    url = args.url
    if url is None:
        info = holder(cfg.data_dir)
        if info is None:
            raise CommandError(f"no node runs on data dir {cfg.data_dir} "
                               "(start one with `pithnode run`, or pass --url)")
        if not info.get("url", "").startswith("http"):
            raise CommandError(f"the node on {cfg.data_dir} (pid {info.get('pid', '?')}) is not serving yet")
        url = info["url"]
    elif not is_http_url(url):
        raise UsageError(f"--url: {url!r} is not an http(s) URL with a host")
    try:
        r = httpx.get(url.rstrip("/") + "/status.json", timeout=10, headers={"accept": "application/json"})
        r.raise_for_status()
        doc = r.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise CommandError(f"{url} did not answer its status: {exc}") from None
    if args.json:
        print_json(doc)
        return EXIT_OK
    try:
        _print_status(doc)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise CommandError(f"{url}/status.json is not a pithnode node's status") from None
    return EXIT_OK


def _print_status(doc: dict[str, Any]) -> None:
    print(f"pithnode {doc['version']} at {doc['public_url']} (pid {doc['pid']}, up {doc['uptime_seconds']:.0f} s, "
          f"key {doc['key_id']})")
    print(f"  {doc['records']} records, {doc['events']} events, {doc['unmerged_records']} waiting for their merge")
    if doc["followed"]:
        print(f"  following: {', '.join(doc['followed'])}")
    for src in doc["sources"]:
        outcome = "ok" if not src["failures"] else f"FAILING ({src['failures']}x): {src['error']}"
        print(f"  source {src['url']}: last poll {src['last_attempt'] or 'never'}: {outcome}")
    for peer in doc["peers"]:
        state = "up" if peer["healthy"] else f"DOWN ({peer['failures']}x): {peer['error'] or 'not reached yet'}"
        print(f"  peer {peer['url']}: {state}; last exchange ok {peer['last_ok'] or 'never'}")
