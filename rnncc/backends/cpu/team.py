"""A call of a compiled function on a team of threads (native/gemm.py's protocol).

The calling thread owns the team for the call; threads of rnncc's own (the members, started
at the first call that needs them and kept for the process) compute their share of every
large product the call makes on rnncc's GEMM, and of every parallel loop over a step's rows
(lower.py outlines each into a function of a row range). Between a call's jobs they spin a
while, then sleep; between calls they sleep. One team per process: a call made while another
thread's call holds it runs alone.
"""
from __future__ import annotations

import atexit
import ctypes
import os
import threading
from functools import lru_cache
from typing import NamedTuple

from .native import gemm, machine

_held = threading.Lock()   # one team: also guards _threads
_threads: list[threading.Thread] = []   # member k is _threads[k - 1]


def _forget_after_fork() -> None:
    """In a forked child the members do not exist (only the forking thread does): a job
    handed to them would never run, and the owner would wait for it forever."""
    global _held, _threads
    _held, _threads = threading.Lock(), []


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


class _Protocol(NamedTuple):
    """gemm.py's team functions, as ctypes calls."""
    begin: object        # begin(size, min_work): the calling thread owns the team
    end: object          # end(): it no longer does; the members sleep
    stop: object         # stop(): the members return
    work: object         # work(index, seen): a member's loop
    generation: object   # generation(): jobs (and stops) given so far


@lru_cache(maxsize=None)
def _functions() -> _Protocol:
    from .native.function import library
    found = library("team")
    c = ctypes.CFUNCTYPE
    return _Protocol(c(None, ctypes.c_int64, ctypes.c_int64)(found["rnncc_team_begin"]),
                     c(None)(found["rnncc_team_end"]),
                     c(None)(found["rnncc_team_stop"]),
                     c(None, ctypes.c_int64, ctypes.c_int64)(found["rnncc_team_work"]),
                     c(ctypes.c_int64)(found["rnncc_team_generation"]))


# A product is worth sharing out where one core takes at least this long for it: a hand-off
# costs about a microsecond each way. Between what lost and what won in
# bench/team_thresholds.py: the README's quick start lstm's step products of 2^18 multiply-adds
# take one core 2.2 us on the Zen 5, where sharing them lost (0.69 -> 1.10 ms a call), and
# 4.9 us on the Zen 4, where it won (1.24 -> 0.85 ms).
SHARE_MIN_SECONDS = 3.5e-6


_thresholds: dict = {}   # dtype as given -> product_threshold (every team call asks)


def product_threshold(dtype) -> int:
    """Multiply-adds from which a product in `dtype` is shared out on this machine: what one
    core does in SHARE_MIN_SECONDS on rnncc's GEMM, timed once per process (the best of a few
    products of one row block, about 0.3 ms in all), within gemm.TEAM_MIN_WORK_RANGE."""
    found = _thresholds.get(dtype)
    if found is None:
        import numpy as np
        found = _thresholds[dtype] = _threshold(np.dtype(dtype).name)
    return found


@lru_cache(maxsize=None)
def _threshold(dtype_name: str) -> int:
    import time

    import numpy as np

    from .native.function import library
    dtype = np.dtype(dtype_name)
    blk = machine.blocking(dtype)
    found = library(gemm.part(dtype, False))
    i64, pointer = ctypes.c_int64, ctypes.c_void_p
    run = ctypes.CFUNCTYPE(None, i64, i64, i64, pointer, i64, pointer, pointer, i64)(
        found[gemm.symbol("team_gemm", dtype)])
    pack = ctypes.CFUNCTYPE(None, i64, i64, pointer, i64, i64, pointer)(
        found[gemm.symbol("pack", dtype)])
    m, k, n = blk.mr, 256, 256
    a, w, c = np.ones((m, k), dtype), np.ones((k, n), dtype), np.empty((m, n), dtype)
    packed = np.empty(gemm.packed_size(blk, k, n), dtype)
    pack(k, n, w.ctypes.data, n, 1, packed.ctypes.data)
    args = (m, n, k, a.ctypes.data, k, packed.ctypes.data, c.ctypes.data, n)
    best = float("inf")
    for _ in range(15):   # (outside a team's call: the product runs on this thread alone)
        start = time.perf_counter()
        run(*args)
        best = min(best, time.perf_counter() - start)
    low, high = gemm.TEAM_MIN_WORK_RANGE
    return int(min(high, max(low, m * k * n / best * SHARE_MIN_SECONDS)))


def _min_work(dtype) -> int:
    """The smallest product a call's team shares out (its record's min_work): product_threshold,
    or, with products on BLAS (RNNCC_PACKED_GEMM=0), the most (the team then shares loops
    only: no probe)."""
    return (product_threshold(dtype) if machine.packed_enabled()
            else gemm.TEAM_MIN_WORK_RANGE[1])


def _enlist(count: int) -> None:
    """Members 1..count running (called holding the team, between calls). Starting a thread
    costs about 50 us, as much as a B=1 lstm call's whole native time at T=1: hence members
    that stay. Each starts from the generation read here, before any job of the calls it
    serves, so that it neither misses one nor takes an old one."""
    if len(_threads) >= count:
        return
    protocol = _functions()
    seen = protocol.generation()
    while len(_threads) < count:
        index = len(_threads) + 1
        member = threading.Thread(target=protocol.work, args=(index, seen), daemon=True,
                                  name=f"rnncc-team-{index}")
        member.start()   # (ctypes lets go of the GIL for the member's whole life)
        _threads.append(member)


@atexit.register
def _retire() -> None:
    """The members return before the interpreter shuts down (a daemon thread still in native
    code then is cut off wherever it is)."""
    global _threads
    if not _held.acquire(timeout=5.0):   # (a daemon thread's call still running: leave it)
        return
    try:
        if _threads:
            _functions().stop()
            for member in _threads:
                member.join(timeout=1.0)
            _threads = []
    finally:
        _held.release()


def run(call, threads: int, dtype="float32") -> None:
    """call() with a team of `threads` (the calling thread and threads - 1 members), its
    products in `dtype` shared out from product_threshold(dtype) multiply-adds."""
    if threads <= 1 or not _held.acquire(blocking=False):
        call()
        return
    try:
        protocol = _functions()
        if len(_threads) < threads - 1:
            _enlist(threads - 1)
        protocol.begin(threads, _min_work(dtype))
        try:
            call()
        finally:
            protocol.end()
    finally:
        _held.release()
