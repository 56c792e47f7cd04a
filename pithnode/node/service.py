"""The node's state in memory: its store, key, caches, metrics and reports.

Every write goes through `Node`: the CPU-heavy work (parsing and checking
events, signatures, the merges of a bulk sync) runs in worker processes (on
one core, a thread), then one store transaction commits the batch on the
trio thread. Only the trio thread touches the SQLite connection, so there is
no locking beyond trio's own scheduling: a transaction never awaits, so two
ingests never interleave inside one.

After each write the node invalidates what it caches for the subject, counts
the outcome, reports new equivocations, invalid events and disagreements, and
queues the new events for its peers.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import shlex
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

import trio
import trio.lowlevel

from ..config import Config
from ..core import Admission, KeyRing, admit, canonical_bytes, check_bundle, make_event, sha256_hex
from ..core.events import MAX_EVENT_BYTES
from ..identity import NodeIdentity, load_or_create_key
from ..ingest import (
    IngestError,
    IngestResult,
    MergedState,
    Quotas,
    admit_raw,
    background_worker,
    ingest_bundle,
    ingest_events,
    ingest_ring,
    merge_batch,
    node_ring,
    remerge,
)
from ..store import Store, StoreError, Subject
from ..timeutil import utc_now, utc_now_precise
from ..views import NotHeld, own_bundle
from ..workers import WorkerPool
from .metrics import Metrics

log = logging.getLogger("pithnode.node")

FRESH_CHECK = 0.1
CACHE_BYTES = 32 * 1024 * 1024  # served documents kept in memory, least recently used dropped first
MERGE_CHUNK = 200  # subjects merged per commit by `merge_pending`
INLINE_MERGES = 16  # records a batch merges inside its own commit; more are merged as a bulk sync's are
MERGE_EVENTS = 20_000  # and at most about this many events (bounded memory with a large subject)
UNMERGED_META = "unmerged"  # node_meta: set while a bulk sync's subjects wait for their merge
ADMISSION_NICE = 10  # readers first: bulk admission takes the CPU the fronts leave
POOL_MIN_BATCH = 64  # smaller batches are admitted on a thread: a process hop costs more than it saves
_POOL: WorkerPool | None = None
_THREAD_POOL = ThreadPoolExecutor(2, thread_name_prefix="admission")  # small batches, or one core


def admission_pool() -> WorkerPool | None:
    """One pool of admission workers per process (shared by every node in it),
    started by a fork server so no worker inherits the event loop's threads."""
    global _POOL
    if _POOL is None and (os.cpu_count() or 1) > 1:
        _POOL = WorkerPool(os.cpu_count() or 1, initializer=background_worker, initargs=(ADMISSION_NICE,))
    return _POOL


