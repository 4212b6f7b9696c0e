"""A call of a compiled function on a team of threads (native/gemm.py's protocol).

The calling thread owns the team for the call; threads of rnncc's own run the team's `work`
until the call ends: they compute their share of every large product the call makes on rnncc's
GEMM, and of every parallel loop over a step's rows (lower.py outlines each into a function of
a row range). Between jobs they spin a while, then sleep. One team per process: a call made while
another thread's call holds it runs alone.
"""
from __future__ import annotations

import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

_held = threading.Lock()   # one team: also guards _pool
_pool: ThreadPoolExecutor | None = None
_size = 0


def _forget_after_fork() -> None:
    """In a forked child the pool's threads do not exist (only the forking thread does): a
    job handed to them would never run, and the owner would wait for it forever."""
    global _held, _pool, _size
    _held, _pool, _size = threading.Lock(), None, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def _members(count: int) -> ThreadPoolExecutor:
    """Threads of the team's own (a pool that lanes calls also use could have them queued
    behind other work while the owner waits for them)."""
    global _pool, _size
    if _pool is None or _size < count:
        if _pool is not None:
            _pool.shutdown(wait=False)
        _pool, _size = ThreadPoolExecutor(count, thread_name_prefix="rnncc-team"), count
    return _pool


@lru_cache(maxsize=None)
def _functions():
    from .native.function import library
    found = library("team")
    begin = ctypes.CFUNCTYPE(None, ctypes.c_int64)(found["rnncc_team_begin"])
    end = ctypes.CFUNCTYPE(None)(found["rnncc_team_end"])
    work = ctypes.CFUNCTYPE(None, ctypes.c_int64)(found["rnncc_team_work"])
    return begin, end, work


def run(call, threads: int) -> None:
    """call() with a team of `threads` (the calling thread and threads - 1 others)."""
    if threads <= 1 or not _held.acquire(blocking=False):
        call()
        return
    try:
        begin, end, work = _functions()
        begin(threads)
        pending = [_members(threads - 1).submit(work, k) for k in range(1, threads)]
        try:
            call()
        finally:
            end()
            for future in pending:
                future.result()
    finally:
        _held.release()
