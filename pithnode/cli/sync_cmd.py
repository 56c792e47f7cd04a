"""`pithnode sync ID`: replicate and verify one record once."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from ..config import PRIMARY_RESOLVER
from ..errors import EXIT_PROBLEM
from ..store import Store
from ..timeutil import utc_now
from .common import EXIT_CONFLICT, EXIT_OK, UsageError, equivocation_line, print_json, writable_data_dir

if TYPE_CHECKING:
    from ..sync import SyncReport

SYNC_HELP = f"""\
Replicate one Pith record with all its events onto this disk, verified, and
say whether the mirrors agree.

ID may be a full Pith number (pith:2026:CODE), a bare 26-character code, a
short Pith number (pith:XXXXXXXX: looked up among the records already held),
an arXiv id (2604.21197, 2604.21197v1), the arXiv DOI
(10.48550/arXiv.2604.21197) or a bundle URL.

The bundle is fetched from every --mirror (default {PRIMARY_RESOLVER}), then
from every mirror the record names, all at once; what has not answered within
--timeout seconds is given up and reported per source. Each event is admitted
on its own. A running node on the same data dir sees what this stores within
a second, attests it and offers it to its peers.

Exit codes: 0 replicated and every source agrees; 3 replicated, but the record
has equivocations or a source serves a different state; 1 could not
replicate; 2 bad usage.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("sync", parents=[common], help="replicate and verify one record once",
                       description=SYNC_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("id", metavar="ID")
    p.add_argument("--mirror", action="append", metavar="URL",
                   help="resolver base URL, trusted as given (repeatable; first is primary)")
    p.add_argument("--timeout", type=_seconds, default=60.0, metavar="SECONDS",
                   help="give up on what has not answered after this long, all sources together (default 60)")
    p.add_argument("--allow-private", action="store_true",
                   help="also fetch URLs learned from the network (mirror hints) on private or loopback addresses")
    p.set_defaults(handler=cmd_sync)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds from 0 to 86400")
    return value


def _print_human(rep: SyncReport) -> None:
    if rep.pith_number:
        print(f"{rep.pith_number}  {rep.title or ''}".rstrip())
        print(f"  resolved by {rep.resolved_by}")
    for s in rep.sources:
        if not s.reachable or s.error and s.published_state_sha256 is None:
            print(f"  {s.url}: unreachable or unusable: {s.error}")
            continue
        sig = "signature ok" if s.bundle_signature_ok else "SIGNATURE FAILS"
        agree = "agrees" if s.agrees else "DIFFERS from ours"
        own = "" if s.source_state_matches else " (its state is not the merge of its own events)"
        print(f"  {s.url}: {sig}; events new {s.events_new}, known {s.events_known}, rejected {s.events_rejected};"
              f" state {(s.published_state_sha256 or '?')[:16]} {agree}{own}")
        for flag in s.flags:
            why = {"rollback": "it no longer serves events it served before (we keep them)",
                   "stale": "its bundle stopped advancing while another mirror moved on"}[flag]
            print(f"      FLAGGED {flag}: {why}")
        for r in s.rejected:
            print(f"      rejected #{r['index']}: {r['reason']}: {r['detail']}")
    if rep.error:
        print(f"pithnode sync: error: {rep.error}", file=sys.stderr)
    if rep.replicated:
        print(f"  events applied: {rep.events_applied} (held: {rep.event_count})")
        print(f"  invalid events: {len(rep.invalid_events)}")
        print(f"  equivocations:  {len(rep.equivocations)}")
        for eq in rep.equivocations:
            print(f"    {equivocation_line(eq)}")
        print(f"  state_sha256:   {rep.state_sha256}")
        print(f"  all sources agree: {'yes' if rep.all_agree else 'NO'}")


def cmd_sync(args: argparse.Namespace) -> int:
    import trio  # the network stack loads only for the commands that use it

    from ..config import load_config
    from ..net.fetch import HttpFetcher
    from ..sync import BadId, sync

    cfg = load_config(args.config, data_dir=args.data_dir, mirrors=args.mirror)  # checks the URLs: exit 2
    writable_data_dir(cfg)
    progress = (lambda msg: print(msg, file=sys.stderr)) if sys.stderr.isatty() and not args.json else (lambda _m: None)

    async def run() -> SyncReport:
        async with HttpFetcher(
            max_bytes=cfg.max_bundle_bytes, connect_timeout=cfg.connect_timeout, total_timeout=cfg.total_timeout,
            retries=cfg.retries, allow_private=args.allow_private or cfg.allow_private_addresses,
            trusted=cfg.mirrors,
        ) as fetcher:
            with Store(cfg.db_path, durability=cfg.durability) as store:
                return await sync(
                    args.id, store=store, fetcher=fetcher, mirrors=list(cfg.mirrors), trusted=cfg.trusted_ring(),
                    registry=cfg.registry, max_bytes=cfg.max_bundle_bytes, now=utc_now, on_progress=progress,
                    timeout=args.timeout,
                )

    try:
        rep = trio.run(run)
    except BadId as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        print_json(rep.to_json())
    else:
        _print_human(rep)
    if not rep.replicated:
        return EXIT_PROBLEM
    return EXIT_CONFLICT if rep.conflicts else EXIT_OK
