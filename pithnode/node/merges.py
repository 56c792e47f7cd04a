"""The merges a bulk sync leaves for later: every subject it stored, merged once, at its end.

A bulk sync stores events without merging their subjects (`unmerged`); the
scheduler merges them in the admission workers, a chunk at a time, starting
the next chunk's merges before this one is committed so both cores work. A
subject that took new events after its bodies were read is merged again. The
store's "unmerged" flag is set while any wait, so a crash is repaired at the
next start.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future

from ..core import KeyRing
from ..ingest import IngestResult, node_ring, remerge
from ..store import Store
from ..worker_jobs import MergedState, merge_batch
from . import admission
from .admission import AdmissionWorkers

MERGE_CHUNK = 200  # subjects merged per commit
MERGE_EVENTS = 20_000  # and at most about this many events (bounded memory with a large subject)
UNMERGED_META = "unmerged"  # node_meta: set while a bulk sync's subjects wait for their merge

Chunk = tuple[list[tuple[str, int, int]], list[Future[list[MergedState]]]]  # (pn, subject id, seq), merges


class MergeScheduler:
    def __init__(self, store: Store, workers: AdmissionWorkers, registry: frozenset[str], now: Callable[[], str],
                 *, readonly: bool = False):
        self.store, self.workers, self.registry, self.now = store, workers, registry, now
        # stored by a bulk sync, not merged yet; after a crash, found again in the store (looked
        # for only when it says a sync was stopped) and merged in the first gossip round
        self.unmerged: set[str] = set()
        self._merging = 0  # chunks of them being merged, by every `run` under way
        if not readonly and store.meta(UNMERGED_META):
            self.unmerged.update(store.unmerged_subjects())
            if not self.unmerged:
                with store.transaction():
                    store.set_meta(UNMERGED_META, "")

    def stored_unmerged(self, pith_numbers: set[str]) -> None:
        """Inside the transaction that stored them: these subjects wait for their merge."""
        if pith_numbers and not self.unmerged:  # a crash before `run` ends is repaired at start
            self.store.set_meta(UNMERGED_META, "1")

    async def run(self, trusted: KeyRing, source: str | None,
                  committed: Callable[[list[IngestResult]], None]) -> int:
        """Merge every subject in `unmerged`, each once; `committed` is told each chunk's results once
        committed. Returns how many subjects were merged."""
        done = 0
        inflight: deque[Chunk] = deque()
        try:
            while self.unmerged or inflight:
                if self.unmerged and len(inflight) < 2:
                    inflight.append(self.start(trusted))
                    self._merging += 1
                    if len(inflight) < 2 and self.unmerged:
                        continue
                subjects, futures = inflight[0]
                merged = [m for fut in futures for m in await admission.result(fut)]
                results = self.store_merged(subjects, merged, trusted, source)
                inflight.popleft()
                self._merging -= 1
                committed(results)
                done += len(results)
        except BaseException:  # still stored, still unmerged: the next pass (or a restart) merges them
            for subjects, _ in inflight:
                self.unmerged.update(pn for pn, _, _ in subjects)
            self._merging -= len(inflight)
            raise
        return done

    def start(self, trusted: KeyRing) -> Chunk:
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
            return subjects, self.workers.start(merge_batch, jobs, entries, self.registry)
        except BaseException:
            self.unmerged.update(taken)  # still to merge
            raise

    def store_merged(self, subjects: list[tuple[str, int, int]], merged: list[MergedState], trusted: KeyRing,
                     source: str | None) -> list[IngestResult]:
        """One commit: the states `start` started, each kept only if its subject took
        no event since its bodies were read (else it is queued to merge again)."""
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