def in_workers(fn: Callable[..., Any], items: list[Any], *args: Any, min_chunk: int = 1,
               chunks_per_worker: int = 1) -> list[Future[Any]]:
    """Start `fn(chunk, *args)` over `items` split across the worker processes
    (on one core, or for fewer than `min_chunk` items: one call on a thread).
    A pool broken by a worker's death (the OOM killer, a stray kill) is replaced:
    the work it held fails (BrokenProcessPool), new work goes to new workers."""
    global _POOL
    pool = admission_pool() if len(items) >= min_chunk else None
    if pool is None:
        return [_THREAD_POOL.submit(fn, items, *args)]
    step = max(min_chunk, len(items) // (chunks_per_worker * (os.cpu_count() or 1)) + 1)

    def submit(pool: WorkerPool) -> list[Future[Any]]:
        return [pool.submit(fn, items[i : i + step], *args) for i in range(0, len(items), step)]

    try:
        return submit(pool)
    except BrokenProcessPool:
        log.error("a worker process died (killed?): starting new ones")
        pool.shutdown(wait=False, cancel_futures=True)
        _POOL = None
        return submit(admission_pool())  # type: ignore[arg-type]  # there was a pool: there is one


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


class LogLimiter:
    """At most one log line per key per `interval` seconds, and `lines` in all per
    interval; the lines held back are counted and said in the next one for their
    key (a hostile peer cannot grow the log by the number of events it sends,
    nor by naming itself anew in every push)."""

    def __init__(self, interval: float = 10.0, lines: int = 20, keys: int = 1024):
        self.interval, self.lines, self.keys = interval, lines, keys
        self._seen: OrderedDict[str, tuple[float, int]] = OrderedDict()  # key -> (last logged, held back)
        self._window = (-interval, 0)  # (start, lines logged in it)

    def allow(self, key: str, now: float) -> int | None:
        """None: hold this line back; else how many were held back since the last one."""
        last, held = self._seen.pop(key, (-self.interval, 0))
        start, logged = self._window if now - self._window[0] < self.interval else (now, 0)
        if now - last < self.interval or logged >= self.lines:
            self._seen[key] = (last, held + 1)
            return None
        self._seen[key] = (now, 0)
        self._window = (start, logged + 1)
        while len(self._seen) > self.keys:
            self._seen.popitem(last=False)
        return held


@dataclass
class Cached:
    """One served document: its bytes, gzip bytes (made on first ask) and ETag."""

    body: bytes
    etag: str
    content_type: str = "application/json"
    version: Any = None  # what it was built from (a subject's state hash, the store's data version)
    _gz: bytes | None = None

    @property
    def gzip_etag(self) -> str:
        """The gzip variant is another representation: its own ETag (RFC 9110 8.8.3)."""
        return self.etag[:-1] + '-gzip"'

    def gzipped(self) -> bytes:
        if self._gz is None:
            self._gz = gzip.compress(self.body, 5)
        return self._gz


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
    def __init__(self, cfg: Config, *, now: Callable[[], str] = utc_now, readonly: bool = False):
        """`readonly`: a front process's view (node/front.py): it serves, the node process writes."""
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
        # new records and new keys a stranger may make us store (burst: an hour's worth)
        self.new_records = Budget(cfg.peer_new_records_per_hour / 3600, cfg.peer_new_records_per_hour)
        self.new_keys = Budget(cfg.peer_new_keys_per_hour / 3600, cfg.peer_new_keys_per_hour)
        self._log_limit = LogLimiter()
        self._ring: tuple[KeyRing, int, KeyRing] | None = None  # (the store's ring, its size, ours)
        self._cache: OrderedDict[tuple[str, str], Cached] = OrderedDict()  # least recently used first
        self._cache_bytes = 0
        self._hook_send, self._hook_recv = trio.open_memory_channel[bytes](1000)
        self.changed = trio.Event()  # set (and replaced) whenever the store changed
        self.generation = 0  # bumped by every change to the store
        # stored by a bulk sync, not merged yet (`merge_pending`); after a crash, found again in the
        # store (looked for only when it says a sync was stopped) and merged in the first gossip round
        self.unmerged: set[str] = set()
        self._merging = 0  # chunks of them being merged, by every `merge_pending` under way
        if not readonly and self.store.meta(UNMERGED_META):
            self.unmerged.update(self.store.unmerged_subjects())
            if not self.unmerged:
                with self.store.transaction():
                    self.store.set_meta(UNMERGED_META, "")
        self._data_version, self._next_check = self.store.data_version(), 0.0
        self.metrics.watch_store(self.store)

    def close(self) -> None:
        self.store.close()

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
        """The document `build` makes, kept while `version` (what it is built from) holds and within
        CACHE_BYTES. Per-record documents pass the record's state; the node-wide ones ("*") pass
        nothing and rely on the store's data version, which another process's commit changes."""
        key = (pith_number, kind)
        if pith_number == "*":
            version = self.store.data_version()
        hit = self._cache.get(key)
        if hit is not None and hit.version == version:
            self._cache.move_to_end(key)
            return hit
        body = build()
        self._forget(key)
        hit = self._cache[key] = Cached(body, '"' + sha256_hex(body)[:32] + '"', content_type, version)
        self._cache_bytes += len(body)
        while self._cache_bytes > CACHE_BYTES and len(self._cache) > 1:
            self._forget(next(iter(self._cache)))
        return hit

    def _forget(self, key: tuple[str, str]) -> None:
        if (old := self._cache.pop(key, None)) is not None:
            self._cache_bytes -= len(old.body)

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
        touched = set(pith_numbers)
        for key in [k for k in self._cache if k[0] in touched or k[0] == "*"]:
            self._forget(key)
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
        await self._after(result, origin=None)
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
        await self._after(result, origin=origin_peer)
        return result

    def start_admission(self, raw: list[bytes], keys: list[Any]) -> list[Future[Any]]:
        """Start parsing and admitting events (their JSON bytes) in the worker
        processes, without waiting: a caller can fetch more meanwhile. The workers
        get the message's keys and ours; they read other stored keys from the store."""
        entries = self.trusted.merged(self.identity.ring()).entries() + keys  # the workers check the message's
        return in_workers(admit_raw, raw, entries, MAX_EVENT_BYTES, self.store.path, min_chunk=POOL_MIN_BATCH,
                          chunks_per_worker=2)

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
            for subject, adm, light in await trio.to_thread.run_sync(fut.result):
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
                    if pending and not self.unmerged:  # a crash before `merge_pending` ends is repaired at start
                        self.store.set_meta(UNMERGED_META, "1")
                self.unmerged |= pending
                results += done
        finally:  # what was committed is counted, shown and passed on even if a later chunk failed
            for result in results:
                await self._after(result, origin=origin_peer)
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
        """Merge every subject a bulk sync stored without merging, each once. The
        merges run in the worker processes, a chunk at a time; the next chunk's
        merges are started before this one is committed, so both cores work. A
        subject that took new events after its bodies were read is merged again.
        Returns how many subjects were merged."""
        done = 0
        trusted = self.trusted.merged(self.identity.ring())
        inflight: deque[tuple[list[tuple[str, int, int]], list[Future[list[MergedState]]]]] = deque()
        try:
            while self.unmerged or inflight:
                if self.unmerged and len(inflight) < 2:
                    inflight.append(self._start_merges(trusted))
                    self._merging += 1
                    if len(inflight) < 2 and self.unmerged:
                        continue
                subjects, futures = inflight[0]
                merged = [m for fut in futures for m in await trio.to_thread.run_sync(fut.result)]
                results = self._store_merged(subjects, merged, trusted, source)
                inflight.popleft()
                self._merging -= 1
                self._touched([r.pith_number for r in results])
                for result in results:
                    await self._after(result, origin=None)
                done += len(results)
        except BaseException:  # still stored, still unmerged: the next pass (or a restart) merges them
            for subjects, _ in inflight:
                self.unmerged.update(pn for pn, _, _ in subjects)
            self._merging -= len(inflight)
            raise
        return done

    def _store_merged(self, subjects: list[tuple[str, int, int]], merged: list[MergedState], trusted: KeyRing,
                      source: str | None) -> list[IngestResult]:
        """One commit: the states `_start_merges` started, each kept only if its subject
        took no event since its bodies were read (else it is queued to merge again)."""
        results = []
        with self.store.transaction():
            ring = node_ring(self.store, trusted)
            for (pn, subject_id, seq), m in zip(subjects, merged, strict=True):
                if self.store.newest_seq(subject_id) != seq:
                    self.unmerged.add(pn)  # it took events meanwhile: merge it again
                    continue
                result = IngestResult(pith_number=pn, source=source, state_sha256=m.state_sha256)
                _, result.new_equivocations, result.new_invalid = remerge(
                    self.store, subject_id, pn, ring, self.registry, self.now(), source, m, seq)
                results.append(result)
            if not self.unmerged and self._merging == 1:  # the last chunk, of every caller
                self.store.set_meta(UNMERGED_META, "")
        return results

    def _start_merges(self, trusted: KeyRing) -> tuple[list[tuple[str, int, int]], list[Future[list[MergedState]]]]:
        """Take subjects from `unmerged` (up to MERGE_CHUNK, or MERGE_EVENTS events), read
        their stored bodies and start merging them in the workers. Returns the subjects
        (pith number, id, newest seq read) and the merges' futures, in that order."""
        taken: list[str] = []
        subjects: list[tuple[str, int, int]] = []
        jobs: list[tuple[str, list[bytes]]] = []
        events = 0
        try:
            while self.unmerged and len(subjects) < MERGE_CHUNK and events < MERGE_EVENTS:
                taken.append(pn := self.unmerged.pop())
                subject = self.store.subject(pn)
                if subject is None:
                    continue
                seq, bodies = self.store.merge_input(subject.id)
                subjects.append((pn, subject.id, seq))
                jobs.append((pn, bodies))
                events += len(bodies)
            ring = node_ring(self.store, trusted)
            entries = ring.entries(self.registry & set(ring))  # all a merge reads (record receipts)
            return subjects, in_workers(merge_batch, jobs, entries, self.registry)
        except BaseException:
            self.unmerged.update(taken)  # still to merge
            raise

    def _check_capacity(self) -> None:
        cap = self.cfg.max_store_bytes
        if cap and self.store.size_bytes() >= cap:
            raise StoreError(f"storage cap of {cap} bytes reached (max_store_bytes): new events are refused, "
                             "everything held is still served")

    async def _after(self, result: IngestResult, origin: str | None) -> None:
        m = self.metrics
        m.admitted.inc(len(result.new_event_ids))
        reasons: dict[str, int] = {}
        for r in result.rejected:
            m.rejected.labels(reason=r["reason"]).inc()
            reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
        source = str(result.source)[:200]
        if reasons and (held := self._log_limit.allow(source, trio.current_time())) is not None:
            sample = {k: str(v)[:200] for k, v in result.rejected[0].items()}
            log.warning("rejected %d event(s) from %s %s (%d line(s) like this held back), e.g. %s",
                        len(result.rejected), source, json.dumps(reasons, sort_keys=True), held,
                        json.dumps({"subject": result.pith_number, **sample}))
        if result.new_event_ids or result.rejected:
            self._touched([result.pith_number])
        if result.new_event_ids:
            self.outbox.put(result.new_event_ids, origin)
        for eq in result.new_equivocations:
            await self.report("equivocation", result.pith_number, eq, result.source)
        for inv in result.new_invalid:
            await self.report("invalid_event", result.pith_number, inv, result.source)
        for flag in result.flags:
            await self.report(flag, result.pith_number, {"source": result.source, "built_at": result.built_at},
                              result.source)
        if result.source_state_matches is False:
            await self.report("disagreement", result.pith_number, {
                "source": result.source, "published_state_sha256": result.published_state_sha256,
                "merge_of_its_events_sha256": result.source_merge_sha256}, result.source)

    async def report(self, kind: str, pith_number: str, detail: dict[str, Any], source: str | None) -> None:
        """A new equivocation / invalid event / disagreement: log it, count it, hand it to the hook."""
        self.metrics.reports.labels(kind=kind).inc()
        doc = {"kind": kind, "pith_number": pith_number, "source": source, "node": self.public_url, **detail}
        log.warning("%s %s", kind, json.dumps(doc, sort_keys=True))
        if self.cfg.on_equivocation:
            try:
                self._hook_send.send_nowait(json.dumps(doc, sort_keys=True).encode() + b"\n")
            except trio.WouldBlock:
                log.error("on_equivocation hook is falling behind; report not handed over: %s", kind)

    async def run_hooks(self) -> None:
        """Hand each report to the operator's `on_equivocation` command, one at a time."""
        cmd = shlex.split(self.cfg.on_equivocation or "")
        async for doc in self._hook_recv:
            if not cmd:
                continue
            try:
                with trio.fail_after(60):
                    proc = await trio.run_process(cmd, stdin=doc, check=False, capture_stdout=True, capture_stderr=True)
                if proc.returncode != 0:
                    log.error("on_equivocation command exited %s: %s", proc.returncode, proc.stderr[-500:])
            except (OSError, trio.TooSlowError) as exc:
                log.error("on_equivocation command failed: %s", exc)

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
        return ev["event_id"]

    def own_events(self, subject: Subject) -> list[dict[str, Any]]:
        ids = [row[2] for row in self.store.signer_chain_heads(self.identity.fingerprint, subject.id)]
        return [json.loads(body) for _pn, body in self.store.events_by_id(ids)]

    def set_public_url(self, url: str) -> None:
        """Once the listening address is known (a port picked by the OS)."""
        self.public_url = url.rstrip("/")
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
