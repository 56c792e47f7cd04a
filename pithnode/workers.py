"""A process pool that survives `kill -9` of a worker (the OOM killer).

concurrent.futures.ProcessPoolExecutor shares one result pipe between all
workers, and the parent holds its write end: a worker killed half-way through
sending a result leaves a partial message that the pool's manager thread then
waits on forever (and a worker killed holding the pipe's lock blocks the rest).
Seen here: `pithnode import` hung after a worker's SIGKILL on a loaded machine.
So each worker here has a pipe of its own, written by it alone: its death is an
EOF on that pipe, its task fails at once with BrokenProcessPool, and the pool
is broken (every other task fails too, as with ProcessPoolExecutor).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import queue
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.connection import Connection
from typing import Any

_Task = tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]


def _serve(conn: Connection, initializer: Callable[..., None] | None, initargs: tuple[Any, ...]) -> None:
    """A worker: run each (fn, args) received, send back (ok, result or exception)."""
    if initializer is not None:
        initializer(*initargs)
    while True:
        try:
            fn, args = conn.recv()
        except EOFError:  # the pool shut down (or its process died)
            return
        try:
            reply: tuple[bool, Any] = (True, fn(*args))
        except BaseException as exc:  # noqa: BLE001  (it is the caller's to see)
            exc.add_note("in the worker process:\n" + traceback.format_exc())
            reply = (False, exc)
        try:
            conn.send(reply)
        except OSError:  # the pool is gone
            return
        except Exception as exc:  # noqa: BLE001  (a result that does not pickle: pickled before any byte is sent)
            conn.send((False, RuntimeError(f"the worker's result could not be sent back: {exc!r}")))


class WorkerPool:
    """`workers` processes started by a fork server (none inherits the caller's
    threads), each running `initializer(*initargs)` first. `submit` returns a
    concurrent.futures.Future; tasks go to whichever worker is free. As with
    spawn, a script using it keeps its work under `if __name__ == "__main__"`:
    each worker runs the script's module first."""

    def __init__(self, workers: int, *, initializer: Callable[..., None] | None = None,
                 initargs: tuple[Any, ...] = ()) -> None:
        ctx = multiprocessing.get_context("forkserver")
        self._tasks: queue.SimpleQueue[_Task | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._broken: str | None = None
        self._closed = False
        self._procs: list[Any] = []
        self._threads: list[threading.Thread] = []
        for _ in range(workers):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(theirs, initializer, initargs), daemon=True)
            proc.start()
            theirs.close()  # the worker holds the only other end: its death is our EOF
            thread = threading.Thread(target=self._feed, args=(proc, mine), daemon=True, name="worker-feed")
            thread.start()
            self._procs.append(proc)
            self._threads.append(thread)
        threading.Thread(target=self._watch, daemon=True, name="worker-watch").start()

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self._procs]

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        with self._lock:
            if self._broken:
                raise BrokenProcessPool(self._broken)
            if self._closed:
                raise RuntimeError("submit after the pool's shutdown")
            fut: Future[Any] = Future()
            self._tasks.put((fut, fn, args))
            return fut

    def _feed(self, proc: Any, conn: Connection) -> None:
        """One per worker: hand it a task, wait for its reply, until the pool closes."""
        with conn:
            while (task := self._tasks.get()) is not None:
                fut, fn, args = task
                if not fut.set_running_or_notify_cancel():
                    continue
                try:
                    conn.send((fn, args))
                    ok, value = conn.recv()
                except (EOFError, OSError):
                    self._died(proc)
                    fut.set_exception(BrokenProcessPool(self._broken))
                    return
                except Exception as exc:  # noqa: BLE001  (arguments or a result that do not pickle)
                    fut.set_exception(exc)
                    continue
                (fut.set_result if ok else fut.set_exception)(value)

    def _watch(self) -> None:
        """A worker that dies idle breaks the pool at once, not at its next task."""
        ready = multiprocessing.connection.wait([proc.sentinel for proc in self._procs])
        if not self._closed:
            self._died(next(proc for proc in self._procs if proc.sentinel in ready))

    def _died(self, proc: Any) -> None:
        """A worker died: fail what waits, stop the other workers (their tasks fail
        as their pipes close), let the feeding threads end."""
        proc.join(1)
        why = f"a worker process died (exit code {proc.exitcode}): the pool is not usable anymore"
        with self._lock:
            if self._broken:
                return
            self._broken = why
        self._drain(BrokenProcessPool(why))
        for other in self._procs:
            other.kill()
        for _ in self._threads:
            self._tasks.put(None)

    def _drain(self, exc: BaseException | None) -> None:
        """Fail (or with None: cancel) every task not yet handed to a worker."""
        while True:
            try:
                task = self._tasks.get_nowait()
            except queue.Empty:
                return
            if task is not None:
                if exc is None:
                    task[0].cancel()
                elif task[0].set_running_or_notify_cancel():
                    task[0].set_exception(exc)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more tasks; with `cancel_futures` the queued ones are cancelled; with
        `wait`, return once the running ones are done and the workers have exited."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if cancel_futures:
            self._drain(None)
        for _ in self._threads:
            self._tasks.put(None)
        if wait:
            for thread in self._threads:
                thread.join()
            for proc in self._procs:
                proc.join()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown(wait=True, cancel_futures=exc_info[0] is not None)


def die_with_parent() -> None:
    """In a worker process: exit when the parent dies, even by `kill -9`
    (Linux PR_SET_PDEATHSIG; elsewhere the worker exits at its next read)."""
    try:
        import ctypes  # here: only a worker needs it
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def background_worker(nice: int) -> None:
    """Initializer of the node's admission workers. It lives here, not in the node's
    modules, so a worker imports only what its jobs need (~8 MB less each)."""
    die_with_parent()
    os.nice(nice)
