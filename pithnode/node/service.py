"""The node: its store, key and peers' allowances, over the parts that do each job.

Every write goes through `Node`: the CPU-heavy work (parsing and checking
events, signatures, the merges of a bulk sync) runs in its admission workers
(admission.py), then one store transaction per batch decides and applies it
(ingest.py) on the trio thread. Only the trio thread touches the SQLite
connection, so there is no locking beyond trio's own scheduling: a transaction
never awaits, so two ingests never interleave inside one.

After each write the node drops what its document cache (cache.py) holds for
the subject, wakes what waits for a change, queues the new events for its
peers, and has its reporter (reporter.py) count, log and report the outcome.
A bulk sync's subjects are merged later by the merge scheduler (merges.py).
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import trio
import trio.lowlevel

from ..config import Config
from ..core import Admission, KeyRing, admit, canonical_bytes, check_bundle, make_event
from ..core.events import MAX_EVENT_BYTES
from ..core.ingest_plan import Quotas
from ..identity import NodeIdentity, load_or_create_key
from ..ingest import IngestError, IngestResult, ingest_bundle, ingest_events, ingest_ring, node_ring
from ..store import Store, StoreError, Subject
from ..timeutil import utc_now, utc_now_precise
from ..views import NotHeld, own_bundle
from ..worker_jobs import admit_raw
from . import admission
from .admission import AdmissionWorkers, shared_workers
from .cache import Cached, DocumentCache
from .merges import MERGE_CHUNK, MergeScheduler
from .metrics import Metrics
from .reporter import Reporter

FRESH_CHECK = 0.1
INLINE_MERGES = 16  # records a batch merges inside its own commit; more are merged as a bulk sync's are
POOL_MIN_BATCH = 64  # smaller batches are admitted on a thread: a process hop costs more than it saves


class Budget:
    """Token buckets per key (a client address, a learned peer): `rate` per second
    refilled, at most `burst` saved; spending may go below zero (work already
    done is charged in full). At most KEYS keys are tracked, the least recently
    seen forgotten first (a forgotten key starts full again: the cap bounds our
    memory; what a key may spend still holds while fewer keys are active)."""

    KEYS = 4096

    def __init__(self, rate: float, burst: float):
        self.rate, self.burst = rate, burst
        self._left: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (left, at)

    def left(self, key: str, now: float) -> float:
        left, at = self._left.pop(key, (self.burst, now))
        self._left[key] = (min(self.burst, left + (now - at) * self.rate), now)
        while len(self._left) > self.KEYS:
            self._left.popitem(last=False)
        return self._left[key][0]

    def spend(self, key: str, amount: float, now: float) -> None:
        self._left[key] = (self.left(key, now) - amount, now)

    def take(self, key: str, now: float) -> bool:
        """Spend one if one is left."""
        if self.left(key, now) < 1:
            return False
        self.spend(key, 1, now)
        return True


@dataclass
class Outbox:
    """New event ids to push to peers, with the peer each came from (not pushed back)."""

    items: list[tuple[str, str | None]] = field(default_factory=list)
    wakeup: trio.Event = field(default_factory=trio.Event)

    def put(self, event_ids: list[str], origin: str | None) -> None:
        self.items.extend((e, origin) for e in event_ids)
        self.wakeup.set()

    def take(self) -> list[tuple[str, str | None]]:
        items, self.items = self.items, []
        self.wakeup = trio.Event()
        return items


class Node:
    def __init__(self, cfg: Config, *, now: Callable[[], str] = utc_now, readonly: bool = False,
                 workers: AdmissionWorkers | None = None):
        """`readonly`: a front process's view (node/front.py): it serves, the node process writes.
        `workers`: where admission and merges run (by default, the ones every node of the process shares)."""
        self.cfg = cfg
        self.now = now
        self.public_url = (cfg.public_url or f"http://{cfg.listen}").rstrip("/")
        self.store = Store(cfg.db_path, durability=cfg.durability, readonly=readonly)
        self.identity = NodeIdentity(load_or_create_key(cfg.key_path), self.public_url)
        self.trusted = cfg.trusted_ring()
        self.quotas = Quotas(cfg.max_signers_per_subject, cfg.max_events_per_signer)
        self.registry = cfg.registry
        self.metrics = Metrics()
        self.outbox = Outbox()
        self.workers = workers if workers is not None else shared_workers()
        self.documents = DocumentCache()
        self.reporter = Reporter(self.metrics, self.public_url, cfg.on_equivocation)
        self.merges = MergeScheduler(self.store, self.workers, self.registry, now, readonly=readonly)
        # new records and new keys a stranger may make us store (burst: an hour's worth)
        self.new_records = Budget(cfg.peer_new_records_per_hour / 3600, cfg.peer_new_records_per_hour)
        self.new_keys = Budget(cfg.peer_new_keys_per_hour / 3600, cfg.peer_new_keys_per_hour)
        self._ring: tuple[KeyRing, int, KeyRing] | None = None  # (the store's ring, its size, ours)
        self.changed = trio.Event()  # set (and replaced) whenever the store changed
        self.generation = 0  # bumped by every change to the store
        self._data_version, self._next_check = self.store.data_version(), 0.0
        self.metrics.watch_store(self.store)

    def close(self) -> None:
        self.store.close()

    @property
    def unmerged(self) -> set[str]:
        """Subjects a bulk sync stored and did not merge yet (`merge_pending` merges them)."""
        return self.merges.unmerged

    # -- reads -----------------------------------------------------------------

    def ring(self) -> KeyRing:
        """Every key we know: kept while the store's ring neither grows nor is replaced."""
        stored = self.store.key_ring()
        if self._ring is None or self._ring[0] is not stored or self._ring[1] != len(stored):
            self._ring = (stored, len(stored), node_ring(self.store, self.trusted).merged(self.identity.ring()))
        return self._ring[2]

    def current_generation(self) -> int:
        """`generation`, also bumped by other processes' commits (a front process sees the node's),
        checked at most every FRESH_CHECK seconds: well within the served documents' max-age."""
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + FRESH_CHECK
            if (v := self.store.data_version()) != self._data_version:
                self._data_version = v
                self.generation += 1
        return self.generation

    def cached(self, pith_number: str, kind: str, build: Callable[[], bytes], content_type: str = "application/json",
               *, version: Any = None) -> Cached:
        """The document `build` makes, kept while `version` (what it is built from) holds (cache.py).
        Per-record documents pass the record's state; the node-wide ones ("*") pass nothing and rely
        on the store's data version, which another process's commit changes."""
        if pith_number == "*":
            version = self.store.data_version()
        return self.documents.get((pith_number, kind), build, content_type, version=version)

    def bundle_bytes(self, pith_number: str) -> bytes:
        """Our signed bundle: a function of the store alone (its times are when our state for the
        record last changed), so every front process and every restart serves the same bytes."""
        subject = self.store.subject(pith_number)
        if subject is None or subject.state_sha256 is None:
            raise NotHeld(f"{pith_number} is not held")
        at = subject.updated_at or self.now()
        bundle = own_bundle(self.store, subject, self.identity, self.trusted, public_url=self.public_url,
                            now=at, signed_at=at)
        return canonical_bytes(bundle)

    def _touched(self, pith_numbers: list[str]) -> None:
        self.documents.forget(set(pith_numbers))
        self.generation += 1
        self.changed.set()
        self.changed = trio.Event()

    # -- writes ----------------------------------------------------------------

    async def ingest_bundle(self, bundle: dict[str, Any], *, source: str | None) -> IngestResult:
        ring = self.ring().merged(KeyRing.from_entries(bundle.get("public_keys") or [])) \
            if isinstance(bundle.get("public_keys"), list) else self.ring()
        report = await trio.to_thread.run_sync(check_bundle, bundle, ring, self.registry)
        self._check_capacity()
        result = ingest_bundle(self.store, bundle, source=source, trusted=self.trusted.merged(self.identity.ring()),
                               registry=self.registry, now=self.now(), report=report, quotas=self.quotas)
        self._after(result, origin=None)
        return result

    async def ingest_events(self, pith_number: str, objs: list[Any], keys: list[Any], *, source: str | None,
                            origin_peer: str | None = None, own: bool = False) -> IngestResult:
        """Parsed events of one subject (our own, tests): signatures checked off the event loop.
        `own`: our own events, never refused by our flood quotas."""
        ring = self.ring().merged(KeyRing.from_entries(keys))
        admissions = await trio.to_thread.run_sync(lambda: [admit(o, pith_number, ring) for o in objs])
        self._check_capacity()
        result = ingest_events(self.store, pith_number, objs, keys, source=source,
                               trusted=self.trusted.merged(self.identity.ring()), registry=self.registry,
                               now=self.now(), admissions=admissions, quotas=None if own else self.quotas)
        self._after(result, origin=origin_peer)
        return result

    def start_admission(self, raw: list[bytes], keys: list[Any]) -> list[Future[Any]]:
        """Start parsing and admitting events (their JSON bytes) in the worker
        processes, without waiting: a caller can fetch more meanwhile. The workers
        get the message's keys and ours; they read other stored keys from the store."""
        entries = self.trusted.merged(self.identity.ring()).entries() + keys  # the workers check the message's
        return self.workers.start(admit_raw, raw, entries, MAX_EVENT_BYTES, self.store.path,
                                  min_chunk=POOL_MIN_BATCH, chunks_per_worker=2)

    def _charge(self, by_subject: dict[str, tuple[list[Any], list[Any]]], stranger: str) -> None:
        """Refuse (as `quota`) the events that would make us store more new records
        or new keys than `stranger` may still make us store (`new_records`, `new_keys`)."""
        now = trio.current_time()
        held = self.ring()
        refused_keys: set[str] = set()
        granted_keys: set[str] = set()
        for pn, (objs, adms) in by_subject.items():
            new_record = self.store.subject(pn) is None
            if new_record and any(a.admitted for a in adms) and not self.new_records.take(stranger, now):
                why = f"new records from {stranger[:100]} over {self.cfg.peer_new_records_per_hour} per hour"
                adms[:] = [Admission(None, "quota", why) if a.admitted else a for a in adms]
                continue
            for i, (light, adm) in enumerate(zip(objs, adms, strict=True)):
                fp = light["signer"]["public_key_fingerprint"] if adm.admitted else None
                if fp is None or fp in held or fp in granted_keys:
                    continue
                if fp not in refused_keys and self.new_keys.take(stranger, now):
                    granted_keys.add(fp)
                    continue
                refused_keys.add(fp)
                adms[i] = Admission(None, "quota", f"new keys from {stranger[:100]} over "
                                                   f"{self.cfg.peer_new_keys_per_hour} per hour")

    async def apply_admitted(self, futures: list[Future[Any]], keys: list[Any], *, source: str | None,
                             origin_peer: str | None = None, merge: bool = True,
                             stranger: str | None = None) -> tuple[list[IngestResult], int]:
        """Wait for admissions started by `start_admission`, then one commit for
        all of them, each subject merged once (with `merge=False` not yet: the
        subjects wait in `unmerged` for `merge_pending`). `stranger`: the source
        (not one the operator named) whose allowance of new records and keys this
        is charged to. Returns the results and how many inputs named no subject."""
        by_subject: dict[str, tuple[list[Any], list[Any]]] = {}
        unreadable = 0
        for fut in futures:
            for subject, adm, light in await admission.result(fut):
                if subject is None:
                    unreadable += 1
                    continue
                objs, adms = by_subject.setdefault(subject, ([], []))
                objs.append(light)
                adms.append(adm)
        if stranger is not None:
            self._charge(by_subject, stranger)
        self._check_capacity()
        trusted = self.trusted.merged(self.identity.ring())
        now = self.now()
        # many records at once (a push of new records): merged in the workers after the
        # commit, a chunk per commit, not all inline in this one transaction on the event loop
        inline = merge and len(by_subject) <= INLINE_MERGES
        items = list(by_subject.items())
        ring = ingest_ring(self.store, trusted, keys)
        results: list[IngestResult] = []
        try:
            for start in range(0, len(items), MERGE_CHUNK):  # a commit per chunk of records, the loop let go between
                if start:
                    await trio.lowlevel.checkpoint()
                with self.store.transaction():
                    done = [ingest_events(self.store, pn, objs, keys, source=source, trusted=trusted,
                                          registry=self.registry, now=now, admissions=adms, quotas=self.quotas,
                                          merge=inline, ring=ring)
                            for pn, (objs, adms) in items[start : start + MERGE_CHUNK]]
                    pending = {r.pith_number for r in done if r.merge_pending}
                    self.merges.stored_unmerged(pending)
                self.unmerged.update(pending)
                results += done
        finally:  # what was committed is counted, shown and passed on even if a later chunk failed
            for result in results:
                self._after(result, origin=origin_peer)
        if merge and not inline:
            await self.merge_pending(source)
        return results, unreadable

    async def ingest_raw(self, raw: list[bytes], keys: list[Any], *, source: str | None,
                         origin_peer: str | None = None, stranger: str | None = None) -> tuple[list[IngestResult], int]:
        """Events as their JSON bytes (a gossip message), for whatever subjects
        they name: parsed and admitted in worker processes (both cores; the
        event loop stays free), then one commit, each subject merged once."""
        return await self.apply_admitted(self.start_admission(raw, keys), keys, source=source,
                                         origin_peer=origin_peer, stranger=stranger)

    async def merge_pending(self, source: str | None) -> int:
        """Merge every subject a bulk sync stored without merging, each once (merges.py).
        Returns how many subjects were merged."""
        return await self.merges.run(self.trusted.merged(self.identity.ring()), source, self._merged)

    def _merged(self, results: list[IngestResult]) -> None:
        self._touched([r.pith_number for r in results])
        for result in results:
            self._after(result, origin=None)

    def _check_capacity(self) -> None:
        cap = self.cfg.max_store_bytes
        if cap and self.store.size_bytes() >= cap:
            raise StoreError(f"storage cap of {cap} bytes reached (max_store_bytes): new events are refused, "
                             "everything held is still served")

    def _after(self, result: IngestResult, origin: str | None) -> None:
        if result.new_event_ids or result.rejected:
            self._touched([result.pith_number])
        if result.new_event_ids:
            self.outbox.put(result.new_event_ids, origin)
        self.reporter.ingested(result)

    async def run_hooks(self) -> None:
        """Hand each report to the operator's `on_equivocation` command, one at a time."""
        await self.reporter.run_hooks()

    # -- own events --------------------------------------------------------------

    async def emit_own(self, pith_number: str, event_type: str, target: str, payload: dict[str, Any],
                       prev: str | None) -> str | None:
        """Sign one of our own events and commit it before anyone can see it."""
        ev = make_event(self.identity.key, event_type=event_type, subject=pith_number, target=target,
                        payload=payload, signer_id=self.identity.signer_id, signer_type="pith_mirror",
                        key_id=self.identity.key_id, created_at=self.now(), signed_at=utc_now_precise(),
                        prev_event=prev, supersedes=[prev] if prev else [])
        res = await self.ingest_events(pith_number, [ev], self.identity.ring().entries(), source="self", own=True)
        if res.rejected:
            raise IngestError(f"our own {event_type} was rejected: {res.rejected[0]}")
        return str(ev["event_id"])

    def own_events(self, subject: Subject) -> list[dict[str, Any]]:
        ids = [row[2] for row in self.store.signer_chain_heads(self.identity.fingerprint, subject.id)]
        return [json.loads(body) for _pn, body in self.store.events_by_id(ids)]

    def set_public_url(self, url: str) -> None:
        """Once the listening address is known (a port picked by the OS)."""
        self.public_url = self.reporter.node_url = url.rstrip("/")
        self.identity = NodeIdentity(self.identity.key, self.public_url)
        self._touched(["*"])

    def other_writer_committed(self, event_ids: list[str]) -> None:
        """Another process stored these in our store (`pithnode import` or `sync`):
        offer them to peers and wake whatever waits for a change (attestations)."""
        if event_ids:
            self.outbox.put(event_ids, None)
        self._touched(["*"])

    async def wait_changed(self) -> None:
        await self.changed.wait()


IngestFn = Callable[[dict[str, Any], str], Awaitable[IngestResult]]
