"""Threads of rnncc's own for the lanes schedule: a call's lanes shared out, each share a call
of the one-thread function (rnncc's compiled code, which runs without the GIL).

The lanes of a call are independent (plan.py: each a batch row or a block of its columns,
its whole time loop inside), so the threads meet once, at the end of the loop; they never
share a core with Numba's or OpenMP's threads, which sit idle meanwhile. The calling thread
runs the first share itself.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_size = 0


def _forget_after_fork() -> None:
    """A forked child has none of the pool's threads: start a new pool when it needs one."""
    global _lock, _pool, _size
    _lock, _pool, _size = threading.Lock(), None, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def _workers(count: int) -> ThreadPoolExecutor:
    """A pool of at least `count` threads, started once (grown if a call wants more)."""
    global _pool, _size
    with _lock:
        if _pool is None or _size < count:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool, _size = ThreadPoolExecutor(count, thread_name_prefix="rnncc-lanes"), count
        return _pool


def run(fn, shares: list) -> None:
    """fn(*share) for every share at once, the first on the calling thread; returns when all
    are done, raising the first error."""
    if len(shares) == 1:
        fn(*shares[0])
        return
    pending = [_workers(len(shares) - 1).submit(fn, *share) for share in shares[1:]]
    try:
        fn(*shares[0])
    finally:
        for future in pending:
            future.result()


def run_each(fn, calls: list, threads: int) -> None:
    """fn(*call) for every call, on `threads` threads at once (calls k, k + threads, ... on
    thread k, one after the other; the first group on the calling thread)."""
    groups = [calls[k::threads] for k in range(min(threads, len(calls)))]

    def each(group):
        for call in group:
            fn(*call)
    run(each, [(group,) for group in groups])
