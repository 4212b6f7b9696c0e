"""Whether the cpu target's kernels may use Numba's threads beside BLAS's.

The GEMMs run on BLAS's threads (every core), the kernels between them on Numba's, through an
OpenMP runtime. An OpenMP runtime whose idle threads spin (its default wait policy) takes the
cores BLAS's threads need. Measured on 2 cores (AMD EPYC), lstm T=50, B=128, H=512 forward and
backward: 225 ms with the kernels on 2 threads whose idle threads sleep, 350 ms with spinning
ones, 227 ms with the kernels on the calling thread alone.

rnncc does not choose the policy: it is the process's. Its processes share one OpenMP runtime
with PyTorch (the dynamic loader gives both libraries the libgomp.so.1 loaded first), so a policy
rnncc set (before, `import rnncc` set OMP_WAIT_POLICY=PASSIVE) slowed torch's small ops up to
15x, and torch's default (spinning) made rnncc's multithreaded kernels 1.5x slower beside it. So
the kernels use Numba's threads where the idle threads sleep: the user set
OMP_WAIT_POLICY=PASSIVE (every OpenMP library of the process then sleeps between its work), or
Numba's threading layer is not OpenMP (workqueue's and TBB's idle threads block). Elsewhere they
run on the calling thread, unless the step's kernels weigh enough to gain even beside spinning
threads (runtime.kernel_threads, KERNEL_HEAVY); what the calling thread costs the others,
bench/RESULTS.md records.
"""
from __future__ import annotations

import os
import sys
import threading
from functools import lru_cache

# A generated function with kernels has a serial twin of this suffix (forward_serial, ...): the
# same body compiled without parallel=True, which the runtime calls when the kernels get one
# thread (launching a parallel region costs about 0.6 us even then, per kernel and step).
SERIAL = "_serial"
# The two variants by name (the compile log's, `rnncc compile`'s): the parallel function, and
# its serial twin.
THREADS, ONE_THREAD = "threads", "one thread"

_lock = threading.Lock()
_shared: bool | None = None


def launch() -> bool:
    """Start Numba's thread pool (once; its first parallel call would). Returns whether the
    kernels may use its threads beside BLAS's: whether its idle threads sleep."""
    global _shared
    if _shared is not None:   # every call asks: no lock once decided
        return _shared
    with _lock:
        if _shared is None:
            import numba
            from numba.np.ufunc import parallel
            parallel._launch_threads()
            _shared = (numba.threading_layer() != "omp"
                       or os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE")
        return _shared


def available() -> int:
    """The threads a call's kernels may use: Numba's thread count for the calling thread (all
    cores unless the caller lowered it: numba.set_num_threads, NUMBA_NUM_THREADS). Before
    anything has imported Numba (a process whose calls all ran on one thread, compiled by
    rnncc's own compiler), what it would say, without importing it."""
    numba = sys.modules.get("numba")
    if numba is not None and hasattr(numba, "get_num_threads"):
        return numba.get_num_threads()
    return configured()


def configured() -> int:
    """Numba's configured thread count (numba.config.NUMBA_NUM_THREADS), without importing
    Numba: NUMBA_NUM_THREADS, else the cores this process may run on."""
    numba = sys.modules.get("numba")
    if numba is not None and hasattr(numba, "config"):
        return numba.config.NUMBA_NUM_THREADS
    return int(os.environ.get("NUMBA_NUM_THREADS") or _cores())


@lru_cache(maxsize=1)
def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))   # as Numba counts them
    except AttributeError:
        return os.cpu_count() or 1
