"""The admission workers: where a node runs the CPU-heavy half of ingest (worker_jobs.py).

Parsing and admitting a gossip message's events, and the merges of a bulk
sync, run in worker processes (both cores; the event loop stays free), at a
lower priority than the process serving readers. Small batches, or a machine
with one core, use threads: a process hop costs more than it saves. A node is
handed its `AdmissionWorkers` at construction; by default every node of a
process shares one (`shared_workers`), so a test suite's many nodes do not
start a pool each.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

import trio
import trio.lowlevel

from ..workers import WorkerPool, background_worker

log = logging.getLogger("pithnode.node")

ADMISSION_NICE = 10  # readers first: bulk admission takes the CPU the fronts leave
T = TypeVar("T")


class AdmissionWorkers:
    """`processes` worker processes (none: threads only), started on first use by a fork server so
    none inherits the event loop's threads, and `threads` threads for small batches."""

    def __init__(self, processes: int | None = None, *, threads: int = 2, nice: int = ADMISSION_NICE):
        cores = os.cpu_count() or 1
        self.processes = (cores if cores > 1 else 0) if processes is None else processes
        self.nice = nice
        self._pool: WorkerPool | None = None
        self._threads = ThreadPoolExecutor(threads, thread_name_prefix="admission")

    @property
    def pool(self) -> WorkerPool | None:
        """The worker processes (started now if need be), or None when there are none."""
        if self._pool is None and self.processes:
            self._pool = WorkerPool(self.processes, initializer=background_worker, initargs=(self.nice,))
        return self._pool

    def start(self, fn: Callable[..., T], items: list[Any], *args: Any, min_chunk: int = 1,
              chunks_per_worker: int = 1) -> list[Future[T]]:
        """Start `fn(chunk, *args)` over `items` split across the worker processes
        (with none, or for fewer than `min_chunk` items: one call on a thread).
        A pool broken by a worker's death (the OOM killer, a stray kill) is replaced:
        the work it held fails (BrokenProcessPool), new work goes to new workers."""
        pool = self.pool if len(items) >= min_chunk else None
        if pool is None:
            return [self._threads.submit(fn, items, *args)]
        step = max(min_chunk, len(items) // (chunks_per_worker * self.processes) + 1)

        def submit(pool: WorkerPool) -> list[Future[T]]:
            return [pool.submit(fn, items[i : i + step], *args) for i in range(0, len(items), step)]

        try:
            return submit(pool)
        except BrokenProcessPool:
            log.error("a worker process died (killed?): starting new ones")
            pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            return submit(self.pool)  # type: ignore[arg-type]  # there was a pool: there is one

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self._threads.shutdown(wait=False, cancel_futures=True)


async def result(fut: Future[T]) -> T:
    """`fut`'s result, waited for on the event loop: the future's own completion callback wakes this
    task (no thread parked per wait), and a cancelled wait returns at once. The work itself runs on
    (its result is dropped); work not started yet is cancelled."""
    if not fut.done():
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()

        def wake(_: Future[T]) -> None:
            try:
                token.run_sync_soon(done.set)
            except trio.RunFinishedError:  # the loop is gone: nobody waits anymore
                pass

        fut.add_done_callback(wake)
        try:
            await done.wait()
        except trio.Cancelled:
            fut.cancel()
            raise
    else:
        await trio.lowlevel.checkpoint()
    return fut.result()


_SHARED: AdmissionWorkers | None = None


def shared_workers() -> AdmissionWorkers:
    """The process's default workers, shared by every node in it that is handed none."""
    global _SHARED
    if _SHARED is None:
        _SHARED = AdmissionWorkers()
    return _SHARED
