"""WorkerPool: real worker processes, real SIGKILLs."""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import CancelledError
from concurrent.futures.process import BrokenProcessPool

import pytest

from pithnode.workers import WorkerPool


def square(n: int) -> int:
    return n * n


def a_lock() -> threading.Lock:
    return threading.Lock()


def fail(msg: str) -> None:
    raise ValueError(msg)


def slow(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def big_then_killed(n: int, delay: float) -> bytes:
    """A large result, and this process SIGKILLed `delay` s later: mostly while
    it is sending the result back, half a message in the pipe."""
    data = b"x" * n
    threading.Thread(target=lambda: (time.sleep(delay), os.kill(os.getpid(), signal.SIGKILL)), daemon=True).start()
    return data


def remember(value: int) -> None:
    global SEEN
    SEEN = value


def seen() -> int:
    return SEEN


def sleep_pid(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def test_results_errors_and_tasks_spread_over_workers():
    with WorkerPool(2) as pool:
        futs = [pool.submit(square, n) for n in range(200)]
        assert [f.result(timeout=60) for f in futs] == [n * n for n in range(200)]
        err = pool.submit(fail, "bad input").exception(timeout=60)
        assert isinstance(err, ValueError) and str(err) == "bad input"
        assert "in the worker process" in "".join(getattr(err, "__notes__", []))
        unpicklable = pool.submit(square, threading.Lock()).exception(timeout=60)  # never reaches a worker
        assert isinstance(unpicklable, TypeError) and "pickle" in str(unpicklable)
        unsendable = pool.submit(a_lock).exception(timeout=60)
        assert isinstance(unsendable, RuntimeError) and "could not be sent back" in str(unsendable)
        assert pool.submit(square, 3).result(timeout=60) == 9  # no such error breaks the pool
    with WorkerPool(2) as pool:  # two slow tasks at once: two processes
        futs = [pool.submit(sleep_pid, 0.5) for _ in range(2)]
        assert len({f.result(timeout=60) for f in futs}) == 2


def test_initializer_runs_in_each_worker():
    with WorkerPool(1, initializer=remember, initargs=(42,)) as pool:
        assert pool.submit(seen).result(timeout=60) == 42


@pytest.mark.parametrize("delay", [0.0, 0.1, 0.2, 0.3, 0.5])
def test_a_worker_killed_while_sending_its_result_fails_the_pool_at_once(delay: float):
    """ProcessPoolExecutor hangs forever here for most delays (its manager thread
    waits on the half-sent message); this pool fails every task promptly."""
    pool = WorkerPool(2)
    try:
        doomed = pool.submit(big_then_killed, 300_000_000, delay)
        queued = [pool.submit(slow, 1.0) for _ in range(4)]
        assert isinstance(doomed.exception(timeout=30), BrokenProcessPool)
        for fut in queued:
            try:
                fut.result(timeout=30)  # one may have finished before the pool broke
            except BrokenProcessPool:
                pass
        with pytest.raises(BrokenProcessPool):
            pool.submit(square, 2)
    finally:
        pool.shutdown(wait=True)


def test_shutdown_cancels_queued_tasks_and_waits_for_running_ones():
    pool = WorkerPool(1)
    running = pool.submit(slow, 0.5)
    while not running.running():  # handed to the worker
        time.sleep(0.01)
    queued = [pool.submit(slow, 5) for _ in range(3)]
    pool.shutdown(wait=True, cancel_futures=True)
    assert running.result(timeout=0) == 0.5
    for fut in queued:
        with pytest.raises(CancelledError):
            fut.result(timeout=0)
    with pytest.raises(RuntimeError):
        pool.submit(square, 1)
