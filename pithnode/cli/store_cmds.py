"""Offline commands on the local store: import, export, state, show, list,
equivocations, rejections."""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..config import Config
from ..core import canonical_bytes
from ..errors import EXIT_PROBLEM
from ..identity import NodeIdentity, load_or_create_key
from ..ingest import import_bundles
from ..store import Store, StoreError, Subject
from ..timeutil import parse_since, utc_now, utc_now_precise
from ..views import NotHeld, equivocation_reports, events_of, find_subject, own_bundle, state_of
from .common import EXIT_CONFLICT, EXIT_OK, UsageError, config_from, equivocation_line, print_json, writable_data_dir


def _since(text: str) -> str:
    try:
        return parse_since(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


SINCE_HELP = "only those at or after T: an ISO date or date-time (UTC unless it says), or a duration back (24h, 7d)"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("import", parents=[common], help="import bundle files into the store",
                       description="Import bundle files (as served at /pith/<CODE>/bundle.json) into the store: "
                                   "every event admitted on its own, each bundle one transaction. A node running "
                                   "on the same data dir sees them within a second, attests them and offers them "
                                   "to its peers. Exit 2 if a file cannot be read (nothing is imported), 1 if a "
                                   "bundle could not be imported.")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_import)

    p = sub.add_parser("export", parents=[common], help="write our signed bundle of a record",
                       description="Write this node's bundle of a held record, signed with the node key: every "
                                   "event held, our merged state and the keys to check them, for `pithnode import` "
                                   "or `pithnode verify` elsewhere.")
    p.add_argument("id", metavar="ID", help="Pith number, code, short Pith number or arXiv id of a held record")
    p.add_argument("-o", "--output", metavar="FILE", help="output file (default: standard output)")
    p.add_argument("--public-url", metavar="URL", help="base URL to name ourselves by in the bundle")
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("state", parents=[common], help="print our merged state of a record",
                       description="Print our merged state of a held record (/pith/<CODE>/state.json): with "
                                   "--json its exact canonical bytes, else indented.")
    p.add_argument("id", metavar="ID")
    p.set_defaults(handler=cmd_state)

    p = sub.add_parser("show", parents=[common], help="a readable view of a held record",
                       description="A readable view of a held record: title, authors, its events in order with "
                                   "their status (applied, superseded, invalid, equivocation), attestations and "
                                   "mirror hints.")
    p.add_argument("id", metavar="ID")
    p.set_defaults(handler=cmd_show)

    p = sub.add_parser("list", parents=[common], help="list the records held",
                       description="List the records held, with their event and equivocation counts. Reads "
                                   "only: works on a store you may not write.")
    p.set_defaults(handler=cmd_list)

    p = sub.add_parser("equivocations", parents=[common], help="equivocations found, with signed evidence",
                       description="Every equivocation found (two events by one signer on one target after one "
                                   "previous event), newest first, with the signed events as evidence anyone can "
                                   "check offline. For monitors: --exit-code exits 3 when any is listed.")
    p.add_argument("--since", metavar="T", type=_since, help=SINCE_HELP)
    p.add_argument("--exit-code", action="store_true", help="exit 3 when any equivocation is listed, 0 when none")
    p.set_defaults(handler=cmd_equivocations)

    p = sub.add_parser("rejections", parents=[common], help="objects refused at admission",
                       description="Events and bundles refused at admission (bad hash, bad signature, unknown "
                                   "key, malformed, over a quota), newest first, with where they came from.")
    p.add_argument("--since", metavar="T", type=_since, help=SINCE_HELP)
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(handler=cmd_rejections)


def open_store(cfg: Config, *, must_exist: bool = False, readonly: bool = False) -> Store:
    """The store; `readonly` for the commands that only read (a store we may not write is still read)."""
    if must_exist and not cfg.db_path.exists():
        raise UsageError(f"no store at {cfg.db_path} (import or sync something first, or pass --data-dir)")
    if not readonly:
        writable_data_dir(cfg)
    return Store(cfg.db_path, durability=cfg.durability, readonly=readonly)


def node_identity(cfg: Config, public_url: str | None = None) -> NodeIdentity:
    return NodeIdentity(load_or_create_key(cfg.key_path), public_url or cfg.public_url or "pithnode-local")


def _subject(store: Store, text: str) -> Subject:
    try:
        return find_subject(store, text)
    except NotHeld as exc:
        raise UsageError(str(exc)) from exc


