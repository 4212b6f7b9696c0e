"""Compiling a cell ahead of time (`rnncc compile`): every function a target generates for it,
in each dtype, into the disk cache, so that a later process (a training job on a cluster, a CI
run from a prepared image) loads them instead of compiling.

A generated function takes one signature per dtype (its arrays are C-contiguous, in the
module's dtype; sizes are arguments), so a two-step call on small random data compiles exactly
what any later call runs. On the cpu target a function with kernels comes in two variants
(threads, one thread: codegen.py) and a call runs one of them: here each variant gets a run.

The runs are independent jobs (a dtype, a target, a variant), so they can compile in processes
of their own at once (`jobs`): the disk cache is safe to fill from several processes, and the
functions' seconds are each process's own.
"""
from __future__ import annotations

import logging
import multiprocessing
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np

from .. import backends
from ..backends.compile_log import CompileEvent, log
from .gradcheck import random_problem

class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.events: list[CompileEvent] = []

    def emit(self, record):
        event = getattr(record, "rnncc_compile", None)
        if event is not None and event.phase == "done":
            self.events.append(event)


def precompile(cell, dtypes=("float32",), targets=("cpu",), jobs: int = 1) -> list[CompileEvent]:
    """Compile (or load from the disk cache) every function of `cell` for each dtype and
    target: forward (training), backward and infer, in each variant. Returns the compile log's
    "done" events, one per function: its seconds, and whether it came from the cache. With
    jobs > 1, that many processes compile at once. In this process, a function compiled already
    (for this cell, or for another whose generated code is the same) is ready, and not listed."""
    work = []
    for name in targets:
        backend = backends.get(name)   # an unknown target: the error, before any work
        for dtype in dtypes:
            dtype = np.dtype(dtype)
            if dtype not in (np.float32, np.float64):
                raise ValueError(f"dtype {dtype.name}: cells compile for float32 and float64")
            work += [(dtype.name, name, variant) for variant in backend.variants]
    if jobs <= 1 or len(work) <= 1:
        return [event for job in work for event in _job(cell, *job)]
    # spawn, not fork: a forked copy of a process whose Numba threads have started can hang
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(jobs, len(work)), mp_context=context) as pool:
        futures = [pool.submit(_job_in_process, cell.spec.source.text, *job) for job in work]
        for future in as_completed(futures):   # this process's log shows them as they end
            for event in future.result():
                log.info(event.describe(), extra={"rnncc_compile": event})
        return [event for future in futures for event in future.result()]


def cell_in_another_process(spec_text: str):
    """The cell of `spec_text`, built in a process compiling it for another one (a job here,
    cpu/compile_worker.py): its lint warnings are silenced, the other process has them."""
    from .cell import compile as compile_cell
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return compile_cell(spec_text)


def _job_in_process(spec_text: str, dtype: str, target: str, variant) -> list[CompileEvent]:
    cell = cell_in_another_process(spec_text)
    return _job(cell, dtype, target, variant)


def _job(cell, dtype: str, target: str, variant) -> list[CompileEvent]:
    """Run a small problem through infer, forward and backward: each compiles at its first
    call (or loads from the disk cache), in the given variant."""
    logger = logging.getLogger("rnncc.compile")
    collect, level = _Collect(), logger.level
    logger.addHandler(collect)
    if not logger.isEnabledFor(logging.INFO):
        logger.setLevel(logging.INFO)
    backend = backends.get(target)
    compiled = backend.compiled(cell, dtype) if variant is not None else None
    try:
        if compiled is not None:
            compiled.variant = variant
        prob = random_problem(cell, T=2, B=2)

        def cast(arrays: dict) -> dict:
            return {k: v.astype(dtype) for k, v in arrays.items()}
        x = prob.x_arg(cell)
        x = cast(x) if isinstance(x, dict) else x.astype(dtype)
        p, state = cast(prob.p), cast(prob.state)
        cell.forward(p, x, state, target=target)                              # infer
        cell.backward(p, x, prob.dys.astype(dtype), state, cast(prob.dfinal),  # forward, backward
                      target=target)
    finally:
        if compiled is not None:
            compiled.variant = None
        logger.removeHandler(collect)
        logger.setLevel(level)
    return collect.events
