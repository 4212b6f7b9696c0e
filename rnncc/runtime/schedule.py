"""Running independent pieces of a layer stack at the same time, on threads.

A single recurrent layer is a chain: step t needs step t-1. With several layers or directions
there is more to do at once (Appleyard et al. 2016, "layer wavefront"): layer k+1 can run the
steps layer k has finished while layer k runs the next ones, and the two directions of a
bidirectional layer are independent. The generated functions release the GIL (nogil=True), so
Python threads run them on separate cores.

run() takes tasks with dependencies and runs each as soon as its dependencies are done, on
`workers` threads; among ready tasks, the one with the smallest priority first (the wavefront
order: layer + piece). Each worker gives its kernels and GEMMs cores/workers threads, so the
workers together use the cores a single layer's small GEMMs would leave idle.
"""
from __future__ import annotations

import functools
import os
import sys
import threading
from dataclasses import dataclass
from typing import Callable, Hashable

from ..backends.cpu import threads as cpu_threads


@dataclass
class Task:
    run: Callable[[int], None]          # called with the number of threads it may use
    after: tuple = ()                   # keys of the tasks it needs
    priority: tuple = ()                # smaller first among ready tasks


@functools.lru_cache(maxsize=1)   # os.cpu_count() reads the system's files: 6 us, every call
def _cpu_count() -> int:
    return os.cpu_count() or 1


def cores() -> int:
    """The threads rnncc may use: Numba's thread count (NUMBA_NUM_THREADS, default all cores)."""
    return max(1, min(cpu_threads.configured(), _cpu_count()))


_concurrent: bool | None = None


def concurrent_kernels() -> bool:
    """May generated functions run on several Python threads at once? Numba's OpenMP and TBB
    threading layers allow it; its fallback, workqueue, aborts the process when two threads
    launch parallel loops at once, so without OpenMP or TBB rnncc runs one task at a time.
    rnncc's own compiled functions (native/, which run parallel loops on its team instead)
    always may: Numba is not even imported."""
    from ..backends.cpu.native.function import native_enabled
    if native_enabled():
        return True
    global _concurrent
    if _concurrent is None:
        import numba
        cpu_threads.launch()  # picks the layer (as the first parallel call would)
        _concurrent = numba.threading_layer() in ("omp", "tbb")
    return _concurrent


_blas = None


def _blas_controller():
    """threadpoolctl's handle on the loaded BLAS libraries (numpy's and SciPy's, which the
    generated code's products call), made once, after SciPy's BLAS is loaded."""
    global _blas
    if _blas is None:
        from ..backends.cpu.native import blas
        blas.addresses()   # loads SciPy's BLAS, as the first product would
        from threadpoolctl import ThreadpoolController
        _blas = ThreadpoolController()
    return _blas


def run(tasks: dict[Hashable, Task], workers: int) -> None:
    """Run every task once, each after the tasks it names in `after`, on `workers` threads
    (1: in order on the calling thread, with all cores for each task). The first exception
    stops the run and is raised here."""
    for key, task in tasks.items():
        missing = set(task.after) - tasks.keys()
        if missing:
            raise ValueError(f"task {key!r} waits for unknown tasks {sorted(map(repr, missing))}")
    order = _order(tasks)  # raises on tasks that wait for each other, before any thread starts
    workers = max(1, min(workers, len(tasks)))
    if workers > 1 and not concurrent_kernels():
        workers = 1
    if workers == 1:
        for key in order:
            tasks[key].run(0)
        return
    threads = max(1, cores() // workers)
    pending = dict(tasks)
    waiting = {key: set(task.after) for key, task in tasks.items()}  # not yet finished
    failure: list[BaseException] = []
    lock = threading.Condition()

    def ready():
        keys = [k for k in pending if not waiting[k]]
        return min(keys, key=lambda k: pending[k].priority) if keys else None

    def worker():
        numba = sys.modules.get("numba")   # (a Numba function's threads: per thread in Numba)
        if numba is not None and hasattr(numba, "set_num_threads"):
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        while True:
            with lock:
                while True:
                    if failure or not pending:
                        return
                    key = ready()
                    if key is not None:
                        task = pending.pop(key)
                        break
                    lock.wait()
            try:
                task.run(threads)
            except BaseException as exc:  # noqa: BLE001  (re-raised in the caller)
                with lock:
                    failure.append(exc)
                    lock.notify_all()
                return
            with lock:
                for other in pending:
                    waiting[other].discard(key)
                lock.notify_all()

    with _blas_controller().limit(limits=threads, user_api="blas"):
        pool = [threading.Thread(target=worker, name=f"rnncc-wavefront-{i}", daemon=True)
                for i in range(workers)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
    if failure:
        raise failure[0]


def _order(tasks: dict) -> list:
    """A dependency order, smallest priority first among the ready ones."""
    done: set = set()
    order = []
    remaining = dict(tasks)
    while remaining:
        ready = [k for k, t in remaining.items() if set(t.after) <= done]
        if not ready:
            raise RuntimeError(f"tasks {sorted(map(repr, remaining))} wait for each other")
        key = min(ready, key=lambda k: remaining[k].priority)
        order.append(key)
        done.add(key)
        del remaining[key]
    return order