def cmd_import(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    trusted, results, failed = cfg.trusted_ring(), [], 0
    show_bar = sys.stderr.isatty() and not args.no_progress and not args.json
    for path in args.files:  # unusable input: said before anything is imported
        if not os.access(path, os.R_OK) or os.path.isdir(path):
            raise UsageError(f"cannot read {path}: " + ("a directory" if os.path.isdir(path) else
                                                        "no such file" if not os.path.exists(path) else "not readable"))
    with open_store(cfg) as store:
        items = [(f"file:{os.path.abspath(p)}", (lambda p=p: Path(p).read_bytes())) for p in args.files]
        bar = tqdm(total=len(items), unit="bundle", disable=not show_bar)
        try:
            done = import_bundles(store, items, trusted=trusted, registry=cfg.registry, now=utc_now,
                                  max_bytes=cfg.max_bundle_bytes)
            for (_source, res), path in zip(done, args.files, strict=True):
                bar.update()
                if isinstance(res, Exception):
                    failed += 1
                    results.append({"file": path, "ok": False, "error": str(res)})
                else:
                    results.append({"file": path, "ok": True, **res.to_json()})
        except StoreError as exc:  # disk full or the like: stop, nothing half-applied
            failed += 1
            results.append({"file": None, "ok": False, "error": str(exc)})
        except BrokenProcessPool as exc:  # a checking process killed (the OOM killer?): stop, nothing half-applied
            failed += 1
            results.append({"file": None, "ok": False, "error": f"worker processes died ({exc}): the import "
                            "stopped; the bundles listed before are stored; run it again to import the rest"})
        finally:
            bar.close()
    if args.json:
        print_json({"imported": results, "failed": failed})
    else:
        for e in results:
            if e["ok"]:
                print(f"{e['file']}: {e['pith_number']}: {len(e['new_event_ids'])} new, {e['known']} known, "
                      f"{len(e['rejected'])} rejected; state {e['state_sha256'][:16]}"
                      + ("" if e["source_state_matches"] else " (bundle's own state disagrees with its events)"))
            else:
                print(f"pithnode import: error: {e['file'] or 'import'}: {e['error']}", file=sys.stderr)
    return EXIT_PROBLEM if failed else EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    if args.output and not Path(args.output).resolve().parent.is_dir():  # a usage error, found before any work
        raise UsageError(f"cannot write {args.output}: no directory {Path(args.output).resolve().parent}")
    with open_store(cfg, must_exist=True) as store:
        subject = _subject(store, args.id)
        ident = node_identity(cfg, args.public_url)
        bundle = own_bundle(store, subject, ident, cfg.trusted_ring(), public_url=args.public_url or cfg.public_url,
                            now=utc_now(), signed_at=utc_now_precise())
    data = canonical_bytes(bundle)
    if args.output:
        tmp = Path(args.output + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, args.output)
        print(f"wrote {args.output}: {subject.pith_number}, {len(bundle['events'])} events, "
              f"signed by {ident.key_id}", file=sys.stderr)
    else:
        sys.stdout.buffer.write(data + b"\n")
    return EXIT_OK


def cmd_state(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    with open_store(cfg, must_exist=True, readonly=True) as store:
        subject = _subject(store, args.id)
        raw = store.state_bytes(subject.pith_number)
    if raw is None:
        raise UsageError(f"{subject.pith_number} has no state yet")
    if args.json:
        sys.stdout.buffer.write(raw + b"\n")
    else:
        print_json(json.loads(raw))
    return EXIT_OK


def _status_of(state: dict[str, Any]) -> dict[str, str]:
    status = {eid: "applied" for eid in state["applied_event_ids"]}
    current = {p["event_id"] for v in state["current"].values() if isinstance(v, list)
               for p in v if isinstance(p, dict) and "event_id" in p}
    if state["current"]["record_created"]:
        current.add(state["current"]["record_created"]["event_id"])
    for eid in state["applied_event_ids"]:
        if eid not in current:
            status[eid] = "superseded"
    for inv in state["invalid_events"]:
        status[inv["event_id"]] = "invalid: " + inv["reason"]
    for eq in state["equivocations"]:
        for eid in eq["event_ids"]:
            status[eid] = "EQUIVOCATION"
    return status


def cmd_show(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    with open_store(cfg, must_exist=True, readonly=True) as store:
        subject = _subject(store, args.id)
        state = state_of(store, subject)
        events = events_of(store, subject)
    if state is None:
        raise UsageError(f"{subject.pith_number} has no state yet")
    cur = state["current"]
    paper: dict[str, Any] = {}
    if cur["graph_snapshots"]:
        paper = cur["graph_snapshots"][-1]["payload"].get("graph_snapshot", {}).get("paper") or {}
    if args.json:
        print_json({"pith_number": subject.pith_number, "title": subject.title, "paper": paper, "state": state,
                    "events": events})
        return EXIT_OK
    record = cur["canonical_record"] or {}
    src = record.get("source") or {}
    print(subject.pith_number + f"   (short: pith:{subject.code[:8]})")
    print(f"  {paper.get('title') or subject.title or '(no title)'}")
    if paper.get("authors_text"):
        print(f"  {paper['authors_text']}")
    if src:
        print(f"  source: {src.get('kind')}:{src.get('id')} v{src.get('version')}")
    print(f"  record: {'present' if cur['record_created'] else 'NOT YET / DISPUTED'}")
    print(f"  state_sha256: {state['state_sha256']}")
    print(f"  events {state['event_count']}, valid {state['valid_event_count']}, "
          f"invalid {state['invalid_event_count']}, equivocations {state['equivocation_count']}")
    status = _status_of(state)
    print("  timeline:")
    for e in events:
        who = "registry" if e["signer"]["signer_type"] == "pith_registry" else e["signer"]["signer_id"]
        print(f"    {e['created_at']}  {e['event_type']:<20} {who:<28} {e['event_id'][7:19]}  "
              f"{status.get(e['event_id'], '')}")
    for label, key in (("timestamp anchors", "timestamp_anchors"), ("storage attestations", "storage_attestations"),
                       ("mirror hints", "mirror_hints"), ("citation signatures", "citation_signatures")):
        if cur[key]:
            print(f"  {label}:")
            for p in cur[key]:
                payload = p["payload"]
                detail = payload.get("location") or payload.get("base_url") or payload.get("anchor_type") or ""
                print(f"    {p['created_at']}  {p['signer']['signer_id']}  {detail}")
    for eq in state["equivocations"]:
        print(f"  EQUIVOCATION by {equivocation_line(eq)}")
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    with open_store(cfg, must_exist=True, readonly=True) as store:
        subjects = store.subjects()
    if args.json:
        print_json([{"pith_number": s.pith_number, "title": s.title, "events": s.event_count,
                     "equivocations": s.equivocation_count, "invalid_events": s.invalid_event_count,
                     "state_sha256": s.state_sha256, "followed": s.followed, "updated_at": s.updated_at}
                    for s in subjects])
        return EXIT_OK
    for s in subjects:
        flag = f"  {s.equivocation_count} EQUIVOCATION(S)" if s.equivocation_count else ""
        print(f"{s.pith_number}  {s.event_count:>5} events  {(s.title or '')[:60]}{flag}")
    print(f"{len(subjects)} record(s)", file=sys.stderr)
    return EXIT_OK


def cmd_equivocations(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    with open_store(cfg, must_exist=True, readonly=True) as store:
        reports = equivocation_reports(store, since=args.since, limit=-1)
    if args.json:
        print_json({"equivocations": reports})
    else:
        for r in reports:
            print(f"{r['first_seen']}  {r['pith_number']}  {equivocation_line(r)}")
            for e in r["events"]:
                print(f"    {e['event_id']}  {e['created_at']}  {e['event_type']}  "
                      f"signed by {e['signer']['signer_id']}")
        print(f"{len(reports)} equivocation(s)" + (f" since {args.since}" if args.since else ""), file=sys.stderr)
    return EXIT_CONFLICT if args.exit_code and reports else EXIT_OK


def cmd_rejections(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    with open_store(cfg, must_exist=True, readonly=True) as store:
        rows = store.rejections(since=args.since, limit=args.limit)
    if args.json:
        print_json({"rejections": [r.to_json() for r in rows]})
        return EXIT_OK
    for r in rows:
        print(f"{r.at}  {r.reason:<14} {r.subject or '-'}  {r.event_id or '-'}  from {r.source}: {r.detail}")
    print(f"{len(rows)} rejection(s)", file=sys.stderr)
    return EXIT_OK
